//! Request and response bodies of the HTTP API, and their parsing into domain drafts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::{ObjectBuilder, RefOr, Type};
use utoipa::ToSchema;

use crate::domain::{
    Channel, Content, DeliveryEvent, EmailAddress, EventKind, FieldError, Message, MessageStatus,
    PhoneNumber, Priority, TemplateName,
};
use crate::engine::{
    BulkDraft, BulkRecipient, ContentSource, Envelope, RejectedRecipient, SendDraft,
};

pub const MAX_BULK_RECIPIENTS: usize = 10_000;
pub(crate) const MAX_LABEL_CHARS: usize = 128;
const MAX_SCHEDULE_DAYS: i64 = 90;
/// What every message of a send shares (content, data, metadata) is held to the single-message
/// limit, bulk or not, so each stored message fits any backend (DynamoDB items are 400 KB).
const MAX_SHARED_BYTES: usize = super::MAX_MESSAGE_BYTES;
/// One bulk recipient's own data.
const MAX_RECIPIENT_DATA_BYTES: usize = 64 * 1024;

/// `POST /v1/messages`
///
/// The envelope fields repeat in [`BulkSendRequest`]: serde cannot combine `flatten` with
/// `deny_unknown_fields`, and an unknown field must stay a 400.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "email", "priority": "P4", "to": "ann@example.com",
    "subject": "Your receipt", "body": "Thanks for your order."}))]
pub struct SendMessageRequest {
    pub channel: Channel,
    pub priority: Priority,
    /// Email address, E.164 phone number, or push device token, by channel.
    pub to: String,
    /// One of the tenant's sender identities (`GET /v1/sender-identities`); leave it out to
    /// send as the gateway's default sender.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Rendered content is capped per channel (subject, body and html together): email
    /// 262,144 bytes, SMS 10 segments, push 4,096 bytes, WhatsApp and Telegram 4,096 characters.
    pub body: Option<String>,
    pub html: Option<String>,
    /// A stored template's name; excludes subject/body/html. Its render is limited in fuel,
    /// time and output (the channel's cap); over a limit is a 422 of type `template-limit`.
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[schema(min_length = 1, max_length = 128)]
    pub message_type: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub source_type: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub source_id: Option<String>,
    /// The tenant's own data, plus delivery options checked at accept: `unsubscribe_url`
    /// (http, https or mailto), `media_urls` (up to 10 http(s) URLs), `whatsapp_template`
    /// (`{name, language: {code}, components?}`).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Not handed to a gateway before this time (RFC 3339).
    pub send_at: Option<DateTime<Utc>>,
    /// The caller's own id for this message: shown with it and searchable.
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
    /// One of the tenant's threads (`GET /v1/threads`): the message joins its timeline.
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub thread_id: Option<String>,
}

/// One recipient of a bulk send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRecipientInput {
    pub to: String,
    /// Merged over the request's `data` for this recipient.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    pub external_id: Option<String>,
}

/// `POST /v1/messages/bulk`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "sms", "priority": "P2", "body": "Sale ends tonight",
    "recipients": [{"to": "+15005550006"}, {"to": "+15005550007", "external_id": "c-7"}]}))]
pub struct BulkSendRequest {
    pub channel: Channel,
    pub priority: Priority,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[schema(min_length = 1, max_length = 128)]
    pub message_type: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub source_type: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub source_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub send_at: Option<DateTime<Utc>>,
    /// 1 to 10,000 recipients, each a `BulkRecipientInput`. Any value is taken here: one that is
    /// not a valid recipient is reported in `rejected` and does not fail the rest.
    #[schema(min_items = 1, max_items = 10_000)]
    pub recipients: Vec<serde_json::Value>,
}

/// The fields shared by single and bulk sends, before parsing.
struct EnvelopeInput<'a> {
    channel: Channel,
    priority: Priority,
    from: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    html: Option<String>,
    template: Option<String>,
    data: Option<serde_json::Value>,
    message_type: Option<String>,
    source_type: Option<String>,
    source_id: Option<String>,
    metadata: Option<serde_json::Value>,
    send_at: Option<DateTime<Utc>>,
    correlation_id: &'a str,
}

