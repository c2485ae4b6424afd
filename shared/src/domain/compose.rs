//! Composing messages: an envelope (what every send carries) plus content, inline or from a
//! template, rendered per recipient. A bulk send is stored as a [`BulkJob`] (the envelope, a
//! snapshot of its template, and the accepted recipients with their ids) and turned into messages
//! by [`BulkJob::messages`], at once in the embedded store and in chunks by the AWS `enqueue`
//! function. Rendering is deterministic, so the job yields exactly the messages that accept
//! validated.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::content::{self, ContentOrigin};
use super::locale::Locale;
use super::sms::SmsInfo;
use super::template::{CompiledTemplate, RenderLimits, TemplateError};
use super::{
    Channel, Content, FieldError, MessageId, MessageStatus, NewMessage, Priority, Template,
    TemplateName, TenantId,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentSource {
    Inline(Content),
    Template(TemplateName),
}

/// Fields every send carries, single or bulk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub channel: Channel,
    pub priority: Priority,
    pub from: Option<String>,
    pub content: ContentSource,
    pub data: serde_json::Value,
    pub message_type: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub send_at: Option<DateTime<Utc>>,
    pub correlation_id: String,
    /// The template variant: the one asked for until accept resolves it, then the one chosen
    /// (None: the template's default, or inline content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
}

/// Why content could not become a message for a recipient.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    #[error("{}", .0.detail)]
    Invalid(FieldError),
    #[error("{0}")]
    Template(TemplateError),
    #[error("template `{0}` is named but was not loaded")]
    TemplateMissing(TemplateName),
}

/// Content ready to render per recipient: a template is compiled once.
pub struct Composer<'a> {
    envelope: &'a Envelope,
    render: Render<'a>,
}

enum Render<'a> {
    Inline(&'a Content),
    Template(Box<CompiledTemplate<'a>>),
}

/// One recipient's part of a send.
pub struct Addressee<'a> {
    pub id: MessageId,
    pub to: &'a str,
    /// The recipient's own data, laid over the envelope's.
    pub data: Option<&'a serde_json::Value>,
    pub bulk_id: Option<&'a str>,
    pub external_id: Option<&'a str>,
    /// The note of the suppression entry that stops this recipient, if one does.
    pub suppressed: Option<&'a serde_json::Value>,
    /// Held for quiet hours: until when, and why.
    pub deferred: Option<(DateTime<Utc>, &'a serde_json::Value)>,
}

impl<'a> Composer<'a> {
    /// `template` must be the template the envelope names (loaded by the caller), if it names one.
    pub fn new(
        envelope: &'a Envelope,
        template: Option<&'a Template>,
        limits: RenderLimits,
    ) -> Result<Composer<'a>, ComposeError> {
        let render = match (&envelope.content, template) {
            (ContentSource::Inline(content), _) => Render::Inline(content),
            (ContentSource::Template(_), Some(t)) => Render::Template(Box::new(
                CompiledTemplate::compile(t, limits).map_err(ComposeError::Template)?,
            )),
            (ContentSource::Template(name), None) => {
                return Err(ComposeError::TemplateMissing(name.clone()))
            }
        };
        Ok(Composer { envelope, render })
    }

    /// Renders for one recipient and checks the result against the channel's rules.
    pub fn compose(
        &self,
        tenant: &TenantId,
        who: Addressee<'_>,
        created_at: DateTime<Utc>,
    ) -> Result<NewMessage, ComposeError> {
        let env = self.envelope;
        let merged;
        let data = match who.data {
            Some(own) => {
                merged = merge_data(&env.data, own);
                &merged
            }
            None => &env.data,
        };
        let (content, sms) = self.render(env.channel, data)?;
        Ok(NewMessage {
            id: who.id,
            tenant: tenant.clone(),
            channel: env.channel,
            priority: env.priority,
            to: who.to.to_owned(),
            from: env.from.clone(),
            content,
            template: match &env.content {
                ContentSource::Template(n) => Some(n.as_str().to_owned()),
                ContentSource::Inline(_) => None,
            },
            sms,
            message_type: env.message_type.clone(),
            source_type: env.source_type.clone(),
            source_id: env.source_id.clone(),
            metadata: env.metadata.clone(),
            send_at: who.deferred.map(|(at, _)| at).or(env.send_at),
            bulk_id: who.bulk_id.map(str::to_owned),
            external_id: who.external_id.map(str::to_owned),
            correlation_id: env.correlation_id.clone(),
            status: match (who.suppressed, who.deferred) {
                (Some(_), _) => MessageStatus::Suppressed,
                (None, Some(_)) => MessageStatus::Deferred,
                (None, None) => MessageStatus::Queued,
            },
            note: who.suppressed.or(who.deferred.map(|(_, why)| why)).cloned(),
            locale: env.locale.clone(),
            created_at,
        })
    }

    fn render(
        &self,
        channel: Channel,
        data: &serde_json::Value,
    ) -> Result<(Content, Option<SmsInfo>), ComposeError> {
        let (content, origin) = match &self.render {
            Render::Inline(content) => ((*content).clone(), ContentOrigin::Inline),
            Render::Template(t) => (
                t.render(data, content::max_content_bytes(channel))
                    .map_err(ComposeError::Template)?,
                ContentOrigin::Template,
            ),
        };
        let sms = content::check(channel, &content, origin).map_err(ComposeError::Invalid)?;
        Ok((content, sms))
    }
}

