//! The AWS backend: DynamoDB for state, SQS for the lanes, SES v2 for email. The same ports as
//! the embedded backend, so the engine and the Router run unchanged on Lambda.

pub mod dynamo;
pub mod media;
pub mod ses;
pub mod settings;
pub mod sqs;

#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "lambda")]
pub mod notify_function;

use std::sync::Arc;

pub use dynamo::DynamoStore;
pub use ses::SesGateway;
pub use settings::{AwsSettings, SettingsError};
pub use sqs::SqsLanes;

use crate::engine::{EngineConfig, Herald, Ports};
use crate::gateway::media_fetch::HttpMediaFetcher;

/// The SDK configuration, built once per cold start: region and credentials from the usual
/// chain (or `region`), and `AWS_ENDPOINT_URL` (or `endpoint`) to talk to an emulator such as
/// moto.
pub async fn sdk_config(endpoint: Option<&str>, region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let from_env = std::env::var("AWS_ENDPOINT_URL").ok();
    if let Some(url) = endpoint.or(from_env.as_deref()) {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    loader.load().await
}

/// One client per AWS service, built once per cold start. The tests build them with a
/// request-counting interceptor (tests/aws_cost.rs); Lambda builds them plain.
#[derive(Clone, Debug)]
pub struct SdkClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub s3: aws_sdk_s3::Client,
}

impl SdkClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> SdkClients {
        SdkClients {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            sesv2: aws_sdk_sesv2::Client::new(sdk),
            s3: s3_client(sdk, aws_sdk_s3::config::Builder::from(sdk)),
        }
    }
}

/// An S3 client; with paths for buckets (`<endpoint>/<bucket>/<key>`) when an emulator's
/// endpoint is set, as it has no DNS for bucket names.
pub fn s3_client(
    sdk: &aws_config::SdkConfig,
    builder: aws_sdk_s3::config::Builder,
) -> aws_sdk_s3::Client {
    let path_style = sdk.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(builder.force_path_style(path_style).build())
}

/// The AWS backend's clients, made once and shared by every port.
#[derive(Clone)]
pub struct AwsBackend {
    pub store: Arc<DynamoStore>,
    pub lanes: Arc<SqsLanes>,
    pub media: Arc<media::S3Media>,
    ses: aws_sdk_sesv2::Client,
}

impl AwsBackend {
    pub fn new(sdk: &aws_config::SdkConfig, settings: &AwsSettings) -> AwsBackend {
        AwsBackend::with_clients(SdkClients::new(sdk), settings)
    }

    pub fn with_clients(clients: SdkClients, settings: &AwsSettings) -> AwsBackend {
        let lanes = Arc::new(SqsLanes::new(
            clients.sqs,
            settings.queues.clone(),
            settings.max_receive_count,
        ));
        let store = Arc::new(DynamoStore::new(
            clients.dynamodb,
            settings.tables.clone(),
            lanes.clone(),
            settings.retention,
        ));
        AwsBackend {
            store,
            lanes,
            media: Arc::new(media::S3Media::new(
                clients.s3,
                settings.media_bucket.clone(),
            )),
            ses: clients.sesv2,
        }
    }

    /// SES when a sender or configuration set is configured, and each SES instance
    /// (`HERALD_GATEWAYS` `instances` of kind `ses`) over the same client.
    fn ses_gateways(&self, settings: &AwsSettings) -> Vec<Arc<dyn crate::ports::Gateway>> {
        let shared = settings
            .ses
            .iter()
            .map(|ses| SesGateway::new(self.ses.clone(), ses.clone()));
        let instances = settings.gateways.ses_instances().map(|(name, instance)| {
            let own = settings::SesSettings {
                configuration_set: Some(instance.configuration_set.clone()),
                default_from: instance.from.clone(),
            };
            SesGateway::new(self.ses.clone(), own).named(name)
        });
        shared
            .chain(instances)
            .map(|g| Arc::new(g) as Arc<dyn crate::ports::Gateway>)
            .collect()
    }

    /// The engine over DynamoDB and SQS, with SES for email when a sender is configured.
    pub fn herald(
        &self,
        settings: &AwsSettings,
        mut config: EngineConfig,
    ) -> Result<Herald, SettingsError> {
        config.rate_limits = settings.rate_limits.clone();
        config.media = settings.media.clone();
        config.add_senders(settings.webhooks.sender_identities());
        let gateways = settings
            .gateways
            .registry(self.ses_gateways(settings), Vec::new())
            .map_err(|value| SettingsError::Invalid {
                name: "HERALD_GATEWAYS",
                what: "gateways that can be built",
                value,
            })?;
        if let Some(name) = gateways.unknown(config.warmups.keys()) {
            return Err(SettingsError::Invalid {
                name: "HERALD_WARMUP",
                what: "schedules of configured gateways",
                value: name.clone(),
            });
        }
        Ok(Herald::new(
            Ports {
                store: self.store.clone(),
                queue: self.lanes.clone(),
                templates: self.store.clone(),
                tenants: self.store.clone(),
                suppressions: self.store.clone(),
                events: self.store.clone(),
                limiter: self.store.clone(),
                health: self.store.clone(),
                inbound: self.store.clone(),
                audit: self.store.clone(),
                contacts: self.store.clone(),
                threads: self.store.clone(),
                rules: self.store.clone(),
                relay: self.store.clone(),
                warmup: self.store.clone(),
                sessions: self.store.clone(),
                inbound_feed: self.lanes.clone(),
                media: self.media.clone(),
                media_fetcher: Arc::new(HttpMediaFetcher::new(
                    settings.gateways.twilio.clone(),
                    settings.gateways.whatsapp.clone(),
                )),
                // Functions deployed without the endpoints table announce nothing.
                webhooks: settings
                    .tables
                    .webhook_endpoints
                    .is_some()
                    .then(|| self.store.clone() as Arc<dyn crate::ports::WebhookStore>),
            },
            gateways,
            config,
        ))
    }
}
