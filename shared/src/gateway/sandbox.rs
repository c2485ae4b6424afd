//! The sandbox gateway: every channel, no account. It answers like the SES mailbox simulator
//! and Twilio's test numbers, and reports delivery callbacks back into the engine, so the
//! whole lifecycle is visible locally.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use rand::Rng;
use serde_json::json;
use tokio::sync::mpsc;

use crate::domain::{Channel, MessageId, Priority};
use crate::ports::{
    Gateway, GatewayError, GatewayReceipt, OutboundMessage, ProviderEvent, ProviderEventKind,
};

pub const SANDBOX: &str = "sandbox";
const SES_SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The gateway's name (two sandboxes with different names can stand in for a primary
    /// provider and its failover).
    pub name: String,
    /// Simulated provider latency per send.
    pub latency: Duration,
    /// Share of sends (0..=1) that fail with a transient error.
    pub failure_rate: f64,
    /// How long after a send the provider's callback arrives.
    pub callback_delay: Duration,
    /// Append-only record of every accepted send, outside the process's memory.
    pub send_log: Option<PathBuf>,
    /// Keep hand-offs in memory too (tests and the benchmark read them).
    pub record_handoffs: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            name: SANDBOX.to_owned(),
            latency: Duration::ZERO,
            failure_rate: 0.0,
            callback_delay: Duration::from_millis(20),
            send_log: None,
            record_handoffs: false,
        }
    }
}

/// One hand-off as the sandbox saw it.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub gateway: String,
    pub message_id: MessageId,
    pub priority: Priority,
    pub attempt: u32,
    pub at_micros: i64,
    /// The List-Unsubscribe header an email gateway would have sent.
    pub list_unsubscribe: Option<String>,
}

pub struct SandboxGateway {
    config: SandboxConfig,
    /// The failure rate as f64 bits: tests and operators change it while it runs.
    failure_rate: AtomicU64,
    /// Messages already answered with a throttle (`throttle@` addresses throttle once).
    throttled: Mutex<HashSet<MessageId>>,
    log: Option<Mutex<File>>,
    handoffs: Arc<Mutex<Vec<Handoff>>>,
    /// Callbacks in the order they are due: the delay is the same for every send.
    scheduled: mpsc::UnboundedSender<(tokio::time::Instant, Vec<ProviderEvent>)>,
    /// Where due callbacks go (the tracker).
    callbacks: mpsc::Sender<ProviderEvent>,
}

/// What the simulator does with a recipient.
enum Behaviour {
    Deliver,
    Bounce {
        permanent: bool,
        reason: &'static str,
    },
    Complain,
    Reject {
        code: &'static str,
        message: &'static str,
    },
}

type Callbacks = Vec<(ProviderEventKind, serde_json::Value)>;

/// The callbacks the simulated provider sends for a recipient, or its refusal.
fn callbacks_for(channel: Channel, to: &str) -> Result<Callbacks, GatewayError> {
    Ok(match behaviour(channel, to) {
        Behaviour::Reject { code, message } => {
            return Err(GatewayError::Permanent {
                code: code.into(),
                message: message.into(),
            })
        }
        Behaviour::Deliver => vec![(ProviderEventKind::Delivered, delivered_detail(channel))],
        Behaviour::Bounce { permanent, reason } => {
            vec![(
                ProviderEventKind::Bounced { permanent },
                json!({ "bounce_type": "Permanent", "diagnostic": reason }),
            )]
        }
        Behaviour::Complain => vec![
            (
                ProviderEventKind::Delivered,
                json!({ "smtp_response": "250 2.6.0 Message received" }),
            ),
            (
                ProviderEventKind::Complained,
                json!({ "feedback_type": "abuse" }),
            ),
        ],
    })
}

/// What the provider says when it delivered: an SMTP reply for email, a carrier status otherwise.
fn delivered_detail(channel: Channel) -> serde_json::Value {
    match channel {
        Channel::Email => json!({ "smtp_response": "250 2.6.0 Message received" }),
        Channel::Sms => json!({ "provider_status": "delivered" }),
        Channel::Push => json!({ "provider_status": "delivered to device" }),
        Channel::Whatsapp => json!({ "provider_status": "delivered" }),
        Channel::Telegram => json!({ "provider_status": "sent to chat" }),
    }
}

