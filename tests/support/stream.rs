//! A player for the DynamoDB stream event-source mapping: reads the messages table's stream on
//! moto through its JSON API, as Lambda's poller would, and hands what it read to the `stats`
//! handler as one batch.

use serde_json::{json, Value};
use shared::aws::dynamo::StreamEvent;
use shared::aws::{lambda, AwsBackend};
use tokio::sync::Mutex;

/// The event-source mapping's batch size in `infra/template.yaml`.
const BATCH_SIZE: usize = 1000;

pub struct StreamPlayer {
    endpoint: String,
    table: String,
    /// Where the next read starts (None before the first).
    iterator: Mutex<Option<String>>,
    client: reqwest::Client,
}

impl StreamPlayer {
    pub fn new(endpoint: &str, table: &str) -> StreamPlayer {
        StreamPlayer {
            endpoint: endpoint.to_owned(),
            table: table.to_owned(),
            iterator: Mutex::new(None),
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, target: &str, body: Value) -> Value {
        let reply = self
            .client
            .post(&self.endpoint)
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", target)
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("stream player: {target}: {e}"));
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "stream player: {target}: {status} {text:.300}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stream player: {target}: {e}"))
    }

    async fn first_iterator(&self) -> String {
        let table = self
            .call(
                "DynamoDB_20120810.DescribeTable",
                json!({ "TableName": self.table }),
            )
            .await;
        let arn = table["Table"]["LatestStreamArn"]
            .as_str()
            .expect("the messages table has a stream (StreamSpecification, as in the template)")
            .to_owned();
        let stream = self
            .call(
                "DynamoDBStreams_20120810.DescribeStream",
                json!({ "StreamArn": arn }),
            )
            .await;
        let shard = stream["StreamDescription"]["Shards"][0]["ShardId"].clone();
        let it = self
            .call(
                "DynamoDBStreams_20120810.GetShardIterator",
                json!({ "StreamArn": arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON" }),
            )
            .await;
        it["ShardIterator"]
            .as_str()
            .expect("shard iterator")
            .to_owned()
    }

    /// Every change since the last read.
    pub async fn read(&self) -> StreamEvent {
        let mut iterator = self.iterator.lock().await;
        let mut at = match iterator.take() {
            Some(i) => i,
            None => self.first_iterator().await,
        };
        let mut records = Vec::new();
        loop {
            let page = self
                .call(
                    "DynamoDBStreams_20120810.GetRecords",
                    json!({ "ShardIterator": at }),
                )
                .await;
            let got = page["Records"].as_array().cloned().unwrap_or_default();
            at = page["NextShardIterator"].as_str().unwrap_or(&at).to_owned();
            if got.is_empty() {
                break;
            }
            records.extend(got);
        }
        *iterator = Some(at);
        serde_json::from_value(json!({ "Records": records })).expect("stream records")
    }

    /// Reads what changed and runs the `stats` handler over it in batches of the template's
    /// size (BatchSize 1000). Returns how many changes it counted.
    pub async fn play(&self, backend: &AwsBackend) -> usize {
        let event = self.read().await;
        let changes = event.records.len();
        for batch in event.records.chunks(BATCH_SIZE) {
            let batch = StreamEvent {
                records: batch.to_vec(),
            };
            lambda::stats(backend, batch).await.expect("stats handler");
        }
        changes
    }
}
