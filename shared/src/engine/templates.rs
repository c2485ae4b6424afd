//! Saving a template: compiled, and rendered once with sample data, so a template that blows
//! its limits whatever the data is refused at `PUT`, not discovered at send.

use super::{AcceptError, Herald};
use crate::domain::audit::AuditEntry;
use crate::domain::content::max_content_bytes;
use crate::domain::template::{CompiledTemplate, TemplateError};
use crate::domain::{Channel, Content, Template, TenantId};
use crate::ports::StoreError;

/// Why a template was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A template rendered with sample data, as a send would render it, or why it would not be.
#[derive(Debug, Default, serde::Serialize)]
pub struct Preview {
    /// What the template reads from a send's `data`.
    pub variables: Vec<String>,
    pub content: Option<Content>,
    pub error: Option<String>,
}

impl Herald {
    /// Checks `template` on the render pool; `sample` is laid under placeholder data.
    pub async fn check_template(
        &self,
        template: Template,
        sample: serde_json::Value,
    ) -> Result<Template, TemplateError> {
        let limits = self.config.render;
        // The largest channel's cap: the template's channel is not known until a send names it.
        let cap = max_content_bytes(Channel::Email);
        let checked = self
            .render_off_async(move || {
                CompiledTemplate::compile(&template, limits)?.trial(&sample, cap)?;
                Ok(template)
            })
            .await;
        match checked {
            Ok(result) => result,
            Err(AcceptError::Template(e)) => Err(e),
            Err(e) => Err(TemplateError::Render {
                part: "all",
                detail: e.to_string(),
            }),
        }
    }

    /// Checks and stores a tenant's template (through the API or the console); `audit` is the
    /// caller's `template.put` entry, completed here. Returns it as stored, and whether it is new.
    pub async fn save_template(
        &self,
        tenant: &TenantId,
        template: Template,
        sample: serde_json::Value,
        audit: AuditEntry,
    ) -> Result<(Template, bool), SaveError> {
        let template = self.check_template(template, sample).await?;
        let created = self.templates.put(tenant, template.clone()).await?;
        let entry = audit
            .target(template.name.as_str())
            .detail(serde_json::json!({ "created": created }));
        self.record_audit(entry).await;
        Ok((template, created))
    }

    /// Renders `template` with `data` on the render pool, under the limits sends have.
    pub async fn preview_template(&self, template: Template, data: serde_json::Value) -> Preview {
        let limits = self.config.render;
        let cap = max_content_bytes(Channel::Email);
        let rendered = self
            .render_off_async(move || match CompiledTemplate::compile(&template, limits) {
                Err(e) => Preview {
                    error: Some(e.to_string()),
                    ..Preview::default()
                },
                Ok(compiled) => {
                    let variables = compiled.variables();
                    match compiled.render(&data, cap) {
                        Ok(content) => Preview {
                            variables,
                            content: Some(content),
                            error: None,
                        },
                        Err(e) => Preview {
                            variables,
                            content: None,
                            error: Some(e.to_string()),
                        },
                    }
                }
            })
            .await;
        rendered.unwrap_or_else(|e| Preview {
            error: Some(e.to_string()),
            ..Preview::default()
        })
    }
}