/// How long the sandbox's 429 asks the sender to wait.
pub const THROTTLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `throttle@simulator.amazonses.com`: answered 429 (Retry-After 1 s) the first time.
fn is_throttle_address(channel: Channel, to: &str) -> bool {
    channel == Channel::Email
        && to.rsplit_once('@').is_some_and(|(local, domain)| {
            local == "throttle" && domain.eq_ignore_ascii_case(SES_SIMULATOR_DOMAIN)
        })
}

fn behaviour(channel: Channel, to: &str) -> Behaviour {
    match channel {
        Channel::Email => {
            let (local, domain) = to.rsplit_once('@').unwrap_or((to, ""));
            if !domain.eq_ignore_ascii_case(SES_SIMULATOR_DOMAIN) {
                return Behaviour::Deliver;
            }
            match local.split('+').next().unwrap_or(local) {
                "bounce" => Behaviour::Bounce {
                    permanent: true,
                    reason: "General: mailbox does not exist",
                },
                "suppressionlist" => Behaviour::Bounce {
                    permanent: true,
                    reason: "Suppressed: address is on the account suppression list",
                },
                "complaint" => Behaviour::Complain,
                _ => Behaviour::Deliver, // success@, ooto@ (delivers, with an auto-reply)
            }
        }
        Channel::Sms => match to {
            "+15005550001" => Behaviour::Reject {
                code: "21211",
                message: "The 'To' number is not a valid phone number",
            },
            "+15005550009" => Behaviour::Reject {
                code: "21612",
                message: "The 'To' phone number is not currently reachable via SMS",
            },
            // A carrier filtering the number's texts as spam: what flags a relay number.
            "+15005550007" => Behaviour::Reject {
                code: "30007",
                message: "Message filtered by the carrier",
            },
            _ => Behaviour::Deliver,
        },
        Channel::Push if to.starts_with("unregistered") => Behaviour::Reject {
            code: "UNREGISTERED",
            message: "the registration token is not registered",
        },
        Channel::Push => Behaviour::Deliver,
        // WhatsApp's "not a WhatsApp user" (131026), Telegram's "chat not found".
        Channel::Whatsapp if to == "+15005550001" => Behaviour::Reject {
            code: "131026",
            message: "Message undeliverable: the number is not on WhatsApp",
        },
        Channel::Telegram if to == "-1" => Behaviour::Reject {
            code: "400",
            message: "Bad Request: chat not found",
        },
        Channel::Whatsapp | Channel::Telegram => Behaviour::Deliver,
    }
}

impl SandboxGateway {
    /// Returns the gateway and the stream of callbacks it will produce.
    pub fn new(
        config: SandboxConfig,
    ) -> std::io::Result<(SandboxGateway, mpsc::Receiver<ProviderEvent>)> {
        // Bounded: a slow tracker slows the callbacks, not memory.
        let (tx, rx) = mpsc::channel(65_536);
        Ok((
            SandboxGateway::with_callbacks(config, tx, Arc::default())?,
            rx,
        ))
    }

    /// Another sandbox (a failover stand-in) whose callbacks and hand-offs go where this one's go.
    pub fn sibling(&self, config: SandboxConfig) -> std::io::Result<SandboxGateway> {
        SandboxGateway::with_callbacks(config, self.callbacks.clone(), self.handoffs.clone())
    }

