//! `herald serve` settings: flags and environment over `herald.toml` over defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use shared::domain::Priority;
use shared::embedded::EmbeddedConfig;

use crate::cli::ServeArgs;
use crate::http::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub metrics_bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub retention_days: Option<u32>,
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub visibility_timeout_secs: Option<u64>,
    #[serde(default)]
    pub lanes: std::collections::BTreeMap<String, LaneFile>,
    #[serde(default)]
    pub sandbox: SandboxFile,
    /// What template renders may spend (see the README's Security section).
    #[serde(default)]
    pub render: RenderFile,
    /// Paces per gateway and recipient domain (see the README); the defaults cover the big
    /// mailbox providers.
    pub rate_limits: Option<shared::domain::limits::RateLimits>,
    /// Provider gateways (smtp, postal, twilio, fcm, telegram, whatsapp) and each channel's
    /// failover order; without any, the sandbox sends everything.
    #[serde(default)]
    pub gateways: shared::gateway::config::GatewaysConfig,
    /// What the provider webhooks are verified with, and who owns which receiving number.
    #[serde(default)]
    pub webhooks: shared::webhooks::WebhooksConfig,
    /// The identities each tenant may send as (`from`), beside those set through the API:
    /// `acme = ["acme.com", "alerts@acme.net", "+15551234567", "ACME"]`.
    #[serde(default)]
    pub senders:
        std::collections::BTreeMap<shared::domain::TenantId, Vec<shared::domain::SenderIdentity>>,
    /// Connection timeouts and cap of the HTTP server.
    #[serde(default)]
    pub http: HttpFile,
    /// Webhooks out to the tenants' endpoints.
    #[serde(default)]
    pub events_out: EventsOutFile,
    /// Inbound media: size caps, the allowed types, retention.
    #[serde(default)]
    pub media: shared::domain::media::MediaPolicy,
    /// Herald's one-click unsubscribe links.
    #[serde(default)]
    pub unsubscribe: UnsubscribeFile,
    /// Warm-up schedules by gateway name (`[warmup.postal-pool-b]`).
    #[serde(default)]
    pub warmup:
        std::collections::BTreeMap<String, shared::domain::deliverability::warmup::WarmupSchedule>,
}

/// `[unsubscribe]`: where the links point (default: the API's bind address over http) and the
/// keys that sign them, newest first (default: one made and kept in the data directory).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeFile {
    pub base_url: Option<String>,
    #[serde(default)]
    pub keys: Vec<shared::gateway::secret::Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsOutFile {
    /// Development only: endpoints on this host (http allowed there).
    pub allow_loopback: Option<bool>,
    /// A delivery with no answer within this failed its attempt (default 10).
    pub timeout_secs: Option<u64>,
    /// How long a replaced signing secret keeps signing beside the new one (default 24).
    pub secret_overlap_hours: Option<u64>,
    /// An endpoint failing every delivery this long is turned off (default 72).
    pub disable_after_hours: Option<u64>,
    /// How long one event-stream connection lasts before the client reconnects (default
    /// 300); lower it below a proxy's idle or response timeout.
    pub stream_window_secs: Option<u64>,
    /// Addresses or CIDR blocks development forwards may reach beyond public https (http
    /// allowed there): `["127.0.0.1/32", "10.8.0.0/16"]`. Events endpoints never may.
    #[serde(default)]
    pub dev_forward_allow: Vec<String>,
}

