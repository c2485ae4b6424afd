//! The SES v2 email gateway. Every send names the configuration set, whose event destination
//! brings bounces, complaints and deliveries back, and tags the message with Herald's id so
//! those events need no look-up. Raw MIME is used when the message needs headers that simple
//! content cannot carry (List-Unsubscribe).

use async_trait::async_trait;
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageTag, RawMessage,
};
use aws_sdk_sesv2::Client;

use super::settings::SesSettings;
use crate::domain::health::ProbeReport;
use crate::domain::Channel;
use crate::gateway::mime;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const SES: &str = "ses";
/// The message tag that carries Herald's id into SES events.
pub const HERALD_ID_TAG: &str = "herald_id";

/// The message tag that names the gateway instance, so its events count for it.
pub const HERALD_GATEWAY_TAG: &str = "herald_gateway";

pub struct SesGateway {
    /// `ses`, or an instance's own name (`[gateways.instances.<name>]`, `kind = "ses"`).
    name: String,
    client: Client,
    settings: SesSettings,
}

impl SesGateway {
    pub fn new(client: Client, settings: SesSettings) -> SesGateway {
        SesGateway {
            name: SES.into(),
            client,
            settings,
        }
    }

    /// The same gateway under an instance's name: another configuration set, e.g. one bound
    /// to a dedicated IP pool.
    pub fn named(self, name: &str) -> SesGateway {
        SesGateway {
            name: name.into(),
            ..self
        }
    }

    fn content(&self, m: &OutboundMessage, from: &str) -> Result<EmailContent, GatewayError> {
        let build = |e: aws_sdk_sesv2::error::BuildError| GatewayError::Permanent {
            code: "InvalidContent".into(),
            message: e.to_string(),
        };
        if let Some(headers) = mime::unsubscribe_headers(m) {
            let raw = RawMessage::builder()
                .data(Blob::new(mime::compose(m, from, &headers)))
                .build()
                .map_err(build)?;
            return Ok(EmailContent::builder().raw(raw).build());
        }
        let utf8 = |text: &str| {
            Content::builder()
                .data(text)
                .charset("UTF-8")
                .build()
                .map_err(build)
        };
        let mut body = Body::builder();
        if let Some(text) = &m.content.body {
            body = body.text(utf8(text)?);
        }
        if let Some(html) = &m.content.html {
            body = body.html(utf8(html)?);
        }
        let message = Message::builder()
            .subject(utf8(m.content.subject.as_deref().unwrap_or_default())?)
            .body(body.build())
            .build();
        Ok(EmailContent::builder().simple(message).build())
    }
}

/// SES's answer, in the engine's terms: retry, give up, or slow down.
fn classify<E, R>(e: SdkError<E, R>) -> GatewayError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().map(str::to_owned);
    let message = e
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| DisplayErrorContext(&e).to_string());
    match code.as_deref() {
        Some(
            "TooManyRequestsException"
            | "LimitExceededException"
            | "Throttling"
            | "ThrottlingException",
        ) => GatewayError::Throttled { retry_after: None },
        // About this message or this sender: retrying cannot help.
        Some(
            code @ ("MessageRejected"
            | "BadRequestException"
            | "MailFromDomainNotVerifiedException"
            | "NotFoundException"),
        ) => GatewayError::Permanent {
            code: code.to_owned(),
            message,
        },
        // Paused or suspended sending, 5xx, timeouts, connection errors: try again later.
        Some(code) => GatewayError::Transient(format!("{code}: {message}")),
        None => GatewayError::Transient(message),
    }
}

#[async_trait]
impl Gateway for SesGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Email]
    }

    /// Every SES event carries the `herald_id` tag each send sets.
    fn callbacks_name_the_message(&self) -> bool {
        true
    }

    /// SES's own view: sending enabled on the account, and quota left for the day.
    async fn probe(&self) -> Option<ProbeReport> {
        let at = chrono::Utc::now();
        let report = match self.client.get_account().send().await {
            Ok(account) => {
                let quota = account.send_quota();
                let max = quota.map(|q| q.max24_hour_send()).unwrap_or(-1.0);
                let sent = quota.map(|q| q.sent_last24_hours()).unwrap_or(0.0);
                let enabled = account.sending_enabled();
                ProbeReport {
                    // A negative max means unlimited.
                    ok: enabled && (max < 0.0 || sent < max),
                    detail: serde_json::json!({
                        "sending_enabled": enabled,
                        "max_24_hour_send": max,
                        "sent_last_24_hours": sent,
                        "max_send_rate": quota.map(|q| q.max_send_rate()),
                        "enforcement_status": account.enforcement_status(),
                    }),
                    at,
                }
            }
            Err(e) => {
                // Unanswered is not "cannot send": the sends' own outcomes will tell.
                tracing::warn!(error = %DisplayErrorContext(&e), "SES GetAccount failed; probe skipped");
                return None;
            }
        };
        Some(report)
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        let Some(from) = m.from.as_deref().or(self.settings.default_from.as_deref()) else {
            return Err(GatewayError::Permanent {
                code: "NoSender".into(),
                message: match self.name.as_str() {
                    SES => "the message names no sender and HERALD_SES_FROM is not set".into(),
                    name => format!("the message names no sender and {name} has no `from`"),
                },
            });
        };
        let tag = |name: &str, value: &str| {
            MessageTag::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(|e| GatewayError::Permanent {
                    code: "InvalidTag".into(),
                    message: e.to_string(),
                })
        };
        let sent = self
            .client
            .send_email()
            .from_email_address(from)
            .destination(Destination::builder().to_addresses(&m.to).build())
            .content(self.content(m, from)?)
            .set_configuration_set_name(self.settings.configuration_set.clone())
            .email_tags(tag(HERALD_ID_TAG, &m.id.to_string())?)
            .email_tags(tag("herald_tenant", &m.tenant)?)
            .email_tags(tag(HERALD_GATEWAY_TAG, &self.name)?)
            .send()
            .await
            .map_err(classify)?;
        let provider_message_id = sent.message_id.ok_or_else(|| {
            GatewayError::Transient("SES accepted the message but returned no id".into())
        })?;
        Ok(GatewayReceipt {
            provider_message_id,
        })
    }
}
