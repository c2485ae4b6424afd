//! `GET /v1/sender-identities`, `PUT|DELETE /v1/sender-identities/{identity}`: the `from`
//! values the caller's tenant may send as.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{AuthTenant, Caller};
use super::problem::{AuthErrors, NotFound, Problem};
use crate::domain::audit::AuditAction;
use crate::domain::{FieldError, SenderIdentity};
use crate::engine::Herald;

#[derive(Debug, Serialize, ToSchema)]
pub struct SenderIdentityView {
    /// `alerts@example.com`, `example.com`, `+15551234567` or `ACME`.
    pub identity: String,
    /// `email_address`, `email_domain`, `phone` or `sms_sender_id`.
    pub kind: String,
    /// `api` (managed here) or `config` (herald.toml, or a number the tenant receives on).
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SenderIdentityList {
    pub items: Vec<SenderIdentityView>,
}

fn view(identity: &SenderIdentity, source: &str) -> SenderIdentityView {
    SenderIdentityView {
        identity: identity.to_string(),
        kind: identity.kind().to_owned(),
        source: source.to_owned(),
    }
}

fn identity_of(path: Result<Path<String>, PathRejection>) -> Result<SenderIdentity, Problem> {
    let Path(raw) = path.map_err(|_| Problem::not_found("sender identity"))?;
    SenderIdentity::parse(&raw)
        .map_err(|e| Problem::invalid(FieldError::new("/identity", "invalid", e)))
}

/// The caller's sender identities: those set through the API and those from configuration.
#[utoipa::path(get, operation_id = "list_sender_identities", path = "/v1/sender-identities", tag = "senders",
    responses((status = 200, body = SenderIdentityList), AuthErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<SenderIdentityList>, Problem> {
    let mut items: Vec<SenderIdentityView> = herald
        .tenants
        .sender_identities(&tenant)
        .await?
        .iter()
        .map(|i| view(i, "api"))
        .collect();
    if let Some(configured) = herald.config.senders.get(&tenant) {
        items.extend(configured.iter().map(|i| view(i, "config")));
    }
    Ok(Json(SenderIdentityList { items }))
}

/// Allows the caller's tenant to send as `identity`.
#[utoipa::path(put, operation_id = "put_sender_identity", path = "/v1/sender-identities/{identity}", tag = "senders",
    params(("identity" = String, Path, description = "an email address, a domain, an E.164 number or an SMS sender id")),
    responses((status = 201, body = SenderIdentityView), (status = 200, body = SenderIdentityView),
              AuthErrors, NotFound,
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<SenderIdentityView>), Problem> {
    let identity = identity_of(path)?;
    let created = herald
        .tenants
        .add_sender_identity(&caller.tenant, &identity)
        .await?;
    let entry = caller
        .entry(AuditAction::SenderIdentityPut)
        .target(identity.as_str())
        .detail(serde_json::json!({ "created": created }));
    herald.record_audit(entry).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&identity, "api"))))
}

/// Stops the caller's tenant from sending as `identity` (configured identities stay).
#[utoipa::path(delete, operation_id = "delete_sender_identity", path = "/v1/sender-identities/{identity}", tag = "senders",
    params(("identity" = String, Path)),
    responses((status = 204), AuthErrors, NotFound,
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let identity = identity_of(path)?;
    if herald
        .tenants
        .remove_sender_identity(&caller.tenant, &identity)
        .await?
    {
        let entry = caller
            .entry(AuditAction::SenderIdentityDeleted)
            .target(identity.as_str());
        herald.record_audit(entry).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("sender identity"))
    }
}
