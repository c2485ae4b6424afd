//! Lambda `api`: the Router of `herald serve`, over DynamoDB and SQS.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::aws::lambda::run_api().await
}
