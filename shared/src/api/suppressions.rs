//! The suppression list: `PUT|GET|DELETE /v1/suppressions/{channel}/{address}`, listing with
//! filters and paging, and CSV import and export. A tenant manages its own entries and can see
//! the global ones (hard bounces, dead tokens), which only Herald adds.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{body_problem, AuthTenant, Caller, JsonBody};
use super::paging::{Cursor, ListQuery};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use super::ExportLimit;
use crate::domain::audit::AuditAction;
use crate::domain::suppression::entry_address;
use crate::domain::suppression::{Reason, Scope, Suppression};
use crate::domain::suppression_csv::{parse_import, CsvError, RejectedRow};
use crate::domain::Channel;
use crate::engine::suppress_by_hand::Unsuppressed;
use crate::engine::Herald;
use crate::ports::SuppressionFilter;

/// Largest CSV import.
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    pub channel: Channel,
    pub address: String,
    pub reason: Reason,
    /// `global`, or the tenant's name.
    pub scope: String,
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> SuppressionView {
        // A global entry may have come from another tenant's message: its source (a provider's
        // event or message id) is that tenant's business, so only the provider is shown.
        let source = match s.scope {
            Scope::Global => s.source.map(|src| provider_of(&src)),
            Scope::Tenant(_) => s.source,
        };
        SuppressionView {
            channel: s.channel,
            scope: s.scope.label().to_owned(),
            address: s.address,
            reason: s.reason,
            source,
            created_at: s.created_at,
            expires_at: s.expires_at,
        }
    }
}

/// `ses:0100018f...` -> `ses`; a source with no provider part is named by its kind only.
fn provider_of(source: &str) -> String {
    match source.split_once(':') {
        Some((provider, _)) => provider.to_owned(),
        None if matches!(source, "api" | "import" | "cli") => source.to_owned(),
        None => "provider".to_owned(),
    }
}

/// `PUT /v1/suppressions/{channel}/{address}`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "unsubscribe"}))]
pub struct SuppressionInput {
    /// Default `manual`.
    pub reason: Option<Reason>,
    /// The entry stops applying then.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionPage {
    pub items: Vec<SuppressionView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    /// Entries that were not on the list before.
    pub imported: usize,
    /// Entries that replaced one already there.
    pub updated: usize,
    pub rejected: Vec<RejectedRow>,
}

/// Parses the `{channel}/{address}` of a path into the channel and the canonical address; a
/// malformed one is a 422.
fn target(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Channel, String), Problem> {
    let Path((channel, address)) = path.map_err(|_| Problem::not_found("suppression"))?;
    entry_address(&channel, &address).map_err(Problem::invalid)
}

/// The `{channel}/{address}` of an entry that may exist: none has a malformed one, so that is a
/// 404.
fn existing_target(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Channel, String), Problem> {
    target(path).map_err(|_| Problem::not_found("suppression"))
}

/// Add or replace an entry on this tenant's list.
#[utoipa::path(put, operation_id = "put_suppression", path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = Channel, Path, example = "email"),
           ("address" = String, Path, example = "ann@example.com", description = "URL-encoded: + is %2B")),
    request_body = SuppressionInput,
    responses((status = 201, body = SuppressionView), (status = 200, body = SuppressionView), AuthErrors, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<SuppressionInput>,
) -> Result<(StatusCode, Json<SuppressionView>), Problem> {
    let (channel, address) = target(path)?;
    let input = body.value;
    let entry = Suppression {
        scope: Scope::Tenant(caller.tenant.clone()),
        channel,
        address,
        reason: input.reason.unwrap_or(Reason::Manual),
        source: Some("api".into()),
        created_at: Utc::now(),
        expires_at: input.expires_at,
    };
    let added = herald
        .suppress_by_hand(
            &caller.tenant,
            &entry,
            caller.entry(AuditAction::SuppressionAdded),
        )
        .await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry.into())))
}

