//! Signing in to the console with an API key. The browser keeps only a random session id in an
//! HttpOnly, SameSite=Strict cookie (Secure over https); the server keeps the id's hash, the
//! tenant, the key's prefix and the expiry. The key itself is never stored or sent back.
//! Every form carries a CSRF token derived from the session id, which only the page knows.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{Duration, Utc};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::pages::{self, Page};
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::secret::constant_time_eq;
use crate::domain::suppression::Scope;
use crate::domain::{KeyScope, KeyScopes, TenantId};
use crate::engine::keys::{check_key, KeyCheck};
use crate::engine::Herald;
use crate::ports::ConsoleSession;

const SESSION_COOKIE: &str = "herald_console";
/// The sign-in form's own CSRF token, double-submitted (cookie and field) before a session exists.
const SIGN_IN_COOKIE: &str = "herald_console_sign_in";
const SESSION_HOURS: i64 = 8;
pub const SIGN_IN_PATH: &str = "/console/sign-in";

/// A browser signed in with a key that is still valid and may at least read.
pub struct SignedIn {
    pub tenant: TenantId,
    pub key_prefix: String,
    pub scopes: KeyScopes,
    /// The token every form of this session posts back.
    pub csrf: String,
    id_hash: String,
    client: Option<String>,
}

impl SignedIn {
    /// Whether the key may act (cancel, redrive, edit), not only look.
    pub fn may_act(&self) -> bool {
        self.scopes.allows(KeyScope::Admin)
    }

    /// An audit entry made now by the signed-in key, from the browser's address.
    pub fn entry(&self, action: AuditAction) -> AuditEntry {
        AuditEntry {
            client: self.client.clone(),
            ..AuditEntry::now(
                Scope::Tenant(self.tenant.clone()),
                Actor::Key(self.key_prefix.clone()),
                action,
            )
        }
    }

    /// Refuses a form post without this session's token.
    pub fn check_token(&self, token: &str) -> Result<(), Response> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            return Ok(());
        }
        Err(pages::error(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from the console. Reload the page and try again.",
        ))
    }

    /// Refuses a form post without this session's token, or from a key that may only read.
    pub fn check_action(&self, token: &str) -> Result<(), Response> {
        self.check_token(token)?;
        self.require_admin()
    }

    /// Refuses a key that may only read: acting, and the admin pages (audit log, webhooks).
    pub fn require_admin(&self) -> Result<(), Response> {
        if self.may_act() {
            return Ok(());
        }
        Err(pages::error(
            StatusCode::FORBIDDEN,
            "This needs a key with the admin scope: this one may read but not act.",
        ))
    }
}

impl FromRequestParts<Arc<Herald>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, herald: &Arc<Herald>) -> Result<Self, Response> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in());
        };
        let id_hash = digest("session", &id);
        let session = herald
            .sessions
            .find_session(&id_hash, Utc::now())
            .await
            .map_err(|_| pages::unavailable())?
            .ok_or_else(to_sign_in)?;
        let key = herald
            .tenants
            .find_key(&session.key_prefix)
            .await
            .map_err(|_| pages::unavailable())?;
        // A revoked key, or one that lost its read scope, ends its sessions.
        let Some(key) = key.filter(|k| {
            !k.revoked && k.tenant == session.tenant && k.scopes.allows(KeyScope::Read)
        }) else {
            let _ = herald.sessions.close_session(&id_hash).await;
            return Err(to_sign_in());
        };
        Ok(SignedIn {
            tenant: session.tenant,
            key_prefix: session.key_prefix,
            scopes: key.scopes,
            csrf: digest("csrf", &id),
            id_hash,
            client: client(parts),
        })
    }
}

fn client(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
}

fn to_sign_in() -> Response {
    Redirect::to(SIGN_IN_PATH).into_response()
}

