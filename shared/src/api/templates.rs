//! `PUT|GET|DELETE /v1/templates/{name}`

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;

use super::dto::{TemplateInput, TemplateView};
use super::extract::{AuthTenant, Caller, JsonBody};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem};
use crate::domain::audit::AuditAction;
use crate::domain::template::TemplateError;
use crate::domain::{FieldError, Template, TemplateName};
use crate::engine::Herald;

/// The name to store a template under: a malformed one is a 422.
fn name_of(path: Result<Path<String>, PathRejection>) -> Result<TemplateName, Problem> {
    let Path(raw) = path.map_err(|_| Problem::not_found("template"))?;
    TemplateName::parse(&raw).map_err(|e| Problem::invalid(FieldError::new("/name", "invalid", e)))
}

/// A template refused at save: its syntax, or a limit its trial render ran into.
fn template_problem(e: TemplateError) -> Problem {
    match e {
        TemplateError::Syntax { part, detail } => {
            Problem::invalid(FieldError::new(format!("/{part}"), "syntax", detail))
        }
        TemplateError::Limit { part, limit } => {
            super::messages::limit_problem(&format!("/{part}"), limit)
        }
        other => Problem::invalid(FieldError::new("", "invalid", other.to_string())),
    }
}

/// The name of a stored template: no template has a malformed name, so that is a 404.
fn existing_name(path: Result<Path<String>, PathRejection>) -> Result<TemplateName, Problem> {
    name_of(path).map_err(|_| Problem::not_found("template"))
}

fn view(t: Template) -> TemplateView {
    TemplateView {
        name: t.name.to_string(),
        subject: t.subject,
        text: t.text,
        html: t.html,
        updated_at: t.updated_at,
    }
}

/// Create or replace a template (minijinja syntax; the html part is HTML-escaped).
#[utoipa::path(put, operation_id = "put_template", path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$")), request_body = TemplateInput,
    responses((status = 201, body = TemplateView), (status = 200, body = TemplateView), AuthErrors, JsonBodyErrors),
    security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<TemplateInput>,
) -> Result<(StatusCode, Json<TemplateView>), Problem> {
    let tenant = &caller.tenant;
    let name = name_of(path)?;
    let input = body.value;
    if input.subject.is_none() && input.text.is_none() && input.html.is_none() {
        return Err(Problem::invalid(FieldError::new(
            "",
            "required",
            "give at least one of subject, text, html",
        )));
    }
    let template = Template {
        name,
        subject: input.subject,
        text: input.text,
        html: input.html,
        updated_at: Utc::now(),
    };
    let sample = input
        .sample_data
        .map_or(serde_json::Value::Null, serde_json::Value::Object);
    let template = herald
        .check_template(template, sample)
        .await
        .map_err(template_problem)?;
    let created = herald.templates.put(tenant, template.clone()).await?;
    let entry = caller
        .entry(AuditAction::TemplatePut)
        .target(template.name.as_str())
        .detail(serde_json::json!({ "created": created }));
    herald.record_audit(entry).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(template))))
}

#[utoipa::path(get, operation_id = "get_template", path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = TemplateView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TemplateView>, Problem> {
    let name = existing_name(path)?;
    let t = herald
        .templates
        .get(&tenant, &name)
        .await?
        .ok_or_else(|| Problem::not_found("template"))?;
    Ok(Json(view(t)))
}

#[utoipa::path(delete, operation_id = "delete_template", path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 204), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let name = existing_name(path)?;
    if herald.templates.delete(&caller.tenant, &name).await? {
        let entry = caller
            .entry(AuditAction::TemplateDeleted)
            .target(name.as_str());
        herald.record_audit(entry).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("template"))
    }
}
