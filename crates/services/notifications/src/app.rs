//! The use cases behind the HTTP API: a user's notifications, marking them read, an admin's
//! message, and the templates.

use std::sync::Arc;

use emporium_events::{Channel, Priority};
use emporium_platform::{
    api::{ApiError, Checks, FieldError, Page, PageRequest},
    storage::{Db, EventContext},
};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, Rendered, Status},
    store::{self, NewNotification, NotificationRow, TemplateRow},
};

/// Most ids `POST /api/notifications/me/read` takes at once.
pub const MAX_READ_IDS: usize = 1000;

/// The service's API use cases.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    /// Wakes the dispatcher after a notification is queued here.
    pub wake: Arc<Notify>,
}

/// An admin's message: a template with variables, or a literal subject and body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    #[schema(value_type = String, example = "email")]
    pub channel: Channel,
    /// An email address (email), a phone number (sms) or a user id (push).
    pub recipient: String,
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// `standard` when absent.
    #[schema(value_type = Option<String>, example = "standard")]
    pub priority: Option<Priority>,
}

fn unprocessable_field(code: &'static str, field: &str, message: String) -> ApiError {
    let mut error = ApiError::unprocessable(code, format!("{field}: {message}"));
    error.errors.push(FieldError {
        field: field.to_owned(),
        message,
    });
    error
}

fn render_failed(error: &domain::TemplateError) -> ApiError {
    unprocessable_field(
        "TEMPLATE_RENDER_FAILED",
        "variables",
        format!(
            "the template's {} does not render: {}",
            error.part, error.message
        ),
    )
}

