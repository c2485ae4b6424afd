//! The embedded runtime: SQLite backend + sandbox gateway + lane workers + callback tracker +
//! retention, in one process. `herald serve`, the benchmark and the tests all start it here.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::deliverability::unsubscribe::UnsubscribeKeys;
use crate::domain::suppression::Scope;
use crate::domain::{ApiKey, KeyScopes, TenantId};
use crate::engine::{
    drain, followups, health, maintenance, notify, pipeline, tracker, EngineConfig, Herald, Ports,
};
use crate::gateway::config::GatewaysConfig;
use crate::gateway::media_fetch::HttpMediaFetcher;
use crate::gateway::{Handoff, InMemoryHealth, SandboxConfig, SandboxGateway};
use crate::limiter::TokenBuckets;
use crate::ports::{Gateway, StoreError};
use crate::sqlite::{FileMediaStore, SqliteBackend};
use crate::webhooks::{Webhooks, WebhooksConfig};

pub const DB_FILE: &str = "herald.db";
pub const LOCK_FILE: &str = "herald.lock";
pub const SANDBOX_SEND_LOG: &str = "sandbox-sends.log";
/// The key that signs unsubscribe links when herald.toml names none.
pub const UNSUBSCRIBE_KEY_FILE: &str = "unsubscribe.key";

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub sandbox: SandboxConfig,
    /// More sandboxes after the first, in failover order (each with its own name).
    pub backup_sandboxes: Vec<SandboxConfig>,
    /// Provider gateways and each channel's order; without any, the sandbox serves all.
    pub gateways: GatewaysConfig,
    /// Provider webhooks: what each source is verified with, and who owns which number.
    pub webhooks: WebhooksConfig,
    pub retention_interval: Duration,
    /// Start the lane workers (off for a process that only accepts).
    pub run_workers: bool,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            engine: EngineConfig::default(),
            sandbox: SandboxConfig::default(),
            backup_sandboxes: Vec::new(),
            gateways: GatewaysConfig::default(),
            webhooks: WebhooksConfig::default(),
            retention_interval: Duration::from_secs(3600),
            run_workers: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("another herald process is using {0} (lock held on {LOCK_FILE})")]
    Locked(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

pub struct Embedded {
    pub herald: Arc<Herald>,
    pub webhooks: Arc<Webhooks>,
    pub backend: SqliteBackend,
    pub handoffs: Arc<Mutex<Vec<Handoff>>>,
    /// The sandbox gateways in failover order (tests change their failure rates).
    pub sandboxes: Vec<Arc<SandboxGateway>>,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    _lock: File,
}

/// The data directory's unsubscribe key, made on first start: links sent before a restart
/// keep working after it.
fn unsubscribe_key(dir: &std::path::Path) -> Result<UnsubscribeKeys, StartError> {
    let path = dir.join(UNSUBSCRIBE_KEY_FILE);
    let io = |e| StartError::DataDir(path.clone(), e);
    let key = match std::fs::read_to_string(&path) {
        Ok(hex) => hex.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, &hex).map_err(io)?;
            hex
        }
        Err(e) => return Err(io(e)),
    };
    UnsubscribeKeys::new(vec![key.into_bytes()]).map_err(StartError::Config)
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Opens the data directory's database without starting anything (CLI key management).
pub fn open_backend(data_dir: &std::path::Path) -> Result<SqliteBackend, StartError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StartError::DataDir(data_dir.to_owned(), e))?;
    Ok(SqliteBackend::open(&data_dir.join(DB_FILE))?)
}