/// The request's data with one recipient's data over it.
fn merge_data(shared: &serde_json::Value, own: &serde_json::Value) -> serde_json::Value {
    match (shared, own) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            let mut merged = base.clone();
            merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            serde_json::Value::Object(merged)
        }
        (_, own) => own.clone(),
    }
}

/// An accepted bulk send, as stored until its messages are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJob {
    pub bulk_id: String,
    pub tenant: TenantId,
    pub envelope: Envelope,
    /// The template as it was at accept time, so a later edit cannot change what was accepted.
    pub template: Option<Template>,
    pub recipients: Vec<BulkJobRecipient>,
    pub created_at: DateTime<Utc>,
}

/// A recipient that passed validation, with the message id it was given at accept time (a
/// retried fan-out writes the same ids, so it never duplicates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJobRecipient {
    pub id: MessageId,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Set when a suppression entry stops this recipient: why, for its first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<serde_json::Value>,
    /// Set when quiet hours hold this recipient: until when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<(DateTime<Utc>, serde_json::Value)>,
}

impl BulkJob {
    /// Its messages are rendered again when they are written, from the stored job: with limits
    /// far above accept's, so that a template accept passed cannot fail here on a busy machine.
    pub const FAN_OUT_LIMITS: RenderLimits = RenderLimits {
        fuel: 50_000_000,
        time: std::time::Duration::from_secs(10),
    };

    pub fn composer(&self) -> Result<Composer<'_>, ComposeError> {
        Composer::new(
            &self.envelope,
            self.template.as_ref(),
            BulkJob::FAN_OUT_LIMITS,
        )
    }

    /// The messages of the recipients from `start` on: at most `max_count` of them, and no more
    /// once their content reaches `max_bytes`, so a chunk's memory is bounded whatever the
    /// template renders.
    pub fn chunk_from(
        &self,
        start: usize,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<NewMessage>, ComposeError> {
        let composer = self.composer()?;
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for r in self.recipients.iter().skip(start).take(max_count) {
            if bytes >= max_bytes {
                break;
            }
            let message = composer.compose(&self.tenant, self.addressee(r), self.created_at)?;
            bytes += message.content.byte_len();
            chunk.push(message);
        }
        Ok(chunk)
    }

    fn addressee<'r>(&'r self, r: &'r BulkJobRecipient) -> Addressee<'r> {
        Addressee {
            id: r.id,
            to: &r.to,
            data: r.data.as_ref(),
            bulk_id: Some(&self.bulk_id),
            external_id: r.external_id.as_deref(),
            suppressed: r.suppressed.as_ref(),
            deferred: r.deferred.as_ref().map(|(at, why)| (*at, why)),
        }
    }

    /// The messages of the recipients in `range` (all of them: `..`).
    pub fn messages(
        &self,
        range: impl std::slice::SliceIndex<[BulkJobRecipient], Output = [BulkJobRecipient]>,
    ) -> Result<Vec<NewMessage>, ComposeError> {
        let composer = self.composer()?;
        self.recipients[range]
            .iter()
            .map(|r| composer.compose(&self.tenant, self.addressee(r), self.created_at))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(content: ContentSource) -> Envelope {
        Envelope {
            channel: Channel::Email,
            priority: Priority::P2,
            from: None,
            content,
            data: json!({"issue": 42, "name": "reader"}),
            message_type: None,
            source_type: None,
            source_id: None,
            metadata: None,
            send_at: None,
            correlation_id: "c-1".into(),
            locale: None,
        }
    }

    #[test]
    fn a_stored_job_renders_the_template_snapshot_with_each_recipients_data() {
        let name = TemplateName::parse("news").unwrap();
        let job = BulkJob {
            bulk_id: "bulk_1".into(),
            tenant: TenantId::parse("acme").unwrap(),
            envelope: envelope(ContentSource::Template(name.clone())),
            template: Some(Template {
                name,
                subject: Some("Issue {{ issue }}".into()),
                text: Some("Hi {{ name }}".into()),
                html: None,
                updated_at: Utc::now(),
                locales: Default::default(),
            }),
            recipients: vec![
                BulkJobRecipient {
                    id: MessageId::new(),
                    to: "ann@example.com".into(),
                    data: Some(json!({"name": "Ann"})),
                    external_id: Some("u1".into()),
                    suppressed: None,
                    deferred: None,
                },
                BulkJobRecipient {
                    id: MessageId::new(),
                    to: "bob@example.com".into(),
                    data: None,
                    external_id: None,
                    suppressed: None,
                    deferred: None,
                },
            ],
            created_at: Utc::now(),
        };
        // Stored as JSON and read back, as the AWS fan-out does.
        let stored: BulkJob = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(stored, job);
        let messages = stored.messages(..).unwrap();
        let bodies: Vec<_> = messages
            .iter()
            .map(|m| m.content.body.as_deref().unwrap())
            .collect();
        assert_eq!(bodies, ["Hi Ann", "Hi reader"]);
        assert_eq!(messages[0].id, job.recipients[0].id);
        assert_eq!(messages[0].external_id.as_deref(), Some("u1"));
        assert_eq!(messages[1].bulk_id.as_deref(), Some("bulk_1"));
        assert_eq!(stored.messages(1..).unwrap().len(), 1);
    }

    #[test]
    fn a_named_template_must_be_loaded() {
        let env = envelope(ContentSource::Template(TemplateName::parse("x").unwrap()));
        assert!(matches!(
            Composer::new(&env, None, RenderLimits::default()),
            Err(ComposeError::TemplateMissing(_))
        ));
    }
}