/// The entry that stops sends to this address: this tenant's, or a global one.
#[utoipa::path(get, operation_id = "get_suppression", path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = Channel, Path), ("address" = String, Path)),
    responses((status = 200, body = SuppressionView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<SuppressionView>, Problem> {
    let (channel, address) = existing_target(path)?;
    for scope in [Scope::Tenant(tenant), Scope::Global] {
        if let Some(entry) = herald
            .suppressions
            .get_suppression(&scope, channel, &address)
            .await?
        {
            return Ok(Json(entry.into()));
        }
    }
    Err(Problem::not_found("suppression"))
}

/// Remove this tenant's entry. A global entry is Herald's (a dead mailbox or token) and stays.
#[utoipa::path(delete, operation_id = "delete_suppression", path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = Channel, Path), ("address" = String, Path)),
    responses((status = 204), AuthErrors, NotFound,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the address is on the global list")),
    security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let (channel, address) = existing_target(path)?;
    let audit = caller.entry(AuditAction::SuppressionRemoved);
    match herald
        .unsuppress_by_hand(&caller.tenant, channel, &address, audit)
        .await?
    {
        Unsuppressed::Removed => Ok(StatusCode::NO_CONTENT),
        Unsuppressed::OnlyGlobal => Err(Problem::new(
            StatusCode::CONFLICT,
            "suppressed-globally",
            "the address is on the global list (a hard bounce or a dead token); it cannot be removed per tenant",
        )),
        Unsuppressed::NotFound => Err(Problem::not_found("suppression")),
    }
}

/// `GET /v1/suppressions`'s filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuppressionFilters {
    channel: Option<Channel>,
    reason: Option<Reason>,
    /// Whose entries: this tenant's (default) or the global list.
    #[param(inline)]
    scope: Option<ScopeParam>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeParam {
    Tenant,
    Global,
}

/// `GET /v1/suppressions`'s query: filters, pages of up to 1,000.
pub type SuppressionQuery = ListQuery<EntryCursor, SuppressionFilters, 1000>;

/// One scope's entries, by channel then address, with filters and paging.
#[utoipa::path(get, operation_id = "list_suppressions", path = "/v1/suppressions", tag = "suppressions", params(SuppressionQuery),
    responses((status = 200, body = SuppressionPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: SuppressionQuery,
) -> Result<Json<SuppressionPage>, Problem> {
    let scope = match filter.scope {
        None | Some(ScopeParam::Tenant) => Scope::Tenant(tenant),
        Some(ScopeParam::Global) => Scope::Global,
    };
    let filter = SuppressionFilter {
        channel: filter.channel,
        reason: filter.reason,
    };
    let Some(after) = resume_within(page.after.as_ref(), filter.channel) else {
        return Ok(Json(SuppressionPage {
            items: Vec::new(),
            next_after: None,
        }));
    };
    let items = herald
        .suppressions
        .list_suppressions(&scope, &filter, after, page.limit)
        .await?;
    let next_after = page.next_after(&items, |s| EntryCursor(s.channel, s.address.clone()));
    Ok(Json(SuppressionPage {
        items: items.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Where a list filtered to `channel` resumes: a cursor of an earlier channel starts it from
/// the top, one of a later channel leaves nothing (`None`). DynamoDB refuses a start key outside
/// the key condition, so neither reaches a store.
fn resume_within(
    after: Option<&EntryCursor>,
    channel: Option<Channel>,
) -> Option<Option<(Channel, String)>> {
    match (after, channel) {
        // Stores order entries by the channel's name.
        (Some(EntryCursor(c, _)), Some(wanted)) if c.as_str() < wanted.as_str() => Some(None),
        (Some(EntryCursor(c, _)), Some(wanted)) if c.as_str() > wanted.as_str() => None,
        (after, _) => Some(after.map(|EntryCursor(c, a)| (*c, a.clone()))),
    }
}

/// A position in the suppression list: an entry's channel and address, as
/// `{channel}.{address in unpadded base64url}` (URL-safe as it is; addresses hold `+` and `@`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCursor(Channel, String);

/// Reads any base64url text, so that every string of the cursor's pattern is a position.
const CURSOR_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

impl Cursor for EntryCursor {
    fn pattern() -> String {
        let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        format!(
            "^({})\\.([A-Za-z0-9_-]{{4}})*[A-Za-z0-9_-]{{2,4}}$",
            channels.join("|")
        )
    }

    fn decode(raw: &str) -> Option<EntryCursor> {
        let (channel, address) = raw.split_once('.')?;
        let address = CURSOR_BASE64.decode(address).ok()?;
        if address.is_empty() {
            return None;
        }
        // A position needs no real address: whatever it decodes to sorts somewhere.
        let address = String::from_utf8_lossy(&address).into_owned();
        Some(EntryCursor(Channel::parse(channel)?, address))
    }

    fn encode(&self) -> String {
        format!("{}.{}", self.0.as_str(), CURSOR_BASE64.encode(&self.1))
    }
}

/// Adds entries from CSV (header `channel,address`, optional `reason`, `expires_at`) to this
/// tenant's list. Bad rows are reported by line; the others are imported.
#[utoipa::path(post, operation_id = "import_suppressions", path = "/v1/suppressions/import", tag = "suppressions",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), AuthErrors,
        (status = 400, body = Problem, content_type = "application/problem+json", description = "the header row is not CSV or lacks `channel` and `address`"),
        (status = 413, body = Problem, content_type = "application/problem+json", description = "over 16 MiB or 100,000 rows"),
        (status = 415, body = Problem, content_type = "application/problem+json", description = "not sent as text/csv")),
    security(("api_key" = [])))]
pub async fn import(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, Problem> {
    let body = body.map_err(|rejection| {
        body_problem(
            &rejection,
            "the import is larger than this server takes in one request (16 MB embedded, 5 MB \
             on AWS Lambda): split it",
        )
    })?;
    let csv_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"));
    if !csv_type {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the list as Content-Type: text/csv",
        ));
    }
    let (entries, rejected) =
        parse_import(&caller.tenant, &body, "import").map_err(|e| match e {
            CsvError::Malformed(detail) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-csv", detail)
            }
            CsvError::TooManyRows => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                e.to_string(),
            ),
        })?;
    let audit = caller.entry(AuditAction::SuppressionsImported);
    let counts = herald
        .import_suppressions(entries, rejected.len(), audit)
        .await?;
    Ok(Json(ImportReport {
        imported: counts.imported,
        updated: counts.updated,
        rejected,
    }))
}

/// This tenant's list as CSV, in the import's format plus source and created_at.
#[utoipa::path(get, operation_id = "export_suppressions", path = "/v1/suppressions/export", tag = "suppressions",
    responses((status = 200, content_type = "text/csv", body = String), AuthErrors,
        (status = 422, body = Problem, content_type = "application/problem+json", description = "on AWS Lambda, over 5 MB: read GET /v1/suppressions page by page")),
    security(("api_key" = [])))]
