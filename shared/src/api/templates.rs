//! `PUT|GET|DELETE /v1/templates/{name}`, and its locale variants:
//! `PUT|DELETE /v1/templates/{name}/locales/{locale}`.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;

use super::dto::{TemplateInput, TemplateView};
use super::extract::{AuthTenant, Caller, JsonBody};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem};
use crate::domain::audit::AuditAction;
use crate::domain::locale::Locale;
use crate::domain::template::{TemplateError, TemplateParts, MAX_LOCALES};
use crate::domain::{FieldError, Template, TemplateName};
use crate::engine::templates::SaveError;
use crate::engine::Herald;
use crate::ports::LocalePut;

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
        locales: t
            .locales
            .into_iter()
            .map(|(l, parts)| (l.to_string(), parts))
            .collect(),
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
    let (parts, sample) = parts_of(body.value)?;
    let template = Template::with_parts(name, parts, Utc::now());
    let audit = caller.entry(AuditAction::TemplatePut);
    let (template, created) = herald
        .save_template(tenant, template, sample, audit)
        .await
        .map_err(|e| match e {
            SaveError::Template(e) => template_problem(e),
            SaveError::Store(e) => e.into(),
        })?;
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

/// The parts a PUT gives (at least one), and the data for its trial render.
fn parts_of(input: TemplateInput) -> Result<(TemplateParts, serde_json::Value), Problem> {
    if input.subject.is_none() && input.text.is_none() && input.html.is_none() {
        return Err(Problem::invalid(FieldError::new(
            "",
            "required",
            "give at least one of subject, text, html",
        )));
    }
    let sample = input
        .sample_data
        .map_or(serde_json::Value::Null, serde_json::Value::Object);
    let parts = TemplateParts {
        subject: input.subject,
        text: input.text,
        html: input.html,
    };
    Ok((parts, sample))
}

/// A variant's template (no template has a malformed name: a 404) and its raw locale.
fn variant_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(TemplateName, String), Problem> {
    let Path((raw_name, raw_locale)) = path.map_err(|_| Problem::not_found("template"))?;
    let name = TemplateName::parse(&raw_name).map_err(|_| Problem::not_found("template"))?;
    Ok((name, raw_locale))
}

/// The locale in a variant's path: a malformed one is a 422.
fn locale_of(raw: &str) -> Result<Locale, Problem> {
    Locale::parse(raw).map_err(|e| Problem::invalid(FieldError::new("/locale", "invalid", e)))
}

/// Create or replace one locale's variant of an existing template. The variant is whole: a
/// part it leaves out is absent in that locale, not taken from the default.
#[utoipa::path(put, operation_id = "put_template_locale", path = "/v1/templates/{name}/locales/{locale}", tag = "templates",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$"),
           ("locale" = String, Path, description = "A locale like en, en-GB, es-419")),
    request_body = TemplateInput,
    responses((status = 201, body = TemplateView), (status = 200, body = TemplateView), AuthErrors, JsonBodyErrors, NotFound),
    security(("api_key" = [])))]
pub async fn put_locale(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<TemplateInput>,
) -> Result<(StatusCode, Json<TemplateView>), Problem> {
    let (name, raw_locale) = variant_path(path)?;
    let locale = locale_of(&raw_locale)?;
    let (parts, sample) = parts_of(body.value)?;
    let tenant = &caller.tenant;
    let existing = herald
        .templates
        .get(tenant, &name)
        .await?
        .ok_or_else(|| Problem::not_found("template"))?;
    if existing.locales.len() >= MAX_LOCALES && !existing.locales.contains_key(&locale) {
        return Err(Problem::invalid(FieldError::new(
            "/locale",
            "too_many",
            format!("a template has at most {MAX_LOCALES} locales"),
        )));
    }
    // The variant is checked as a template of its own: syntax, and a trial render.
    let trial = Template::with_parts(name.clone(), parts.clone(), Utc::now());
    herald
        .check_template(trial, sample)
        .await
        .map_err(template_problem)?;
    let status = match herald
        .templates
        .put_locale(tenant, &name, &locale, &parts)
        .await?
    {
        LocalePut::NoTemplate => return Err(Problem::not_found("template")),
        LocalePut::Created => StatusCode::CREATED,
        LocalePut::Replaced => StatusCode::OK,
    };
    let entry = caller
        .entry(AuditAction::TemplateLocalePut)
        .target(format!("{name}/{locale}"));
    herald.record_audit(entry).await;
    let mut template = existing;
    template.locales.insert(locale, parts);
    Ok((status, Json(view(template))))
}

#[utoipa::path(delete, operation_id = "delete_template_locale", path = "/v1/templates/{name}/locales/{locale}", tag = "templates",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$"), ("locale" = String, Path)),
    responses((status = 204), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn delete_locale(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let (name, raw_locale) = variant_path(path)?;
    let locale = Locale::parse(&raw_locale).map_err(|_| Problem::not_found("template locale"))?;
    if !herald
        .templates
        .delete_locale(&caller.tenant, &name, &locale)
        .await?
    {
        return Err(Problem::not_found("template locale"));
    }
    let entry = caller
        .entry(AuditAction::TemplateLocaleDeleted)
        .target(format!("{name}/{locale}"));
    herald.record_audit(entry).await;
    Ok(StatusCode::NO_CONTENT)
}
