//! The masked-number relay at work: an inbound text to one of a tenant's relay numbers is
//! routed ([`crate::domain::relay::routing`]) when it is processed, and what the route asks
//! for is sent through the normal lanes at P1, each send under a key made from the inbound
//! message so a message processed again sends nothing twice. The simulator routes a sample
//! the same way and writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::accept::{AcceptError, IdempotencyInput, SendDraft};
use super::Herald;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::compose::ContentSource;
use crate::domain::notify::{EventId, EventType, Notice, Subject};
use crate::domain::relay::assignment::Assignment;
use crate::domain::relay::routing::{
    route, RelayRecord, Route, RoutingDecision, RoutingFacts, SharingOutcome,
};
use crate::domain::relay::settings::RelaySettings;
use crate::domain::relay::sharing::{detect, redact, SharingAction};
use crate::domain::rules::{Decision, DecisionOutcome};
use crate::domain::suppression::Scope;
use crate::domain::{
    Channel, Content, InboundMessage, Keyword, MessageId, PhoneNumber, Recipient, TemplateName,
    TenantId,
};
use crate::ports::{StoreError, RECENT};

/// How often a participant without an assignment hears where to turn, per number.
const NO_ASSIGNMENT_REPLY_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How often a sender hears a text of theirs was blocked, per number.
const BLOCKED_NOTICE_EVERY: Duration = Duration::from_secs(3600);
/// A window's closing is told once per assignment and sender (kept past any grace).
const NOTICE_ONCE: Duration = Duration::from_secs(31 * 24 * 3600);

/// What a relayed text becomes: its body after the policy, and what the policy found.
pub struct Relayed {
    pub body: Option<String>,
    pub sharing: Option<SharingOutcome>,
}

impl Herald {
    /// What is known about a text from `from` to `to` at `at`: none when `to` is none of
    /// `tenant`'s relay numbers.
    pub async fn routing_facts(
        &self,
        tenant: &TenantId,
        (to, from): (&PhoneNumber, &PhoneNumber),
        at: DateTime<Utc>,
        body: &str,
    ) -> Result<Option<RoutingFacts>, StoreError> {
        let Some(number) = self.relay.number(tenant, to).await? else {
            return Ok(None);
        };
        let recent = self
            .relay
            .assignments_of(tenant, from, at.checked_sub_signed(RECENT).unwrap_or(at))
            .await?;
        // A sender with a recent assignment is a participant: no second read for that.
        let known_participant = recent.iter().any(|a| a.role_of(from).is_some())
            || self.relay.is_participant(tenant, from).await?;
        let assignments = recent.into_iter().filter(|a| &a.number == to).collect();
        Ok(Some(RoutingFacts {
            number,
            from: from.clone(),
            at,
            keyword: Keyword::of(body),
            assignments,
            known_participant,
        }))
    }

    /// Applies the sharing policy of the sender's role to a body on its way to the other
    /// party.
    pub fn police(settings: &RelaySettings, sender_role: &str, body: &str) -> Relayed {
        let found = detect(body);
        if found.is_empty() {
            return Relayed {
                body: Some(body.to_owned()),
                sharing: None,
            };
        }
        let action = match sender_role {
            "worker" => settings.sharing.worker,
            _ => settings.sharing.client,
        };
        let mut kinds: Vec<_> = found.iter().map(|f| f.kind).collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        let sharing = (action != SharingAction::Allow).then_some(SharingOutcome { kinds, action });
        let body = match action {
            SharingAction::Allow | SharingAction::Flag => Some(body.to_owned()),
            SharingAction::Redact => Some(redact(body, &found)),
            SharingAction::Block => None,
        };
        Relayed { body, sharing }
    }

