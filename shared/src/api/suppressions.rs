//! The suppression list: `PUT|GET|DELETE /v1/suppressions/{channel}/{address}`, listing with
//! filters and paging, and CSV import and export. A tenant manages its own entries and can see
//! the global ones (hard bounces, dead tokens), which only Herald adds.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{body_problem, AuthTenant, JsonBody};
use super::problem::Problem;
use crate::domain::suppression::{canonical_address, Reason, Scope, Suppression};
use crate::domain::{Channel, FieldError};
use crate::engine::Herald;
use crate::ports::SuppressionFilter;

/// Largest CSV import.
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
const MAX_IMPORT_ROWS: usize = 100_000;

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

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedRow {
    /// 1-based line number in the CSV, the header being line 1.
    pub line: usize,
    pub reason: String,
}

/// Parses the `{channel}/{address}` of a path into the channel and the canonical address.
fn target(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Channel, String), Problem> {
    let Path((channel, address)) = path.map_err(|_| Problem::not_found("suppression"))?;
    parse_target(&channel, &address).map_err(Problem::invalid)
}

fn parse_target(channel: &str, address: &str) -> Result<(Channel, String), FieldError> {
    let channel = Channel::parse(channel).ok_or_else(|| {
        FieldError::new(
            "/channel",
            "invalid",
            format!("unknown channel {channel:?}"),
        )
    })?;
    let parsed = channel
        .parse_recipient(address)
        .map_err(|e| FieldError::new("/address", e.code(), e.to_string()))?;
    Ok((channel, canonical_address(channel, parsed.as_str())))
}

/// Add or replace an entry on this tenant's list.
#[utoipa::path(put, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path, description = "URL-encoded: + is %2B")),
    request_body = SuppressionInput,
    responses((status = 201, body = SuppressionView), (status = 200, body = SuppressionView), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<SuppressionInput>,
) -> Result<(StatusCode, Json<SuppressionView>), Problem> {
    let (channel, address) = target(path)?;
    let input = body.value;
    let entry = Suppression {
        scope: Scope::Tenant(tenant),
        channel,
        address,
        reason: input.reason.unwrap_or(Reason::Manual),
        source: Some("api".into()),
        created_at: Utc::now(),
        expires_at: input.expires_at,
    };
    let added = herald
        .suppressions
        .put_suppressions(vec![entry.clone()])
        .await?;
    let status = if added == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry.into())))
}

