//! AWS test harness: a fresh stack (tables, queues, SES identity) on moto server for each test,
//! the same shapes as `infra/template.yaml`, and a player for the SQS event-source mapping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::aws::lambda::{self, ColdStart};
use shared::aws::settings::{Queues, SesSettings, Tables};
use shared::aws::AwsSettings;
use shared::domain::{Priority, TenantId};
use shared::engine::{EngineConfig, Herald};

/// Where the AWS emulator listens. `scripts/test.sh` starts moto and sets it.
pub fn endpoint() -> String {
    std::env::var("HERALD_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "HERALD_TEST_AWS_ENDPOINT is not set. The AWS tests need an AWS emulator: run \
             ./scripts/test.sh (it installs moto and starts it), or start one yourself \
             (`./scripts/python-tools.sh` then `.venv/bin/python scripts/moto_server.py -p 5000`: \
             moto one request at a time, as DynamoDB's conditional writes need; or LocalStack) \
             and export HERALD_TEST_AWS_ENDPOINT=http://127.0.0.1:5000"
        )
    })
}

pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint())
        .load()
        .await
}

/// One test's stack: every name carries a random prefix, so tests share one emulator.
/// Where the stack's unsubscribe links point.
pub const UNSUBSCRIBE_BASE: &str = "https://herald.example.test";

pub struct Stack {
    pub sdk: SdkConfig,
    pub settings: AwsSettings,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dlqs: [String; 5],
    pub bulk_dlq: String,
    pub notify_dlq: String,
    pub sender: String,
    /// The messages table's stream, as the `stats` function's event-source mapping reads it.
    pub messages_stream: crate::stream::StreamPlayer,
}

/// Name, keys, key attributes and indexes of one table, as in `infra/template.yaml`.
type TableSpec = (
    &'static str,
    Vec<KeySchemaElement>,
    Vec<AttributeDefinition>,
    Vec<GlobalSecondaryIndex>,
);

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

fn attr(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .unwrap()
}

fn index(
    name: &str,
    keys: Vec<KeySchemaElement>,
    projection: ProjectionType,
) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(keys))
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .unwrap()
}

/// `by_tenant`, as in `infra/template.yaml`: only attributes that never change are projected.
fn search_index() -> GlobalSecondaryIndex {
    use KeyType::{Hash, Range};
    let projection = Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(
            SEARCH_PROJECTION.iter().map(|a| (*a).to_owned()).collect(),
        ))
        .build();
    GlobalSecondaryIndex::builder()
        .index_name("by_tenant")
        .set_key_schema(Some(vec![key("search_shard", Hash), key("id", Range)]))
        .projection(projection)
        .build()
        .unwrap()
}

/// The attributes `by_tenant` projects besides its keys.
pub const SEARCH_PROJECTION: &[&str] = &[
    "channel",
    "priority",
    "recipient",
    "source_type",
    "source_id",
    "external_id",
    "bulk_id",
];