    /// Routes a processed inbound text to a relay number and sends what the route asks for;
    /// none when the text is not for a relay number.
    pub(super) async fn relay_inbound(
        &self,
        m: &InboundMessage,
    ) -> Result<Option<Decision>, StoreError> {
        let (Ok(to), Ok(from)) = (PhoneNumber::parse(&m.to), PhoneNumber::parse(&m.from)) else {
            return Ok(None);
        };
        if !matches!(m.channel, Channel::Sms | Channel::Whatsapp) {
            return Ok(None);
        }
        let Some(facts) = self
            .routing_facts(&m.tenant, (&to, &from), m.received_at, &m.body)
            .await?
        else {
            return Ok(None);
        };
        let decision = route(&facts);
        let record = self.carry_out(m, decision).await?;
        self.audit_routing(m, &record).await;
        // A relay the lanes refused (the number cannot send, the recipient is suppressed)
        // leaves the text with the front desk rather than nowhere.
        let blocked = record
            .sharing
            .as_ref()
            .is_some_and(|s| s.action == SharingAction::Block);
        let outcome = match record.decision.route {
            Route::OptOut { .. } => DecisionOutcome::Keyword,
            Route::Relay { .. } | Route::Worker { .. }
                if record.relayed_message_id.is_some() || blocked =>
            {
                DecisionOutcome::Relayed
            }
            _ => DecisionOutcome::NoRule,
        };
        Ok(Some(Decision {
            outcome,
            rule: None,
            actions: Vec::new(),
            relay: Some(Box::new(record)),
        }))
    }

    /// Sends what the route asks for.
    async fn carry_out(
        &self,
        m: &InboundMessage,
        decision: RoutingDecision,
    ) -> Result<RelayRecord, StoreError> {
        let mut record = RelayRecord {
            decision,
            relayed_message_id: None,
            notice_message_id: None,
            sharing: None,
        };
        match record.decision.route.clone() {
            Route::Relay {
                to,
                from,
                closing,
                sender_role,
                assignment_id,
            } => {
                // Read where a route uses them: a relay's policy and notices, the desk's reply.
                let settings = self.rules.relay_settings(&m.tenant).await?;
                let relayed = Herald::police(&settings, &sender_role, &m.body);
                record.sharing = relayed.sharing.clone();
                let notice = match relayed.body {
                    Some(body) => {
                        record.relayed_message_id =
                            self.relay_send(m, "relay", (&to, &from), body).await?;
                        let once = format!("closing:{assignment_id}:{}", m.from);
                        closing.then(|| (settings.closing_notice.clone(), once, NOTICE_ONCE))
                    }
                    None => {
                        let key = format!("blocked:{}:{}", m.to, m.from);
                        Some((settings.blocked_notice.clone(), key, BLOCKED_NOTICE_EVERY))
                    }
                };
                if let Some(notice) = notice {
                    record.notice_message_id = self.notice(m, notice).await?;
                }
                if let Some(sharing) = &record.sharing {
                    self.record_violation(m, &record.decision.route, sharing)
                        .await?;
                }
            }
            Route::Worker { to, from } => {
                record.relayed_message_id = self
                    .relay_send(m, "relay", (&to, &from), m.body.clone())
                    .await?;
            }
            Route::FrontDesk { auto_reply: true } => {
                let key = format!("no_assignment:{}:{}", m.to, m.from);
                let text = self
                    .rules
                    .relay_settings(&m.tenant)
                    .await?
                    .no_assignment_reply;
                record.notice_message_id = self
                    .notice(m, (text, key, NO_ASSIGNMENT_REPLY_EVERY))
                    .await?;
            }
            Route::FrontDesk { auto_reply: false } | Route::OptOut { .. } => {}
        }
        Ok(record)
    }

    /// Tells the sender something from the number it wrote to, at most once per `every` for
    /// the same `key` (an auto-responder answering each notice would otherwise loop).
    async fn notice(
        &self,
        m: &InboundMessage,
        (text, key, every): (String, String, Duration),
    ) -> Result<Option<MessageId>, StoreError> {
        if !self.events.first_seen("relay-notice", &key, every).await? {
            return Ok(None);
        }
        self.relay_send(m, "notice", (&m.from, &m.to), text).await
    }

