//! Delivery: one [`Sender`] per channel. Email goes to `.eml` files under `<data_dir>/mail/` or,
//! when `smtp_url` is set, to that SMTP server; SMS and push go to a log sink (a JSON line with
//! target `emporium::sms` / `emporium::push`).
//!
//! The notification sender is one plain function, [`send`]: an [`Outgoing`] message in, a
//! [`SendOutcome`] out, no database. The service's [`crate::dispatch`] loop calls it in process
//! (with its own timeout, retries and bookkeeping around the call), and the
//! `notification-sender` AWS Lambda function (crate `emporium-lambdas`) runs it with the message
//! as its JSON event and the outcome as its JSON response (docs/LAMBDA.md).
//!
//! SMTP here is plaintext only (`builder_dangerous`, no TLS in this build): fine for a local mail
//! sink, but the message and any credentials in `smtp://user:pass@host` cross the network
//! unencrypted. `smtps://` is refused rather than sent in the clear.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use emporium_events::Channel;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The sender every email comes from.
pub const FROM: &str = "Emporium <notifications@emporium.local>";

/// One message to deliver: `{"notificationId", "channel", "recipient", "subject", "body"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    /// The notification id; also the email's `Message-ID`, so that a receiver can drop the copy a
    /// crash between sending and recording (or a retried Lambda invocation) may cause.
    #[serde(rename = "notificationId")]
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// What became of a message: `{"outcome": "sent"}` or `{"outcome": "failed", "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SendOutcome {
    Sent,
    /// Not delivered this time, and why (a bad address, the SMTP server's refusal, ...). Whether
    /// to try again is the caller's decision: the dispatcher retries with backoff.
    Failed {
        error: String,
    },
}

/// The notification sender: delivers `message` through `senders`' sender of its channel.
pub async fn send(senders: &Senders, message: &Outgoing) -> SendOutcome {
    match senders.for_channel(message.channel).send(message).await {
        Ok(()) => SendOutcome::Sent,
        Err(error) => SendOutcome::Failed { error },
    }
}

/// Delivers messages of one channel.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// Delivers `message`, or says why not.
    async fn send(&self, message: &Outgoing) -> Result<(), String>;
}

/// The sender of each channel.
#[derive(Clone)]
pub struct Senders {
    pub email: Arc<dyn Sender>,
    pub sms: Arc<dyn Sender>,
    pub push: Arc<dyn Sender>,
}

impl Senders {
    /// Email through `smtp_url` when given, else `.eml` files in `mail_dir` (created if missing);
    /// SMS and push to the log.
    pub fn from_config(smtp_url: Option<&str>, mail_dir: &Path) -> anyhow::Result<Senders> {
        let email: Arc<dyn Sender> = match smtp_url {
            Some(url) => Arc::new(SmtpMailer::new(url)?),
            None => Arc::new(FileMailer::new(mail_dir)?),
        };
        Ok(Senders {
            email,
            sms: Arc::new(LogSink {
                channel: Channel::Sms,
            }),
            push: Arc::new(LogSink {
                channel: Channel::Push,
            }),
        })
    }

    pub fn for_channel(&self, channel: Channel) -> &dyn Sender {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
            Channel::Push => self.push.as_ref(),
        }
    }
}

/// The email for `message`: plain text UTF-8, `Message-ID` from the notification id.
pub fn email(message: &Outgoing) -> Result<Message, String> {
    let from: Mailbox = FROM
        .parse()
        .map_err(|e| format!("bad sender address: {e}"))?;
    let to: Mailbox = message
        .recipient
        .parse()
        .map_err(|e| format!("bad recipient address {:?}: {e}", message.recipient))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(message.subject.clone())
        .message_id(Some(format!("<{}@emporium.local>", message.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(message.body.clone())
        .map_err(|e| format!("cannot build the email: {e}"))
}

/// Writes each email as an `.eml` file (the embedded mode's mailbox).
pub struct FileMailer {
    transport: AsyncFileTransport<Tokio1Executor>,
}

impl FileMailer {
    pub fn new(dir: &Path) -> anyhow::Result<FileMailer> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the mail directory {}: {e}", dir.display())
        })?;
        Ok(FileMailer {
            transport: AsyncFileTransport::new(dir),
        })
    }
}

#[async_trait]
impl Sender for FileMailer {
    async fn send(&self, message: &Outgoing) -> Result<(), String> {
        let email = email(message)?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write the email file: {e}"))
    }
}

/// Sends email through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    /// `smtp://[user:pass@]host[:port]` (port 25 by default). This build has no TLS for SMTP, so
    /// `smtps://` is refused at start-up rather than failing every message later.
    pub fn new(url: &str) -> anyhow::Result<SmtpMailer> {
        let server = SmtpServer::parse(url).map_err(|e| anyhow::anyhow!("smtp_url: {e}"))?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host).port(server.port);
        if let Some((user, password)) = server.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(SmtpMailer {
            transport: builder
                .timeout(Some(std::time::Duration::from_secs(10)))
                .build(),
        })
    }
}

