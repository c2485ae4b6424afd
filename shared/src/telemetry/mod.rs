//! Metrics: one set of names, recorded through the `metrics` facade wherever the work happens.
//! `herald serve` renders them in Prometheus text format on its own listener ([`prometheus`]);
//! the Lambda functions write them to their logs in CloudWatch's embedded metric format
//! (`aws::lambda`), which costs no API request. Labels are low-cardinality by design: lanes,
//! gateways, sources, routes, classes; never tenants, addresses or ids.

#[cfg(feature = "lambda")]
pub mod emf;
pub mod http;
pub mod prometheus;

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use crate::domain::health::Outcome;
use crate::domain::Priority;

pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
pub const HTTP_DURATION: &str = "herald_http_request_duration_seconds";
pub const LANE_CLAIMS: &str = "herald_lane_claims_total";
pub const LANE_HANDOFFS: &str = "herald_lane_handoffs_total";
pub const LANE_DWELL: &str = "herald_lane_dwell_seconds";
pub const ACCEPT_TO_SENT: &str = "herald_accept_to_sent_seconds";
pub const LANE_DEPTH: &str = "herald_lane_depth";
pub const LANE_IN_FLIGHT: &str = "herald_lane_in_flight";
pub const LANE_OLDEST_AGE: &str = "herald_lane_oldest_age_seconds";
pub const GATEWAY_OUTCOMES: &str = "herald_gateway_outcomes_total";
pub const GATEWAY_LATENCY: &str = "herald_gateway_latency_seconds";
pub const GATEWAY_BREAKER: &str = "herald_gateway_breaker_state";
pub const THROTTLED: &str = "herald_rate_limited_total";
pub const WEBHOOKS_RECEIVED: &str = "herald_webhooks_received_total";
pub const WRITER_QUEUE: &str = "herald_sqlite_writer_queue_jobs";
pub const WRITER_COMMIT: &str = "herald_sqlite_commit_seconds";
pub const ACCESS_DENIED: &str = "herald_access_denied_total";
pub const AUDIT_NOT_RECORDED: &str = "herald_audit_not_recorded_total";

/// Describes every metric once (units and help text); recorders that know none ignore it.
pub fn describe() {
    describe_counter!(HTTP_REQUESTS, "API requests by route, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "API request latency by route");
    describe_counter!(LANE_CLAIMS, "messages claimed from each lane");
    describe_counter!(LANE_HANDOFFS, "messages handed to a gateway from each lane");
    describe_histogram!(LANE_DWELL, Unit::Seconds, "due to claimed, per lane");
    describe_histogram!(
        ACCEPT_TO_SENT,
        Unit::Seconds,
        "accepted (or due) to taken by a gateway, per lane"
    );
    describe_gauge!(
        LANE_DEPTH,
        "messages waiting on each lane (sampled at scrape)"
    );
    describe_gauge!(
        LANE_IN_FLIGHT,
        "messages received and not yet acknowledged, per lane"
    );
    describe_gauge!(
        LANE_OLDEST_AGE,
        Unit::Seconds,
        "age of each lane's oldest due message"
    );
    describe_counter!(GATEWAY_OUTCOMES, "hand-offs by gateway and outcome class");
    describe_histogram!(GATEWAY_LATENCY, Unit::Seconds, "gateway call latency");
    describe_gauge!(
        GATEWAY_BREAKER,
        "breaker per gateway: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        THROTTLED,
        "hand-offs deferred for want of tokens, per gateway"
    );
    describe_counter!(WEBHOOKS_RECEIVED, "provider webhooks by source and verdict");
    describe_gauge!(WRITER_QUEUE, "jobs waiting for the SQLite writer");
    describe_histogram!(WRITER_COMMIT, Unit::Seconds, "SQLite group commit latency");
    describe_counter!(
        ACCESS_DENIED,
        "requests refused for a bad or revoked API key"
    );
    describe_counter!(
        AUDIT_NOT_RECORDED,
        "audit entries the store failed to append"
    );
}

/// Messages claimed from a lane, and how long each waited since it was due.
pub fn claimed(lane: Priority, due: impl Iterator<Item = DateTime<Utc>>, now: DateTime<Utc>) {
    let dwell = histogram!(LANE_DWELL, "lane" => lane.as_str());
    let mut n = 0;
    for at in due {
        dwell.record(seconds_since(at, now));
        n += 1;
    }
    counter!(LANE_CLAIMS, "lane" => lane.as_str()).increment(n);
}

/// A gateway's answer to a hand-off.
pub fn gateway_outcome(gateway: &str, outcome: Outcome, latency: Duration) {
    let class = match outcome {
        Outcome::Success => "success",
        Outcome::Transient => "transient",
        Outcome::Permanent => "permanent",
        Outcome::Throttled => "throttled",
    };
    let name = gateway.to_owned();
    counter!(GATEWAY_OUTCOMES, "gateway" => name.clone(), "class" => class).increment(1);
    histogram!(GATEWAY_LATENCY, "gateway" => name).record(latency.as_secs_f64());
}

/// A message a gateway took: the lane's hand-offs, and, on a first attempt, its time since it
/// was due (a retry's would count its back-off).
pub fn handed_off(lane: Priority, first_due: Option<DateTime<Utc>>) {
    counter!(LANE_HANDOFFS, "lane" => lane.as_str()).increment(1);
    if let Some(due) = first_due {
        histogram!(ACCEPT_TO_SENT, "lane" => lane.as_str()).record(seconds_since(due, Utc::now()));
    }
}

pub fn throttled(gateway: &str) {
    counter!(THROTTLED, "gateway" => gateway.to_owned()).increment(1);
}

pub fn webhook_received(source: &str, verdict: &'static str) {
    counter!(WEBHOOKS_RECEIVED, "source" => source.to_owned(), "verdict" => verdict).increment(1);
}

pub fn writer_queue(jobs: usize) {
    gauge!(WRITER_QUEUE).set(jobs as f64);
}

pub fn writer_commit(took: Duration) {
    histogram!(WRITER_COMMIT).record(took.as_secs_f64());
}

fn seconds_since(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}