impl Stack {
    pub async fn create() -> Stack {
        let sdk = sdk().await;
        let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let tables = Tables::of_stack(&prefix);
        use KeyType::{Hash, Range};
        use ScalarAttributeType::{N, S};
        let specs: Vec<TableSpec> = vec![
            (
                "messages",
                vec![key("id", Hash)],
                vec![
                    attr("id", S),
                    attr("provider_key", S),
                    attr("dl_tenant", S),
                    attr("search_shard", S),
                ],
                vec![
                    index(
                        "by_provider",
                        vec![key("provider_key", Hash)],
                        ProjectionType::KeysOnly,
                    ),
                    index(
                        "dead_letters",
                        vec![key("dl_tenant", Hash), key("id", Range)],
                        ProjectionType::All,
                    ),
                    search_index(),
                ],
            ),
            (
                "idempotency",
                vec![key("pk", Hash)],
                vec![attr("pk", S)],
                vec![],
            ),
            (
                "templates",
                vec![key("tenant", Hash), key("name", Range)],
                vec![attr("tenant", S), attr("name", S)],
                vec![],
            ),
            (
                "tenants",
                vec![key("pk", Hash)],
                vec![attr("pk", S)],
                vec![],
            ),
            (
                "bulk",
                vec![key("bulk_id", Hash), key("part", Range)],
                vec![attr("bulk_id", S), attr("part", N)],
                vec![],
            ),
            (
                "rate-limits",
                vec![key("pk", Hash)],
                vec![attr("pk", S)],
                vec![],
            ),
            ("health", vec![key("pk", Hash)], vec![attr("pk", S)], vec![]),
            (
                "suppressions",
                vec![key("scope", Hash), key("entry", Range)],
                vec![attr("scope", S), attr("entry", S)],
                vec![],
            ),
            (
                "inbound",
                vec![key("tenant", Hash), key("id", Range)],
                vec![
                    attr("tenant", S),
                    attr("id", S),
                    attr("pending", S),
                    attr("due_at", N),
                ],
                vec![index(
                    "pending",
                    vec![key("pending", Hash), key("due_at", Range)],
                    ProjectionType::KeysOnly,
                )],
            ),
            (
                "audit",
                vec![key("scope", Hash), key("id", Range)],
                vec![attr("scope", S), attr("id", S)],
                vec![],
            ),
            (
                "webhook-endpoints",
                vec![key("tenant", Hash), key("id", Range)],
                vec![attr("tenant", S), attr("id", S)],
                vec![],
            ),
            (
                "contacts",
                vec![key("tenant", Hash), key("sk", Range)],
                vec![
                    attr("tenant", S),
                    attr("sk", S),
                    attr("activity", S),
                    attr("followup_pending", S),
                    attr("next_followup_at", N),
                ],
                vec![
                    index(
                        "by_activity",
                        vec![key("tenant", Hash), key("activity", Range)],
                        ProjectionType::All,
                    ),
                    index(
                        "followups_due",
                        vec![
                            key("followup_pending", Hash),
                            key("next_followup_at", Range),
                        ],
                        ProjectionType::All,
                    ),
                ],
            ),
            (
                "webhook-deliveries",
                vec![key("id", Hash)],
                vec![attr("id", S), attr("endpoint_id", S)],
                vec![index(
                    "by_endpoint",
                    vec![key("endpoint_id", Hash), key("id", Range)],
                    ProjectionType::All,
                )],
            ),
        ];
        for (name, keys, attrs, indexes) in specs {
            // The stats function counts the messages table's changes from its stream.
            let stream = (name == "messages").then(|| {
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .unwrap()
            });
            dynamo
                .create_table()
                .table_name(format!("{prefix}-{name}"))
                .set_stream_specification(stream)
                .set_key_schema(Some(keys))
                .set_attribute_definitions(Some(attrs))
                .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
                .unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
        }
        let mut lanes: [Option<String>; 5] = Default::default();
        let mut dlqs: [String; 5] = Default::default();
        for lane in Priority::ALL {
            let (url, dlq) = queue_with_dlq(&sqs, &format!("{prefix}-{lane}"), 5).await;
            lanes[lane.index()] = Some(url);
            dlqs[lane.index()] = dlq;
        }
        let (bulk, bulk_dlq) = queue_with_dlq(&sqs, &format!("{prefix}-bulk"), 5).await;
        let (notify, notify_dlq) = queue_with_dlq(&sqs, &format!("{prefix}-notify"), 12).await;
        let (notify_ordered, _) =
            queue_with_dlq(&sqs, &format!("{prefix}-notify-ordered.fifo"), 5).await;
        let (inbound, _) = queue_with_dlq(&sqs, &format!("{prefix}-inbound"), 10).await;
        let ses = aws_sdk_sesv2::Client::new(&sdk);
        let domain = format!("{prefix}.example.com");
        ses.create_email_identity()
            .email_identity(&domain)
            .send()
            .await
            .expect("create SES identity");
        ses.create_configuration_set()
            .configuration_set_name(&prefix)
            .send()
            .await
            .expect("create SES configuration set");
        let sender = format!("news@{domain}");
        let media_bucket = prefix.to_lowercase();
        shared::aws::s3_client(&sdk, aws_sdk_s3::config::Builder::from(&sdk))
            .create_bucket()
            .bucket(&media_bucket)
            .send()
            .await
            .expect("create the media bucket");
        let settings = AwsSettings {
            tables,
            queues: Queues {
                lanes,
                bulk: Some(bulk),
                notify_ordered: Some(notify_ordered),
                notify: Some(notify),
                inbound: Some(inbound),
            },
            max_receive_count: 5,
            ses: Some(SesSettings {
                configuration_set: Some(prefix.clone()),
                default_from: Some(sender.clone()),
            }),
            retention: Duration::from_secs(30 * 24 * 3600),
            lane: None,
            rate_limits: Default::default(),
            gateways: Default::default(),
            webhooks: Default::default(),
            dev_forward_allow: Default::default(),
            media_bucket: Some(media_bucket),
            media: Default::default(),
            unsubscribe: shared::engine::unsubscribe::UnsubscribeConfig {
                base_url: Some(UNSUBSCRIBE_BASE.into()),
                keys: shared::domain::deliverability::unsubscribe::UnsubscribeKeys::new(vec![
                    b"a test key for unsubscribe links, 32+ bytes".to_vec(),
                ])
                .expect("a long enough key"),
            },
            warmups: Default::default(),
        };
        // As a deploy ends (`herald upgrade`): a new stack's list has every look-up it needs,
        // and its dispatchers create bulk messages at their claims.
        let store = shared::aws::AwsBackend::new(&sdk, &settings).store;
        store
            .index_suppressions_by_address()
            .await
            .expect("a new stack's suppression list marked as upgraded");
        store
            .mark_claims_create()
            .await
            .expect("a new stack marked for bulk messages created at their claims");
        let messages_table = settings.tables.messages.clone().unwrap_or_default();
        Stack {
            messages_stream: crate::stream::StreamPlayer::new(&endpoint(), &messages_table),
            sdk,
            settings,
            dynamo,
            sqs,
            dlqs,
            bulk_dlq,
            notify_dlq,
            sender,
        }
    }