/// The parts of an `smtp://` URL.
#[derive(Debug, PartialEq)]
struct SmtpServer {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl SmtpServer {
    fn parse(url: &str) -> Result<SmtpServer, String> {
        let rest = match url.split_once("://") {
            Some(("smtp", rest)) => rest,
            Some(("smtps", _)) => {
                return Err(
                    "smtps:// needs TLS, which this build does not include; use smtp://".into(),
                );
            }
            _ => return Err(format!("{url:?} is not an smtp:// URL")),
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = userinfo.map(|info| match info.split_once(':') {
            Some((user, password)) => (user.to_owned(), password.to_owned()),
            None => (info.to_owned(), String::new()),
        });
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None => 25,
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: the port must be a number from 0 to 65535"))?,
        };
        Ok(SmtpServer {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

#[async_trait]
impl Sender for SmtpMailer {
    async fn send(&self, message: &Outgoing) -> Result<(), String> {
        let email = email(message)?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// Logs the message as one JSON line: the stand-in for an SMS gateway or a push service.
pub struct LogSink {
    pub channel: Channel,
}

#[async_trait]
impl Sender for LogSink {
    async fn send(&self, message: &Outgoing) -> Result<(), String> {
        let line = serde_json::json!({
            "notificationId": message.id,
            "channel": message.channel,
            "to": message.recipient,
            "subject": message.subject,
            "body": message.body,
        })
        .to_string();
        match self.channel {
            Channel::Sms => tracing::info!(target: "emporium::sms", message = %line, "sms"),
            Channel::Push => tracing::info!(target: "emporium::push", message = %line, "push"),
            Channel::Email => tracing::info!(target: "emporium::email", message = %line, "email"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(recipient: &str) -> Outgoing {
        Outgoing {
            id: Uuid::now_v7(),
            channel: Channel::Email,
            recipient: recipient.into(),
            subject: "Your order is confirmed".into(),
            body: "Hello Ada,\n\nThank you for your order.\n".into(),
        }
    }

    #[tokio::test]
    async fn the_file_mailer_writes_a_valid_eml_file() {
        let dir = tempfile::tempdir().unwrap();
        let mail_dir = dir.path().join("mail");
        let mailer = FileMailer::new(&mail_dir).unwrap();
        let outgoing = message("ada@example.com");
        mailer.send(&outgoing).await.unwrap();

        let files: Vec<_> = std::fs::read_dir(&mail_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].extension().unwrap(), "eml");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        // RFC 5322: CRLF lines, headers, an empty line, the body.
        let (headers, body) = text.split_once("\r\n\r\n").expect("headers and body");
        let header = |name: &str| {
            headers
                .split("\r\n")
                .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        assert_eq!(
            header("From").as_deref(),
            Some("Emporium <notifications@emporium.local>")
        );
        assert_eq!(header("To").as_deref(), Some("ada@example.com"));
        assert_eq!(
            header("Subject").as_deref(),
            Some("Your order is confirmed")
        );
        assert_eq!(
            header("Message-ID"),
            Some(format!("<{}@emporium.local>", outgoing.id))
        );
        assert!(header("Date").is_some(), "{headers}");
        assert_eq!(
            header("Content-Type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body, "Hello Ada,\r\n\r\nThank you for your order.\r\n");
    }

    #[tokio::test]
    async fn a_bad_address_fails_the_message_not_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = FileMailer::new(dir.path()).unwrap();
        let error = mailer.send(&message("not an address")).await.unwrap_err();
        assert!(error.contains("recipient"), "{error}");
    }

    #[tokio::test]
    async fn the_sender_delivers_through_the_message_s_channel_and_says_what_became_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let senders = Senders::from_config(None, dir.path()).unwrap();
        let sms = Outgoing {
            channel: Channel::Sms,
            recipient: "+15550100".into(),
            ..message("ada@example.com")
        };
        assert_eq!(send(&senders, &sms).await, SendOutcome::Sent);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no email"
        );

        assert_eq!(
            send(&senders, &message("ada@example.com")).await,
            SendOutcome::Sent
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let SendOutcome::Failed { error } = send(&senders, &message("nobody")).await else {
            panic!("an email to no address was sent");
        };
        assert!(error.contains("recipient"), "{error}");
    }

    #[test]
    fn messages_and_outcomes_have_the_documented_json_shape() {
        let outgoing = message("ada@example.com");
        let wire = serde_json::json!({
            "notificationId": outgoing.id,
            "channel": "email",
            "recipient": "ada@example.com",
            "subject": "Your order is confirmed",
            "body": "Hello Ada,\n\nThank you for your order.\n",
        });
        assert_eq!(serde_json::to_value(&outgoing).unwrap(), wire);
        assert_eq!(serde_json::from_value::<Outgoing>(wire).unwrap(), outgoing);
        assert_eq!(
            serde_json::to_value(SendOutcome::Sent).unwrap(),
            serde_json::json!({"outcome": "sent"})
        );
        assert_eq!(
            serde_json::to_value(SendOutcome::Failed {
                error: "SMTP: refused".into()
            })
            .unwrap(),
            serde_json::json!({"outcome": "failed", "error": "SMTP: refused"})
        );
    }

    #[test]
    fn smtp_urls_are_parsed() {
        assert_eq!(
            SmtpServer::parse("smtp://mail.example.com").unwrap(),
            SmtpServer {
                host: "mail.example.com".into(),
                port: 25,
                credentials: None
            }
        );
        assert_eq!(
            SmtpServer::parse("smtp://ann:s3cret@127.0.0.1:2525/").unwrap(),
            SmtpServer {
                host: "127.0.0.1".into(),
                port: 2525,
                credentials: Some(("ann".into(), "s3cret".into()))
            }
        );
        assert_eq!(SmtpServer::parse("smtp://[::1]:1025").unwrap().host, "::1");
        assert!(SmtpServer::parse("smtp://host:port").is_err());
        assert!(SmtpServer::parse("smtp://").is_err());
        assert!(SmtpServer::parse("http://host").is_err());
    }

    #[test]
    fn smtps_is_refused_at_start_up_and_smtp_is_accepted() {
        assert!(SmtpMailer::new("smtp://127.0.0.1:2525").is_ok());
        let error = SmtpMailer::new("smtps://mail.example.com")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("smtp_url"), "{error}");
    }
}
