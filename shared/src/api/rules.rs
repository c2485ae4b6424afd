//! Inbound rules: `GET|PUT /v1/inbound-rules` (the whole ordered set, replaced at once) and
//! `POST /v1/inbound-rules/test`, which says what the rules (saved, or given) would decide for
//! a sample message, with nothing done; `GET|PUT /v1/thread-policy`, how messages are
//! threaded.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Caller, JsonBody};
use super::problem::{AuthErrors, JsonBodyErrors, Problem};
use crate::domain::audit::AuditAction;
use crate::domain::inbound::Arrival;
use crate::domain::rules::{Decision, RuleSet};
use crate::domain::thread::{Insights, Thread};
use crate::domain::thread_policy::ThreadPolicy;
use crate::domain::{Channel, ContactId, FieldError, InboundMessage, Keyword};
use crate::engine::Herald;

/// The longest sample body, in characters.
const MAX_SAMPLE_BODY: usize = 65536;
/// The longest sample address.
const MAX_ADDRESS: usize = 320;

/// The tenant's rules, in the order they are tried.
#[utoipa::path(get, operation_id = "get_inbound_rules", path = "/v1/inbound-rules", tag = "inbound",
    responses((status = 200, body = RuleSet), AuthErrors), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<RuleSet>, Problem> {
    Ok(Json(herald.rules.inbound_rules(&caller.tenant).await?))
}

/// Replaces the tenant's rules.
#[utoipa::path(put, operation_id = "put_inbound_rules", path = "/v1/inbound-rules", tag = "inbound",
    request_body = RuleSet,
    responses((status = 200, body = RuleSet), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<RuleSet>,
) -> Result<Json<RuleSet>, Problem> {
    let rules = body.value;
    rules.check().map_err(Problem::invalid)?;
    herald
        .rules
        .put_inbound_rules(&caller.tenant, &rules)
        .await?;
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    let entry = caller
        .entry(AuditAction::InboundRulesPut)
        .detail(serde_json::json!({ "rules": names }));
    herald.record_audit(entry).await;
    Ok(Json(rules))
}

/// How the tenant's messages are threaded.
#[utoipa::path(get, operation_id = "get_thread_policy", path = "/v1/thread-policy", tag = "threads",
    responses((status = 200, body = ThreadPolicy), AuthErrors), security(("api_key" = [])))]
pub async fn get_thread_policy(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
) -> Result<Json<ThreadPolicy>, Problem> {
    Ok(Json(herald.rules.thread_policy(&caller.tenant).await?))
}

/// Replaces the tenant's thread policy. Threads already open keep their messages; messages
/// from now on find their thread by it.
#[utoipa::path(put, operation_id = "put_thread_policy", path = "/v1/thread-policy", tag = "threads",
    request_body = ThreadPolicy,
    responses((status = 200, body = ThreadPolicy), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn put_thread_policy(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<ThreadPolicy>,
) -> Result<Json<ThreadPolicy>, Problem> {
    let policy = body.value;
    policy.check().map_err(Problem::invalid)?;
    herald
        .set_thread_policy(&caller.tenant, policy.clone())
        .await?;
    let detail = serde_json::to_value(&policy).unwrap_or_default();
    herald
        .record_audit(caller.entry(AuditAction::ThreadPolicyPut).detail(detail))
        .await;
    Ok(Json(policy))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTestInput {
    pub message: SampleMessage,
    /// Rules to try instead of the saved ones (checked as `PUT` checks them).
    pub rules: Option<RuleSet>,
    /// The label the sender's thread has, for rules that match on labels.
    #[schema(min_length = 1, max_length = 200)]
    pub thread_label: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleMessage {
    pub channel: Channel,
    #[schema(max_length = 65536)]
    pub body: String,
    #[schema(max_length = 320)]
    pub from: Option<String>,
    #[schema(max_length = 320)]
    pub to: Option<String>,
    /// When it arrives, for business hours; now if left out.
    pub received_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleTestOutcome {
    /// `keyword`, `rule` or `no_rule`; each action of the rule is `planned`.
    pub decision: Decision,
}

/// What the rules would decide for a sample message. Nothing is stored, sent or announced.
#[utoipa::path(post, operation_id = "test_inbound_rules", path = "/v1/inbound-rules/test", tag = "inbound",
    request_body = RuleTestInput,
    responses((status = 200, body = RuleTestOutcome), AuthErrors, JsonBodyErrors), security(("api_key" = [])))]
pub async fn test(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<RuleTestInput>,
) -> Result<Json<RuleTestOutcome>, Problem> {
    let input = body.value;
    let rules = match input.rules {
        Some(rules) => {
            rules.check().map_err(|mut e| {
                e.pointer = format!("/rules{}", e.pointer);
                Problem::invalid(e)
            })?;
            rules
        }
        None => herald.rules.inbound_rules(&caller.tenant).await?,
    };
    if let Some(label) = &input.thread_label {
        crate::domain::rules::text("/thread_label", label).map_err(Problem::invalid)?;
    }
    let sample = input.message;
    let fields = [
        ("body", Some(&sample.body), MAX_SAMPLE_BODY),
        ("from", sample.from.as_ref(), MAX_ADDRESS),
        ("to", sample.to.as_ref(), MAX_ADDRESS),
    ];
    for (field, value, max) in fields {
        if value.is_some_and(|v| v.chars().count() > max) {
            return Err(Problem::invalid(FieldError::new(
                format!("/message/{field}"),
                "too_large",
                format!("at most {max} characters"),
            )));
        }
    }
    let received_at = sample.received_at.unwrap_or_else(Utc::now);
    let arrival = Arrival {
        tenant: caller.tenant.clone(),
        channel: sample.channel,
        gateway: "test".into(),
        provider_message_id: String::new(),
        from: sample.from.unwrap_or_default(),
        to: sample.to.unwrap_or_default(),
    };
    let mut message = InboundMessage::arrived(arrival, sample.body);
    message.keyword = Keyword::of(&message.body);
    message.received_at = received_at;
    let thread = input.thread_label.map(|label| {
        let mut t = Thread::open(caller.tenant.clone(), ContactId::new(), received_at);
        t.insights = Insights {
            label: Some(label),
            ..Insights::default()
        };
        t
    });
    let decision = Herald::try_rules(&rules, &message, thread.as_ref());
    Ok(Json(RuleTestOutcome { decision }))
}
