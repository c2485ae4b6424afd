//! Running a tenant's inbound rules on a claimed message (see [`super::pipeline`]): the first
//! rule that holds makes the decision, and its actions run in order on the message's thread.

use chrono::Utc;

use super::accept::{AcceptError, IdempotencyInput, SendDraft};
use super::inbound::carrier_keyword;
use super::inbound_events::matched_notice;
use super::Herald;
use crate::domain::compose::ContentSource;
use crate::domain::rules::{
    Action, ActionResult, Decision, DecisionOutcome, InboundRule, RuleSet, Sample,
    DEFAULT_AUTO_REPLY_HOURS,
};
use crate::domain::thread::{Direction, Thread, ThreadEntry, ThreadPatch};
use crate::domain::{InboundMessage, TemplateName};
use crate::ports::StoreError;

impl Herald {
    /// Decides what to do with a message and does it.
    pub(super) async fn decide(&self, m: &InboundMessage) -> Result<Decision, StoreError> {
        // Carrier keywords were acted on when the message was stored; no rule sees them.
        if carrier_keyword(m).is_some() {
            return Ok(Decision::keyword());
        }
        let rules = self.rules.inbound_rules(&m.tenant).await?;
        let mut thread = match m.thread {
            Some(id) => self.threads.thread(&m.tenant, id).await?,
            None => None,
        };
        let Some(rule) = first_match(&rules, m, thread.as_ref()) else {
            return Ok(Decision::planned(None));
        };
        let mut decision = Decision {
            outcome: DecisionOutcome::Rule,
            rule: Some(rule.name.clone()),
            actions: Vec::with_capacity(rule.actions.len()),
            relay: None,
        };
        for action in &rule.actions {
            let result = self.act(m, rule, &mut thread, action).await?;
            decision.actions.push(result);
        }
        Ok(decision)
    }

    /// What the rules would decide for a message, with nothing done: the rule tester.
    pub fn try_rules(rules: &RuleSet, m: &InboundMessage, thread: Option<&Thread>) -> Decision {
        if carrier_keyword(m).is_some() {
            return Decision::keyword();
        }
        Decision::planned(first_match(rules, m, thread))
    }

    async fn act(
        &self,
        m: &InboundMessage,
        rule: &InboundRule,
        thread: &mut Option<Thread>,
        action: &Action,
    ) -> Result<ActionResult, StoreError> {
        if let Action::Webhook = action {
            // In the outbox before the try counts as done; a retry announces the same event.
            self.notify_durably(vec![matched_notice(m, rule)]).await?;
            return Ok(ActionResult::applied(action));
        }
        let Some(t) = thread.as_mut() else {
            return Ok(ActionResult::skipped(action, "no_thread"));
        };
        let patch = match action {
            Action::AutoReply {
                template,
                every_hours,
            } => {
                let hours = every_hours.unwrap_or(DEFAULT_AUTO_REPLY_HOURS);
                return self.auto_reply(m, rule, t, template, hours, action).await;
            }
            Action::Label { label } => ThreadPatch {
                label: Some(Some(label.clone())),
                ..ThreadPatch::default()
            },
            Action::Assign { assignee } => ThreadPatch {
                assignee: Some(Some(assignee.clone())),
                ..ThreadPatch::default()
            },
            Action::SetFollowup {
                in_hours,
                next_step,
            } => ThreadPatch {
                // From the message, not from now: processing it again sets the same time.
                next_followup_at: Some(Some(
                    m.received_at + chrono::Duration::hours(i64::from(*in_hours)),
                )),
                next_step: next_step.clone().map(Some),
                ..ThreadPatch::default()
            },
            Action::HumanTakeover => ThreadPatch {
                human_takeover: Some(true),
                ..ThreadPatch::default()
            },
            Action::Webhook => return Ok(ActionResult::applied(action)),
        };
        let patch = ThreadPatch {
            set_by: format!("rule:{}", rule.name),
            ..patch
        };
        match self.threads.update_thread(&m.tenant, t.id, &patch).await? {
            Some(updated) => {
                *t = updated;
                Ok(ActionResult::applied(action))
            }
            None => Ok(ActionResult::skipped(action, "no_thread")),
        }
    }