    fn with_callbacks(
        config: SandboxConfig,
        callbacks: mpsc::Sender<ProviderEvent>,
        handoffs: Arc<Mutex<Vec<Handoff>>>,
    ) -> std::io::Result<SandboxGateway> {
        let log = match &config.send_log {
            Some(path) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        let (scheduled, due) = mpsc::unbounded_channel();
        tokio::spawn(deliver_callbacks(due, callbacks.clone()));
        Ok(SandboxGateway {
            failure_rate: AtomicU64::new(config.failure_rate.to_bits()),
            throttled: Mutex::default(),
            config,
            log,
            handoffs,
            scheduled,
            callbacks,
        })
    }

    /// Start-up recovery: a provider keeps retrying its callbacks after Herald restarts, so the
    /// sandbox sends again the callbacks of messages it took that are still `sent`.
    pub fn resume_callbacks(&self, sent: &[crate::domain::Message]) {
        for m in sent {
            let (Some(provider_id), Ok(callbacks)) =
                (&m.provider_message_id, callbacks_for(m.channel, &m.to))
            else {
                continue;
            };
            self.schedule_callbacks(m.id, provider_id.clone(), callbacks);
        }
    }

    /// Changes the share of sends that fail transiently (0 to 1), at once.
    pub fn set_failure_rate(&self, rate: f64) {
        self.failure_rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    fn failure_rate(&self) -> f64 {
        f64::from_bits(self.failure_rate.load(Ordering::Relaxed))
    }

    /// The in-memory hand-off record (empty unless `record_handoffs`).
    pub fn handoffs(&self) -> Arc<Mutex<Vec<Handoff>>> {
        self.handoffs.clone()
    }

    /// The hand-off moment: Herald gave the message to the gateway.
    fn record_handoff(&self, m: &OutboundMessage) {
        if self.config.record_handoffs {
            let at_micros = Utc::now().timestamp_micros();
            self.handoffs.lock().push(Handoff {
                gateway: self.config.name.clone(),
                message_id: m.id,
                priority: m.priority,
                attempt: m.attempt,
                at_micros,
                list_unsubscribe: super::mime::unsubscribe_headers(m)
                    .and_then(|h| h.into_iter().find(|(name, _)| *name == "List-Unsubscribe"))
                    .map(|(_, value)| value),
            });
        }
    }

    /// The provider accepted the message: one write(2) to the send log, which survives a kill -9.
    fn log_send(&self, m: &OutboundMessage) -> Result<(), GatewayError> {
        if let Some(log) = &self.log {
            let line = format!(
                "{}\t{}\t{}\t{}\n",
                Utc::now().timestamp_micros(),
                m.id,
                m.attempt,
                m.priority
            );
            log.lock()
                .write_all(line.as_bytes())
                .map_err(|e| GatewayError::Transient(format!("sandbox send log: {e}")))?;
        }
        Ok(())
    }

    fn schedule_callbacks(
        &self,
        message_id: MessageId,
        provider_message_id: String,
        kinds: Vec<(ProviderEventKind, serde_json::Value)>,
    ) {
        let events = kinds
            .into_iter()
            .map(|(kind, detail)| ProviderEvent {
                gateway: self.config.name.clone(),
                provider_message_id: provider_message_id.clone(),
                message_id: Some(message_id),
                kind,
                at: Utc::now(),
                detail,
            })
            .collect();
        let due = tokio::time::Instant::now() + self.config.callback_delay;
        // Fails only once the engine has shut down.
        let _ = self.scheduled.send((due, events));
    }
}

/// The simulated provider's webhook sender: one task for every callback, instead of a timer
/// task per send.
async fn deliver_callbacks(
    mut due: mpsc::UnboundedReceiver<(tokio::time::Instant, Vec<ProviderEvent>)>,
    out: mpsc::Sender<ProviderEvent>,
) {
    while let Some((at, events)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        for mut event in events {
            event.at = Utc::now();
            if out.send(event).await.is_err() {
                return; // engine shut down
            }
        }
    }
}

#[async_trait]
impl Gateway for SandboxGateway {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn channels(&self) -> &[Channel] {
        &Channel::ALL
    }

    fn suppression_for(&self, code: &str) -> Option<crate::domain::suppression::Reason> {
        use crate::domain::suppression::Reason;
        match code {
            "UNREGISTERED" => Some(Reason::InvalidToken),
            // Twilio: the recipient replied STOP to this sender.
            "21610" => Some(Reason::SmsOptOut),
            _ => None,
        }
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        self.record_handoff(m);
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let failure_rate = self.failure_rate();
        if failure_rate > 0.0 && rand::thread_rng().gen_bool(failure_rate) {
            return Err(GatewayError::Transient(
                "sandbox: simulated provider failure (503)".into(),
            ));
        }
        if is_throttle_address(m.channel, &m.to) && self.throttled.lock().insert(m.id) {
            // A 429 with Retry-After, once per message: the pace test's provider push-back.
            return Err(GatewayError::Throttled {
                retry_after: Some(THROTTLE_RETRY_AFTER),
            });
        }
        let callbacks = callbacks_for(m.channel, &m.to)?;
        self.log_send(m)?;
        let provider_message_id = format!("sbx-{}-{}", m.id.as_uuid().simple(), m.attempt);
        self.schedule_callbacks(m.id, provider_message_id.clone(), callbacks);
        Ok(GatewayReceipt {
            provider_message_id,
        })
    }
}
