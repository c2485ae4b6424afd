//! A request meter for the AWS SDK clients: an interceptor on every client counts each request
//! by actor, service, operation and table, with the DynamoDB capacity units it consumes (see
//! `units`). tests/aws_cost.rs holds the scenarios and the budgets.

mod dynamo;
pub mod peek;
pub mod units;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use parking_lot::Mutex;
use serde_json::Value;
use shared::aws::SdkClients;

use units::Item;

/// One line of a usage table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub requests: f64,
    pub wru: f64,
    pub rru: f64,
}

/// (actor, service, operation, table or queue)
pub type Line = (String, String, String, String);

/// The meter's copy of every item written through it, to know an item's size before a write.
#[derive(Default)]
pub struct Books {
    endpoint: String,
    items: Mutex<HashMap<(String, String), Item>>,
}

/// The key attributes of each table, as in `infra/template.yaml`.
fn key_attributes(short_table: &str) -> &'static [&'static str] {
    match short_table {
        "messages" => &["id"],
        "templates" => &["tenant", "name"],
        "bulk" => &["bulk_id", "part"],
        "suppressions" => &["scope", "entry"],
        "inbound" => &["tenant", "id"],
        "audit" => &["scope", "id"],
        _ => &["pk"],
    }
}

impl Books {
    fn key_from_item(&self, table: &str, item: &Value) -> Value {
        let short = dynamo::short_table(table);
        let key: serde_json::Map<String, Value> = key_attributes(&short)
            .iter()
            .map(|k| ((*k).to_owned(), item[*k].clone()))
            .collect();
        Value::Object(key)
    }

    fn slot(table: &str, key: &Value) -> (String, String) {
        (table.to_owned(), key.to_string())
    }

    fn item(&self, table: &str, key: &Value) -> Option<Item> {
        self.items.lock().get(&Self::slot(table, key)).cloned()
    }

    fn remember(&self, table: &str, key: &Value, item: Option<Item>) {
        let slot = Self::slot(table, key);
        let mut items = self.items.lock();
        match item {
            Some(i) => items.insert(slot, i),
            None => items.remove(&slot),
        };
    }

    fn peek(&self, table: &str, key: &Value) -> Option<Item> {
        peek::get_item(&self.endpoint, table, key)
    }
}

#[derive(Default)]
struct Shared {
    lines: Mutex<BTreeMap<Line, Tally>>,
    books: Books,
}

/// Counts what every client it built asks of AWS.
#[derive(Clone)]
pub struct Meter(Arc<Shared>);

/// The request as sent, kept for the response hook.
#[derive(Debug, Clone)]
struct Sent(Vec<u8>);

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug)]
struct Counting {
    actor: &'static str,
    meter: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("meter")
    }
}

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "herald-test-meter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context
            .request()
            .body()
            .bytes()
            .unwrap_or_default()
            .to_vec();
        cfg.interceptor_state().store_put(Sent(body));
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let (service, op) = (meta.service().to_owned(), meta.name().to_owned());
        let sent = cfg.load::<Sent>().map(|s| s.0.clone()).unwrap_or_default();
        let response = context.response();
        let failed = !response.status().is_success();
        let body = response.body().bytes().unwrap_or_default();
        let req: Value = serde_json::from_slice(&sent).unwrap_or(Value::Null);
        let resp: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (target, tally) = match service.as_str() {
            "dynamodb" | "DynamoDB" => {
                let table = req["TableName"]
                    .as_str()
                    .map(dynamo::short_table)
                    .unwrap_or_else(|| tables_of(&req));
                let (wru, rru) = dynamo::charge(&op, &req, &resp, failed, &self.meter.books);
                (
                    table,
                    Tally {
                        requests: 1.0,
                        wru,
                        rru,
                    },
                )
            }
            "sqs" | "SQS" => {
                // SQS bills each 64 KB of a request's payload as one request.
                let chunks = sent.len().div_ceil(64 * 1024).max(1) as f64;
                let queue = queue_of(&req);
                (
                    queue,
                    Tally {
                        requests: chunks,
                        ..Tally::default()
                    },
                )
            }
            _ => (
                String::new(),
                Tally {
                    requests: 1.0,
                    ..Tally::default()
                },
            ),
        };
        let line = (self.actor.to_owned(), service.to_lowercase(), op, target);
        self.meter.add(line, tally);
        Ok(())
    }
}

