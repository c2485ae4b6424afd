use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shared::domain::KeyScopes;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: one messaging layer for email, SMS and push"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the API, the lane workers and the periodic tasks on one SQLite file.
    Serve(ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bring data stored by an older version up to this one's layout: run once after
    /// deploying over an older stack (a data directory does it itself when opened). Safe to
    /// run again.
    Upgrade(StoreLocation),
    /// Send one message, or a bulk send from a CSV file, through a running server.
    Send(SendArgs),
    /// Show a message's status and timeline.
    Status(StatusArgs),
    /// Follow this tenant's events live (server-sent events from a running server).
    Tail(TailArgs),
    /// Search messages, or show a bulk send's progress.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Manage this tenant's suppression list on a running server.
    Suppress(SuppressArgs),
    /// Read this tenant's audit log on a running server.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Development: receive this tenant's provider webhooks on a laptop.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Webhook deliveries: send one again.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Measure throughput and lane latency on a throwaway data directory.
    Bench(BenchArgs),
    /// The relay's numbers on a running server.
    #[command(subcommand)]
    Numbers(NumbersCommand),
    /// The masked-number relay on a running server.
    #[command(subcommand)]
    Relay(RelayCommand),
}

#[derive(Subcommand, Debug)]
pub enum NumbersCommand {
    /// Register numbers from a CSV file: `number,role,provider,capabilities,worker` (a header
    /// line is skipped; capabilities like `sms|mms`, SMS if empty; worker for dedicated
    /// numbers). Each line is reported; numbers registered before are left as they are.
    Import {
        #[command(flatten)]
        remote: Remote,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RelayCommand {
    /// Where a text from --from to --to would go, and why, step by step; nothing is sent.
    Simulate {
        #[command(flatten)]
        remote: Remote,
        /// One of the tenant's relay numbers.
        #[arg(long)]
        to: String,
        #[arg(long)]
        from: String,
        /// When it arrives (RFC 3339) [default: now]
        #[arg(long)]
        at: Option<String>,
        #[arg(long, default_value = "")]
        body: String,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "HERALD_BIND")]
    pub bind: Option<String>,
    /// Where `GET /metrics` (Prometheus) is served, apart from the API; `off` for nowhere
    /// [default: 127.0.0.1:9464]
    #[arg(long, env = "HERALD_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Where the SQLite file and the sandbox send log live [default: ./herald-data]
    #[arg(long, env = "HERALD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional herald.toml with the same settings.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Workers per lane, e.g. "P0=8,P3=32" (others keep their defaults).
    #[arg(long, env = "HERALD_LANE_WORKERS")]
    pub lane_workers: Option<String>,
    /// Days to keep final messages and their events [default: 30]
    #[arg(long, env = "HERALD_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Attempts before a message is failed and dead-lettered [default: 5]
    #[arg(long, env = "HERALD_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// First retry delay; doubles per attempt, with full jitter [default: 2000]
    #[arg(long, env = "HERALD_BACKOFF_BASE_MS")]
    pub backoff_base_ms: Option<u64>,
    /// How long a received message stays hidden before it is handed out again [default: 30]
    #[arg(long, env = "HERALD_VISIBILITY_TIMEOUT_SECS")]
    pub visibility_timeout_secs: Option<u64>,
    /// Simulated latency of the sandbox gateway [default: 0]
    #[arg(long, env = "HERALD_SANDBOX_LATENCY_MS")]
    pub sandbox_latency_ms: Option<u64>,
    /// Share of sandbox sends that fail transiently, 0 to 1 [default: 0]
    #[arg(long, env = "HERALD_SANDBOX_FAILURE_RATE")]
    pub sandbox_failure_rate: Option<f64>,
    /// Time a client has to send a request's headers, from connecting or from the first
    /// byte of a request on a kept-alive connection [default: 10]
    #[arg(long, env = "HERALD_HTTP_HEADER_READ_TIMEOUT_SECS")]
    pub http_header_read_timeout_secs: Option<u64>,
    /// Longest pause while a request body is sent (then 408) [default: 30]
    #[arg(long, env = "HERALD_HTTP_BODY_READ_TIMEOUT_SECS")]
    pub http_body_read_timeout_secs: Option<u64>,
    /// How long a kept-alive connection may wait for its next request [default: 60]
    #[arg(long, env = "HERALD_HTTP_IDLE_TIMEOUT_SECS")]
    pub http_idle_timeout_secs: Option<u64>,
    /// Longest time to answer a request, body included (then 408) [default: 30]
    #[arg(long, env = "HERALD_HTTP_REQUEST_TIMEOUT_SECS")]
    pub http_request_timeout_secs: Option<u64>,
    /// Open connections at most; at the cap, the longest-waiting idle one is closed
    /// [default: 1024, less if the open-file limit leaves less room]
    #[arg(long, env = "HERALD_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Accept and store only: no lane workers hand messages over and no inbound message is
    /// processed or announced (to load a backlog, or to hold sends during maintenance; they go
    /// when a server runs without this flag).
    #[arg(long, env = "HERALD_NO_WORKERS")]
    pub no_workers: bool,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (and the tenant if it is new); prints the key on the last line.
    Create {
        #[arg(long)]
        tenant: String,
        /// What the key may do, comma-separated: send (send and cancel), read (read messages,
        /// events, lists), admin (change configuration, read the audit log).
        #[arg(long, default_value = "send,read,admin", value_parser = KeyScopes::parse)]
        scopes: KeyScopes,
        #[command(flatten)]
        store: StoreLocation,
    },
    /// Revoke a key by its prefix (the 8 characters after `hk_`).
    Revoke {
        key_prefix: String,
        #[command(flatten)]
        store: StoreLocation,
    },
}

/// The store itself, not a server: a data directory (embedded), or a deployed stack's
/// DynamoDB tables.
#[derive(Args, Debug, Clone)]
pub struct StoreLocation {
    #[arg(long, env = "HERALD_DATA_DIR", default_value = "./herald-data")]
    pub data_dir: PathBuf,
    /// A deployed stack (`sam deploy`'s stack name, e.g. herald-dev): its `<stack>-<table>`
    /// tables, with the AWS credentials and region of your environment.
    #[arg(long, env = "HERALD_AWS_STACK", conflicts_with = "data_dir")]
    pub aws_stack: Option<String>,
    /// AWS region of the stack [default: your profile's]
    #[arg(long, requires = "aws_stack")]
    pub aws_region: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Base URL of a running server.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (Bearer).
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: String,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// Event types to follow, comma-separated (message.sent,message.failed); none: every type.
    #[arg(long)]
    pub types: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub max: Option<usize>,
    /// Print each event's payload as one JSON line instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Follow this tenant's verified provider webhooks (an admin key) and POST each, with its
    /// original body and headers, to a local URL: no public address needed.
    Forward(DevForwardArgs),
}

#[derive(Args, Debug)]
pub struct DevForwardArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// Where to POST each webhook, e.g. http://127.0.0.1:3000/hooks.
    #[arg(long)]
    pub to: reqwest::Url,
    /// Providers to follow, comma-separated (twilio,ses,postal,whatsapp,telegram); none: all.
    #[arg(long)]
    pub sources: Option<String>,
    /// Stop after this many webhooks.
    #[arg(long)]
    pub max: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Send a stored delivery again: through Herald to its endpoint or forward (as a new
    /// delivery with the same webhook-id), or with --to straight from here to a URL (a
    /// forwarded provider webhook with its original body and headers), for debugging.
    Replay {
        #[command(flatten)]
        remote: Remote,
        /// The delivery's id (from a delivery log).
        delivery_id: String,
        #[arg(long)]
        to: Option<reqwest::Url>,
    },
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, default_value = "email")]
    pub channel: String,
    #[arg(long, default_value = "P4")]
    pub priority: String,
    /// Recipient (single send).
    #[arg(long, required_unless_present = "bulk")]
    pub to: Option<String>,
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub body: Option<String>,
    #[arg(long)]
    pub html: Option<String>,
    #[arg(long)]
    pub template: Option<String>,
    /// Template data as a JSON object.
    #[arg(long)]
    pub data: Option<String>,
    /// RFC 3339 time before which the message is not handed over.
    #[arg(long)]
    pub send_at: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// CSV of recipients: a `to` column, an optional `external_id`, other columns become data.
    #[arg(long)]
    pub bulk: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SuppressArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: SuppressCommand,
}

