//! Templates: named subject/text/html parts rendered with minijinja at accept time.

use chrono::{DateTime, Utc};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::Content;

/// 1-128 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(s: &str) -> Result<TemplateName, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(TemplateName(s.to_owned()))
        } else {
            Err("template names are 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TemplateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: TemplateName,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template part `{part}` has a syntax error: {detail}")]
    Syntax { part: &'static str, detail: String },
    #[error("missing template variable(s): {}", .names.join(", "))]
    MissingVariables { names: Vec<String> },
    #[error("template part `{part}` failed to render: {detail}")]
    Render { part: &'static str, detail: String },
}

// Part names double as template file names; the `.html` suffix turns on HTML auto-escaping.
const PARTS: [(&str, &str); 3] = [
    ("subject", "subject.txt"),
    ("text", "text.txt"),
    ("html", "html.html"),
];

/// A template compiled once, rendered per recipient (bulk sends render thousands).
pub struct CompiledTemplate<'a> {
    env: Environment<'a>,
    present: [bool; 3],
}

impl<'a> CompiledTemplate<'a> {
    pub fn compile(template: &'a Template) -> Result<CompiledTemplate<'a>, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let sources = [&template.subject, &template.text, &template.html];
        let mut present = [false; 3];
        for (i, ((part, file), source)) in PARTS.iter().zip(sources).enumerate() {
            if let Some(src) = source {
                env.add_template(file, src)
                    .map_err(|e| TemplateError::Syntax {
                        part,
                        detail: e.to_string(),
                    })?;
                present[i] = true;
            }
        }
        Ok(CompiledTemplate { env, present })
    }

    /// Renders every part; a variable the data lacks is an error that names it.
    pub fn render(&self, data: &serde_json::Value) -> Result<Content, TemplateError> {
        let mut out: [Option<String>; 3] = [None, None, None];
        // Every part is rendered, so one 422 names every missing variable at once.
        let mut missing: Vec<String> = Vec::new();
        for (i, (part, file)) in PARTS.iter().enumerate() {
            if !self.present[i] {
                continue;
            }
            let render_error = |e: minijinja::Error| TemplateError::Render {
                part,
                detail: e.to_string(),
            };
            let tmpl = self.env.get_template(file).map_err(render_error)?;
            match tmpl.render(data) {
                Ok(s) => out[i] = Some(s),
                Err(e) if e.kind() == ErrorKind::UndefinedError => {
                    let before = missing.len();
                    missing.extend(
                        tmpl.undeclared_variables(true)
                            .into_iter()
                            .filter(|name| !self.is_global(name) && !has_path(data, name)),
                    );
                    if missing.len() == before {
                        return Err(render_error(e));
                    }
                }
                Err(e) => return Err(render_error(e)),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(TemplateError::MissingVariables { names: missing });
        }
        let [subject, body, html] = out;
        Ok(Content {
            subject,
            body,
            html,
        })
    }

    fn is_global(&self, name: &str) -> bool {
        let root = name.split('.').next().unwrap_or(name);
        self.env.globals().any(|(g, _)| g == root)
    }
}

/// Whether `a.b.c` resolves in the JSON data.
fn has_path(data: &serde_json::Value, dotted: &str) -> bool {
    let mut cur = data;
    for seg in dotted.split('.') {
        match cur.get(seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(subject: &str, text: &str, html: &str) -> Template {
        Template {
            name: TemplateName::parse("welcome").unwrap(),
            subject: Some(subject.into()),
            text: Some(text.into()),
            html: Some(html.into()),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn renders_all_parts_and_escapes_only_html() {
        let t = template(
            "Hi {{ name }}",
            "Hello {{ name }}",
            "<p>Hello {{ name }}</p>",
        );
        let c = CompiledTemplate::compile(&t)
            .unwrap()
            .render(&json!({"name": "<Bob>"}))
            .unwrap();
        assert_eq!(c.subject.as_deref(), Some("Hi <Bob>"));
        assert_eq!(c.body.as_deref(), Some("Hello <Bob>"));
        assert_eq!(c.html.as_deref(), Some("<p>Hello &lt;Bob&gt;</p>"));
    }

    #[test]
    fn missing_variables_are_named() {
        let t = template("Hi {{ user.name }}", "{{ code }} {{ user.name }}", "x");
        let err = CompiledTemplate::compile(&t)
            .unwrap()
            .render(&json!({"user": {}}))
            .unwrap_err();
        let names = vec!["code".to_owned(), "user.name".to_owned()];
        assert_eq!(
            err,
            TemplateError::MissingVariables { names },
            "every part's missing variables, once each"
        );
    }

    #[test]
    fn syntax_errors_name_the_part() {
        let t = template("ok", "{% if %}", "x");
        assert!(matches!(
            CompiledTemplate::compile(&t),
            Err(TemplateError::Syntax { part: "text", .. })
        ));
    }

    #[test]
    fn names_are_restricted() {
        assert!(TemplateName::parse("order.shipped-v2").is_ok());
        assert!(TemplateName::parse("../etc").is_err());
        assert!(TemplateName::parse("").is_err());
    }
}
