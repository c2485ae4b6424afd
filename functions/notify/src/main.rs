//! Lambda `notify`: the notify queues (ordered first tries, retries) into signed deliveries to
//! tenants' webhook endpoints.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::notify_function::run_notify().await
}
