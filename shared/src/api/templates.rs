//! `PUT|GET|DELETE /v1/templates/{name}`

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;

use super::dto::{TemplateInput, TemplateView};
use super::extract::{AuthTenant, JsonBody};
use super::problem::Problem;
use crate::domain::template::TemplateError;
use crate::domain::{FieldError, Template, TemplateName};
use crate::engine::Herald;

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
#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path)), request_body = TemplateInput,
    responses((status = 201, body = TemplateView), (status = 200, body = TemplateView), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn put(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<TemplateInput>,
) -> Result<(StatusCode, Json<TemplateView>), Problem> {
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
    let sample = input.sample_data.unwrap_or(serde_json::Value::Null);
    let template = herald
        .check_template(template, sample)
        .await
        .map_err(template_problem)?;
    let created = herald.templates.put(&tenant, template.clone()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(template))))
}

#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TemplateView>, Problem> {
    let name = name_of(path)?;
    let t = herald
        .templates
        .get(&tenant, &name)
        .await?
        .ok_or_else(|| Problem::not_found("template"))?;
    Ok(Json(view(t)))
}

#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn delete(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let name = name_of(path)?;
    if herald.templates.delete(&tenant, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("template"))
    }
}