pub async fn export(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    Extension(ExportLimit(cap)): Extension<ExportLimit>,
) -> Result<Response, Problem> {
    let Some(body) = herald.export_suppressions(&tenant, cap).await? else {
        let narrow = "read GET /v1/suppressions page by page";
        return Err(Problem::export_too_large(cap.unwrap_or_default(), narrow));
    };
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn api_suppression_cursor_round_trips_and_reads_any_string_of_its_pattern() {
        let c = EntryCursor(Channel::Sms, "+15005550006".into());
        let encoded = c.encode();
        assert!(encoded.starts_with("sms."), "{encoded}");
        assert!(!encoded.contains(['+', '@', '/', '=']), "{encoded}");
        assert_eq!(EntryCursor::decode(&encoded), Some(c));
        let mail = EntryCursor(Channel::Email, "ann+x@example.com".into());
        assert_eq!(EntryCursor::decode(&mail.encode()), Some(mail));
        // Trailing bits and bytes that are not UTF-8 still name a position.
        for any in ["email.AB", "push._-_-", "telegram.zzzz99"] {
            assert!(EntryCursor::decode(any).is_some(), "{any}");
        }
        for bad in ["garbage", "email.", "email.A", "pigeon.AAAA", "email.AA=="] {
            assert_eq!(EntryCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn api_suppression_cursor_of_another_channel_restarts_or_ends_a_filtered_list() {
        let at = |c| EntryCursor(c, "x".into());
        let sms = Some(Channel::Sms);
        assert_eq!(resume_within(Some(&at(Channel::Email)), sms), Some(None));
        assert_eq!(resume_within(Some(&at(Channel::Whatsapp)), sms), None);
        assert_eq!(
            resume_within(Some(&at(Channel::Sms)), sms),
            Some(Some((Channel::Sms, "x".into())))
        );
        assert_eq!(resume_within(None, sms), Some(None));
    }
}
