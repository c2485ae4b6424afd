//! Lambda `stats`: the messages table's stream into per-tenant channel counts.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_stats().await
}
