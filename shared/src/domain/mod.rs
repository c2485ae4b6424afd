//! The domain: types parsed at the edge, the message state machine and delivery events.
//! Nothing here knows about HTTP, SQLite or AWS.

pub mod address;
pub mod audit;
pub mod bulk_ids;
pub mod channel;
pub mod compose;
pub mod contact;
pub mod content;
pub mod deliverability;
pub mod health;
pub mod inbound;
pub mod inbound_email;
pub mod limits;
pub mod locale;
pub mod media;
pub mod message;
pub mod notify;
pub mod options;
pub mod packed;
pub mod priority;
pub mod relay;
pub mod rules;
pub mod secret;
pub mod sender;
pub mod sms;
pub mod status;
pub mod suppression;
pub mod suppression_csv;
pub mod template;
pub mod tenant;
pub mod thread;
pub mod thread_policy;

pub use address::{AddressError, DeviceToken, EmailAddress, PhoneNumber, TelegramChat};
pub use bulk_ids::{BulkIds, MAX_BULK_RECIPIENTS};
pub use channel::{Channel, Recipient};
pub use compose::{BulkJob, BulkJobRecipient, ComposeError, ContentSource, Envelope};
pub use contact::{Contact, ContactError, ContactFields, ContactId, Identity, IdentityKind};
pub use inbound::{InboundMessage, Keyword};
pub use message::{Content, DeliveryEvent, Message, MessageId, NewMessage};
pub use options::DeliveryOptions;
pub use priority::Priority;
pub use sender::SenderIdentity;
pub use status::{EventKind, MessageStatus};
pub use template::{Template, TemplateName};
pub use tenant::{ApiKey, KeyScope, KeyScopes, TenantId};

/// A value that failed parsing, located by its JSON pointer in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub pointer: String,
    pub code: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        pointer: impl Into<String>,
        code: &'static str,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            pointer: pointer.into(),
            code,
            detail: detail.into(),
        }
    }
}
