//! Lambda `webhooks`: the providers' signed callbacks, over DynamoDB.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::aws::lambda::run_webhooks().await
}
