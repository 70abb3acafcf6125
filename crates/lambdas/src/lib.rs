//! Two Emporium workers as AWS Lambda functions, on `lambda_runtime`.
//!
//! - `payment-authorizer`: the event is an [`AuthorizationRequest`]
//!   (`{"orderId", "amount": Money, "paymentToken"}`), the response an [`AuthorizationOutcome`]
//!   (`{"outcome": "authorized" | "declined" | "unavailable", "reason"?}`). It runs
//!   [`emporium_payments::authorizer::authorize`] with the limit from `EMPORIUM_PAYMENT_LIMIT`.
//! - `notification-sender`: the event is an [`Outgoing`] message
//!   (`{"notificationId", "channel", "recipient", "subject", "body"}`), the response a
//!   [`SendOutcome`] (`{"outcome": "sent" | "failed", "error"?}`). It runs
//!   [`emporium_notifications::sender::send`] with senders configured from the environment:
//!   email through `EMPORIUM_SMTP_URL` when set, else `.eml` files under `EMPORIUM_MAIL_DIR`
//!   (`/tmp/mail` by default, Lambda's only writable place); SMS and push to the log.
//!
//! These are the very functions the platform's consumers call in process (payments on
//! `InventoryReserved`, the notifications dispatcher); this crate only adds the Lambda shell
//! around them. Retries, the circuit breaker and the bookkeeping stay with the platform: in
//! Lambda they are the invoker's concern.
//!
//! An event that does not parse (or that the authorizer refuses to decide, such as a negative
//! total) is reported to the Runtime API as an invocation error, naming the field; a
//! misconfiguration stops the function at start-up with a message naming the variable. Neither
//! panics. docs/LAMBDA.md tells how to build and deploy them with `cargo lambda`.

use std::{convert::Infallible, path::PathBuf, process::ExitCode};

use emporium_notifications::sender::{self, Outgoing, SendOutcome, Senders};
use emporium_payments::authorizer::{
    self, AuthorizationOutcome, AuthorizationRequest, DEFAULT_LIMIT,
};
use lambda_runtime::LambdaEvent;

/// Where email goes without `EMPORIUM_SMTP_URL`: `/tmp` is the only writable directory in Lambda.
pub const DEFAULT_MAIL_DIR: &str = "/tmp/mail";

/// What `lambda_runtime` reads at start-up and, in its version 1.5, panics without
/// (`Config::from_env`, the Runtime API client). Checked first so that a function started outside
/// Lambda says so plainly.
pub const RUNTIME_VARIABLES: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// A configuration the function cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    pub message: String,
}

/// Reads one environment variable: [`process_env`] in the binaries, a map in tests (the process
/// environment is not the tests' to change).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment; a variable that is not valid Unicode counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `name`, unless unset or blank.
fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|value| !value.trim().is_empty())
}

