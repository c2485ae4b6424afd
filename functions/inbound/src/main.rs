//! Lambda `inbound`: stored inbound messages, processed once by the tenant's rules.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::lambda::run_inbound().await
}