    /// Sends `body` to `to` from `from` at P1, linked to the inbound message; `leg` names the
    /// send for its idempotency key (one relay and one notice per inbound message).
    async fn relay_send(
        &self,
        m: &InboundMessage,
        leg: &str,
        (to, from): (&str, &str),
        body: String,
    ) -> Result<Option<MessageId>, StoreError> {
        let recipient = match m.channel.parse_recipient(to) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(inbound = %m.id, error = %e, "a relay leg has no valid recipient");
                return Ok(None);
            }
        };
        let content = ContentSource::Inline(Content {
            subject: None,
            body: Some(body),
            html: None,
        });
        let source = ("relay", m.id.to_string());
        let mut draft =
            SendDraft::conversational((m.channel, recipient), content, source, m.id.to_string());
        draft.envelope.from = Some(from.to_owned());
        draft.envelope.message_type = Some(format!("relay_{leg}"));
        draft.envelope.metadata = Some(json!({ "relayed_from": m.id }));
        let key = IdempotencyInput {
            key: format!("relay-{leg}:{}", m.id),
            request_hash: m.id.to_string(),
        };
        match self.send(&m.tenant, draft, Some(key)).await {
            Ok(accepted) => Ok(accepted.message_id()),
            Err(AcceptError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(inbound = %m.id, error = %e, leg, "a relay leg was refused");
                Ok(None)
            }
        }
    }

    /// Sends a reassignment's templated notices from its number: `templates` to the client
    /// and to the new worker. Returns who was sent one; a template that fails to render is
    /// logged and left out (the reassignment stands).
    pub async fn reassignment_notices(
        &self,
        a: &Assignment,
        (client, worker): (Option<TemplateName>, Option<TemplateName>),
    ) -> Result<Vec<String>, StoreError> {
        let data = json!({
            "client_name": a.client.name, "worker_name": a.worker.name, "ends_at": a.ends_at,
        });
        let mut sent = Vec::new();
        for (role, template, to) in [
            ("client", client, &a.client.number),
            ("worker", worker, &a.worker.number),
        ] {
            let Some(template) = template else { continue };
            let mut draft = SendDraft::conversational(
                (Channel::Sms, Recipient::Phone(to.clone())),
                ContentSource::Template(template),
                ("assignment", a.id.to_string()),
                a.id.to_string(),
            );
            draft.envelope.from = Some(a.number.to_string());
            draft.envelope.data = data.clone();
            draft.envelope.message_type = Some("relay_reassigned".into());
            let key = IdempotencyInput {
                key: format!("relay-reassigned-{role}:{}", a.id),
                request_hash: a.id.to_string(),
            };
            match self.send(&a.tenant, draft, Some(key)).await {
                Ok(_) => sent.push(role.to_owned()),
                Err(AcceptError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(assignment = %a.id, role, error = %e, "a reassignment notice was refused")
                }
            }
        }
        Ok(sent)
    }

    async fn audit_routing(&self, m: &InboundMessage, record: &RelayRecord) {
        let entry = AuditEntry::now(
            Scope::Tenant(m.tenant.clone()),
            Actor::System,
            AuditAction::RelayRouted,
        )
        .target(m.id.to_string())
        .detail(json!({
            "route": record.decision.route,
            "trace": record.decision.trace,
            "relayed_message_id": record.relayed_message_id,
            "notice_message_id": record.notice_message_id,
        }));
        self.record_audit(entry).await;
    }

    /// Records a violation in the audit log and announces `policy.violation`.
    async fn record_violation(
        &self,
        m: &InboundMessage,
        route: &Route,
        sharing: &SharingOutcome,
    ) -> Result<(), StoreError> {
        let Route::Relay {
            assignment_id,
            sender_role,
            ..
        } = route
        else {
            return Ok(());
        };
        let detail = json!({
            "inbound_id": m.id,
            "assignment_id": assignment_id,
            "sender_role": sender_role,
            "from": m.from,
            "to": m.to,
            "kinds": sharing.kinds,
            "action": sharing.action,
        });
        let entry = AuditEntry::now(
            Scope::Tenant(m.tenant.clone()),
            Actor::System,
            AuditAction::PolicyViolation,
        )
        .target(assignment_id.to_string())
        .detail(detail.clone());
        self.record_audit(entry).await;
        let mut notice = Notice::new(
            Some(m.tenant.clone()),
            EventType::PolicyViolation,
            Subject::Data { data: detail },
        );
        let at = m.progress.first_claimed_at.unwrap_or(m.received_at);
        notice.id = EventId::derived(at, &format!("policy.violation:{}", m.id));
        // In the outbox before the try counts as done; a retry announces the same event.
        self.notify_durably(vec![notice]).await
    }
}