pub(crate) fn label(field: &str, v: Option<String>) -> Result<Option<String>, FieldError> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > MAX_LABEL_CHARS => Err(FieldError::new(
            format!("/{field}"),
            "invalid",
            format!("`{field}` must be 1-{MAX_LABEL_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

fn object(
    field: &str,
    v: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, FieldError> {
    match v {
        Some(serde_json::Value::Null) | None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(FieldError::new(
            format!("/{field}"),
            "invalid",
            format!("`{field}` must be a JSON object"),
        )),
    }
}

fn sender(channel: Channel, from: Option<String>) -> Result<Option<String>, FieldError> {
    let Some(raw) = from else { return Ok(None) };
    let err = |detail: &str| FieldError::new("/from", "invalid_sender", detail);
    match channel {
        Channel::Email => EmailAddress::parse(&raw)
            .map(|a| Some(a.to_string()))
            .map_err(|e| err(&e.to_string())),
        Channel::Sms => {
            // An E.164 number, or an alphanumeric sender id (1-11 characters, at least one letter).
            if let Ok(n) = PhoneNumber::parse(&raw) {
                return Ok(Some(n.to_string()));
            }
            let alnum = !raw.is_empty()
                && raw.len() <= 11
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
                && raw.bytes().any(|b| b.is_ascii_alphabetic());
            if alnum {
                Ok(Some(raw))
            } else {
                Err(err("sms `from` must be an E.164 number or an alphanumeric sender id of at most 11 characters"))
            }
        }
        Channel::Push => label("from", Some(raw)),
        // The sending number or bot is the gateway's; a business may run several numbers.
        Channel::Whatsapp => PhoneNumber::parse(&raw)
            .map(|n| Some(n.to_string()))
            .map_err(|e| err(&e.to_string())),
        Channel::Telegram => Err(err(
            "telegram messages are sent by the configured bot; leave `from` out",
        )),
    }
}

/// Moves the envelope fields out of either request type (their field lists cannot be shared:
/// see [`SendMessageRequest`]).
macro_rules! envelope_input {
    ($req:ident, $correlation_id:expr) => {
        EnvelopeInput {
            channel: $req.channel,
            priority: $req.priority,
            from: $req.from,
            subject: $req.subject,
            body: $req.body,
            html: $req.html,
            template: $req.template,
            data: $req.data,
            message_type: $req.message_type,
            source_type: $req.source_type,
            source_id: $req.source_id,
            metadata: $req.metadata,
            send_at: $req.send_at,
            correlation_id: $correlation_id,
        }
    };
}

fn envelope(input: EnvelopeInput<'_>) -> Result<Envelope, FieldError> {
    let inline = input.subject.is_some() || input.body.is_some() || input.html.is_some();
    let content = match input.template {
        Some(_) if inline => {
            return Err(FieldError::new(
                "/template",
                "conflict",
                "give either `template` or inline subject/body/html, not both",
            ))
        }
        Some(name) => ContentSource::Template(
            TemplateName::parse(&name).map_err(|e| FieldError::new("/template", "invalid", e))?,
        ),
        None => ContentSource::Inline(Content {
            subject: input.subject,
            body: input.body,
            html: input.html,
        }),
    };
    if let Some(at) = input.send_at {
        if at > Utc::now() + chrono::Duration::days(MAX_SCHEDULE_DAYS) {
            return Err(FieldError::new(
                "/send_at",
                "too_far",
                format!("send_at may be at most {MAX_SCHEDULE_DAYS} days ahead"),
            ));
        }
    }
    let size = |v: &Option<String>| v.as_ref().map_or(0, String::len);
    let json_size = |v: &Option<serde_json::Value>| v.as_ref().map_or(0, |v| v.to_string().len());
    let shared = match &content {
        ContentSource::Inline(c) => size(&c.subject) + size(&c.body) + size(&c.html),
        ContentSource::Template(_) => 0,
    } + json_size(&input.data)
        + json_size(&input.metadata);
    if shared > MAX_SHARED_BYTES {
        return Err(FieldError::new(
            "",
            "too_large",
            format!(
                "content, data and metadata come to {shared} bytes; a message may carry at most {MAX_SHARED_BYTES}"
            ),
        ));
    }
    Ok(Envelope {
        channel: input.channel,
        priority: input.priority,
        from: sender(input.channel, input.from)?,
        content,
        data: object("data", input.data)?.unwrap_or_else(|| serde_json::json!({})),
        message_type: label("message_type", input.message_type)?,
        source_type: label("source_type", input.source_type)?,
        source_id: label("source_id", input.source_id)?,
        metadata: object("metadata", input.metadata)?,
        send_at: input.send_at,
        correlation_id: input.correlation_id.to_owned(),
        // Set from `metadata.locale` when accept parses the options.
        locale: None,
    })
}

impl SendMessageRequest {
    pub fn into_draft(mut self, correlation_id: &str) -> Result<SendDraft, FieldError> {
        let to = self
            .channel
            .parse_recipient(&self.to)
            .map_err(|e| FieldError::new("/to", e.code(), e.to_string()))?;
        let external_id = label("external_id", self.external_id.take())?;
        let envelope = envelope(envelope_input!(self, correlation_id))?;
        Ok(SendDraft {
            envelope,
            to,
            external_id,
            conversational: false,
        })
    }
}

impl BulkSendRequest {
    pub fn into_draft(self, correlation_id: &str) -> Result<BulkDraft, FieldError> {
        if self.recipients.is_empty() || self.recipients.len() > MAX_BULK_RECIPIENTS {
            return Err(FieldError::new(
                "/recipients",
                "invalid_count",
                format!(
                    "give 1 to {MAX_BULK_RECIPIENTS} recipients (got {})",
                    self.recipients.len()
                ),
            ));
        }
        let channel = self.channel;
        let envelope = envelope(envelope_input!(self, correlation_id))?;
        let mut recipients = Vec::with_capacity(self.recipients.len());
        let mut rejected = Vec::new();
        for (index, raw) in self.recipients.into_iter().enumerate() {
            match parse_recipient(channel, raw) {
                Ok((to, data, external_id)) => recipients.push(BulkRecipient {
                    index,
                    to,
                    data,
                    external_id,
                }),
                Err(reason) => rejected.push(RejectedRecipient { index, reason }),
            }
        }
        Ok(BulkDraft {
            envelope,
            recipients,
            rejected,
        })
    }
}

type ParsedRecipient = (
    crate::domain::Recipient,
    Option<serde_json::Value>,
    Option<String>,
);

fn parse_recipient(channel: Channel, raw: serde_json::Value) -> Result<ParsedRecipient, String> {
    let input: BulkRecipientInput = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    let to = channel
        .parse_recipient(&input.to)
        .map_err(|e| e.to_string())?;
    let data = object("data", input.data).map_err(|e| e.detail)?;
    if let Some(d) = &data {
        let bytes = d.to_string().len();
        if bytes > MAX_RECIPIENT_DATA_BYTES {
            return Err(format!(
                "`data` is {bytes} bytes; a recipient's data may be at most {MAX_RECIPIENT_DATA_BYTES}"
            ));
        }
    }
    let external_id = label("external_id", input.external_id).map_err(|e| e.detail)?;
    Ok((to, data, external_id))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "delivered")]
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SmsView {
    pub encoding: String,
    pub segments: usize,
    pub units: usize,
}

/// A message, its state and (on `GET /v1/messages/{id}`) its timeline, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: MessageStatus,
    pub channel: Channel,
    pub priority: Priority,
    pub to: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub template: Option<String>,
    pub sms: Option<SmsView>,
    pub message_type: Option<String>,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub send_at: Option<DateTime<Utc>>,
    pub bulk_id: Option<String>,
    pub external_id: Option<String>,
    pub correlation_id: String,
    pub attempts: u32,
    pub gateway: Option<String>,
    /// Why the router picked this gateway.
    pub route_reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

impl MessageView {
    pub fn new(m: Message, events: Option<Vec<DeliveryEvent>>) -> MessageView {
        let route_reason = events
            .as_deref()
            .and_then(crate::domain::message::route_reason);
        MessageView {
            id: m.id.to_string(),
            status: m.status,
            channel: m.channel,
            priority: m.priority,
            to: m.to,
            from: m.from,
            subject: m.content.subject,
            body: m.content.body,
            html: m.content.html,
            template: m.template,
            sms: m.sms.map(|s| SmsView {
                encoding: s.encoding.as_str().to_owned(),
                segments: s.segments,
                units: s.units,
            }),
            message_type: m.message_type,
            source_type: m.source_type,
            source_id: m.source_id,
            metadata: m.metadata,
            send_at: m.send_at,
            bulk_id: m.bulk_id,
            external_id: m.external_id,
            correlation_id: m.correlation_id,
            attempts: m.attempts,
            gateway: m.gateway,
            route_reason,
            provider_message_id: m.provider_message_id,
            last_error: m.last_error,
            created_at: m.created_at,
            updated_at: m.updated_at,
            events: events.map(|evs| {
                evs.into_iter()
                    .map(|e| EventView {
                        kind: e.kind,
                        at: e.at,
                        detail: e.detail,
                    })
                    .collect()
            }),
        }
    }
}

/// `PUT /v1/templates/{name}`: at least one of the parts. A part left out is absent; `null`
/// is refused, so that the document says exactly what the server takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    #[serde(default, deserialize_with = "present")]
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub text: Option<String>,
    /// HTML part: variables are HTML-escaped.
    #[serde(default, deserialize_with = "present")]
    pub html: Option<String>,
    /// Data for the trial render at save time; variables it lacks get a placeholder string.
    #[serde(default, deserialize_with = "present_object")]
    pub sample_data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A field that, when given, must be a JSON object (not `null`, not a list).
fn present_object<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, D::Error> {
    serde_json::Map::deserialize(d).map(Some)
}

// Written out: the derive cannot say `minProperties` (utoipa 5.5 emits it as maxProperties).
impl utoipa::PartialSchema for TemplateInput {
    fn schema() -> RefOr<Schema> {
        let part = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let fields = ObjectBuilder::new()
            .description(Some("At least one part; a part left out is absent."))
            .property("subject", part("Email subject or push title."))
            .property("text", part("Plain-text body."))
            .property("html", part("HTML body: variables are HTML-escaped."))
            .property(
                "sample_data",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some(
                    "Data for the trial render at save time; variables it lacks get a placeholder.",
                )),
            )
            .examples([
                serde_json::json!({"subject": "Hello {{ name }}", "text": "Hi {{ name }}!"}),
            ])
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let needs = |part: &str| ObjectBuilder::new().required(part);
        let one_part = utoipa::openapi::schema::AnyOfBuilder::new()
            .item(needs("subject"))
            .item(needs("text"))
            .item(needs("html"));
        utoipa::openapi::schema::AllOfBuilder::new()
            .item(fields)
            .item(one_part)
            .into()
    }
}

impl ToSchema for TemplateInput {}

/// A field that, when given, must be a string (not `null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Variants by locale (`PUT /v1/templates/{name}/locales/{locale}`); a send's `locale`
    /// (or its contact's) picks one, falling back `es-MX` -> `es` -> these default parts.
    #[schema(value_type = Object)]
    pub locales: std::collections::BTreeMap<String, crate::domain::template::TemplateParts>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<MessageView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

/// `POST /v1/dead-letters/redrive`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Which failed messages to redrive; all of the tenant's (up to 10,000) when absent.
    #[schema(schema_with = message_ids)]
    pub ids: Option<Vec<String>>,
}

/// An optional list of message ids (the derive would not give the items their pattern).
fn message_ids() -> Schema {
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(super::paging::MESSAGE_ID_PATTERN));
    let list = utoipa::openapi::ArrayBuilder::new().items(id);
    Schema::OneOf(
        utoipa::openapi::OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(list)
            .build(),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveResponse {
    pub redriven: usize,
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatsView {
    pub lanes: Vec<crate::ports::LaneStats>,
    /// `tenant`: the caller's messages only (embedded); `all_tenants`: lane totals with no
    /// tenant's detail, where the queue counts only whole lanes (SQS).
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelStatsView {
    pub channel: Channel,
    pub gateway: String,
    /// Message counts by status for this tenant.
    #[schema(value_type = Object)]
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The gateway's state, error rate, latency and breaker; absent for `none`.
    pub health: Option<crate::domain::health::GatewayStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelStatsResponse {
    pub channels: Vec<ChannelStatsView>,
    /// Set while bounce or complaint rates hold the tenant's bulk lanes (`GET /v1/reputation`).
    pub reputation_paused: Option<crate::domain::deliverability::reputation::Pause>,
}
