//! Herald's shared crate: the domain, the engine, the HTTP API, the ports and the backends.
//! Every binary (the local `herald`, and the Lambda functions) builds on this crate.

pub mod domain;
pub mod ports;

pub mod api;
pub mod console;
pub mod detached;
pub mod engine;
pub mod gateway;
pub mod limiter;
pub mod markup;
pub mod redact;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod telemetry;
pub mod webhooks;

#[cfg(feature = "sqlite")]
pub mod embedded;

#[cfg(feature = "aws")]
pub mod aws;
