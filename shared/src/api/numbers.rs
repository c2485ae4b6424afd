//! The relay's numbers: `POST|GET /v1/numbers`, `GET|PATCH /v1/numbers/{number}`. A number
//! is one tenant's; another tenant's is a 404, as a missing one is.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::contacts::given;
use super::extract::{AuthTenant, Caller, JsonBody};
use super::paging::{Cursor, Flag, ListQuery};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::audit::AuditAction;
use crate::domain::relay::assignment::PickError;
use crate::domain::relay::health::NumberHealth;
use crate::domain::relay::number::{
    Capabilities, NumberRefusal, NumberRole, NumberState, TenantNumber, MAX_NOTE,
};
use crate::domain::{FieldError, PhoneNumber};
use crate::engine::relay_admin::{NumberChange, RelayError, StateChange};
use crate::engine::Herald;
use crate::ports::NumberWriteError;

/// An E.164 number, as paths and cursors take it.
pub const E164_PATTERN: &str = r"^\+[1-9][0-9]{7,14}$";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberInput {
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$", example = "+15550001000")]
    pub number: String,
    pub role: NumberRole,
    /// The gateway that carries it.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$", example = "twilio")]
    pub provider: String,
    /// SMS unless said otherwise.
    pub capabilities: Option<Capabilities>,
    /// A dedicated number's worker: their own number.
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub worker: Option<String>,
}

/// A field given replaces the stored one; `worker: null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberPatchInput {
    pub role: Option<NumberRole>,
    pub capabilities: Option<Capabilities>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub worker: Option<Option<String>>,
    /// `active`, `quarantined` (until `quarantined_until`, else for the cool-down) or
    /// `inactive`.
    #[schema(pattern = "^(active|quarantined|inactive)$")]
    pub state: Option<String>,
    pub quarantined_until: Option<DateTime<Utc>>,
    /// Take a number with active assignments out of service: they end now. Needs `reason`.
    #[serde(default)]
    pub force: bool,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NumberView {
    pub number: String,
    pub role: NumberRole,
    pub provider: String,
    pub capabilities: Capabilities,
    /// `active`, `quarantined` or `inactive`.
    pub state: String,
    pub quarantined_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The last 7 days: texts in and out, failures, carrier errors, opt-outs, and whether
    /// it is flagged (in `GET /v1/numbers/{number}`, and in lists asked `health=true` or
    /// `flagged=...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<NumberHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NumberPage {
    pub items: Vec<NumberView>,
    pub next_after: Option<String>,
}

/// `GET /v1/numbers`'s filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NumberFilter {
    pub role: Option<NumberRole>,
    pub state: Option<StateFilter>,
    /// Only the numbers over a health threshold (true) or under all (false).
    pub flagged: Option<Flag>,
    /// Show each number's health.
    pub health: Option<Flag>,
}

impl Cursor for PhoneNumber {
    fn pattern() -> String {
        E164_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<PhoneNumber> {
        raw.starts_with('+').then(|| PhoneNumber::parse(raw).ok())?
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

pub type NumberQuery = ListQuery<PhoneNumber, NumberFilter, 500>;

/// A number's state, as `GET /v1/numbers` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    Active,
    Quarantined,
    Inactive,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Active => "active",
            StateFilter::Quarantined => "quarantined",
            StateFilter::Inactive => "inactive",
        }
    }
}

pub(super) fn view(n: TenantNumber) -> NumberView {
    let until = match n.state {
        NumberState::Quarantined { until } => Some(until),
        _ => None,
    };
    NumberView {
        number: n.number.to_string(),
        role: n.role,
        provider: n.provider,
        capabilities: n.capabilities,
        state: n.state.as_str().to_owned(),
        quarantined_until: until,
        worker: n.worker.map(|w| w.to_string()),
        reason: n.reason,
        created_at: n.created_at,
        health: None,
    }
}