impl EventsOutFile {
    fn apply(&self, n: &mut shared::engine::notify::NotifyConfig) -> anyhow::Result<()> {
        if let Some(allow) = self.allow_loopback {
            n.policy.allow_loopback = allow;
        }
        if let Some(s) = self.timeout_secs {
            if !(1..=30).contains(&s) {
                bail!("[events_out] timeout_secs must be between 1 and 30");
            }
            n.timeout = Duration::from_secs(s);
        }
        if let Some(h) = self.secret_overlap_hours {
            n.secret_overlap = Duration::from_secs(h * 3600);
        }
        if let Some(h) = self.disable_after_hours {
            n.disable_after = Duration::from_secs(h.max(1) * 3600);
        }
        if let Some(s) = self.stream_window_secs {
            if !(1..=3600).contains(&s) {
                bail!("[events_out] stream_window_secs must be between 1 and 3600");
            }
            n.streams.window = Duration::from_secs(s);
        }
        n.dev_allow = shared::engine::notify::DevAllowList::parse(&self.dev_forward_allow)
            .map_err(|e| anyhow::anyhow!("[events_out] dev_forward_allow: {e}"))?;
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneFile {
    pub workers: Option<usize>,
    pub batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderFile {
    /// minijinja instructions per message.
    pub fuel: Option<u64>,
    pub time_ms: Option<u64>,
    /// Rendered content of a whole bulk request, in MB.
    pub bulk_mb: Option<usize>,
    pub bulk_time_secs: Option<u64>,
    /// Renders at once (blocking threads).
    pub threads: Option<usize>,
}

impl RenderFile {
    fn apply(&self, engine: &mut shared::engine::EngineConfig) -> anyhow::Result<()> {
        if self.fuel == Some(0)
            || self.time_ms == Some(0)
            || self.bulk_mb == Some(0)
            || self.threads == Some(0)
        {
            bail!("[render] limits must be above 0");
        }
        engine.render.fuel = self.fuel.unwrap_or(engine.render.fuel);
        engine.render.time = self
            .time_ms
            .map_or(engine.render.time, Duration::from_millis);
        engine.bulk_render.bytes = self.bulk_mb.map_or(engine.bulk_render.bytes, |mb| mb << 20);
        engine.bulk_render.time = self
            .bulk_time_secs
            .map_or(engine.bulk_render.time, Duration::from_secs);
        engine.render_threads = self.threads.unwrap_or(engine.render_threads);
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxFile {
    pub latency_ms: Option<u64>,
    pub failure_rate: Option<f64>,
    /// More sandbox gateways after `sandbox`, in failover order (their names).
    #[serde(default)]
    pub backups: Vec<String>,
}

pub struct ServeConfig {
    pub bind: String,
    /// Where /metrics is served, and whether it was asked for (then a failure to bind is an
    /// error; the default's is a warning).
    pub metrics: Option<(String, bool)>,
    pub embedded: EmbeddedConfig,
    /// The HTTP timeouts; the connection cap is settled at start (see `max_connections`).
    pub http: Limits,
    /// The configured connection cap; without one, it follows the open-file limit.
    pub max_connections: Option<usize>,
}

fn lane(name: &str) -> anyhow::Result<Priority> {
    Priority::parse(name).with_context(|| format!("unknown lane {name:?}: use P0..P4"))
}

/// Applies a "P0=8,P3=4x256" spec (workers, and optionally x the batch each worker claims);
/// lanes it does not name keep their settings.
pub fn apply_lane_workers(
    engine: &mut shared::engine::EngineConfig,
    spec: &str,
) -> anyhow::Result<()> {
    let count = |text: &str, part: &str, what: &str| -> anyhow::Result<usize> {
        text.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LANE_SETTING).contains(n))
            .with_context(|| format!("bad {what} in {part:?}: use 1..={MAX_LANE_SETTING}"))
    };
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("bad lane worker spec {part:?}: use P3=32 or P3=4x256"))?;
        let lane = &mut engine.lanes[lane(name.trim())?.index()];
        match value.split_once('x') {
            Some((workers, batch)) => {
                lane.workers = count(workers, part, "worker count")?;
                lane.batch = count(batch, part, "batch size")?;
            }
            None => lane.workers = count(value, part, "worker count")?,
        }
    }
    Ok(())
}

/// Workers or batch size of one lane: beyond this a typo, not a setting.
const MAX_LANE_SETTING: usize = 4096;

pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./herald-data"));
    let mut cfg = EmbeddedConfig::new(data_dir);
    let engine = &mut cfg.engine;
    if let Some(days) = args.retention_days.or(file.retention_days) {
        engine.retention = Duration::from_secs(u64::from(days) * 86_400);
    }
    if let Some(n) = args.max_attempts.or(file.max_attempts) {
        if n == 0 {
            bail!("max_attempts must be at least 1");
        }
        engine.max_attempts = n;
    }
    if let Some(ms) = args.backoff_base_ms.or(file.backoff_base_ms) {
        engine.backoff_base = Duration::from_millis(ms);
    }
    if let Some(s) = args
        .visibility_timeout_secs
        .or(file.visibility_timeout_secs)
    {
        engine.visibility_timeout = Duration::from_secs(s.max(1));
    }
    for (name, l) in &file.lanes {
        let lane_cfg = &mut engine.lanes[lane(name)?.index()];
        lane_cfg.workers = l.workers.unwrap_or(lane_cfg.workers);
        lane_cfg.batch = l.batch.unwrap_or(lane_cfg.batch).max(1);
    }
    file.render.apply(engine)?;
    file.events_out.apply(&mut engine.notify)?;
    file.media.validate().map_err(anyhow::Error::msg)?;
    engine.media = file.media.clone();
    if let Some(spec) = &args.lane_workers {
        apply_lane_workers(engine, spec)?;
    }
    if let Some(ms) = args.sandbox_latency_ms.or(file.sandbox.latency_ms) {
        cfg.sandbox.latency = Duration::from_millis(ms);
    }
    if let Some(rate) = args.sandbox_failure_rate.or(file.sandbox.failure_rate) {
        if !(0.0..=1.0).contains(&rate) {
            bail!("sandbox failure rate must be between 0 and 1");
        }
        cfg.sandbox.failure_rate = rate;
    }
    for name in &file.sandbox.backups {
        if name == &cfg.sandbox.name || name.is_empty() {
            bail!("sandbox backup names must be distinct from `sandbox` and each other");
        }
        cfg.backup_sandboxes.push(shared::gateway::SandboxConfig {
            name: name.clone(),
            ..cfg.sandbox.clone()
        });
    }
    if let Some(limits) = file.rate_limits {
        limits
            .validate()
            .map_err(|e| anyhow::anyhow!("[rate_limits]: {e}"))?;
        cfg.engine.rate_limits = limits;
    }
    file.webhooks
        .validate()
        .map_err(|e| anyhow::anyhow!("[webhooks]: {e}"))?;
    cfg.engine.add_senders(
        file.senders
            .into_iter()
            .flat_map(|(tenant, ids)| ids.into_iter().map(move |id| (tenant.clone(), id))),
    );
    cfg.gateways = file.gateways;
    cfg.webhooks = file.webhooks;
    let bind = args
        .bind
        .clone()
        .or(file.bind)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let max_connections = args.http_max_connections.or(file.http.max_connections);
    if max_connections == Some(0) {
        bail!("http max_connections must be at least 1");
    }
    cfg.run_workers = !args.no_workers;
    let unsubscribe = &mut cfg.engine.unsubscribe;
    // Without a public base URL, only a loopback bind (development, the sandbox) makes one:
    // a link to a private address would reach no recipient.
    unsubscribe.base_url = file.unsubscribe.base_url.clone().or_else(|| {
        let loopback = bind
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| bind.starts_with("localhost:"));
        loopback.then(|| format!("http://{bind}"))
    });
    let keys = file.unsubscribe.keys.iter();
    unsubscribe.keys = shared::domain::deliverability::unsubscribe::UnsubscribeKeys::new(
        keys.map(|k| k.expose().as_bytes().to_vec()).collect(),
    )
    .map_err(|e| anyhow::anyhow!("[unsubscribe] keys: {e}"))?;
    for (gateway, schedule) in &file.warmup {
        schedule
            .validate()
            .map_err(|e| anyhow::anyhow!("[warmup.{gateway}]: {e}"))?;
    }
    cfg.engine.warmups = file.warmup.clone();
    let metrics = match args.metrics_bind.clone().or(file.metrics_bind) {
        Some(off) if off == "off" => None,
        Some(bind) => Some((bind, true)),
        None => Some(("127.0.0.1:9464".to_owned(), false)),
    };
    Ok(ServeConfig {
        bind,
        metrics,
        embedded: cfg,
        http: http_limits(args, &file.http)?,
        max_connections,
    })
}

