//! Extractors that turn raw requests into parsed values or problems: the tenant behind a
//! bearer key, and JSON bodies with JSON-pointer errors.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::request_id::RequestId;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::suppression::Scope;
use crate::domain::{FieldError, KeyScopes, TenantId};
use crate::engine::keys::{check_key, KeyCheck};
use crate::engine::{Herald, IdempotencyInput};

/// The tenant that owns the presented API key.
pub struct AuthTenant(pub TenantId);

impl FromRequestParts<Arc<Herald>> for AuthTenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, herald: &Arc<Herald>) -> Result<Self, Problem> {
        Caller::from_request_parts(parts, herald)
            .await
            .map(|caller| AuthTenant(caller.tenant))
    }
}

/// The caller behind a valid API key, as the audit log names it: its tenant, the key's prefix,
/// its address and the request's id. A presented key that is not valid is refused (401) and
/// recorded: in its tenant's log when its prefix names a key, else in the platform's.
pub struct Caller {
    pub tenant: TenantId,
    key_prefix: String,
    client: Option<String>,
    request_id: Option<String>,
}

impl Caller {
    /// Who the caller is, as the audit log names it: `key:<prefix>`.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_prefix)
    }

    /// An entry in the caller's tenant's log, made now by the caller.
    pub fn entry(&self, action: AuditAction) -> AuditEntry {
        AuditEntry {
            client: self.client.clone(),
            request_id: self.request_id.clone(),
            ..AuditEntry::now(
                Scope::Tenant(self.tenant.clone()),
                Actor::Key(self.key_prefix.clone()),
                action,
            )
        }
    }
}

impl FromRequestParts<Arc<Herald>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, herald: &Arc<Herald>) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("missing Authorization: Bearer <api key>"))?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Problem::unauthorized("Authorization must be `Bearer <api key>`"))?;
        let (client, request_id) = origin(parts);
        match check_key(herald.tenants.as_ref(), presented).await? {
            KeyCheck::Valid { stored, prefix } => {
                let caller = Caller {
                    tenant: stored.tenant,
                    key_prefix: prefix,
                    client,
                    request_id,
                };
                caller.check_scope(parts, stored.scopes, herald).await?;
                Ok(caller)
            }
            KeyCheck::Malformed => {
                // Only counted: a malformed key names no tenant, and recording it would let
                // anyone write to the log.
                metrics::counter!(crate::telemetry::ACCESS_DENIED).increment(1);
                Err(Problem::unauthorized("invalid API key"))
            }
            KeyCheck::Refused {
                scope,
                reason,
                prefix,
            } => {
                // Whoever presented it is not the key's holder: anonymous, the prefix in detail.
                let entry = AuditEntry {
                    client,
                    request_id,
                    ..AuditEntry::now(scope, Actor::Anonymous, AuditAction::AccessDenied)
                        .target(parts.uri.path().chars().take(200).collect::<String>())
                        .detail(serde_json::json!({ "reason": reason, "key_prefix": prefix }))
                };
                herald.audit_denial(entry).await;
                Err(Problem::unauthorized("invalid API key"))
            }
        }
    }
}

impl Caller {
    /// Refuses (403, recorded) a request the key's scopes do not cover.
    async fn check_scope(
        &self,
        parts: &Parts,
        scopes: KeyScopes,
        herald: &Herald,
    ) -> Result<(), Problem> {
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(parts.uri.path(), MatchedPath::as_str);
        let needed = super::scopes::required(&parts.method, route);
        if scopes.allows(needed) {
            return Ok(());
        }
        let entry = self
            .entry(AuditAction::AccessDenied)
            .target(parts.uri.path().chars().take(200).collect::<String>())
            .detail(serde_json::json!({
                "reason": "scope", "needed": needed.as_str(), "key_scopes": scopes.to_string(),
            }));
        herald.audit_denial(entry).await;
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key may {scopes} but {} {route} needs the `{}` scope",
                parts.method,
                needed.as_str()
            ),
        ))
    }
}