impl From<RelayError> for Problem {
    fn from(e: RelayError) -> Problem {
        let conflict = |slug: &str| Problem::new(StatusCode::CONFLICT, slug, e.to_string());
        match &e {
            RelayError::NotFound(what) => Problem::not_found(what),
            RelayError::Refused(NumberRefusal::LastFrontDesk(_)) => conflict("last-front-desk"),
            RelayError::Refused(NumberRefusal::HasAssignments { .. }) => conflict("number-in-use"),
            RelayError::Refused(NumberRefusal::NoWorker) => {
                Problem::invalid(FieldError::new("/worker", "required", e.to_string()))
            }
            RelayError::Pick(pick) => {
                let (slug, id) = match pick {
                    PickError::Conflict(id) => ("assignment-conflict", Some(id)),
                    PickError::Duplicate(id) => ("assignment-exists", Some(id)),
                    PickError::NoPoolNumber => ("no-pool-number", None),
                };
                let mut p = conflict(slug);
                p.conflicting = id.map(|id| id.to_string());
                p
            }
            RelayError::Invalid(f) => Problem::invalid(f.clone()),
            RelayError::Changed => conflict("changed"),
            RelayError::Store(s) => s.clone().into(),
        }
    }
}

/// A phone number field, or a 422 at `pointer`.
pub(super) fn phone(raw: &str, pointer: &str) -> Result<PhoneNumber, Problem> {
    PhoneNumber::parse(raw)
        .map_err(|e| Problem::invalid(FieldError::new(pointer, e.code(), e.to_string())))
}

fn number_path(path: Result<Path<String>, PathRejection>) -> Result<PhoneNumber, Problem> {
    path.ok()
        .and_then(|Path(raw)| {
            let raw = if raw.starts_with('+') {
                raw
            } else {
                format!("+{raw}")
            };
            PhoneNumber::parse(&raw).ok()
        })
        .ok_or_else(|| Problem::not_found("number"))
}

fn note(raw: Option<String>, pointer: &str) -> Result<Option<String>, Problem> {
    match raw {
        Some(r)
            if r.trim().is_empty()
                || r.chars().count() > MAX_NOTE
                || r.chars().any(char::is_control) =>
        {
            let detail = format!("1 to {MAX_NOTE} characters, no control characters");
            Err(Problem::invalid(FieldError::new(
                pointer, "invalid", detail,
            )))
        }
        other => Ok(other),
    }
}

/// Registers one of the tenant's numbers (bought outside Herald).
#[utoipa::path(post, operation_id = "add_number", path = "/v1/numbers", tag = "relay",
    request_body = NumberInput,
    responses((status = 201, body = NumberView), AuthErrors, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the number is registered already")),
    security(("api_key" = [])))]
pub async fn create(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<NumberInput>,
) -> Result<(StatusCode, Json<NumberView>), Problem> {
    let input = body.value;
    let number = phone(&input.number, "/number")?;
    if herald.configured_elsewhere(&caller.tenant, &number) {
        let detail = format!("{number} is registered already");
        return Err(Problem::new(StatusCode::CONFLICT, "number-taken", detail));
    }
    let provider_ok = (1..=64).contains(&input.provider.len())
        && input
            .provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !provider_ok {
        let detail = "1 to 64 of a-z, 0-9, '_' and '-'";
        return Err(Problem::invalid(FieldError::new(
            "/provider",
            "invalid",
            detail,
        )));
    }
    let worker = input
        .worker
        .as_deref()
        .map(|w| phone(w, "/worker"))
        .transpose()?;
    if input.role == NumberRole::Dedicated && worker.is_none() {
        let detail = "a dedicated number needs its worker";
        return Err(Problem::invalid(FieldError::new(
            "/worker", "required", detail,
        )));
    }
    let n = TenantNumber {
        number,
        tenant: caller.tenant.clone(),
        role: input.role,
        provider: input.provider,
        capabilities: input.capabilities.unwrap_or(Capabilities {
            sms: true,
            mms: false,
            whatsapp: false,
        }),
        state: NumberState::Active,
        worker,
        reason: None,
        created_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap_or_default(),
        version: 1,
    };
    match herald.relay.add_number(&n).await {
        Ok(()) => {}
        Err(NumberWriteError::Exists(_)) => {
            let detail = format!("{} is registered already", n.number);
            return Err(Problem::new(StatusCode::CONFLICT, "number-taken", detail));
        }
        Err(e) => return Err(RelayError::from(e).into()),
    }
    let entry = caller
        .entry(AuditAction::NumberAdded)
        .target(n.number.to_string());
    herald
        .record_audit(entry.detail(json!({ "role": n.role, "provider": n.provider })))
        .await;
    Ok((StatusCode::CREATED, Json(view(n))))
}