    pub fn lane_url(&self, lane: Priority) -> &str {
        self.settings.queues.lanes[lane.index()].as_deref().unwrap()
    }

    pub fn bulk_url(&self) -> &str {
        self.settings.queues.bulk.as_deref().unwrap()
    }

    /// Plays the SQS event-source mapping once: receives up to `max` messages, hands them to
    /// `handler` as one event (the JSON Lambda would send), and deletes those it did not report
    /// as failures. Returns the handler's response (None when the queue was empty).
    pub async fn poll_once<F, Fut>(
        &self,
        url: &str,
        max: i32,
        handler: F,
    ) -> Option<(SqsEvent, SqsBatchResponse)>
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: std::future::Future<Output = SqsBatchResponse>,
    {
        let got = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.min(10))
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return None;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:herald",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        let event: SqsEvent =
            serde_json::from_value(json!({ "Records": records })).expect("SqsEvent");
        let response = handler(event.clone()).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        // As Lambda's poller does: the finished records in one DeleteMessageBatch.
        let finished: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !failed.contains(&m.message_id().unwrap_or_default()))
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .expect("delete entry")
            })
            .collect();
        if !finished.is_empty() {
            let deleted = self
                .sqs
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(finished))
                .send()
                .await
                .expect("delete");
            assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
        }
        Some((event, response))
    }

    /// Raises a queue's maxReceiveCount (its DLQ stays the same).
    pub async fn allow_receives(&self, url: &str, max_receive: u32) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .expect("queue attributes");
        let policy = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .expect("a redrive policy");
        let mut policy: Value = serde_json::from_str(policy).expect("redrive policy");
        policy["maxReceiveCount"] = json!(max_receive.to_string());
        self.sqs
            .set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .expect("set redrive policy");
    }

    /// Visible plus in-flight plus delayed messages of a queue.
    pub async fn queue_count(&self, url: &str) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        let get = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
    }
}

async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive: u32,
) -> (String, String) {
    // A FIFO queue (its name ends in .fifo) needs a FIFO DLQ, and is set up as the template
    // sets it: high throughput, deduplication per group.
    let (base, fifo) = match name.strip_suffix(".fifo") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let suffix = if fifo { ".fifo" } else { "" };
    let create = |queue: String| {
        let mut request = sqs.create_queue().queue_name(queue);
        if fifo {
            request = request
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
                .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
        }
        request
    };
    let dlq = create(format!("{base}-dlq{suffix}"))
        .send()
        .await
        .expect("create dlq")
        .queue_url
        .expect("dlq url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("dlq arn");
    let redrive =
        json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive.to_string() });
    let url = create(name.to_owned())
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::VisibilityTimeout, "180")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    (url, dlq)
}

