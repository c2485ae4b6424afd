//! The relay's routing seen from outside: `POST /v1/routing/simulate` (a decision and its
//! trace for a sample text, with nothing written), `GET|PUT /v1/relay-settings`, and
//! `GET /v1/policy/violations` (the contact-sharing violations, from the audit log).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthTenant, Caller, JsonBody};
use super::numbers::phone;
use super::paging::ListQuery;
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::audit::{AuditAction, AuditId};
use crate::domain::relay::routing::{Route, TraceStep};
use crate::domain::relay::settings::RelaySettings;
use crate::domain::relay::sharing::{SharedKind, SharingAction};
use crate::domain::suppression::Scope;
use crate::domain::FieldError;
use crate::engine::Herald;
use crate::ports::AuditFilter;

/// The longest sample body, in characters.
const MAX_SAMPLE: usize = 1600;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateInput {
    /// One of the tenant's relay numbers.
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub to: String,
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub from: String,
    /// When it arrives; now if left out.
    pub at: Option<DateTime<Utc>>,
    #[schema(max_length = 1600)]
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SharingView {
    pub kinds: Vec<SharedKind>,
    pub action: SharingAction,
    /// What the other party would get; none when the text would be blocked.
    pub body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimulationView {
    /// `{"action": "relay" | "worker" | "front_desk" | "opt_out", ...}`.
    #[schema(value_type = Object)]
    pub route: Route,
    /// Every step evaluated, in order: its inputs, and why it matched or not.
    #[schema(value_type = Vec<Object>)]
    pub trace: Vec<TraceStep>,
    /// For a relayed text: the contact details it shares and what the policy would do.
    pub sharing: Option<SharingView>,
}

/// What the routing engine would decide for a text, and why; nothing is sent or written.
#[utoipa::path(post, operation_id = "simulate_routing", path = "/v1/routing/simulate", tag = "relay",
    request_body = SimulateInput,
    responses((status = 200, body = SimulationView), AuthErrors, NotFound, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn simulate(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    body: JsonBody<SimulateInput>,
) -> Result<Json<SimulationView>, Problem> {
    let input = body.value;
    let (to, from) = (phone(&input.to, "/to")?, phone(&input.from, "/from")?);
    if input.body.chars().count() > MAX_SAMPLE {
        let detail = format!("at most {MAX_SAMPLE} characters");
        return Err(Problem::invalid(FieldError::new(
            "/body", "too_long", detail,
        )));
    }
    let at = input.at.unwrap_or_else(Utc::now);
    let simulation = herald
        .simulate_route(&tenant, (&to, &from), at, &input.body)
        .await?
        .ok_or_else(|| Problem::not_found("number"))?;
    let sharing = simulation.relayed.and_then(|relayed| {
        relayed.sharing.map(|s| SharingView {
            kinds: s.kinds,
            action: s.action,
            body: relayed.body,
        })
    });
    Ok(Json(SimulationView {
        route: simulation.decision.route,
        trace: simulation.decision.trace,
        sharing,
    }))
}

/// The tenant's relay settings.
#[utoipa::path(get, operation_id = "get_relay_settings", path = "/v1/relay-settings", tag = "relay",
    responses((status = 200, body = RelaySettings), AuthErrors), security(("api_key" = [])))]
pub async fn get_settings(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Json<RelaySettings>, Problem> {
    Ok(Json(herald.rules.relay_settings(&tenant).await?))
}

/// Replaces the tenant's relay settings.
#[utoipa::path(put, operation_id = "put_relay_settings", path = "/v1/relay-settings", tag = "relay",
    request_body = RelaySettings,
    responses((status = 200, body = RelaySettings), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn put_settings(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<RelaySettings>,
) -> Result<Json<RelaySettings>, Problem> {
    let settings = body.value;
    settings.check().map_err(Problem::invalid)?;
    herald
        .rules
        .put_relay_settings(&caller.tenant, &settings)
        .await?;
    let detail = serde_json::to_value(settings.sharing).unwrap_or_default();
    herald
        .record_audit(caller.entry(AuditAction::RelaySettingsPut).detail(detail))
        .await;
    Ok(Json(settings))
}

/// `GET /v1/policy/violations`'s filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViolationFilter {
    /// The assignment the text was relayed in.
    #[param(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub assignment_id: Option<String>,
    /// At or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Before.
    pub created_before: Option<DateTime<Utc>>,
}

pub type ViolationQuery = ListQuery<AuditId, ViolationFilter, 500>;

#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationView {
    pub id: String,
    pub at: DateTime<Utc>,
    /// The inbound message, the assignment, the sender's role and numbers, the kinds of
    /// contact detail found and the action taken.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationPage {
    pub items: Vec<ViolationView>,
    /// Pass as `after` for the next (older) page; a page may be short and still have one.
    pub next_after: Option<String>,
}

/// The tenant's contact-sharing violations, newest first.
#[utoipa::path(get, operation_id = "list_violations", path = "/v1/policy/violations", tag = "relay",
    params(ViolationQuery),
    responses((status = 200, body = ViolationPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn violations(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: ViolationQuery,
) -> Result<Json<ViolationPage>, Problem> {
    let target = match filter.assignment_id {
        Some(raw) => Some(
            crate::domain::relay::assignment::AssignmentId::parse(&raw)
                .ok_or_else(|| {
                    Problem::invalid(FieldError::new(
                        "assignment_id",
                        "invalid",
                        "an assignment id",
                    ))
                })?
                .to_string(),
        ),
        None => None,
    };
    let audit = AuditFilter {
        action: Some(AuditAction::PolicyViolation),
        actor: None,
        target,
        after: filter.created_after,
        before: filter.created_before,
    };
    let found = herald
        .audit
        .audit_page(&Scope::Tenant(tenant), &audit, page.after, page.limit)
        .await?;
    let items = found
        .items
        .into_iter()
        .map(|e| ViolationView {
            id: e.id.to_string(),
            at: e.at,
            detail: e.detail,
        })
        .collect();
    Ok(Json(ViolationPage {
        items,
        next_after: found
            .resume_below
            .map(|id| super::paging::Cursor::encode(&id)),
    }))
}