/// The HTTP timeouts: flags and environment over `[http]` over the defaults.
fn http_limits(args: &ServeArgs, file: &HttpFile) -> anyhow::Result<Limits> {
    let secs =
        |flag: Option<u64>, key: Option<u64>, name: &str, default: Duration| match flag.or(key) {
            None => Ok(default),
            Some(0) => bail!("http {name} must be at least 1 second"),
            Some(s) => Ok(Duration::from_secs(s)),
        };
    let d = Limits::default();
    Ok(Limits {
        header_read: secs(
            args.http_header_read_timeout_secs,
            file.header_read_timeout_secs,
            "header_read_timeout_secs",
            d.header_read,
        )?,
        body_read: secs(
            args.http_body_read_timeout_secs,
            file.body_read_timeout_secs,
            "body_read_timeout_secs",
            d.body_read,
        )?,
        idle: secs(
            args.http_idle_timeout_secs,
            file.idle_timeout_secs,
            "idle_timeout_secs",
            d.idle,
        )?,
        request: secs(
            args.http_request_timeout_secs,
            file.request_timeout_secs,
            "request_timeout_secs",
            d.request,
        )?,
        max_connections: d.max_connections,
    })
}

#[cfg(test)]
mod tests {
    use super::{http_limits, FileConfig};
    use crate::cli::ServeArgs;
    use std::time::Duration;

