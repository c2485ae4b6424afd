//! Contacts: `POST|GET /v1/contacts`, `GET|PATCH /v1/contacts/{id}`,
//! `POST /v1/contacts/{id}/identities` and `POST /v1/contacts/{id}/merge`. A tenant sees and
//! changes its own contacts only: another tenant's id is a 404, as a missing one is.

use std::sync::Arc;

use axum::extract::{rejection::PathRejection, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthTenant, Caller, JsonBody};
use super::paging::{Cursor, ListQuery, MESSAGE_ID_PATTERN};
use super::problem::{AuthErrors, JsonBodyErrors, NotFound, Problem, QueryErrors};
use crate::domain::audit::AuditAction;
use crate::domain::contact::{IdentityKind, MAX_IDENTITIES};
use crate::domain::{Contact, ContactError, ContactFields, ContactId, FieldError, Identity};
use crate::engine::Herald;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    pub kind: IdentityKind,
    /// An email address, an E.164 number, or a Telegram chat id or @username.
    #[schema(max_length = 320, example = "+14155550100")]
    pub value: String,
}

/// A new contact; `name` and `external_id` hold no control characters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    /// The platform's own id for the person.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub external_id: Option<String>,
    /// Free fields, at most 4 KB as JSON.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// At most 20; each may be one contact's only.
    #[serde(default)]
    pub identities: Vec<IdentityInput>,
}

/// A field given replaces the stored one; `null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPatchInput {
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<serde_json::Map<String, serde_json::Value>>>,
}

/// Tells a field given as `null` (`Some(None)`) from one not given (`None`).
pub(super) fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeInput {
    /// The contact merged into this one: its identities move here, and it points here.
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub contact_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    pub kind: IdentityKind,
    pub value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub id: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub identities: Vec<IdentityView>,
    /// Set when it was merged into another contact, which now has its identities.
    pub merged_into: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub items: Vec<ContactView>,
    pub next_after: Option<String>,
}

/// `GET /v1/contacts`'s filter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactFilter {
    /// The contact with this identity, as `kind:value` (`phone:+14155550100`).
    #[param(min_length = 3, max_length = 340)]
    pub identity: Option<String>,
}

impl Cursor for ContactId {
    fn pattern() -> String {
        MESSAGE_ID_PATTERN.into()
    }

    fn decode(raw: &str) -> Option<ContactId> {
        ContactId::parse(raw)
    }

    fn encode(&self) -> String {
        self.to_string()
    }
}

pub type ContactQuery = ListQuery<ContactId, ContactFilter, 500>;

fn view(c: Contact) -> ContactView {
    ContactView {
        id: c.id.to_string(),
        name: c.fields.name,
        external_id: c.fields.external_id,
        metadata: c.fields.metadata,
        identities: c
            .identities
            .iter()
            .map(|i| IdentityView {
                kind: i.identity_kind(),
                value: i.value().to_owned(),
            })
            .collect(),
        merged_into: c.merged_into.map(|m| m.to_string()),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

impl From<ContactError> for Problem {
    fn from(e: ContactError) -> Problem {
        let conflict =
            |slug: &str, e: &ContactError| Problem::new(StatusCode::CONFLICT, slug, e.to_string());
        match &e {
            ContactError::Taken { .. } => conflict("identity-taken", &e),
            ContactError::TooManyIdentities => conflict("too-many-identities", &e),
            ContactError::CannotMerge => conflict("cannot-merge", &e),
            ContactError::Merged(_) => conflict("contact-merged", &e),
            ContactError::NotFound => Problem::not_found("contact"),
            ContactError::Store(s) => s.clone().into(),
        }
    }
}

fn contact_id(path: Result<Path<String>, PathRejection>) -> Result<ContactId, Problem> {
    path.ok()
        .and_then(|Path(raw)| ContactId::parse(&raw))
        .ok_or_else(|| Problem::not_found("contact"))
}

fn identity_of(input: &IdentityInput, pointer: &str) -> Result<Identity, Problem> {
    Identity::of(input.kind, &input.value)
        .map_err(|e| Problem::invalid(FieldError::new(pointer, "invalid", e)))
}

fn checked(fields: ContactFields) -> Result<ContactFields, Problem> {
    fields.check().map_err(Problem::invalid)?;
    Ok(fields)
}

/// Makes a contact with its identities; 409 when one of them is another contact's.
#[utoipa::path(post, operation_id = "create_contact", path = "/v1/contacts", tag = "contacts",
    request_body = ContactInput,
    responses((status = 201, body = ContactView), AuthErrors, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "an identity is another contact's")),
    security(("api_key" = [])))]
