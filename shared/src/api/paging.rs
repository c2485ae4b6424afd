//! Paging for every list endpoint: `limit` and an opaque `after` cursor in, `next_after` out,
//! beside the endpoint's own filters. One extractor parses them all, so every list refuses a
//! bad query the same way and its OpenAPI parameters come from the same place:
//! - a parameter the endpoint does not take, or one given twice: 400 `invalid-query`
//! - a value that is out of range or not of its type: 422 `validation`, pointing at the parameter

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::{IntoParams, ToSchema};

use super::extract::pointer_of;
use super::problem::Problem;
use crate::domain::{FieldError, MessageId};

/// How many items a page has when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// A position in a list: handed out as `next_after`, taken back as `after`.
pub trait Cursor: Sized {
    /// The pattern of every cursor `decode` takes (the OpenAPI parameter's `pattern`).
    fn pattern() -> String;
    fn decode(raw: &str) -> Option<Self>;
    fn encode(&self) -> String;
}

/// A message id as the API writes it and takes it: a hyphenated UUID.
pub const MESSAGE_ID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Parses a message id of [`MESSAGE_ID_PATTERN`] (not the other forms `Uuid` reads, which the
/// document does not allow).
pub fn message_id(raw: &str) -> Option<MessageId> {
    (raw.len() == 36).then(|| MessageId::parse(raw)).flatten()
}

/// Lists ordered by message id (newest first) resume after the last id they showed.
impl Cursor for MessageId {
    fn pattern() -> String {
        MESSAGE_ID_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<MessageId> {
        message_id(raw)
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

/// `limit` and `after` of one list request; `MAX` is the endpoint's largest page.
#[derive(Debug)]
pub struct Page<C, const MAX: usize> {
    pub limit: usize,
    pub after: Option<C>,
}

impl<C: Cursor, const MAX: usize> Page<C, MAX> {
    /// The cursor of the next page: the last item's, when the page is full.
    pub fn next_after<T>(&self, items: &[T], cursor: impl Fn(&T) -> C) -> Option<String> {
        (items.len() == self.limit)
            .then(|| items.last().map(|last| cursor(last).encode()))
            .flatten()
    }
}

/// A list endpoint's whole query: its filters `F` (a struct that denies unknown fields) and
/// its page.
#[derive(Debug)]
pub struct ListQuery<C, F, const MAX: usize> {
    pub page: Page<C, MAX>,
    pub filter: F,
}

/// A query's yes or no (`true` or `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Flag {
    True,
    False,
}

impl Flag {
    pub fn yes(self) -> bool {
        self == Flag::True
    }
}

/// The query of a list that has no filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoFilter {}

impl<S, C, F, const MAX: usize> FromRequestParts<S> for ListQuery<C, F, MAX>
where
    S: Send + Sync,
    C: Cursor,
    F: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parse_query(parts.uri.query().unwrap_or_default())
    }
}

/// Parses a raw query string (without the `?`).
pub fn parse_query<C: Cursor, F: DeserializeOwned, const MAX: usize>(
    raw: &str,
) -> Result<ListQuery<C, F, MAX>, Problem> {
    let pairs = pairs_of(raw)?;
    let mut limit = None;
    let mut after = None;
    let mut rest = serde_json::Map::new();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "limit" => &mut limit,
            "after" => &mut after,
            _ => {
                if rest.contains_key(&name) {
                    return Err(twice(&name));
                }
                rest.insert(name, serde_json::Value::String(value));
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(twice(&name));
        }
    }
    let filter = parse_filter(rest)?;
    let page = Page {
        limit: parse_limit(limit.as_deref(), MAX)?,
        after: after.as_deref().map(parse_cursor).transpose()?,
    };
    Ok(ListQuery { page, filter })
}

/// A query string's name-value pairs, in order.
fn pairs_of(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    serde_urlencoded::from_str(raw).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("the query string is malformed: {e}"),
        )
    })
}

fn twice(name: &str) -> Problem {
    Problem::field(
        StatusCode::BAD_REQUEST,
        "invalid-query",
        FieldError::new(
            format!("/{name}"),
            "duplicate_parameter",
            format!("`{name}` is given more than once"),
        ),
    )
}

fn parse_limit(raw: Option<&str>, max: usize) -> Result<usize, Problem> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT.min(max));
    };
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            Problem::invalid(FieldError::new(
                "/limit",
                "out_of_range",
                format!("limit must be a whole number from 1 to {max}"),
            ))
        })
}

fn parse_cursor<C: Cursor>(raw: &str) -> Result<C, Problem> {
    C::decode(raw).ok_or_else(|| {
        Problem::invalid(FieldError::new(
            "/after",
            "invalid_cursor",
            "pass `next_after` of the previous page",
        ))
    })
}