#[derive(Subcommand, Debug)]
pub enum SuppressCommand {
    /// Stop sends to an address.
    Add {
        #[arg(long, default_value = "email")]
        channel: String,
        address: String,
        /// manual, unsubscribe, complaint, sms_opt_out, hard_bounce, soft_bounce_strikes, invalid_token
        #[arg(long, default_value = "manual")]
        reason: String,
        /// RFC 3339 time after which the entry no longer applies.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Allow sends to an address again.
    Remove {
        #[arg(long, default_value = "email")]
        channel: String,
        address: String,
    },
    /// List entries (all pages), one JSON object per line.
    List {
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Show the global entries (hard bounces, dead tokens) instead of the tenant's.
        #[arg(long)]
        global: bool,
    },
    /// Add entries from a CSV file (`channel,address`, optional `reason`, `expires_at`).
    Import { file: PathBuf },
    /// Write the list as CSV to stdout.
    Export,
}

#[derive(Subcommand, Debug)]
pub enum MessagesCommand {
    /// The tenant's messages, newest first, filtered (all filters combine).
    List(Box<SearchArgs>),
    /// A bulk send's messages counted by status.
    Bulk {
        #[command(flatten)]
        remote: Remote,
        bulk_id: String,
    },
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// queued, deferred, sending, sent, delivered, opened, clicked, failed, bounced, ...
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long)]
    pub priority: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub source_type: Option<String>,
    #[arg(long)]
    pub source_id: Option<String>,
    #[arg(long)]
    pub external_id: Option<String>,
    #[arg(long)]
    pub bulk_id: Option<String>,
    /// RFC 3339: accepted at or after.
    #[arg(long)]
    pub created_after: Option<String>,
    /// RFC 3339: accepted before.
    #[arg(long)]
    pub created_before: Option<String>,
    /// Messages to show at most.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// This tenant's entries, newest first, as CSV, from a running server (streamed: no row
    /// limit).
    Export {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filters: AuditFilterArgs,
    },
    /// The platform's entries (unknown keys, probes of other tenants' ids, gateway health),
    /// newest first, as CSV, read from the store itself.
    Platform {
        #[command(flatten)]
        store: StoreLocation,
        #[command(flatten)]
        filters: AuditFilterArgs,
    },
}

#[derive(Args, Debug)]
pub struct AuditFilterArgs {
    /// e.g. template.put, suppression.added, access.denied, key.created
    #[arg(long)]
    pub action: Option<String>,
    /// key:<prefix>, cli:<user>, system or anonymous
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// RFC 3339: at or after.
    #[arg(long)]
    pub created_after: Option<String>,
    /// RFC 3339: before.
    #[arg(long)]
    pub created_before: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: Remote,
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Single-send API requests to time.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent HTTP clients for the single-send test.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Recipients accepted by the bulk test (in requests of 10,000), then drained.
    #[arg(long, default_value_t = 200_000)]
    pub bulk_recipients: usize,
    /// Concurrent HTTP clients posting the bulk test's requests.
    #[arg(long, default_value_t = 2)]
    pub bulk_clients: usize,
    /// P3 backlog while P0 and P4 dwell is measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// P0 and P4 messages sent (each) while the backlog drains.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Inbound messages stored and threaded by the inbound phase (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub inbound: usize,
    /// Workers per lane for every phase, e.g. "P3=64" (as `serve --lane-workers`).
    #[arg(long)]
    pub lane_workers: Option<String>,
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}
