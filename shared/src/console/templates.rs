//! Templates: the tenant's list, and an editor whose preview is rendered by the same engine,
//! with the same limits, as a send (`Herald::preview_template`). Preview needs a session and
//! its token; saving needs the admin scope.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use serde::Deserialize;

use super::pages::{self, Page};
use super::session::SignedIn;
use super::PageQuery;
use crate::domain::audit::AuditAction;
use crate::domain::template::TemplateParts;
use crate::domain::{Template, TemplateName};
use crate::engine::templates::{Preview, SaveError};
use crate::engine::Herald;

const PAGE_SIZE: usize = 100;
/// Template forms carry a template (sends cap content at 256 KB) and sample data.
pub const FORM_BYTES: usize = 512 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    #[serde(default)]
    after: String,
    /// A template to open (or create) by name.
    #[serde(default)]
    open: String,
}

/// `GET /console/templates`
pub async fn list(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<ListForm>,
) -> Response {
    if let Ok(open) = TemplateName::parse(form.open.trim()) {
        return Redirect::to(&format!("/console/templates/{open}")).into_response();
    }
    let after = TemplateName::parse(form.after.trim()).ok();
    let Ok(items) = herald
        .templates
        .list_templates(&who.tenant, after.as_ref(), PAGE_SIZE)
        .await
    else {
        return pages::unavailable();
    };
    let next = (items.len() == PAGE_SIZE)
        .then(|| {
            items
                .last()
                .map(|t| format!("/console/templates?after={}", t.name))
        })
        .flatten();
    let rows: Vec<_> = items
        .iter()
        .map(|t| minijinja::context! { name => t.name.as_str(), subject => &t.subject, updated_at => t.updated_at })
        .collect();
    pages::render(
        &Page::new("templates.html", "Templates").with(minijinja::context! {
            who => super::who(&who),
            section => "templates",
            items => rows,
            next => next,
        }),
    )
}

/// `GET /console/templates/{name}`: the editor, with the stored template's preview; a new
/// name opens an empty editor.
pub async fn edit(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
) -> Response {
    let Ok(name) = TemplateName::parse(&raw) else {
        return pages::not_found("template");
    };
    let stored = match herald.templates.get(&who.tenant, &name).await {
        Ok(found) => found,
        Err(_) => return pages::unavailable(),
    };
    let exists = stored.is_some();
    let template = stored.unwrap_or_else(|| Template::with_parts(name, empty(), Utc::now()));
    let form = EditForm {
        subject: template.subject.clone().unwrap_or_default(),
        text: template.text.clone().unwrap_or_default(),
        html: template.html.clone().unwrap_or_default(),
        sample: "{}".into(),
        ..EditForm::default()
    };
    let preview = herald
        .preview_template(template, serde_json::json!({}))
        .await;
    editor(&who, &raw, &form, &preview, exists, StatusCode::OK, None)
}

fn empty() -> TemplateParts {
    TemplateParts {
        subject: None,
        text: None,
        html: None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: String,
    /// Sample data, a JSON object.
    #[serde(default)]
    sample: String,
    /// `save`, or anything else to preview.
    #[serde(default)]
    action: String,
}

impl EditForm {
    fn template(&self, name: TemplateName) -> Template {
        let part = |v: &str| (!v.trim().is_empty()).then(|| v.to_owned());
        let parts = TemplateParts {
            subject: part(&self.subject),
            text: part(&self.text),
            html: part(&self.html),
        };
        Template::with_parts(name, parts, Utc::now())
    }

    fn sample(&self) -> Result<serde_json::Value, String> {
        if self.sample.trim().is_empty() {
            return Ok(serde_json::json!({}));
        }
        match serde_json::from_str::<serde_json::Value>(&self.sample) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            _ => Err("The sample data must be a JSON object, like {\"name\": \"Ann\"}.".into()),
        }
    }
}

/// `POST /console/templates/{name}`: preview the form, or save it (admin).
pub async fn submit(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
    Form(form): Form<EditForm>,
) -> Response {
    let Ok(name) = TemplateName::parse(&raw) else {
        return pages::not_found("template");
    };
    let saving = form.action == "save";
    let checked = if saving {
        who.check_action(&form.csrf)
    } else {
        who.check_token(&form.csrf)
    };
    if let Err(refused) = checked {
        return refused;
    }
    let sample = match form.sample() {
        Ok(sample) => sample,
        Err(why) => {
            let preview = Preview::default();
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return editor(&who, &raw, &form, &preview, false, status, Some(&why));
        }
    };
    let template = form.template(name);
    if !saving {
        let preview = herald.preview_template(template, sample).await;
        return editor(&who, &raw, &form, &preview, false, StatusCode::OK, None);
    }
    if template.subject.is_none() && template.text.is_none() && template.html.is_none() {
        let why = "Give at least one of subject, text and HTML.";
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return editor(
            &who,
            &raw,
            &form,
            &Preview::default(),
            false,
            status,
            Some(why),
        );
    }
    let audit = who.entry(AuditAction::TemplatePut);
    match herald
        .save_template(&who.tenant, template.clone(), sample.clone(), audit)
        .await
    {
        Ok(_) => Redirect::to(&format!("/console/templates/{raw}")).into_response(),
        Err(SaveError::Template(e)) => {
            let preview = herald.preview_template(template, sample).await;
            let why = format!("Not saved: {e}");
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            editor(&who, &raw, &form, &preview, false, status, Some(&why))
        }
        Err(SaveError::Store(_)) => pages::unavailable(),
    }
}

/// `POST /console/templates/{name}/preview`: the preview alone, for the editor's script.
pub async fn preview(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Path(raw): Path<String>,
    Form(form): Form<EditForm>,
) -> Response {
    let Ok(name) = TemplateName::parse(&raw) else {
        return pages::not_found("template");
    };
    if let Err(refused) = who.check_token(&form.csrf) {
        return refused;
    }
    let preview = match form.sample() {
        Ok(sample) => herald.preview_template(form.template(name), sample).await,
        Err(why) => Preview {
            error: Some(why),
            ..Preview::default()
        },
    };
    pages::render(
        &Page::new("template_preview.html", "Preview").with(minijinja::context! {
            preview => preview,
        }),
    )
}

fn editor(
    who: &SignedIn,
    name: &str,
    form: &EditForm,
    preview: &Preview,
    exists: bool,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let page = Page::new("template.html", format!("Template {name}")).with(minijinja::context! {
        who => super::who(who),
        section => "templates",
        name => name,
        exists => exists,
        form => minijinja::context! {
            subject => &form.subject, text => &form.text, html => &form.html, sample => &form.sample,
        },
        preview => preview,
        problem => problem,
    });
    pages::render_status(status, &page)
}
