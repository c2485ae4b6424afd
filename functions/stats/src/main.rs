//! Lambda `stats`: the messages table's stream into per-tenant channel counts.
// The handler's nested futures (two kinds of counts per batch) outgrow the default layout
// depth in the test build.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_stats().await
}