fn tables_of(req: &Value) -> String {
    let names: Vec<String> = req["RequestItems"]
        .as_object()
        .map(|o| o.keys().map(|k| dynamo::short_table(k)).collect())
        .or_else(|| {
            req["TransactItems"].as_array().map(|a| {
                a.iter()
                    .filter_map(|t| t.as_object()?.values().next()?["TableName"].as_str())
                    .map(dynamo::short_table)
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut names = names;
    names.sort();
    names.dedup();
    names.join("+")
}

/// A queue's name without the stack prefix, from its URL.
fn queue_of(req: &Value) -> String {
    req["QueueUrl"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .map(dynamo::short_table)
        .unwrap_or_default()
}

impl Shared {
    fn add(&self, line: Line, t: Tally) {
        let mut lines = self.lines.lock();
        let entry = lines.entry(line).or_default();
        entry.requests += t.requests;
        entry.wru += t.wru;
        entry.rru += t.rru;
    }
}

impl Meter {
    pub fn new(endpoint: &str) -> Meter {
        Meter(Arc::new(Shared {
            lines: Mutex::default(),
            books: Books {
                endpoint: endpoint.to_owned(),
                items: Mutex::default(),
            },
        }))
    }

    /// Clients whose every request is counted for `actor`.
    pub fn clients(&self, sdk: &aws_config::SdkConfig, actor: &'static str) -> SdkClients {
        let counting = || Counting {
            actor,
            meter: self.0.clone(),
        };
        SdkClients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk)
                    .interceptor(counting())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .interceptor(counting())
                    .build(),
            ),
            sesv2: aws_sdk_sesv2::Client::from_conf(
                aws_sdk_sesv2::config::Builder::from(sdk)
                    .interceptor(counting())
                    .build(),
            ),
            s3: shared::aws::s3_client(
                sdk,
                aws_sdk_s3::config::Builder::from(sdk).interceptor(counting()),
            ),
        }
    }

    /// Counts a request made for us outside our clients (SNS delivering to our queue).
    pub fn add(&self, line: Line, tally: Tally) {
        self.0.add(line, tally);
    }

    /// Everything counted so far; the meter starts over.
    pub fn take(&self) -> Usage {
        Usage(std::mem::take(&mut *self.0.lines.lock()))
    }
}

/// What a scenario asked of AWS.
#[derive(Debug, Clone, Default)]
pub struct Usage(pub BTreeMap<Line, Tally>);

impl Usage {
    pub fn merge(&mut self, other: Usage) {
        for (line, t) in other.0 {
            let entry = self.0.entry(line).or_default();
            entry.requests += t.requests;
            entry.wru += t.wru;
            entry.rru += t.rru;
        }
    }

    /// The sum over the lines `keep` selects.
    pub fn total(&self, keep: impl Fn(&Line) -> bool) -> Tally {
        let mut t = Tally::default();
        for (_, tally) in self.0.iter().filter(|(l, _)| keep(l)) {
            t.requests += tally.requests;
            t.wru += tally.wru;
            t.rru += tally.rru;
        }
        t
    }

    /// Prints the table, per `per` (1 for one message, the recipients for a bulk job).
    pub fn print(&self, title: &str, per: f64) {
        println!("\n{title} (per {per} message(s); totals divided by {per})");
        println!(
            "{:<10} {:<9} {:<20} {:<24} {:>10} {:>8} {:>8}",
            "actor", "service", "operation", "table/queue", "requests", "WRU", "RRU"
        );
        for ((actor, service, op, target), t) in &self.0 {
            println!(
                "{actor:<10} {service:<9} {op:<20} {target:<24} {:>10.3} {:>8.3} {:>8.3}",
                t.requests / per,
                t.wru / per,
                t.rru / per
            );
        }
    }
}
