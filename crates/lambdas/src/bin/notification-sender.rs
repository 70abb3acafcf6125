//! The notification sender as an AWS Lambda function: an `Outgoing` message event in, a
//! `SendOutcome` response out (see the `emporium_lambdas` crate and docs/LAMBDA.md).

use std::process::ExitCode;

use emporium_lambdas::{exit, process_env, send_notification, senders, start};
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time per Lambda instance: one thread is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let senders = match start().and_then(|()| senders(&process_env)) {
        Ok(senders) => senders,
        Err(error) => return exit(Err(error)),
    };
    let senders = &senders;
    exit(
        lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| {
            send_notification(senders, event)
        }))
        .await,
    )
}
