//! Lambda `dispatch`: claims, hands off and records the messages of the lane in `HERALD_LANE`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_dispatch().await
}
