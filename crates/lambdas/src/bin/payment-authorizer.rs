//! The payment authorizer as an AWS Lambda function: an `AuthorizationRequest` event in, an
//! `AuthorizationOutcome` response out (see the `emporium_lambdas` crate and docs/LAMBDA.md).

use std::process::ExitCode;

use emporium_lambdas::{authorize_payment, exit, payment_limit, process_env, start};
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time per Lambda instance: one thread is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let limit = match start().and_then(|()| payment_limit(&process_env)) {
        Ok(limit) => limit,
        Err(error) => return exit(Err(error)),
    };
    exit(
        lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| {
            authorize_payment(limit, event)
        }))
        .await,
    )
}
