//! SMTP through lettre (rustls): STARTTLS, implicit TLS or plain, AUTH, a pooled connection,
//! and a proper MIME message (text and html as alternatives, UTF-8 headers, Message-ID, and the
//! RFC 8058 unsubscribe headers when the message carries an unsubscribe URL).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::mime::unsubscribe_headers;
use super::secret::Secret;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const SMTP: &str = "smtp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Upgrade with STARTTLS (port 587), and refuse a server that cannot.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: a relay on the same host or network only.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender when a message names none.
    pub from: Option<String>,
    /// Connections kept open to the server.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

fn default_pool() -> u32 {
    4
}

impl SmtpConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        self.password.iter().map(|p| ("password", p)).collect()
    }

    /// AUTH PLAIN's `\0user\0password` (sent base64-encoded, and a server may quote it back).
    pub(super) fn secret_forms(&self) -> Vec<String> {
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => vec![format!("\0{user}\0{}", password.expose())],
            _ => Vec::new(),
        }
    }
}

pub struct SmtpGateway {
    /// `smtp`, or an instance's own name (`[gateways.instances.<name>]`).
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Option<String>,
    /// The domain of Message-IDs when the sender's own domain cannot be used.
    host: String,
}

impl SmtpGateway {
    pub fn new(config: SmtpConfig) -> Result<SmtpGateway, String> {
        let tls = || TlsParameters::new(config.host.clone()).map_err(|e| format!("smtp tls: {e}"));
        let (tls, port) = match config.tls {
            SmtpTls::Starttls => (Tls::Required(tls()?), config.port.unwrap_or(587)),
            SmtpTls::Implicit => (Tls::Wrapper(tls()?), config.port.unwrap_or(465)),
            SmtpTls::None => (Tls::None, config.port.unwrap_or(25)),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(15)))
            .pool_config(PoolConfig::new().max_size(config.pool_size.max(1)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(SmtpGateway {
            name: SMTP.into(),
            transport: builder.build(),
            from: config.from,
            host: config.host,
        })
    }

    /// The same gateway under an instance's name (another relay or IP pool).
    pub fn named(self, name: &str) -> SmtpGateway {
        SmtpGateway {
            name: name.into(),
            ..self
        }
    }

    /// The message's own sender, else the configured one.
    fn sender(&self, m: &OutboundMessage) -> Result<Mailbox, GatewayError> {
        let from =
            m.from.as_ref().or(self.from.as_ref()).ok_or_else(|| {
                invalid("the message names no sender and smtp has no `from`".into())
            })?;
        from.parse().map_err(|e| invalid(format!("from: {e}")))
    }

    /// The right side of our Message-IDs: the sender's domain (the one the recipient sees, and
    /// the one that owns the IDs), in ASCII; the SMTP host when that domain is not a plain
    /// dot-atom (an address literal, say).
    fn message_id_domain(&self, from: &Mailbox) -> String {
        match idna::domain_to_ascii(from.email.domain()) {
            Ok(domain)
                if !domain.is_empty()
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                domain
            }
            _ => self.host.clone(),
        }
    }

    fn message(
        &self,
        m: &OutboundMessage,
        from: Mailbox,
        message_id: &str,
    ) -> Result<Message, GatewayError> {
        let to: Mailbox = m.to.parse().map_err(|e| invalid(format!("to: {e}")))?;
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(m.content.subject.clone().unwrap_or_default())
            .message_id(Some(message_id.to_owned()));
        let mut headers = unsubscribe_headers(m).unwrap_or_default();
        headers.push(("X-Herald-Id", m.id.to_string()));
        for (name, value) in headers {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
        let text = m.content.body.clone();
        let html = m.content.html.clone();
        let built = match (text, html) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html))
            }
            (None, Some(html)) => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html),
            ),
            (text, None) => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text.unwrap_or_default()),
            ),
        };
        built.map_err(|e| invalid(e.to_string()))
    }
}

/// A message we cannot build: no retry will change that.
fn invalid(what: String) -> GatewayError {
    GatewayError::Permanent {
        code: "InvalidMessage".into(),
        message: what,
    }
}

#[async_trait]
impl Gateway for SmtpGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Email]
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        // Our Message-ID is the provider id: bounces and replies quote it.
        let from = self.sender(m)?;
        let message_id = format!(
            "<{}.{}@{}>",
            m.id.as_uuid().simple(),
            m.attempt,
            self.message_id_domain(&from)
        );
        let message = self.message(m, from, &message_id)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(GatewayReceipt {
                provider_message_id: message_id,
            }),
            // 5xx: the server refuses this message for good; 4xx: try again later. A refused
            // login (530, 534, 535) is Herald's configuration, not the message: retry it, and
            // let the failures count against the gateway's health.
            Err(e) if e.is_permanent() && !is_auth_refusal(&e) => Err(GatewayError::Permanent {
                code: e.status().map_or("5xx".into(), |c| c.to_string()),
                message: e.to_string(),
            }),
            Err(e) => Err(GatewayError::Transient(format!("smtp: {e}"))),
        }
    }
}

fn is_auth_refusal(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .map(|c| matches!(c.to_string().as_str(), "530" | "534" | "535"))
        .unwrap_or(false)
}
