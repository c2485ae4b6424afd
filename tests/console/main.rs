//! The web console over HTTP, as a browser without script uses it: sign-in and sessions, each
//! page, and what a hostile or anonymous caller gets. Its browser is `herald_tests::console`.

mod admin;
mod conversations;
mod messages;
mod operations;
mod sessions;
mod suppressions;

use chrono::{SecondsFormat, Utc};
use herald_tests::console::{signed_in, Browser};
use herald_tests::TestServer;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

pub(crate) fn scheduled_email(to: &str) -> serde_json::Value {
    let later =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({ "channel": "email", "priority": "P2", "to": to, "subject": "Later", "body": "b",
            "send_at": later })
}
