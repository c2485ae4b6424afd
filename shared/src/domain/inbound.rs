//! Messages that recipients send back (SMS, WhatsApp, Telegram), and the carrier keywords that
//! opt a number out, back in, or ask for help.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::inbound_email::InboundEmail;
use super::media::MediaItem;
use super::rules::Decision;
use super::thread::ThreadId;
use super::{Channel, MessageId, TenantId};

/// One message received through a provider, stored with the tenant that owns the receiving
/// number. `(gateway, provider_message_id)` is unique: a callback delivered twice is stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Herald's id, a UUIDv7: ids sort by arrival.
    pub id: MessageId,
    pub tenant: TenantId,
    pub channel: Channel,
    pub gateway: String,
    pub provider_message_id: String,
    pub from: String,
    pub to: String,
    pub body: String,
    pub media_urls: Vec<String>,
    pub keyword: Option<Keyword>,
    pub received_at: DateTime<Utc>,
    /// The thread it joined when it was stored (set by the store).
    pub thread: Option<ThreadId>,
    /// Where the inbound pipeline is with it.
    pub progress: InboundProgress,
    /// An email's subject, headers, whole text and attachments (its `body` is the new part).
    pub email: Option<Box<InboundEmail>>,
    /// Its files as Herald stored them (or why it did not), from `media_urls` and attachments.
    pub media: Vec<MediaItem>,
}

/// Who sent a message to whom, and where it came from.
pub struct Arrival {
    pub tenant: TenantId,
    pub channel: Channel,
    /// The gateway it came through, and its id there.
    pub gateway: String,
    pub provider_message_id: String,
    pub from: String,
    pub to: String,
}

impl InboundMessage {
    /// A message that arrived just now with `body`: no keyword, media or thread yet, not
    /// processed. Callers set what their provider tells them more.
    pub fn arrived(arrival: Arrival, body: String) -> InboundMessage {
        let Arrival {
            tenant,
            channel,
            gateway,
            provider_message_id,
            from,
            to,
        } = arrival;
        InboundMessage {
            id: MessageId::new(),
            tenant,
            channel,
            gateway,
            provider_message_id,
            from,
            to,
            body,
            media_urls: Vec::new(),
            keyword: None,
            received_at: Utc::now(),
            thread: None,
            progress: InboundProgress::default(),
            email: None,
            media: Vec::new(),
        }
    }
}

/// `received -> processing -> processed`, or `failed` after its tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboundState {
    #[default]
    Received,
    Processing,
    Processed,
    Failed,
}

impl InboundState {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundState::Received => "received",
            InboundState::Processing => "processing",
            InboundState::Processed => "processed",
            InboundState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<InboundState> {
        [
            InboundState::Received,
            InboundState::Processing,
            InboundState::Processed,
            InboundState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// The pipeline's record on a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundProgress {
    pub state: InboundState,
    /// Claims so far.
    pub attempts: u32,
    pub decision: Option<Decision>,
    /// Why it failed, or why its last try did.
    pub error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    /// When a worker first took it: what processing it announces is dated from (an event's
    /// id sorts by it), the same on every try.
    pub first_claimed_at: Option<DateTime<Utc>>,
}

/// How processing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    Processed(Decision),
    Failed(String),
}

/// What claiming a message for processing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundClaim {
    /// This worker holds it now, until the lease ends.
    Claimed(Box<InboundMessage>),
    /// Another worker holds it and its lease has not ended.
    Held,
    /// It was processed (or failed) already.
    Done,
    /// No such message.
    Missing,
}

/// What a carrier keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT: no more messages to this number.
    Stop,
    /// START, UNSTOP, YES: messages again.
    Start,
    /// HELP, INFO: the sender's help text.
    Help,
}

impl Keyword {
    /// The keyword a message body is, if any. Carriers match the whole body, ignoring case,
    /// spaces and trailing punctuation: " Stop all! " is STOPALL, "stop sending" is nothing.
    pub fn of(body: &str) -> Option<Keyword> {
        let word: String = body
            .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!' | '?'))
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_uppercase)
            .collect();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::Stop),
            "START" | "UNSTOP" | "YES" => Some(Keyword::Start),
            "HELP" | "INFO" => Some(Keyword::Help),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }

    pub fn parse(s: &str) -> Option<Keyword> {
        match s {
            "stop" => Some(Keyword::Stop),
            "start" => Some(Keyword::Start),
            "help" => Some(Keyword::Help),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_the_whole_body_as_carriers_do() {
        for stop in [
            "STOP",
            "stop",
            " Stop ",
            "Stop all",
            "STOPALL",
            "unsubscribe",
            "Cancel",
            "END",
            "quit.",
        ] {
            assert_eq!(Keyword::of(stop), Some(Keyword::Stop), "{stop:?}");
        }
        for start in ["START", "unstop", "Yes", "yes!"] {
            assert_eq!(Keyword::of(start), Some(Keyword::Start), "{start:?}");
        }
        for help in ["HELP", "help ", "Info", "info?"] {
            assert_eq!(Keyword::of(help), Some(Keyword::Help), "{help:?}");
        }
        for other in ["stop sending me this", "", "STOPP", "helpful", "yes please"] {
            assert_eq!(Keyword::of(other), None, "{other:?}");
        }
        for k in [Keyword::Stop, Keyword::Start, Keyword::Help] {
            assert_eq!(Keyword::parse(k.as_str()), Some(k));
        }
    }
}
