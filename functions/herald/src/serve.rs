use std::time::Instant;

use anyhow::Context;
use shared::embedded::Embedded;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::http;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = crate::config::resolve(&args)?;
    let mut limits = cfg.http;
    limits.max_connections = http::connection_cap(cfg.max_connections, raise_open_file_limit());
    let data_dir = cfg.embedded.data_dir.clone();
    let metrics = cfg
        .metrics
        .as_ref()
        .and(shared::telemetry::prometheus::install());
    let mut embedded = Embedded::start(cfg.embedded).await?;
    if let (Some((bind, asked)), Some(handle)) = (&cfg.metrics, metrics) {
        serve_metrics(bind, *asked, embedded.herald.clone(), handle).await?;
    }
    if let Some(key) = embedded.bootstrap_dev_tenant().await? {
        println!(
            "Created tenant `dev`. Its API key is shown once:\n{}",
            key.expose()
        );
    }
    let listener = tokio::net::TcpListener::bind(&cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    println!(
        "herald listening on http://{addr} (data in {})",
        data_dir.display()
    );
    info!(%addr, ?limits, "serving");
    let (stop_tx, stop) = watch::channel(false);
    let server = http::serve(listener, embedded.router(), limits, stop);
    // Requests and hand-offs finish side by side; the writer flushes after both.
    let stopping = async {
        shutdown_signal().await;
        let at = Instant::now();
        info!("stopping: no new connections; finishing requests and hand-offs");
        let _ = stop_tx.send(true);
        embedded.stop_workers().await;
        at
    };
    let ((), stopped_at) = tokio::join!(server, stopping);
    embedded.shutdown().await;
    info!(took = ?stopped_at.elapsed(), "stopped");
    Ok(())
}

/// Serves /metrics on its own listener for the life of the process. A bind that was asked
/// for must succeed; the default's may be taken (another server on this host) and is skipped.
async fn serve_metrics(
    bind: &str,
    asked: bool,
    herald: std::sync::Arc<shared::engine::Herald>,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) if !asked => {
            warn!(%bind, error = %e, "metrics listener not started (set --metrics-bind)");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("binding metrics on {bind}")),
    };
    let addr = listener.local_addr()?;
    println!("metrics on http://{addr}/metrics");
    let router = shared::telemetry::prometheus::router(herald, handle);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            warn!(error = %e, "metrics listener stopped");
        }
    });
    Ok(())
}

/// Raises the open-file soft limit to the hard limit (each connection holds a descriptor);
/// returns the limit now in force, if known.
fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            info!(open_files = limit, "open-file limit");
            Some(limit)
        }
        Err(e) => {
            warn!(error = %e, "the open-file limit could not be raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
