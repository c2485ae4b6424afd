//! Deliverability: what protects a sender's reputation and the recipients' sleep. Quiet hours
//! (with where a number's owner is), reputation pauses, one-click unsubscribe tokens, warm-up
//! schedules.

pub mod quiet_hours;
pub mod reputation;
pub mod unsubscribe;
pub mod warmup;
pub mod zones;
