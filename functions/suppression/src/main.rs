//! Lambda `suppression`: SES bounces, complaints and deliveries into events and suppressions.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_suppression().await
}
