//! `herald`: the embedded server, key management, a small HTTP client, and the benchmark.

mod allocator;
mod audit;
mod bench;
mod cli;
mod client;
mod config;
mod dev;
mod http;
mod keys;
mod messages;
mod relay;
mod serve;
mod sse;
mod store;
mod suppress;
mod tail;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    allocator::return_freed_memory_soon();
    let cli = cli::Cli::parse();
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Keys(cmd) => keys::run(cmd).await,
            cli::Command::Upgrade(location) => store::upgrade(&location).await,
            cli::Command::Send(args) => client::send(args).await,
            cli::Command::Status(args) => client::status(args).await,
            cli::Command::Messages(cmd) => messages::run(cmd).await,
            cli::Command::Tail(args) => tail::run(args).await,
            cli::Command::Suppress(args) => suppress::run(args).await,
            cli::Command::Audit(cmd) => audit::run(cmd).await,
            cli::Command::Dev(cli::DevCommand::Forward(args)) => dev::forward(args).await,
            cli::Command::Webhooks(cmd) => dev::webhooks(cmd).await,
            cli::Command::Bench(args) => bench::run(args).await,
            cli::Command::Numbers(cmd) => relay::numbers(cmd).await,
            cli::Command::Relay(cmd) => relay::relay(cmd).await,
        }
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