/// Where a request came from: the peer's IP address, and the request's id.
fn origin(parts: &Parts) -> (Option<String>, Option<String>) {
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string());
    let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
    (client, request_id)
}

/// A JSON body parsed into `T`, with the raw bytes kept for the idempotency hash.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        require_json(req.headers())?;
        let raw = read_body(req, state).await?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// A JSON body that may be left out: an empty body, or `null`, reads as `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers().clone();
        let raw = read_body(req, state).await?;
        if raw.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        require_json(&headers)?;
        let value: Option<T> = parse_json(&raw)?;
        Ok(OptionalJsonBody(value.unwrap_or_default()))
    }
}

/// A body must say it is JSON (`application/json` or `application/*+json`).
fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as Content-Type: application/json",
        ))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| body_problem(&rejection, "the request body is too large"))
}

/// A body that could not be read: over the route's limit (413, with `too_large` as detail) or
/// broken off (400).
pub fn body_problem(rejection: &BytesRejection, too_large: impl Into<String>) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            too_large,
        )
    } else {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            rejection.body_text(),
        )
    }
}

/// Parses JSON; malformed JSON and unknown fields are 400s, wrong values 422s with a pointer.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    if parsed.is_ok() {
        // Trailing bytes after the value make the document malformed.
        de.end().map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
    }
    // Every body is an object: serde would otherwise fill a struct's fields from an array, by
    // position.
    let array = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if array && (parsed.is_ok() || is_well_formed(raw)) {
        return Err(Problem::invalid(FieldError::new(
            "",
            "invalid_type",
            "the body must be a JSON object",
        )));
    }
    parsed.map_err(|err| {
        let pointer = pointer_of(err.path());
        let inner = err.inner();
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        match inner.classify() {
            serde_json::error::Category::Data if message.starts_with("unknown field") => {
                let field = between_backticks(&message).unwrap_or_default();
                // The path already ends at the unknown key.
                let pointer = if pointer.ends_with(&join("", &field)) {
                    pointer
                } else {
                    join(&pointer, &field)
                };
                Problem::field(
                    StatusCode::BAD_REQUEST,
                    "unknown-field",
                    FieldError::new(pointer, "unknown_field", message),
                )
            }
            serde_json::error::Category::Data => {
                let pointer = match message.strip_prefix("missing field ") {
                    Some(_) => join(&pointer, &between_backticks(&message).unwrap_or_default()),
                    None => pointer,
                };
                Problem::invalid(FieldError::new(pointer, "invalid", message))
            }
            // serde_json reports some wrong types as syntax errors (a number or null where an
            // enum is expected: "expected value"); in a well-formed document they are 422s.
            _ if is_well_formed(raw) => Problem::invalid(FieldError::new(
                pointer.clone(),
                "invalid",
                format!("the value at `{pointer}` has the wrong type"),
            )),
            _ => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("the body is not valid JSON: {message}"),
            ),
        }
    })
}

/// Whether `raw` is one valid JSON document, whatever its shape. (`IgnoredAny` would skip UTF-8
/// checks and the nesting limit; `Value` keeps them.)
fn is_well_formed(raw: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(raw).is_ok()
}

fn between_backticks(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let end = start + s[start..].find('`')?;
    Some(s[start..end].to_owned())
}

fn join(base: &str, field: &str) -> String {
    format!("{base}/{}", field.replace('~', "~0").replace('/', "~1"))
}

pub(crate) fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out = join(&out, key),
            Segment::Enum { variant } => out = join(&out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

/// `Idempotency-Key`, with the request hash that must match on replay.
pub fn idempotency(
    headers: &HeaderMap,
    path: &str,
    raw: &[u8],
) -> Result<Option<IdempotencyInput>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })?;
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(raw);
    Ok(Some(IdempotencyInput {
        key: key.to_owned(),
        request_hash: hex::encode(hasher.finalize()),
    }))
}

/// The caller's correlation id (`X-Correlation-Id`; the request id when the caller sent none,
/// see `request_id`), or a new one.
pub fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(&super::request_id::CORRELATION_ID)
        .and_then(super::request_id::usable_id)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}