/// Hex SHA-256 of a purpose and a secret: the stored form of a session id, or its CSRF token.
fn digest(purpose: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update(b":");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// 32 random bytes as hex: session ids, sign-in tokens, form nonces.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A cookie's value, if the request has it and it looks like one of ours (64 hex digits).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Secure only over https (directly, or as the proxy in front says), so that the embedded
/// server can be signed in to over plain http on a laptop.
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if https { "; Secure" } else { "" };
    let raw = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&raw).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /console/sign-in`: the form, with a fresh sign-in token.
pub async fn sign_in_page(headers: HeaderMap) -> Response {
    sign_in_form(&headers, StatusCode::OK, None)
}

fn sign_in_form(headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let token = random_token();
    let page = Page::new("sign_in.html", "Sign in").with(minijinja::context! {
        csrf => &token,
        problem => problem,
    });
    let mut response = pages::render_status(status, &page);
    let cookie = set_cookie(headers, SIGN_IN_COOKIE, &token, 3600);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
    csrf: String,
}

/// `POST /console/sign-in`: a valid key that may read opens a session.
pub async fn sign_in(
    State(herald): State<Arc<Herald>>,
    parts: Parts,
    Form(form): Form<SignInForm>,
) -> Response {
    let headers = &parts.headers;
    let expected = cookie(headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        return sign_in_form(
            headers,
            StatusCode::FORBIDDEN,
            Some("The form expired. Please sign in again."),
        );
    }
    let key = match verify_key(&herald, &parts, form.key.trim()).await {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = random_token();
    let session = ConsoleSession {
        tenant: key.0,
        key_prefix: key.1,
        expires_at: Utc::now() + Duration::hours(SESSION_HOURS),
    };
    if herald
        .sessions
        .open_session(&digest("session", &id), &session)
        .await
        .is_err()
    {
        return pages::unavailable();
    }
    let mut response = Redirect::to("/console").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(headers, SESSION_COOKIE, &id, SESSION_HOURS * 3600),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(headers, SIGN_IN_COOKIE, "", 0),
    );
    response
}

/// The key's tenant and prefix, or the sign-in form again (401; a wrong key is audited as the
/// API audits it).
async fn verify_key(
    herald: &Arc<Herald>,
    parts: &Parts,
    presented: &str,
) -> Result<(TenantId, String), Response> {
    let refuse = |why: &str| sign_in_form(&parts.headers, StatusCode::UNAUTHORIZED, Some(why));
    let check = check_key(herald.tenants.as_ref(), presented)
        .await
        .map_err(|_| pages::unavailable())?;
    match check {
        KeyCheck::Malformed => Err(refuse("That is not an API key.")),
        KeyCheck::Valid { stored, .. } if !stored.scopes.allows(KeyScope::Read) => {
            Err(refuse("This key has no read scope: the console needs one."))
        }
        KeyCheck::Valid { stored, prefix } => Ok((stored.tenant, prefix)),
        KeyCheck::Refused {
            scope,
            reason,
            prefix,
        } => {
            let entry = AuditEntry {
                client: client(parts),
                ..AuditEntry::now(scope, Actor::Anonymous, AuditAction::AccessDenied)
                    .target(SIGN_IN_PATH.to_owned())
                    .detail(serde_json::json!({ "reason": reason, "key_prefix": prefix }))
            };
            herald.audit_denial(entry).await;
            Err(refuse("That key is not valid."))
        }
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    pub csrf: String,
}

/// `POST /console/sign-out`: ends the session here and in the browser.
pub async fn sign_out(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if !constant_time_eq(form.csrf.as_bytes(), who.csrf.as_bytes()) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "This form did not come from the console.",
        );
    }
    if herald.sessions.close_session(&who.id_hash).await.is_err() {
        return pages::unavailable();
    }
    let mut response = Redirect::to(SIGN_IN_PATH).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_session_cookies_are_read() {
        let id = random_token();
        let mut headers = HeaderMap::new();
        let raw = format!("other=1; {SESSION_COOKIE}={id}; x=y");
        headers.insert(header::COOKIE, HeaderValue::from_str(&raw).unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some(id));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("herald_console=<script>"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }

    #[test]
    fn the_stored_hash_and_the_csrf_token_differ_from_the_id_and_each_other() {
        let id = random_token();
        let (stored, csrf) = (digest("session", &id), digest("csrf", &id));
        assert_ne!(stored, id);
        assert_ne!(csrf, id);
        assert_ne!(stored, csrf);
    }

    #[test]
    fn cookies_are_secure_behind_https_only() {
        let mut headers = HeaderMap::new();
        let plain = set_cookie(&headers, SESSION_COOKIE, "v", 60);
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(plain
            .to_str()
            .unwrap()
            .contains("HttpOnly; SameSite=Strict"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let secure = set_cookie(&headers, SESSION_COOKIE, "v", 60);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }
}
