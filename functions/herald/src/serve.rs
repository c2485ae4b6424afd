use anyhow::Context;
use shared::embedded::Embedded;
use tracing::info;

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = crate::config::resolve(&args)?;
    let data_dir = cfg.embedded.data_dir.clone();
    let embedded = Embedded::start(cfg.embedded).await?;
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
    info!(%addr, "serving");
    axum::serve(listener, embedded.router())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    info!("draining workers");
    embedded.shutdown().await;
    Ok(())
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
