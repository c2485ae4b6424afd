//! The masked-number relay: the tenant's numbers, assignments of a client and a worker to a
//! pool number for a window, the routing engine that decides who gets each inbound text, and
//! the contact-sharing policy applied to relayed bodies.

pub mod assignment;
pub mod health;
pub mod number;
pub mod routing;
#[cfg(test)]
mod routing_tests;
pub mod settings;
pub mod sharing;
#[cfg(test)]
mod sharing_corpus;