impl Embedded {
    pub async fn start(mut cfg: EmbeddedConfig) -> Result<Embedded, StartError> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.clone(), e))?;
        let lock =
            File::create(dir.join(LOCK_FILE)).map_err(|e| StartError::DataDir(dir.clone(), e))?;
        // One process owns a data directory: that is what makes start-up recovery safe.
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(dir));
        }
        let backend = open_backend(&dir)?;
        if cfg.engine.unsubscribe.keys.is_empty() {
            cfg.engine.unsubscribe.keys = unsubscribe_key(&dir)?;
        }
        let (released, claims) = backend.release_in_flight(Utc::now()).await?;
        if released + claims > 0 {
            tracing::warn!(
                released,
                claims,
                "recovered work left in flight by a previous process"
            );
        }
        let finished = backend.resume_bulk_jobs().await?;
        if finished > 0 {
            tracing::warn!(
                finished,
                "finished writing bulk sends a previous process had accepted"
            );
        }
        cfg.sandbox
            .send_log
            .get_or_insert_with(|| dir.join(SANDBOX_SEND_LOG));
        let (sandbox, callbacks) = SandboxGateway::new(cfg.sandbox.clone())
            .map_err(|e| StartError::DataDir(dir.clone(), e))?;
        let handoffs = sandbox.handoffs();
        resume_sandbox_callbacks(&backend, &sandbox).await?;
        let mut sandboxes = Vec::new();
        for backup in &cfg.backup_sandboxes {
            let mut backup = backup.clone();
            backup
                .send_log
                .get_or_insert_with(|| dir.join(format!("{}-sends.log", backup.name)));
            let sibling = sandbox
                .sibling(backup)
                .map_err(|e| StartError::DataDir(dir.clone(), e))?;
            resume_sandbox_callbacks(&backend, &sibling).await?;
            sandboxes.push(Arc::new(sibling));
        }
        sandboxes.insert(0, Arc::new(sandbox));
        let fallbacks: Vec<Arc<dyn Gateway>> = sandboxes
            .iter()
            .map(|s| s.clone() as Arc<dyn Gateway>)
            .collect();
        let gateways = cfg
            .gateways
            .registry(Vec::new(), fallbacks)
            .map_err(|e| StartError::Config(format!("gateways: {e}")))?;
        if let Some(name) = gateways.unknown(cfg.engine.warmups.keys()) {
            return Err(StartError::Config(format!(
                "[warmup.{name}]: no gateway is named {name}"
            )));
        }
        let store = Arc::new(backend.clone());
        // The pace survives restarts: bucket states are saved every second and on shutdown.
        let limiter = Arc::new(TokenBuckets::new());
        limiter.restore(backend.load_buckets().await?);
        // A tenant may send from the numbers it receives on.
        cfg.engine.add_senders(cfg.webhooks.sender_identities());
        let inbound_wake = Arc::new(tokio::sync::Notify::new());
        let herald = Arc::new(Herald::new(
            Ports {
                store: store.clone(),
                queue: store.clone(),
                templates: store.clone(),
                tenants: store.clone(),
                suppressions: store.clone(),
                inbound: store.clone(),
                audit: store.clone(),
                contacts: store.clone(),
                threads: store.clone(),
                rules: store.clone(),
                relay: store.clone(),
                warmup: store.clone(),
                sessions: store.clone(),
                inbound_feed: Arc::new(pipeline::LocalFeed(inbound_wake.clone())),
                media: Arc::new(FileMediaStore::new(&dir)),
                media_fetcher: Arc::new(HttpMediaFetcher::new(
                    cfg.gateways.twilio.clone(),
                    cfg.gateways.whatsapp.clone(),
                )),
                webhooks: Some(store.clone()),
                events: store,
                limiter: limiter.clone(),
                health: Arc::new(InMemoryHealth::default()),
            },
            gateways,
            cfg.engine,
        ));
        let webhooks = Arc::new(
            Webhooks::new(herald.clone(), cfg.webhooks.clone())
                .map_err(|e| StartError::Config(format!("webhooks: {e}")))?,
        );
        let (shutdown, rx) = watch::channel(false);
        let workers = if cfg.run_workers {
            let mut workers = drain::spawn_workers(herald.clone(), rx.clone());
            workers.push(tokio::spawn(pipeline::run(
                herald.clone(),
                inbound_wake,
                rx.clone(),
            )));
            workers
        } else {
            Vec::new()
        };
        let background = vec![
            // First: `parked_swept` waits for it.
            tokio::spawn(apply_parked_events(backend.clone(), herald.clone())),
            tokio::spawn(save_buckets(backend.clone(), limiter.clone(), rx.clone())),
            tokio::spawn(tracker::run(herald.clone(), callbacks)),
            tokio::spawn(health::run_health_checks(herald.clone(), rx.clone())),
            tokio::spawn(followups::run(herald.clone(), rx.clone())),
            tokio::spawn(notify::runner::run(
                herald.clone(),
                Arc::new(backend.clone()),
                rx.clone(),
            )),
            tokio::spawn(maintenance::run_retention(
                herald.clone(),
                cfg.retention_interval,
                rx,
            )),
        ];
        Ok(Embedded {
            herald,
            webhooks,
            backend,
            handoffs,
            sandboxes,
            shutdown,
            workers,
            background,
            _lock: lock,
        })
    }

    /// The API, the console and the provider webhooks.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.herald.clone())
            .merge(crate::console::router(
                self.herald.clone(),
                crate::console::ExportCap(None),
            ))
            .merge(crate::webhooks::router(self.webhooks.clone()))
    }

    /// Creates the `dev` tenant on first start; returns its new key, or `None` when it existed.
    pub async fn bootstrap_dev_tenant(&self) -> Result<Option<ApiKey>, StoreError> {
        let dev = TenantId::parse("dev").map_err(StoreError::Corrupt)?;
        if !self.herald.tenants.ensure_tenant(&dev).await? {
            return Ok(None);
        }
        let key = create_key(self.herald.tenants.as_ref(), &dev, KeyScopes::ALL).await?;
        let entry = AuditEntry::now(Scope::Tenant(dev), Actor::System, AuditAction::KeyCreated)
            .target(Actor::Key(key.prefix.clone()).label())
            .detail(serde_json::json!({ "why": "the dev tenant's first start" }));
        self.herald.record_audit(entry).await;
        Ok(Some(key))
    }

    /// Stops the lane workers: each records its current hand-off's outcome and hands back the
    /// rest of its batch. A worker still busy after `WORKER_GRACE` (a gateway call that hangs)
    /// is aborted: its message keeps its claim, which the next start releases, so it is handed
    /// off again (at least once, as after a crash). Nothing is lost either way.
    pub async fn stop_workers(&mut self) {
        let _ = self.shutdown.send(true);
        let workers = std::mem::take(&mut self.workers);
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let joined = futures::future::join_all(workers);
        if tokio::time::timeout(WORKER_GRACE, joined).await.is_err() {
            let stuck = aborts.iter().filter(|a| !a.is_finished()).count();
            tracing::warn!(
                stuck,
                "lane workers still in a hand-off after {WORKER_GRACE:?}; their messages are released at the next start"
            );
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }

    /// Waits for the start-up's release of parked events to finish (tests that release
    /// through another engine over the same store).
    #[cfg(test)]
    pub(crate) async fn parked_swept(&self) {
        while !self.background[0].is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the workers (see `stop_workers`), then the background tasks, then waits for the
    /// writer to commit what is queued. Bounded: at most `WORKER_GRACE` + `WRITER_GRACE`.
    pub async fn shutdown(mut self) {
        self.stop_workers().await;
        for b in self.background {
            b.abort();
            let _ = b.await;
        }
        if !self.backend.close_and_wait(WRITER_GRACE).await {
            // A transaction cut short by the exit is rolled back at the next open, as after a
            // crash; its callers never got an answer, so none of them counted on it.
            tracing::warn!("the writer did not finish within {WRITER_GRACE:?}");
        }
    }
}

/// How long lane workers get on shutdown to finish their current hand-off.
pub const WORKER_GRACE: Duration = Duration::from_secs(5);
/// How long the writer gets on shutdown to commit what is queued.
pub const WRITER_GRACE: Duration = Duration::from_secs(2);

/// Applies, at start-up, provider events parked for messages whose `sent` a previous process
/// recorded without applying them (it stopped in between, or the store failed): no `sent`
/// comes again to release them. Those whose message is not sent yet stay parked.
async fn apply_parked_events(backend: SqliteBackend, herald: Arc<Herald>) {
    let keys = match backend.parked_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "parked provider events not read at start-up");
            return;
        }
    };
    let mut released = 0;
    for (gateway, provider_id) in &keys {
        released += usize::from(herald.release_parked(gateway, provider_id, None).await);
    }
    if !keys.is_empty() {
        tracing::info!(
            parked = keys.len(),
            released,
            "provider events parked by a previous process looked at"
        );
    }
}

/// Page size of the start-up scan for sandbox messages still awaiting their callbacks.
const RESUME_PAGE: usize = 10_000;

async fn resume_sandbox_callbacks(
    backend: &SqliteBackend,
    sandbox: &SandboxGateway,
) -> Result<(), StoreError> {
    use crate::ports::{Gateway, MessageStore};
    let mut after = None;
    let mut resumed = 0;
    loop {
        let page = backend
            .sent_by_gateway(sandbox.name(), after, RESUME_PAGE)
            .await?;
        sandbox.resume_callbacks(&page);
        resumed += page.len();
        match page.last() {
            Some(last) if page.len() == RESUME_PAGE => after = Some(last.id),
            _ => break,
        }
    }
    if resumed > 0 {
        tracing::info!(
            resumed,
            "sandbox callbacks resumed for messages still `sent`"
        );
    }
    Ok(())
}

pub use crate::engine::keys::create_key;

async fn save_buckets(
    backend: SqliteBackend,
    limiter: Arc<TokenBuckets>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = shutdown.changed() => true,
        };
        if let Err(e) = backend.save_buckets(limiter.snapshot()).await {
            tracing::warn!(error = %e, "rate limit state not saved");
        }
        if stopping {
            return;
        }
    }
}
