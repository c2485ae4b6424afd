use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::{from_ms, ms, SqliteBackend};
use crate::domain::locale::Locale;
use crate::domain::template::TemplateParts;
use crate::domain::{KeyScopes, SenderIdentity, Template, TemplateName, TenantId};
use crate::ports::{LocalePut, StoreError, StoredKey, TemplateStore, TenantStore};

#[async_trait]
impl TenantStore for SqliteBackend {
    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let name = tenant.as_str().to_owned();
        let now = ms(Utc::now());
        self.writer
            .run(1, move |conn| {
                Ok(conn.execute(
                    "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?1, ?2)",
                    params![name, now],
                )? == 1)
            })
            .await
    }

    async fn add_key(
        &self,
        tenant: &TenantId,
        prefix: &str,
        key_hash: &str,
        scopes: KeyScopes,
    ) -> Result<(), StoreError> {
        let (tenant, prefix, key_hash) = (
            tenant.as_str().to_owned(),
            prefix.to_owned(),
            key_hash.to_owned(),
        );
        let scopes = scopes.to_string();
        let now = ms(Utc::now());
        self.writer
            .run(1, move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (prefix, tenant, key_hash, created_at, scopes) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![prefix, tenant, key_hash, now, scopes],
                )?;
                Ok(())
            })
            .await
    }

    async fn revoke_key(&self, prefix: &str) -> Result<bool, StoreError> {
        let prefix = prefix.to_owned();
        let now = ms(Utc::now());
        self.writer
            .run(1, move |conn| {
                Ok(conn.execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE prefix = ?2 AND revoked_at IS NULL",
                    params![now, prefix],
                )? == 1)
            })
            .await
    }

    async fn find_key(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError> {
        let prefix = prefix.to_owned();
        self.readers
            .lookup(move |conn| {
                let row: Option<(String, String, Option<i64>, String)> = conn
                    .prepare_cached(
                        "SELECT tenant, key_hash, revoked_at, scopes FROM api_keys WHERE prefix = ?1",
                    )?
                    .query_row([prefix], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                Ok(row.and_then(|(tenant, key_hash, revoked, scopes)| {
                    Some(StoredKey {
                        tenant: TenantId::parse(&tenant).ok()?,
                        key_hash,
                        revoked: revoked.is_some(),
                        // Unreadable scopes grant nothing.
                        scopes: KeyScopes::parse(&scopes).ok()?,
                    })
                }))
            })
            .await
    }

    async fn sender_identities(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<SenderIdentity>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT identity FROM sender_identities WHERE tenant = ?1 ORDER BY identity",
                )?;
                let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for raw in rows {
                    // Stored only after parsing; a row that no longer parses is skipped, not sent as.
                    if let Ok(identity) = SenderIdentity::parse(&raw?) {
                        out.push(identity);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn add_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError> {
        let (tenant, identity) = (tenant.as_str().to_owned(), identity.to_string());
        let now = ms(Utc::now());
        self.writer
            .run(1, move |conn| {
                Ok(conn.execute(
                    "INSERT OR IGNORE INTO sender_identities (tenant, identity, created_at) VALUES (?1, ?2, ?3)",
                    params![tenant, identity, now],
                )? == 1)
            })
            .await
    }

    async fn remove_sender_identity(
        &self,
        tenant: &TenantId,
        identity: &SenderIdentity,
    ) -> Result<bool, StoreError> {
        let (tenant, identity) = (tenant.as_str().to_owned(), identity.to_string());
        self.writer
            .run(1, move |conn| {
                Ok(conn.execute(
                    "DELETE FROM sender_identities WHERE tenant = ?1 AND identity = ?2",
                    params![tenant, identity],
                )? == 1)
            })
            .await
    }
}

/// A template's locale variants.
fn template_locales(
    conn: &rusqlite::Connection,
    tenant: &str,
    name: &str,
) -> rusqlite::Result<BTreeMap<Locale, TemplateParts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT locale, subject, text, html FROM template_locales WHERE tenant = ?1 AND name = ?2",
    )?;
    let rows = stmt.query_map(params![tenant, name], |r| {
        let raw: String = r.get(0)?;
        let locale = Locale::parse(&raw).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?;
        Ok((
            locale,
            TemplateParts {
                subject: r.get(1)?,
                text: r.get(2)?,
                html: r.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

#[async_trait]
impl TemplateStore for SqliteBackend {
    async fn put(&self, tenant: &TenantId, t: Template) -> Result<bool, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.writer
            .run(1, move |conn| {
                let existed: bool = conn
                    .prepare_cached("SELECT 1 FROM templates WHERE tenant = ?1 AND name = ?2")?
                    .query_row(params![tenant, t.name.as_str()], |_| Ok(()))
                    .optional()?
                    .is_some();
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO templates (tenant, name, subject, text, html, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![tenant, t.name.as_str(), t.subject, t.text, t.html, ms(t.updated_at)])?;
                Ok(!existed)
            })
            .await
    }

    async fn list_templates(
        &self,
        tenant: &TenantId,
        after: Option<&TemplateName>,
        limit: usize,
    ) -> Result<Vec<Template>, StoreError> {
        let tenant = tenant.as_str().to_owned();
        let after = after.map_or(String::new(), |n| n.as_str().to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, subject, text, html, updated_at FROM templates \
                     WHERE tenant = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![tenant, after, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        TemplateParts {
                            subject: r.get(1)?,
                            text: r.get(2)?,
                            html: r.get(3)?,
                        },
                        r.get::<_, i64>(4)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (name, parts, updated_at) = row?;
                    // Stored only after parsing; a name that no longer parses is skipped.
                    if let Ok(name) = TemplateName::parse(&name) {
                        out.push(Template::with_parts(name, parts, from_ms(updated_at)));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
    ) -> Result<Option<Template>, StoreError> {
        let (tenant, name) = (tenant.as_str().to_owned(), name.clone());
        self.readers
            .run(move |conn| {
                let found = conn
                    .prepare_cached(
                        "SELECT subject, text, html, updated_at FROM templates \
                         WHERE tenant = ?1 AND name = ?2",
                    )?
                    .query_row(params![tenant, name.as_str()], |r| {
                        Ok(Template {
                            name: name.clone(),
                            subject: r.get(0)?,
                            text: r.get(1)?,
                            html: r.get(2)?,
                            updated_at: from_ms(r.get(3)?),
                            locales: Default::default(),
                        })
                    })
                    .optional()?;
                let Some(mut template) = found else {
                    return Ok(None);
                };
                template.locales = template_locales(conn, &tenant, name.as_str())?;
                Ok(Some(template))
            })
            .await
    }

    async fn delete(&self, tenant: &TenantId, name: &TemplateName) -> Result<bool, StoreError> {
        let (tenant, name) = (tenant.as_str().to_owned(), name.as_str().to_owned());
        self.writer
            .run(1, move |conn| {
                conn.execute(
                    "DELETE FROM template_locales WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )?;
                Ok(conn.execute(
                    "DELETE FROM templates WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )? == 1)
            })
            .await
    }

    async fn put_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
        parts: &TemplateParts,
    ) -> Result<LocalePut, StoreError> {
        let (tenant, name) = (tenant.as_str().to_owned(), name.as_str().to_owned());
        let (locale, parts) = (locale.as_str().to_owned(), parts.clone());
        self.writer
            .run(1, move |conn| {
                let exists = |sql: &str, args: &[&str]| -> rusqlite::Result<bool> {
                    conn.prepare_cached(sql)?
                        .query_row(rusqlite::params_from_iter(args), |_| Ok(()))
                        .optional()
                        .map(|found| found.is_some())
                };
                if !exists(
                    "SELECT 1 FROM templates WHERE tenant = ?1 AND name = ?2",
                    &[&tenant, &name],
                )? {
                    return Ok(LocalePut::NoTemplate);
                }
                let replaced = exists(
                    "SELECT 1 FROM template_locales WHERE tenant = ?1 AND name = ?2 AND locale = ?3",
                    &[&tenant, &name, &locale],
                )?;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO template_locales \
                     (tenant, name, locale, subject, text, html, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    tenant,
                    name,
                    locale,
                    parts.subject,
                    parts.text,
                    parts.html,
                    ms(Utc::now())
                ])?;
                Ok(if replaced { LocalePut::Replaced } else { LocalePut::Created })
            })
            .await
    }

    async fn delete_locale(
        &self,
        tenant: &TenantId,
        name: &TemplateName,
        locale: &Locale,
    ) -> Result<bool, StoreError> {
        let args = [tenant.as_str(), name.as_str(), locale.as_str()].map(str::to_owned);
        self.writer
            .run(1, move |conn| {
                Ok(conn.execute(
                    "DELETE FROM template_locales WHERE tenant = ?1 AND name = ?2 AND locale = ?3",
                    params![args[0], args[1], args[2]],
                )? == 1)
            })
            .await
    }
}
