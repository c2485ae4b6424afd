//! Lambda `notify`: the notify queue into signed deliveries to tenants' webhook endpoints.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::notify_function::run_notify().await
}