/// What moto's SES recorded as sent, from its state dump: (destinations, raw or simple body).
pub async fn ses_sent() -> Vec<Value> {
    let url = format!("{}/moto-api/data.json", endpoint());
    // moto builds the dump by walking every tracked model while other tests' requests add to
    // them, so a dump can fail with a 500; another try sees a settled state.
    let mut data = Value::Null;
    for attempt in 0..20 {
        let response = reqwest::get(&url).await.expect("moto state");
        let status = response.status();
        let body = response.text().await.expect("moto state body");
        match serde_json::from_str::<Value>(&body) {
            Ok(parsed) if status.is_success() => {
                data = parsed;
                break;
            }
            _ if attempt < 19 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("moto state dump failed: {status} {body:.300}"),
        }
    }
    let mut sent = Vec::new();
    for kind in ["Message", "RawMessage"] {
        if let Some(list) = data["ses"][kind].as_array() {
            sent.extend(list.iter().cloned());
        }
    }
    sent
}

/// An AWS-backed Herald: the `api` function's Router served on loopback over a fresh stack, a key of tenant
/// `acme`, and the consumers run by [`Stack::poll_once`].
pub struct AwsApi {
    pub stack: Stack,
    pub herald: Arc<Herald>,
    pub cold: ColdStart,
    /// The `stats` function's clients (metered apart).
    pub stats: shared::aws::AwsBackend,
    pub url: String,
    pub key: String,
    pub client: reqwest::Client,
}

impl AwsApi {
    pub async fn start() -> AwsApi {
        AwsApi::start_tuned(|_| {}).await
    }

    /// As [`AwsApi::start`], with the engine configuration changed by `tune`.
    pub async fn start_tuned(tune: impl FnOnce(&mut EngineConfig)) -> AwsApi {
        let stack = Stack::create().await;
        let clients = shared::aws::SdkClients::new(&stack.sdk);
        let stats = shared::aws::SdkClients::new(&stack.sdk);
        let mut config = lambda::lambda_engine_config();
        tune(&mut config);
        AwsApi::serve_with(stack, clients, stats, config).await
    }

    /// Herald's clients count for `herald` on `meter`, and the event-source player's SQS
    /// client (receives and deletes, as Lambda's pollers make them) for `lambda-esm`.
    pub async fn start_metered(meter: &crate::meter::Meter) -> AwsApi {
        AwsApi::start_metered_with(meter, |_| {}).await
    }

    /// As [`AwsApi::start_metered`], with settings of the test's own (paces, say).
    pub async fn start_metered_with(
        meter: &crate::meter::Meter,
        configure: impl FnOnce(&mut AwsSettings),
    ) -> AwsApi {
        let mut stack = Stack::create().await;
        configure(&mut stack.settings);
        stack.sqs = meter.clients(&stack.sdk, "lambda-esm").sqs;
        let clients = meter.clients(&stack.sdk, "herald");
        let stats = meter.clients(&stack.sdk, "stats");
        AwsApi::serve(stack, clients, stats).await
    }

    async fn serve(
        stack: Stack,
        clients: shared::aws::SdkClients,
        stats: shared::aws::SdkClients,
    ) -> AwsApi {
        AwsApi::serve_with(stack, clients, stats, lambda::lambda_engine_config()).await
    }

