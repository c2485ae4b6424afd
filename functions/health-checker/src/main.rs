//! Lambda `health-checker`: gateway states and breakers, on an EventBridge schedule.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_health_checker().await
}