impl App {
    pub async fn my_notifications(
        &self,
        user_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<NotificationRow>, ApiError> {
        let rows = store::list_for_user(&mut self.db.reader().await?, user_id, page).await?;
        Ok(Page::from_rows(rows, page, |row| row.id.clone()))
    }

    /// Marks `ids` (those that are the user's) or all of the user's notifications read.
    pub async fn mark_read(
        &self,
        user_id: Uuid,
        ids: Option<Vec<String>>,
        correlation_id: &str,
    ) -> Result<u64, ApiError> {
        let ids = match ids {
            None => None,
            Some(ids) => {
                if ids.len() > MAX_READ_IDS {
                    return Err(ApiError::field(
                        "ids",
                        format!("at most {MAX_READ_IDS} ids at once"),
                    ));
                }
                let mut checks = Checks::new();
                let mut parsed = Vec::with_capacity(ids.len());
                for (i, id) in ids.iter().enumerate() {
                    match Uuid::parse_str(id) {
                        Ok(id) => parsed.push(id),
                        Err(_) => {
                            checks.check(false, format!("ids[{i}]"), "is not a notification id");
                        }
                    }
                }
                checks.finish()?;
                Some(parsed)
            }
        };
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        let marked = store::mark_read(tx.conn(), user_id, ids.as_deref()).await?;
        tx.commit().await?;
        Ok(marked)
    }

    /// Queues an admin's message; the dispatcher sends it.
    pub async fn send(
        &self,
        request: SendRequest,
        correlation_id: &str,
    ) -> Result<(Uuid, Status), ApiError> {
        let mut checks = Checks::new();
        let recipient = domain::check_recipient(request.channel, &request.recipient);
        if let Err(message) = &recipient {
            checks.check(false, "recipient", *message);
        }
        let literal = request.subject.is_some() || request.body.is_some();
        match (&request.template, literal) {
            (Some(_), true) => {
                checks.check(
                    false,
                    "template",
                    "give either template (with variables) or subject and body, not both",
                );
            }
            (None, false) => {
                checks.check(
                    false,
                    "template",
                    "is required unless subject and body are given",
                );
            }
            (Some(name), false) => {
                checks.check(
                    domain::check_template_name(name).is_ok(),
                    "template",
                    "is not a template name",
                );
            }
            (None, true) => {
                for (field, value, max) in [
                    ("subject", &request.subject, domain::MAX_SUBJECT_SOURCE),
                    ("body", &request.body, domain::MAX_BODY_SOURCE),
                ] {
                    match value {
                        None => {
                            checks.check(false, field, "is required with a literal message");
                        }
                        Some(text) => {
                            checks
                                .check(!text.trim().is_empty(), field, "must not be empty")
                                .check(
                                    text.len() <= max,
                                    field,
                                    format!("must be at most {max} bytes"),
                                );
                        }
                    }
                }
            }
        }
        if request.variables.is_some() && request.template.is_none() && literal {
            checks.check(false, "variables", "only goes with a template");
        }
        checks.finish()?;
        let recipient = recipient.map_err(|m| ApiError::field("recipient", m))?;

        let (template, rendered) = match &request.template {
            Some(name) => {
                let template = store::template(&mut self.db.reader().await?, name)
                    .await?
                    .ok_or_else(|| {
                        unprocessable_field(
                            "UNKNOWN_TEMPLATE",
                            "template",
                            format!("there is no template named {name:?}"),
                        )
                    })?;
                let variables = request.variables.clone().unwrap_or_default();
                let rendered = domain::render(&template.subject, &template.body, &variables)
                    .map_err(|e| render_failed(&e))?;
                (Some(name.clone()), rendered)
            }
            None => (
                None,
                Rendered {
                    subject: domain::one_line(request.subject.as_deref().unwrap_or_default()),
                    body: request.body.clone().unwrap_or_default(),
                },
            ),
        };

        let user_id =
            store::user_for_recipient(&mut self.db.reader().await?, request.channel, &recipient)
                .await?;
        if request.channel == Channel::Push && user_id.is_none() {
            return Err(unprocessable_field(
                "UNKNOWN_RECIPIENT",
                "recipient",
                "there is no user with this id".into(),
            ));
        }
        let id = Uuid::now_v7();
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        store::insert_notification(
            tx.conn(),
            &NewNotification {
                id,
                dedupe_key: None,
                event_id: None,
                correlation_id: correlation_id.to_owned(),
                user_id,
                channel: request.channel,
                priority: request.priority.unwrap_or(Priority::Standard),
                template,
                recipient,
                subject: rendered.subject,
                body: rendered.body,
                status: Status::Queued,
                error: None,
            },
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok((id, Status::Queued))
    }

    pub async fn templates(&self, page: &PageRequest) -> Result<Page<TemplateRow>, ApiError> {
        let rows = store::list_templates(&mut self.db.reader().await?, page).await?;
        Ok(Page::from_rows(rows, page, |row| row.name.clone()))
    }

    pub async fn template(&self, name: &str) -> Result<TemplateRow, ApiError> {
        if domain::check_template_name(name).is_err() {
            return Err(ApiError::not_found("no such template"));
        }
        store::template(&mut self.db.reader().await?, name)
            .await?
            .ok_or_else(|| ApiError::not_found("no such template"))
    }

    /// Creates or replaces a template once both parts compile. Returns it and whether it is new.
    pub async fn put_template(
        &self,
        name: &str,
        subject: &str,
        body: &str,
        correlation_id: &str,
    ) -> Result<(TemplateRow, bool), ApiError> {
        if let Err(message) = domain::check_template_name(name) {
            return Err(ApiError::field("name", message));
        }
        let errors = domain::check_template(subject, body);
        if !errors.is_empty() {
            return Err(ApiError::validation(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: e.part.to_owned(),
                        message: e.message,
                    })
                    .collect(),
            ));
        }
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        let result = store::put_template(tx.conn(), name, subject, body).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// Renders a stored template with `variables`, strictly.
    pub async fn render(
        &self,
        name: &str,
        variables: &Map<String, Value>,
    ) -> Result<Rendered, ApiError> {
        let template = self.template(name).await?;
        domain::render(&template.subject, &template.body, variables).map_err(|e| render_failed(&e))
    }
}