pub async fn create(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    body: JsonBody<ContactInput>,
) -> Result<(StatusCode, Json<ContactView>), Problem> {
    let input = body.value;
    if input.identities.len() > MAX_IDENTITIES {
        let detail = format!("at most {MAX_IDENTITIES}");
        return Err(Problem::invalid(FieldError::new(
            "/identities",
            "too_many",
            detail,
        )));
    }
    let mut identities: Vec<Identity> = Vec::with_capacity(input.identities.len());
    for (i, raw) in input.identities.iter().enumerate() {
        let identity = identity_of(raw, &format!("/identities/{i}/value"))?;
        if !identities.iter().any(|known| known.key() == identity.key()) {
            identities.push(identity);
        }
    }
    let fields = checked(ContactFields {
        name: input.name,
        external_id: input.external_id,
        metadata: input.metadata,
    })?;
    let contact = Contact::new(caller.tenant.clone(), fields, identities);
    herald.contacts.create_contact(&contact).await?;
    Ok((StatusCode::CREATED, Json(view(contact))))
}

/// The tenant's contacts, oldest first (merged ones left out), or the one with an identity.
#[utoipa::path(get, operation_id = "list_contacts", path = "/v1/contacts", tag = "contacts",
    params(ContactQuery),
    responses((status = 200, body = ContactPage), AuthErrors, QueryErrors), security(("api_key" = [])))]
pub async fn list(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    ListQuery { page, filter }: ContactQuery,
) -> Result<Json<ContactPage>, Problem> {
    if let Some(raw) = filter.identity {
        let (kind, value) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
        let identity = Identity::parse(kind, value)
            .map_err(|e| Problem::invalid(FieldError::new("identity", "invalid", e)))?;
        let found = match herald
            .contacts
            .contact_by_identity(&tenant, &identity)
            .await?
        {
            Some(id) => herald.contacts.contact(&tenant, id).await?,
            None => None,
        };
        let items = found.into_iter().map(view).collect();
        return Ok(Json(ContactPage {
            items,
            next_after: None,
        }));
    }
    let items = herald
        .contacts
        .contacts(&tenant, page.after, page.limit)
        .await?;
    let next_after = page.next_after(&items, |c| c.id);
    let items = items.into_iter().map(view).collect();
    Ok(Json(ContactPage { items, next_after }))
}

/// A contact; one merged away still answers, with `merged_into`.
#[utoipa::path(get, operation_id = "get_contact", path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = ContactView), AuthErrors, NotFound), security(("api_key" = [])))]
pub async fn get(
    State(herald): State<Arc<Herald>>,
    AuthTenant(tenant): AuthTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ContactView>, Problem> {
    let id = contact_id(path)?;
    let found = herald.contacts.contact(&tenant, id).await?;
    Ok(Json(view(found.ok_or(ContactError::NotFound)?)))
}

/// Changes the fields given.
#[utoipa::path(patch, operation_id = "update_contact", path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ContactPatchInput,
    responses((status = 200, body = ContactView), AuthErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the contact was merged into another")),
    security(("api_key" = [])))]
pub async fn update(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<ContactPatchInput>,
) -> Result<Json<ContactView>, Problem> {
    let id = contact_id(path)?;
    let tenant = &caller.tenant;
    let current = herald
        .contacts
        .contact(tenant, id)
        .await?
        .ok_or(ContactError::NotFound)?;
    let patch = body.value;
    let mut fields = current.fields;
    if let Some(name) = patch.name {
        fields.name = name;
    }
    if let Some(external_id) = patch.external_id {
        fields.external_id = external_id;
    }
    if let Some(metadata) = patch.metadata {
        fields.metadata = metadata.unwrap_or_default();
    }
    let fields = checked(fields)?;
    Ok(Json(view(
        herald.contacts.update_contact(tenant, id, &fields).await?,
    )))
}

/// Gives the contact one more identity; 409 when it is another contact's.
#[utoipa::path(post, operation_id = "add_contact_identity", path = "/v1/contacts/{id}/identities", tag = "contacts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = IdentityInput,
    responses((status = 200, body = ContactView), AuthErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the identity is another contact's, or the contact has the most")),
    security(("api_key" = [])))]
pub async fn add_identity(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<IdentityInput>,
) -> Result<Json<ContactView>, Problem> {
    let id = contact_id(path)?;
    let identity = identity_of(&body.value, "/value")?;
    let contact = herald
        .contacts
        .add_identity(&caller.tenant, id, &identity)
        .await?;
    Ok(Json(view(contact)))
}

/// Merges `contact_id` into this contact: its identities move here, and it points here.
#[utoipa::path(post, operation_id = "merge_contacts", path = "/v1/contacts/{id}/merge", tag = "contacts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = MergeInput,
    responses((status = 200, body = ContactView), AuthErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = "application/problem+json", description = "one of them is merged already, or they are one")),
    security(("api_key" = [])))]
pub async fn merge(
    State(herald): State<Arc<Herald>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<MergeInput>,
) -> Result<Json<ContactView>, Problem> {
    let into = contact_id(path)?;
    let from = ContactId::parse(&body.value.contact_id).ok_or_else(|| {
        Problem::invalid(FieldError::new("/contact_id", "invalid", "a contact id"))
    })?;
    let contact = herald
        .contacts
        .merge_contacts(&caller.tenant, from, into)
        .await?;
    let entry = caller
        .entry(AuditAction::ContactMerged)
        .target(into.to_string())
        .detail(serde_json::json!({ "merged": from.to_string() }));
    herald.record_audit(entry).await;
    Ok(Json(view(contact)))
}