/// The tenant's numbers in number order.
#[utoipa::path(get, operation_id = "list_numbers", path = "/v1/numbers", tag = "relay",
    params(NumberQuery),
    responses((status = 200, body = NumberPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: NumberQuery,
) -> Result<Json<NumberPage>, Problem> {
    let found = herald
        .relay
        .numbers(&tenant, page.after.as_ref(), page.limit)
        .await?;
    let next_after = page.next_after(&found, |n| n.number.clone());
    let keep = |n: &TenantNumber| {
        filter.role.is_none_or(|r| r == n.role)
            && filter.state.is_none_or(|s| s.as_str() == n.state.as_str())
    };
    let mut items: Vec<NumberView> = found.into_iter().filter(keep).map(view).collect();
    if filter.flagged.is_some() || filter.health == Some(Flag::True) {
        let mut health = herald.number_health(&tenant, Utc::now()).await?;
        for item in &mut items {
            item.health = Some(health.remove(&item.number).unwrap_or_default());
        }
        if let Some(flagged) = filter.flagged.map(Flag::yes) {
            items.retain(|i| i.health.as_ref().is_some_and(|h| h.flagged == flagged));
        }
    }
    Ok(Json(NumberPage { items, next_after }))
}

#[utoipa::path(get, operation_id = "get_number", path = "/v1/numbers/{number}", tag = "relay",
    params(("number" = String, Path, pattern = r"^\+[1-9][0-9]{7,14}$")),
    responses((status = 200, body = NumberView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<NumberView>, Problem> {
    let number = number_path(path)?;
    let found = herald.relay.number(&tenant, &number).await?;
    let mut v = view(found.ok_or_else(|| Problem::not_found("number"))?);
    let mut health = herald.number_health(&tenant, Utc::now()).await?;
    v.health = Some(health.remove(&v.number).unwrap_or_default());
    Ok(Json(v))
}

/// Changes a number's role, capabilities, worker or state. The tenant's last active front
/// desk stays; a number with active assignments leaves service only with `force` and a
/// `reason` (its assignments end now).
#[utoipa::path(patch, operation_id = "update_number", path = "/v1/numbers/{number}", tag = "relay",
    request_body = NumberPatchInput,
    params(("number" = String, Path, pattern = r"^\+[1-9][0-9]{7,14}$")),
    responses((status = 200, body = NumberView), AuthErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "a guardrail holds")),
    security(("api_key" = [])))]
pub async fn update(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<NumberPatchInput>,
) -> Result<Json<NumberView>, Problem> {
    let number = number_path(path)?;
    let change = number_change(body.value)?;
    let (n, ended) = herald
        .change_number(&caller.tenant, &number, change, Utc::now())
        .await?;
    let ended: Vec<String> = ended.iter().map(|a| a.id.to_string()).collect();
    let detail = json!({ "state": n.state.as_str(), "role": n.role, "reason": n.reason, "ended_assignments": ended });
    let entry = caller
        .entry(AuditAction::NumberChanged)
        .target(n.number.to_string());
    herald.record_audit(entry.detail(detail)).await;
    Ok(Json(view(n)))
}

fn number_change(input: NumberPatchInput) -> Result<NumberChange, Problem> {
    let invalid =
        |pointer: &str, detail: &str| Problem::invalid(FieldError::new(pointer, "invalid", detail));
    let state = match (input.state.as_deref(), input.quarantined_until) {
        (None, None) => None,
        (Some("active"), None) => Some(StateChange::Active),
        (Some("inactive"), None) => Some(StateChange::Inactive),
        (Some("quarantined"), until) => {
            if until.is_some_and(|u| u <= Utc::now()) {
                return Err(invalid("/quarantined_until", "a time to come"));
            }
            Some(StateChange::Quarantined(until))
        }
        (Some("active" | "inactive"), Some(_)) | (None, Some(_)) => {
            return Err(invalid(
                "/quarantined_until",
                "only with state `quarantined`",
            ));
        }
        (Some(_), _) => return Err(invalid("/state", "active, quarantined or inactive")),
    };
    let reason = note(input.reason, "/reason")?;
    if input.force && reason.is_none() {
        return Err(invalid("/reason", "a forced change needs a reason"));
    }
    let worker = match input.worker {
        Some(Some(w)) => Some(Some(phone(&w, "/worker")?)),
        Some(None) => Some(None),
        None => None,
    };
    Ok(NumberChange {
        role: input.role,
        capabilities: input.capabilities,
        worker,
        state,
        force: input.force,
        reason,
    })
}