/// The endpoint's filters, from the parameters that are not `limit` or `after`.
fn parse_filter<F: DeserializeOwned>(
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<F, Problem> {
    serde_path_to_error::deserialize(serde_json::Value::Object(params)).map_err(|err| {
        let message = err.inner().to_string();
        let name = message
            .strip_prefix("unknown field `")
            .and_then(|s| s.split('`').next());
        match name {
            Some(name) => Problem::field(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                FieldError::new(
                    format!("/{name}"),
                    "unknown_parameter",
                    format!("unknown query parameter `{name}`"),
                ),
            ),
            None => Problem::invalid(FieldError::new(pointer_of(err.path()), "invalid", message)),
        }
    })
}

/// The query of an endpoint that takes filters and no page (an export of everything that
/// matches): `limit` and `after` are unknown parameters there.
#[derive(Debug)]
pub struct FilterQuery<F>(pub F);

impl<S: Send + Sync, F: DeserializeOwned> FromRequestParts<S> for FilterQuery<F> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let raw = parts.uri.query().unwrap_or_default();
        let pairs = pairs_of(raw)?;
        let mut params = serde_json::Map::new();
        for (name, value) in pairs {
            if params.contains_key(&name) {
                return Err(twice(&name));
            }
            params.insert(name, serde_json::Value::String(value));
        }
        parse_filter(params).map(FilterQuery)
    }
}

impl<F: IntoParams> IntoParams for FilterQuery<F> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        F::into_params(|| Some(ParameterIn::Query))
    }
}

impl<C: Cursor, F: IntoParams, const MAX: usize> IntoParams for ListQuery<C, F, MAX> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = F::into_params(|| Some(ParameterIn::Query));
        params.push(limit_param(MAX));
        params.push(after_param(C::pattern()));
        params
    }
}

fn limit_param(max: usize) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(max as f64))
        .default(Some(DEFAULT_LIMIT.min(max).into()));
    ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("items on the page"))
        .schema(Some(schema))
        .build()
}

fn after_param(pattern: String) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern));
    ParameterBuilder::new()
        .name("after")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("`next_after` of the previous page"))
        .schema(Some(schema))
        .build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Filters {
        channel: Option<crate::domain::Channel>,
    }

    type Query = ListQuery<MessageId, Filters, 500>;

    fn parse(raw: &str) -> Result<Query, Problem> {
        parse_query(raw)
    }

    fn refusal(raw: &str) -> (u16, String, String) {
        let p = parse(raw).expect_err(raw);
        let pointer = p
            .errors
            .first()
            .map(|e| e.pointer.clone())
            .unwrap_or_default();
        let slug = p
            .kind
            .trim_start_matches(super::super::problem::PROBLEM_BASE);
        (p.status, slug.to_owned(), pointer)
    }

    #[test]
    fn api_paging_defaults_and_bounds() {
        let q = parse("").unwrap();
        assert_eq!(
            (q.page.limit, q.page.after, q.filter.channel),
            (100, None, None)
        );
        assert_eq!(parse("limit=1").unwrap().page.limit, 1);
        assert_eq!(parse("limit=500&channel=sms").unwrap().page.limit, 500);
        for bad in [
            "limit=0",
            "limit=501",
            "limit=abc",
            "limit=-1",
            "limit=",
            "limit=1.5",
        ] {
            assert_eq!(
                refusal(bad),
                (422, "validation".into(), "/limit".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn api_paging_refuses_unknown_repeated_and_bad_parameters() {
        let unknown = ("invalid-query".to_owned(), "/page".to_owned());
        let (status, slug, pointer) = refusal("page=2");
        assert_eq!((status, slug, pointer), (400, unknown.0, unknown.1));
        assert_eq!(refusal("limit=1&limit=2").0, 400);
        assert_eq!(refusal("channel=sms&channel=email").0, 400);
        assert_eq!(
            refusal("channel=pigeon"),
            (422, "validation".into(), "/channel".into())
        );
        assert_eq!(
            refusal("after=yesterday"),
            (422, "validation".into(), "/after".into())
        );
        // Only the hyphenated form of an id is a cursor.
        let id = MessageId::new().as_uuid().simple().to_string();
        assert_eq!(refusal(&format!("after={id}")).2, "/after");
    }

    #[test]
    fn api_paging_cursor_round_trips_and_only_a_full_page_has_a_next() {
        let id = MessageId::new();
        let q = parse(&format!("after={id}&limit=2")).unwrap();
        assert_eq!(q.page.after, Some(id));
        let ids = [MessageId::new(), MessageId::new()];
        assert_eq!(q.page.next_after(&ids, |m| *m), Some(ids[1].to_string()));
        assert_eq!(q.page.next_after(&ids[..1], |m| *m), None);
    }
}