    #[test]
    fn http_limits_come_from_flags_over_herald_toml_over_defaults() {
        let file: FileConfig = toml::from_str(
            "[http]\nheader_read_timeout_secs = 5\nidle_timeout_secs = 90\nmax_connections = 64\n",
        )
        .unwrap();
        let args = ServeArgs {
            http_idle_timeout_secs: Some(30),
            ..ServeArgs::default()
        };
        let limits = http_limits(&args, &file.http).unwrap();
        assert_eq!(limits.header_read, Duration::from_secs(5));
        assert_eq!(limits.idle, Duration::from_secs(30), "the flag wins");
        assert_eq!(limits.body_read, Duration::from_secs(30), "default");
        assert_eq!(limits.request, Duration::from_secs(30), "default");
        assert_eq!(file.http.max_connections, Some(64));
        let zero = ServeArgs {
            http_request_timeout_secs: Some(0),
            ..ServeArgs::default()
        };
        assert!(http_limits(&zero, &file.http).is_err(), "0 s is refused");
    }

    // A runtime: the SMTP gateway's connection pool runs on one.
    #[tokio::test]
    async fn gateways_and_webhooks_come_from_herald_toml() {
        let text = r#"
            [gateways.order]
            sms = ["twilio", "sandbox"]

            [gateways.twilio]
            account_sid = "AC0123"
            auth_token = { env = "PATH" }
            from = "+15557654321"
            public_base_url = "https://herald.example.com"

            [gateways.smtp]
            host = "smtp.example.com"
            username = "herald"
            password = "secret"
            from = "alerts@example.com"

            [webhooks]
            public_base_url = "https://herald.example.com"
            twilio = { auth_token = "twilio-token" }
            ses = { topic_arns = ["arn:aws:sns:eu-west-1:123456789012:ses-events"] }

            [[webhooks.numbers]]
            number = "+15557654321"
            tenant = "acme"
            replies = { help = "Acme alerts: reply STOP to opt out." }
        "#;
        let file: FileConfig = toml::from_str(text).unwrap();
        assert!(file.webhooks.validate().is_ok());
        assert_eq!(file.gateways.order.len(), 1);
        let providers = file.gateways.providers().unwrap();
        let names: Vec<&str> = providers.iter().map(|g| g.name()).collect();
        assert_eq!(names, ["smtp", "twilio"]);
        let number = file.webhooks.number("15557654321").unwrap();
        assert_eq!(number.tenant.as_str(), "acme");
        assert_eq!(number.replies.help, "Acme alerts: reply STOP to opt out.");
        assert!(
            number.replies.stop.contains("START"),
            "defaults for the rest"
        );

        let unknown = toml::from_str::<FileConfig>("[webhooks]\ntwillio = {}\n");
        assert!(
            unknown.unwrap_err().to_string().contains("twillio"),
            "typos are errors"
        );
        let unsigned: FileConfig =
            toml::from_str("[webhooks]\ntwilio = { auth_token = \"t\" }\n").unwrap();
        assert!(
            unsigned
                .webhooks
                .validate()
                .unwrap_err()
                .contains("public_base_url"),
            "twilio signs the public URL: it must be known"
        );
    }
}