/// Checks that the Lambda runtime's own variables are there, as the runtime would read them.
pub fn check_runtime(env: Env<'_>) -> Result<(), ConfigError> {
    for &variable in RUNTIME_VARIABLES {
        if var(env, variable).is_none() {
            return Err(ConfigError {
                variable,
                message: "is not set: this binary runs inside AWS Lambda (or under an emulator \
                          of its Runtime API, such as `cargo lambda watch`)"
                    .into(),
            });
        }
    }
    let memory = var(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    if memory.parse::<i32>().is_err() {
        return Err(ConfigError {
            variable: "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            message: format!("must be a whole number of megabytes, not {memory:?}"),
        });
    }
    Ok(())
}

/// `EMPORIUM_PAYMENT_LIMIT` (minor units, positive), as the platform reads it;
/// [`DEFAULT_LIMIT`] when unset.
pub fn payment_limit(env: Env<'_>) -> Result<i64, ConfigError> {
    let Some(text) = var(env, "EMPORIUM_PAYMENT_LIMIT") else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<i64>() {
        Ok(limit) if limit > 0 => Ok(limit),
        _ => Err(ConfigError {
            variable: "EMPORIUM_PAYMENT_LIMIT",
            message: format!("must be a positive amount in minor units, not {text:?}"),
        }),
    }
}

/// The senders: email through `EMPORIUM_SMTP_URL` when set, else `.eml` files under
/// `EMPORIUM_MAIL_DIR` ([`DEFAULT_MAIL_DIR`] when unset), created if missing; SMS and push to the
/// log.
pub fn senders(env: Env<'_>) -> Result<Senders, ConfigError> {
    let smtp_url = var(env, "EMPORIUM_SMTP_URL");
    let mail_dir =
        var(env, "EMPORIUM_MAIL_DIR").map_or_else(|| DEFAULT_MAIL_DIR.into(), PathBuf::from);
    Senders::from_config(smtp_url.as_deref(), &mail_dir).map_err(|e| ConfigError {
        variable: if smtp_url.is_some() {
            "EMPORIUM_SMTP_URL"
        } else {
            "EMPORIUM_MAIL_DIR"
        },
        message: e.to_string(),
    })
}

/// The `payment-authorizer` handler. Every request that parsed gets an answer, so it never fails:
/// a bad event has already been refused by the runtime's deserialization.
pub async fn authorize_payment(
    limit: i64,
    event: LambdaEvent<AuthorizationRequest>,
) -> Result<AuthorizationOutcome, Infallible> {
    let outcome = authorizer::authorize(&event.payload, limit);
    tracing::info!(
        order_id = %event.payload.order_id,
        request_id = %event.context.request_id,
        ?outcome,
        "authorization decided"
    );
    Ok(outcome)
}

/// The `notification-sender` handler. A message that could not be delivered is a `failed`
/// outcome, not an invocation error: the message was understood, and the caller decides whether
/// to send it again.
pub async fn send_notification(
    senders: &Senders,
    event: LambdaEvent<Outgoing>,
) -> Result<SendOutcome, Infallible> {
    let outcome = sender::send(senders, &event.payload).await;
    tracing::info!(
        notification_id = %event.payload.id,
        request_id = %event.context.request_id,
        ?outcome,
        "notification handled"
    );
    Ok(outcome)
}

/// Sets up logging, then checks the runtime's variables.
///
/// Logs go to stdout, which Lambda sends to CloudWatch, following Lambda's logging controls:
/// JSON lines when `AWS_LAMBDA_LOG_FORMAT` is `JSON`, else text; the level from
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG` (a filter such as `info,emporium=debug`), else `info`.
/// No timestamps (Lambda adds its own) and no colours (nobody reads CloudWatch on a terminal).
pub fn start() -> Result<(), ConfigError> {
    use tracing_subscriber::{EnvFilter, filter::LevelFilter};

    let filter = match var(&process_env, "AWS_LAMBDA_LOG_LEVEL") {
        // Lambda's levels are upper-case words (`INFO`, `WARN`, ...); `FATAL` has no tracing twin.
        Some(level) => EnvFilter::new(level.to_lowercase().replace("fatal", "error")),
        None => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .from_env_lossy(),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .without_time();
    let installed = if var(&process_env, "AWS_LAMBDA_LOG_FORMAT")
        .is_some_and(|format| format.eq_ignore_ascii_case("json"))
    {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
    if let Err(error) = installed {
        eprintln!("warning: logging is not set up: {error}");
    }
    check_runtime(&process_env)
}

/// The process's exit status for how the function ended, logging why when it failed.
pub fn exit(result: Result<(), impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the function stopped");
            // Also on stderr, whatever the log level: the one line an operator needs.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const RUNTIME: &[(&str, &str)] = &[
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_NAME", "payment-authorizer"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ];

    #[test]
    fn the_runtime_s_variables_are_checked_by_name() {
        assert_eq!(check_runtime(&env(RUNTIME)), Ok(()));
        for &(missing, _) in RUNTIME {
            let pairs: Vec<_> = RUNTIME
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(check_runtime(&env(&pairs)).unwrap_err().variable, missing);
        }
        let mut pairs = RUNTIME.to_vec();
        pairs[2] = ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots");
        let error = check_runtime(&env(&pairs)).unwrap_err();
        assert_eq!(error.variable, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
        assert!(error.message.contains("\"lots\""), "{error}");
    }

    #[test]
    fn the_payment_limit_defaults_to_the_contract_s_and_must_be_positive() {
        assert_eq!(payment_limit(&env(&[])), Ok(DEFAULT_LIMIT));
        assert_eq!(
            payment_limit(&env(&[("EMPORIUM_PAYMENT_LIMIT", "")])),
            Ok(DEFAULT_LIMIT)
        );
        assert_eq!(
            payment_limit(&env(&[("EMPORIUM_PAYMENT_LIMIT", "5000")])),
            Ok(5000)
        );
        for bad in ["0", "-5", "lots", "19.99"] {
            let error = payment_limit(&env(&[("EMPORIUM_PAYMENT_LIMIT", bad)])).unwrap_err();
            assert_eq!(error.variable, "EMPORIUM_PAYMENT_LIMIT", "{bad}");
        }
    }

    #[tokio::test]
    async fn without_smtp_email_goes_to_the_mail_directory_it_creates() {
        let dir = tempfile::tempdir().unwrap();
        let mail_dir = dir.path().join("mail");
        let senders = senders(&env(&[("EMPORIUM_MAIL_DIR", mail_dir.to_str().unwrap())])).unwrap();
        assert!(mail_dir.is_dir());
        let outcome = sender::send(
            &senders,
            &Outgoing {
                id: uuid::Uuid::now_v7(),
                channel: emporium_events::Channel::Email,
                recipient: "ada@example.com".into(),
                subject: "Hello".into(),
                body: "Hi".into(),
            },
        )
        .await;
        assert_eq!(outcome, SendOutcome::Sent);
        assert_eq!(std::fs::read_dir(&mail_dir).unwrap().count(), 1);
    }

    #[test]
    fn an_smtp_url_the_sender_cannot_use_is_refused_by_name() {
        let error = senders(&env(&[("EMPORIUM_SMTP_URL", "smtps://mail.example.com")]))
            .err()
            .unwrap();
        assert_eq!(error.variable, "EMPORIUM_SMTP_URL");
        assert!(senders(&env(&[("EMPORIUM_SMTP_URL", "smtp://127.0.0.1:2525")])).is_ok());
    }
}
