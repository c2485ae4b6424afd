//! The domain: types parsed at the edge, the message state machine and delivery events.
//! Nothing here knows about HTTP, SQLite or AWS.

pub mod address;
pub mod channel;
pub mod message;
pub mod priority;
pub mod sms;
pub mod status;
pub mod template;
pub mod tenant;

pub use address::{AddressError, DeviceToken, EmailAddress, PhoneNumber};
pub use channel::{Channel, Recipient};
pub use message::{Content, DeliveryEvent, Message, MessageId, NewMessage};
pub use priority::Priority;
pub use status::MessageStatus;
pub use template::{Template, TemplateName};
pub use tenant::{ApiKey, TenantId};