/// The entry that stops sends to this address: this tenant's, or a global one.
#[utoipa::path(get, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = SuppressionView), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<SuppressionView>, Problem> {
    let (channel, address) = target(path)?;
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
#[utoipa::path(delete, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let (channel, address) = target(path)?;
    if herald
        .suppressions
        .delete_suppression(&Scope::Tenant(tenant), channel, &address)
        .await?
    {
        return Ok(StatusCode::NO_CONTENT);
    }
    if herald
        .suppressions
        .get_suppression(&Scope::Global, channel, &address)
        .await?
        .is_some()
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "suppressed-globally",
            "the address is on the global list (a hard bounce or a dead token); it cannot be removed per tenant",
        ));
    }
    Err(Problem::not_found("suppression"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    channel: Option<String>,
    reason: Option<String>,
    /// `tenant` (default) or `global`.
    scope: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

fn query_error(pointer: &str, detail: impl Into<String>) -> Problem {
    Problem::invalid(FieldError::new(pointer, "invalid", detail))
}

/// One scope's entries, by channel then address, with filters and paging.
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions",
    params(("channel" = Option<String>, Query), ("reason" = Option<String>, Query),
           ("scope" = Option<String>, Query, description = "tenant (default) or global"),
           ("limit" = Option<usize>, Query, description = "1-1000, default 100"),
           ("after" = Option<String>, Query, description = "next_after of the previous page")),
    responses((status = 200, body = SuppressionPage), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SuppressionPage>, Problem> {
    let Query(q) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid-query", e.body_text()))?;
    let filter = SuppressionFilter {
        channel: q
            .channel
            .as_deref()
            .map(|c| Channel::parse(c).ok_or_else(|| query_error("/channel", "unknown channel")))
            .transpose()?,
        reason: q
            .reason
            .as_deref()
            .map(|r| Reason::parse(r).ok_or_else(|| query_error("/reason", "unknown reason")))
            .transpose()?,
    };
    let scope = match q.scope.as_deref() {
        None | Some("tenant") => Scope::Tenant(tenant),
        Some("global") => Scope::Global,
        Some(_) => return Err(query_error("/scope", "scope is `tenant` or `global`")),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(query_error("/limit", "limit must be 1-1000"));
    }
    let after = q
        .after
        .as_deref()
        .map(|a| {
            decode_cursor(a)
                .ok_or_else(|| query_error("/after", "pass next_after from the previous page"))
        })
        .transpose()?;
    let items = herald
        .suppressions
        .list_suppressions(&scope, &filter, after, limit)
        .await?;
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|s| encode_cursor(s.channel, &s.address)))
        .flatten();
    Ok(Json(SuppressionPage {
        items: items.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// A page cursor, URL-safe as it is (addresses hold `+` and `@`).
fn encode_cursor(channel: Channel, address: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{address}", channel.as_str()))
}

fn decode_cursor(cursor: &str) -> Option<(Channel, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (channel, address) = raw.split_once(':')?;
    Some((Channel::parse(channel)?, address.to_owned()))
}

/// Adds entries from CSV (header `channel,address`, optional `reason`, `expires_at`) to this
/// tenant's list. Bad rows are reported by line; the others are imported.
#[utoipa::path(post, path = "/v1/suppressions/import", tag = "suppressions",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem)), security(("api_key" = [])))]
pub async fn import(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, Problem> {
    let body = body.map_err(|rejection| {
        body_problem(
            &rejection,
            format!("an import is at most {MAX_IMPORT_BYTES} bytes"),
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
    let (entries, rejected) = parse_csv(&tenant, &body)?;
    let total = entries.len();
    let mut imported = 0;
    for chunk in entries.chunks(1000).map(<[Suppression]>::to_vec) {
        imported += herald.suppressions.put_suppressions(chunk).await?;
    }
    Ok(Json(ImportReport {
        imported,
        updated: total - imported,
        rejected,
    }))
}

fn parse_csv(
    tenant: &crate::domain::TenantId,
    body: &[u8],
) -> Result<(Vec<Suppression>, Vec<RejectedRow>), Problem> {
    let bad_csv = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "malformed-csv", detail);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| bad_csv(format!("the header row is not valid CSV: {e}")))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(c_channel), Some(c_address)) = (column("channel"), column("address")) else {
        return Err(bad_csv(
            "the header must name `channel` and `address` columns".into(),
        ));
    };
    let (c_reason, c_expires) = (column("reason"), column("expires_at"));
    let mut entries = Vec::new();
    let mut rejected = Vec::new();
    let now = Utc::now();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        if entries.len() + rejected.len() >= MAX_IMPORT_ROWS {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!("at most {MAX_IMPORT_ROWS} rows per import"),
            ));
        }
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                rejected.push(RejectedRow {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let cell = |c: Option<usize>| c.and_then(|c| row.get(c)).filter(|v| !v.is_empty());
        let parsed = parse_target(
            cell(Some(c_channel)).unwrap_or(""),
            cell(Some(c_address)).unwrap_or(""),
        )
        .map_err(|e| e.detail)
        .and_then(|(channel, address)| {
            let reason = match cell(c_reason) {
                None => Reason::Manual,
                Some(r) => Reason::parse(r).ok_or_else(|| format!("unknown reason {r:?}"))?,
            };
            let expires_at = cell(c_expires)
                .map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| format!("expires_at {t:?} is not an RFC 3339 time"))
                })
                .transpose()?;
            Ok(Suppression {
                scope: Scope::Tenant(tenant.clone()),
                channel,
                address,
                reason,
                source: Some("import".into()),
                created_at: now,
                expires_at,
            })
        });
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(reason) => rejected.push(RejectedRow { line, reason }),
        }
    }
    Ok((entries, rejected))
}

/// This tenant's list as CSV, in the import's format plus source and created_at.
#[utoipa::path(get, path = "/v1/suppressions/export", tag = "suppressions",
    responses((status = 200, content_type = "text/csv", body = String)), security(("api_key" = [])))]
pub async fn export(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Response, Problem> {
    let scope = Scope::Tenant(tenant);
    let mut out = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| Problem::unavailable(format!("csv: {e}"));
    out.write_record([
        "channel",
        "address",
        "reason",
        "expires_at",
        "source",
        "created_at",
    ])
    .map_err(write_error)?;
    let mut after = None;
    loop {
        let page = herald
            .suppressions
            .list_suppressions(&scope, &SuppressionFilter::default(), after.take(), 1000)
            .await?;
        for s in &page {
            out.write_record([
                s.channel.as_str(),
                &s.address,
                s.reason.as_str(),
                &s.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                s.source.as_deref().unwrap_or_default(),
                &s.created_at.to_rfc3339(),
            ])
            .map_err(write_error)?;
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some((last.channel, last.address.clone())),
            _ => break,
        }
    }
    let body = out
        .into_inner()
        .map_err(|e| Problem::unavailable(format!("csv: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}