    async fn serve_with(
        stack: Stack,
        clients: shared::aws::SdkClients,
        stats: shared::aws::SdkClients,
        config: EngineConfig,
    ) -> AwsApi {
        let stats = shared::aws::AwsBackend::with_clients(stats, &stack.settings);
        let cold = ColdStart::with_config(clients, stack.settings.clone(), config).unwrap();
        let herald = cold.herald.clone();
        let tenant = TenantId::parse("acme").unwrap();
        let all = shared::domain::KeyScopes::ALL;
        let key = shared::engine::keys::create_key(herald.tenants.as_ref(), &tenant, all)
            .await
            .unwrap()
            .expose();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The `api` function's own Router: Lambda's body limits, and the console.
        let router = lambda::api_app(herald.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        AwsApi {
            stack,
            herald,
            cold,
            stats,
            url,
            key,
            client: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.key, method, path, body).await
    }

    /// A new key, with every scope, of another tenant.
    pub async fn key_of(&self, tenant: &str) -> String {
        let tenant = TenantId::parse(tenant).unwrap();
        let all = shared::domain::KeyScopes::ALL;
        shared::engine::keys::create_key(self.herald.tenants.as_ref(), &tenant, all)
            .await
            .unwrap()
            .expose()
    }

    /// As [`AwsApi::call`], with another key.
    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, body: Value) -> String {
        let (status, reply) = self
            .call(reqwest::Method::POST, "/v1/messages", Some(body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        reply["id"].as_str().unwrap().to_owned()
    }

    pub async fn view(&self, id: &str) -> Value {
        let (status, view) = self
            .call(reqwest::Method::GET, &format!("/v1/messages/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view
    }

    /// Runs the lane's consumer until the lane is empty; returns the batch failures reported.
    pub async fn drain(&self, lane: Priority) -> Vec<String> {
        let mut failures = Vec::new();
        let herald = self.herald.clone();
        while let Some((_, response)) = self
            .stack
            .poll_once(self.stack.lane_url(lane), 10, |event| {
                let herald = herald.clone();
                async move { lambda::dispatch(&herald, event).await }
            })
            .await
        {
            failures.extend(
                response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier),
            );
        }
        failures
    }

    /// Plays the messages stream through the `stats` function: the channel counts catch up.
    pub async fn count_changes(&self) -> usize {
        self.stack.messages_stream.play(&self.stats).await
    }

    /// The bulk tests' template: `news`, with a `name` variable.
    pub async fn put_news_template(&self) {
        let (put, body) = self
            .call(
                reqwest::Method::PUT,
                "/v1/templates/news",
                Some(json!({ "subject": "News for {{ name }}", "text": "Hello {{ name }}" })),
            )
            .await;
        assert!(put.is_success(), "{body}");
    }

    /// What SES sent from this stack's sender.
    pub async fn sent(&self) -> Vec<Value> {
        ses_sent()
            .await
            .into_iter()
            .filter(|m| m["source"].as_str() == Some(self.stack.sender.as_str()))
            .collect()
    }
}

/// An SES notification from `events/suppression/` (an SQS event of SNS envelopes).
pub fn ses_fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../events/suppression/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fixture's SES events re-addressed to a message a test sent: its Herald id (the tag) and
/// SES's id for it. Each use gets its own SNS message id (the same for every record of the
/// event, so a fixture's duplicates stay duplicates).
pub fn ses_notification(event: Value, herald_id: &str, ses_id: &str) -> SqsEvent {
    let sns_id = uuid::Uuid::now_v7().to_string();
    let event = edit_ses_records(event, |sns, ses| {
        sns["MessageId"] = json!(sns_id);
        ses["mail"]["messageId"] = json!(ses_id);
        ses["mail"]["tags"]["herald_id"] = json!([herald_id]);
    });
    serde_json::from_value(event).unwrap()
}

/// Changes every record of an SES fixture: its SNS envelope and the SES event inside it,
/// each JSON in a string, as SNS and SQS nest them.
fn edit_ses_records(mut event: Value, mut edit: impl FnMut(&mut Value, &mut Value)) -> Value {
    for record in event["Records"].as_array_mut().unwrap() {
        let mut sns: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        let mut ses: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
        edit(&mut sns, &mut ses);
        sns["Message"] = json!(ses.to_string());
        record["body"] = json!(sns.to_string());
    }
    event
}

/// `event` (an SES fixture) as sent through the gateway instance `gateway`: its
/// `herald_gateway` tag set, as Herald's SES gateway tags every send.
pub fn through_instance(event: Value, gateway: &str) -> Value {
    edit_ses_records(event, |_, ses| {
        ses["mail"]["tags"]["herald_gateway"] = json!([gateway]);
    })
}
