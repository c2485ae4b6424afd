//! Lambda `enqueue`: writes and queues the messages of stored bulk sends, part by part.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_enqueue().await
}
