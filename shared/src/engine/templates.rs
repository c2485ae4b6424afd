//! Saving a template: compiled, and rendered once with sample data, so a template that blows
//! its limits whatever the data is refused at `PUT`, not discovered at send.

use super::{AcceptError, Herald};
use crate::domain::content::max_content_bytes;
use crate::domain::template::{CompiledTemplate, TemplateError};
use crate::domain::{Channel, Template};

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
}