    /// Sends the rule's template back on the channel the message came on, unless a person
    /// took the thread over or the thread had an auto-reply within `hours`.
    async fn auto_reply(
        &self,
        m: &InboundMessage,
        rule: &InboundRule,
        t: &Thread,
        template: &TemplateName,
        hours: u32,
        action: &Action,
    ) -> Result<ActionResult, StoreError> {
        if t.human_takeover {
            return Ok(ActionResult::skipped(action, "human_takeover"));
        }
        // Before the thread's slot is taken: a reply that cannot be made must not block the
        // next message's for hours.
        if self.templates.get(&m.tenant, template).await?.is_none() {
            let reason = format!("template `{template}` does not exist");
            return Ok(ActionResult::skipped(action, reason));
        }
        let every = std::time::Duration::from_secs(u64::from(hours) * 3600);
        let now = Utc::now();
        if !self
            .threads
            .claim_auto_reply(&m.tenant, t.id, m.id, now, every)
            .await?
        {
            return Ok(ActionResult::skipped(action, "loop_guard"));
        }
        let draft = match self.auto_reply_draft(m, rule, template).await? {
            Ok(draft) => draft,
            Err(reason) => return Ok(ActionResult::skipped(action, reason)),
        };
        // The gateway's own sender when the tenant may not send as the number written to.
        let from = draft.envelope.from.clone().unwrap_or_default();
        // The same key on every try: a message processed again sends its reply once.
        let key = IdempotencyInput {
            key: format!("inbound-auto-reply:{}", m.id),
            request_hash: m.id.to_string(),
        };
        let id = match self.send(&m.tenant, draft, Some(key)).await {
            Ok(accepted) => match accepted.message_id() {
                Some(id) => id,
                None => return Ok(ActionResult::skipped(action, "replay without an id")),
            },
            Err(AcceptError::Store(e)) => return Err(e),
            Err(e) => return Ok(ActionResult::skipped(action, e.to_string())),
        };
        let entry = ThreadEntry::new(
            id,
            Direction::Outbound,
            m.channel,
            (from, m.from.clone()),
            &format!("[template {template}]"),
            now,
        );
        self.threads
            .record_outbound(&m.tenant, t.id, &entry)
            .await?;
        let mut result = ActionResult::applied(action);
        result.message_id = Some(id.to_string());
        Ok(result)
    }

    /// The reply: to the sender, from the address it wrote to when the tenant may send as it.
    async fn auto_reply_draft(
        &self,
        m: &InboundMessage,
        rule: &InboundRule,
        template: &TemplateName,
    ) -> Result<Result<SendDraft, String>, StoreError> {
        let to = match m.channel.parse_recipient(&m.from) {
            Ok(to) => to,
            Err(e) => return Ok(Err(format!("the sender cannot be answered: {e}"))),
        };
        let from = self
            .may_send_as(&m.tenant, m.channel, &m.to)
            .await?
            .then(|| m.to.clone());
        let mut draft = SendDraft::conversational(
            (m.channel, to),
            ContentSource::Template(template.clone()),
            ("inbound_rule", rule.name.clone()),
            m.id.to_string(),
        );
        let e = &mut draft.envelope;
        e.from = from;
        e.data = serde_json::json!({
            "body": m.body, "from": m.from, "to": m.to, "channel": m.channel,
        });
        e.message_type = Some("auto_reply".into());
        e.metadata = Some(serde_json::json!({ "inbound_id": m.id }));
        Ok(Ok(draft))
    }
}

fn first_match<'a>(
    rules: &'a RuleSet,
    m: &InboundMessage,
    thread: Option<&Thread>,
) -> Option<&'a InboundRule> {
    let label = thread.and_then(|t| t.insights.label.as_deref());
    let sample = Sample::new(m.channel, &m.body, m.received_at, label);
    rules.first_match(&sample)
}
