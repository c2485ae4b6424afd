//! Suppressions: the tenant's entries by channel, a look-up of one address (the tenant's entry
//! or the global one), adding or removing the tenant's own entries, and CSV import and export.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use serde::Deserialize;

use super::pages::{self, Page};
use super::session::SignedIn;
use super::PageQuery;
use crate::domain::audit::AuditAction;
use crate::domain::suppression::{entry_address, Reason, Scope, Suppression};
use crate::domain::suppression_csv::parse_import;
use crate::domain::Channel;
use crate::engine::suppress_by_hand::Unsuppressed;
use crate::engine::Herald;
use crate::ports::SuppressionFilter;

const PAGE_SIZE: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    #[serde(default)]
    channel: String,
    /// A look-up of one address (on `channel`, email when none is picked).
    #[serde(default)]
    address: String,
    /// Resume after this entry: `<channel>:<address>`.
    #[serde(default)]
    after: String,
}

/// `GET /console/suppressions`
pub async fn list(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    PageQuery(form): PageQuery<ListForm>,
) -> Response {
    show(&herald, &who, &form, None).await
}

async fn show(
    herald: &Herald,
    who: &SignedIn,
    form: &ListForm,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let channel = Channel::parse(form.channel.trim());
    let after = form
        .after
        .split_once(':')
        .and_then(|(c, a)| Some((Channel::parse(c)?, a.to_owned())));
    let filter = SuppressionFilter {
        channel,
        reason: None,
    };
    let own = Scope::Tenant(who.tenant.clone());
    let Ok(items) = herald
        .suppressions
        .list_suppressions(&own, &filter, after, PAGE_SIZE)
        .await
    else {
        return pages::unavailable();
    };
    let looked_up = match look_up(herald, who, form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let next = (items.len() == PAGE_SIZE)
        .then(|| items.last())
        .flatten()
        .map(|s| {
            let after = format!("{}:{}", s.channel, s.address);
            let query = [
                ("channel", form.channel.as_str()),
                ("after", after.as_str()),
            ];
            format!(
                "/console/suppressions?{}",
                serde_urlencoded::to_string(query).unwrap_or_default()
            )
        });
    let (status, notice) = notice.map_or((StatusCode::OK, None), |(s, n)| (s, Some(n)));
    let page = Page::new("suppressions.html", "Suppressions").with(minijinja::context! {
        who => super::who(who),
        section => "suppressions",
        items => items.iter().map(view).collect::<Vec<_>>(),
        form => minijinja::context! { channel => &form.channel, address => &form.address },
        looked_up => looked_up,
        next => next,
        notice => notice,
        channels => Channel::ALL.map(Channel::as_str),
        reasons => Reason::ALL.map(Reason::as_str),
    });
    pages::render_status(status, &page)
}

fn view(s: &Suppression) -> minijinja::Value {
    minijinja::context! {
        channel => s.channel.as_str(),
        address => &s.address,
        reason => s.reason.as_str(),
        source => &s.source,
        created_at => s.created_at,
        expires_at => s.expires_at,
    }
}

/// The entry that stops sends to the looked-up address, if any: `(scope, entry)`.
async fn look_up(
    herald: &Herald,
    who: &SignedIn,
    form: &ListForm,
) -> Result<Option<minijinja::Value>, Response> {
    if form.address.trim().is_empty() {
        return Ok(None);
    }
    let channel = if form.channel.trim().is_empty() {
        "email"
    } else {
        form.channel.trim()
    };
    let Ok((channel, address)) = entry_address(channel, form.address.trim()) else {
        return Ok(Some(minijinja::context! { invalid => true }));
    };
    for scope in [Scope::Tenant(who.tenant.clone()), Scope::Global] {
        let found = herald
            .suppressions
            .get_suppression(&scope, channel, &address)
            .await
            .map_err(|_| pages::unavailable())?;
        if let Some(entry) = found {
            return Ok(Some(minijinja::context! {
                entry => view(&entry),
                global => matches!(scope, Scope::Global),
            }));
        }
    }
    Ok(Some(
        minijinja::context! { none => true, address => address },
    ))
}

#[derive(Debug, Deserialize)]
pub struct EntryForm {
    csrf: String,
    channel: String,
    address: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/suppressions/add` (admin)
pub async fn add(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Form(form): Form<EntryForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let parsed = entry_address(form.channel.trim(), form.address.trim());
    let reason = match form.reason.trim() {
        "" => Some(Reason::Manual),
        r => Reason::ALL.into_iter().find(|x| x.as_str() == r),
    };
    let (Ok((channel, address)), Some(reason)) = (parsed, reason) else {
        let why = "Not added: pick a channel and reason, and give an address that channel takes.";
        let list = ListForm::default();
        return show(
            &herald,
            &who,
            &list,
            Some((StatusCode::UNPROCESSABLE_ENTITY, why.into())),
        )
        .await;
    };
    let entry = Suppression {
        scope: Scope::Tenant(who.tenant.clone()),
        channel,
        address,
        reason,
        source: Some("console".into()),
        created_at: Utc::now(),
        expires_at: None,
    };
    let audit = who.entry(AuditAction::SuppressionAdded);
    match herald.suppress_by_hand(&who.tenant, &entry, audit).await {
        Ok(_) => Redirect::to("/console/suppressions").into_response(),
        Err(_) => pages::unavailable(),
    }
}

/// `POST /console/suppressions/remove` (admin): the tenant's own entry only.
pub async fn remove(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Form(form): Form<EntryForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let Ok((channel, address)) = entry_address(form.channel.trim(), form.address.trim()) else {
        return pages::not_found("suppression");
    };
    let audit = who.entry(AuditAction::SuppressionRemoved);
    let outcome = herald
        .unsuppress_by_hand(&who.tenant, channel, &address, audit)
        .await;
    let why = match outcome {
        Ok(Unsuppressed::Removed) => return Redirect::to("/console/suppressions").into_response(),
        Ok(Unsuppressed::OnlyGlobal) => (
            StatusCode::CONFLICT,
            "Not removed: the address is on the global list (a hard bounce or a dead token).",
        ),
        Ok(Unsuppressed::NotFound) => (StatusCode::NOT_FOUND, "Not removed: no such entry."),
        Err(_) => return pages::unavailable(),
    };
    show(
        &herald,
        &who,
        &ListForm::default(),
        Some((why.0, why.1.into())),
    )
    .await
}

/// Pasted CSV: the import's largest body is far above what a form should carry.
pub const IMPORT_FORM_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, Deserialize)]
pub struct ImportForm {
    csrf: String,
    csv: String,
}

/// `POST /console/suppressions/import` (admin): pasted CSV in the API's import format, with a
/// report of what was imported and which lines were refused.
pub async fn import(
    State(herald): State<Arc<Herald>>,
    who: SignedIn,
    Form(form): Form<ImportForm>,
) -> Response {
    if let Err(refused) = who.check_action(&form.csrf) {
        return refused;
    }
    let (entries, rejected) = match parse_import(&who.tenant, form.csv.as_bytes(), "console") {
        Ok(parsed) => parsed,
        Err(e) => {
            let why = format!("Nothing imported: {e}.");
            let list = ListForm::default();
            return show(
                &herald,
                &who,
                &list,
                Some((StatusCode::UNPROCESSABLE_ENTITY, why)),
            )
            .await;
        }
    };
    let audit = who.entry(AuditAction::SuppressionsImported);
    let Ok(counts) = herald
        .import_suppressions(entries, rejected.len(), audit)
        .await
    else {
        return pages::unavailable();
    };
    let page = Page::new("import_report.html", "Import report").with(minijinja::context! {
        who => super::who(&who),
        section => "suppressions",
        imported => counts.imported,
        updated => counts.updated,
        rejected => rejected,
    });
    pages::render(&page)
}

/// `GET /console/suppressions/export`: the tenant's list as a CSV download.
pub async fn export(State(herald): State<Arc<Herald>>, who: SignedIn) -> Response {
    match herald.export_suppressions(&who.tenant, None).await {
        Ok(Some(body)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"suppressions.csv\"",
                ),
            ],
            body,
        )
            .into_response(),
        Ok(None) | Err(_) => pages::unavailable(),
    }
}
