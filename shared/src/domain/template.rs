//! Templates: named subject/text/html parts rendered with minijinja at accept time.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::locale::Locale;
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
    /// Variants by locale, each whole (a part it leaves out is not taken from the default).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locales: BTreeMap<Locale, TemplateParts>,
}

/// The most locale variants a template has.
pub const MAX_LOCALES: usize = 50;

/// One locale's subject, text and html.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateParts {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl Template {
    /// A template of these parts, with no variants.
    pub fn with_parts(
        name: TemplateName,
        parts: TemplateParts,
        updated_at: DateTime<Utc>,
    ) -> Template {
        Template {
            name,
            subject: parts.subject,
            text: parts.text,
            html: parts.html,
            updated_at,
            locales: BTreeMap::new(),
        }
    }

    /// The variant for `wanted`, falling back along its prefixes (`es-MX`, `es`) and then to
    /// the template's own parts; with the locale chosen (None for the default).
    pub fn variant(&self, wanted: Option<&Locale>) -> (Option<Locale>, Template) {
        let found = wanted.and_then(|w| {
            w.fallbacks()
                .find_map(|tag| self.locales.iter().find(|(l, _)| l.as_str() == tag))
        });
        match found {
            None => (None, self.clone()),
            Some((locale, parts)) => (
                Some(locale.clone()),
                Template::with_parts(self.name.clone(), parts.clone(), self.updated_at),
            ),
        }
    }
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
    #[error("template part `{part}` exceeded the render limit on {limit}")]
    Limit {
        part: &'static str,
        limit: RenderLimit,
    },
}

/// What one message's render may spend. Fuel (minijinja's instruction count) bounds CPU
/// deterministically; the wall-clock budget catches what fuel does not price (large copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    pub fuel: u64,
    pub time: Duration,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            fuel: 500_000,
            time: Duration::from_millis(250),
        }
    }
}

/// The limit a render ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderLimit {
    Fuel(u64),
    Time(Duration),
    Bytes(usize),
}

impl std::fmt::Display for RenderLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderLimit::Fuel(n) => write!(f, "fuel ({n} instructions)"),
            RenderLimit::Time(t) => write!(f, "time ({} ms)", t.as_millis()),
            RenderLimit::Bytes(n) => write!(f, "output size ({n} bytes)"),
        }
    }
}

impl RenderLimit {
    /// A stable name for problem details: `fuel`, `time` or `output_bytes`.
    pub fn name(&self) -> &'static str {
        match self {
            RenderLimit::Fuel(_) => "fuel",
            RenderLimit::Time(_) => "time",
            RenderLimit::Bytes(_) => "output_bytes",
        }
    }
}

/// Collects a part's output and stops the render at the byte cap or the deadline, so a
/// template can never produce more than its channel stores nor run past its time.
struct CappedWriter {
    out: Vec<u8>,
    cap: usize,
    deadline: Instant,
    time: Duration,
    hit: Option<RenderLimit>,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            self.hit = Some(RenderLimit::Bytes(self.cap));
        } else if Instant::now() > self.deadline {
            self.hit = Some(RenderLimit::Time(self.time));
        } else {
            self.out.extend_from_slice(buf);
            return Ok(buf.len());
        }
        Err(std::io::Error::other("render limit"))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    limits: RenderLimits,
}

impl<'a> CompiledTemplate<'a> {
    pub fn compile(
        template: &'a Template,
        limits: RenderLimits,
    ) -> Result<CompiledTemplate<'a>, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(limits.fuel));
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
        Ok(CompiledTemplate {
            env,
            present,
            limits,
        })
    }

    /// Renders every part, at most `max_bytes` of them together; a variable the data lacks is
    /// an error that names it.
    pub fn render(
        &self,
        data: &serde_json::Value,
        max_bytes: usize,
    ) -> Result<Content, TemplateError> {
        let deadline = Instant::now() + self.limits.time;
        let mut left = max_bytes;
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
            let mut writer = CappedWriter {
                out: Vec::new(),
                cap: left,
                deadline,
                time: self.limits.time,
                hit: None,
            };
            let rendered = tmpl.render_captured_to(data, &mut writer).map(drop);
            if let Some(limit) = writer.hit {
                return Err(TemplateError::Limit { part, limit });
            }
            match rendered {
                Ok(()) => {
                    left -= writer.out.len();
                    out[i] =
                        Some(
                            String::from_utf8(writer.out).map_err(|e| TemplateError::Render {
                                part,
                                detail: e.to_string(),
                            })?,
                        );
                }
                Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                    let limit = RenderLimit::Fuel(self.limits.fuel);
                    return Err(TemplateError::Limit { part, limit });
                }
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

    /// Renders once with `sample` data, filled in with a placeholder string for every variable it
    /// lacks, to find templates that run out of fuel, time or bytes whatever the data. Only a
    /// limit is an error here: anything else may be the placeholders' fault, not the template's.
    pub fn trial(&self, sample: &serde_json::Value, max_bytes: usize) -> Result<(), TemplateError> {
        let mut data = match sample {
            serde_json::Value::Object(_) => sample.clone(),
            _ => serde_json::Value::Object(Default::default()),
        };
        for (i, (_, file)) in PARTS.iter().enumerate() {
            if !self.present[i] {
                continue;
            }
            if let Ok(tmpl) = self.env.get_template(file) {
                for name in tmpl.undeclared_variables(true) {
                    if !self.is_global(&name) && !has_path(&data, &name) {
                        fill_path(&mut data, &name);
                    }
                }
            }
        }
        match self.render(&data, max_bytes) {
            Err(e @ TemplateError::Limit { .. }) => Err(e),
            _ => Ok(()),
        }
    }

    /// The variables the template reads (outside its own `set`s and loops), sorted: what a
    /// send's `data` must give it.
    pub fn variables(&self) -> Vec<String> {
        let mut names: Vec<String> = PARTS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.present[*i])
            .filter_map(|(_, (_, file))| self.env.get_template(file).ok())
            .flat_map(|t| t.undeclared_variables(true))
            .filter(|name| !self.is_global(name))
            .collect();
        names.sort();
        names.dedup();
        names
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

/// Sets `a.b.c` in `data` to a placeholder, making the objects on the way.
fn fill_path(data: &mut serde_json::Value, dotted: &str) {
    let mut cur = data;
    let mut segments = dotted.split('.').peekable();
    while let Some(seg) = segments.next() {
        let serde_json::Value::Object(map) = cur else {
            return;
        };
        let last = segments.peek().is_none();
        let fresh = if last {
            serde_json::Value::String("sample".into())
        } else {
            serde_json::Value::Object(Default::default())
        };
        cur = map.entry(seg.to_owned()).or_insert(fresh);
    }
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
            locales: Default::default(),
        }
    }

    #[test]
    fn renders_all_parts_and_escapes_only_html() {
        let t = template(
            "Hi {{ name }}",
            "Hello {{ name }}",
            "<p>Hello {{ name }}</p>",
        );
        let c = CompiledTemplate::compile(&t, RenderLimits::default())
            .unwrap()
            .render(&json!({"name": "<Bob>"}), usize::MAX)
            .unwrap();
        assert_eq!(c.subject.as_deref(), Some("Hi <Bob>"));
        assert_eq!(c.body.as_deref(), Some("Hello <Bob>"));
        assert_eq!(c.html.as_deref(), Some("<p>Hello &lt;Bob&gt;</p>"));
    }

    #[test]
    fn missing_variables_are_named() {
        let t = template("Hi {{ user.name }}", "{{ code }} {{ user.name }}", "x");
        let err = CompiledTemplate::compile(&t, RenderLimits::default())
            .unwrap()
            .render(&json!({"user": {}}), usize::MAX)
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
            CompiledTemplate::compile(&t, RenderLimits::default()),
            Err(TemplateError::Syntax { part: "text", .. })
        ));
    }

    fn limit_of(text: &str, limits: RenderLimits, max_bytes: usize) -> Option<RenderLimit> {
        let t = Template {
            name: TemplateName::parse("t").unwrap(),
            subject: None,
            text: Some(text.into()),
            html: None,
            updated_at: Utc::now(),
            locales: Default::default(),
        };
        let compiled = CompiledTemplate::compile(&t, limits).unwrap();
        match compiled.render(&json!({}), max_bytes) {
            Err(TemplateError::Limit { limit, .. }) => Some(limit),
            Err(e) => panic!("not a limit: {e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn nested_loops_run_out_of_fuel_quickly() {
        let started = Instant::now();
        let hang =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let limits = RenderLimits::default();
        assert_eq!(
            limit_of(hang, limits, usize::MAX),
            Some(RenderLimit::Fuel(limits.fuel))
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_stops_at_the_byte_cap() {
        let big = r#"{{ "x" * 50000000 }}"#;
        assert_eq!(
            limit_of(big, RenderLimits::default(), 256 * 1024),
            Some(RenderLimit::Bytes(256 * 1024))
        );
        let looped = "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}";
        assert_eq!(
            limit_of(looped, RenderLimits::default(), 1000),
            Some(RenderLimit::Bytes(1000))
        );
        assert_eq!(limit_of("small", RenderLimits::default(), 5), None);
    }

    #[test]
    fn a_slow_render_stops_at_its_deadline() {
        // Large copies cost little fuel, so only the clock stops this one.
        let slow = r#"{% for i in range(100000) %}{{ ("x" * 5000000)|length }}{% endfor %}"#;
        let limits = RenderLimits {
            fuel: 1_000_000_000_000,
            time: Duration::from_millis(30),
        };
        let time = Duration::from_millis(30);
        assert_eq!(
            limit_of(slow, limits, usize::MAX),
            Some(RenderLimit::Time(time))
        );
    }

    #[test]
    fn a_trial_render_finds_data_independent_blowups_only() {
        let t = |text: &str| Template {
            name: TemplateName::parse("t").unwrap(),
            subject: None,
            text: Some(text.into()),
            html: None,
            updated_at: Utc::now(),
            locales: Default::default(),
        };
        let limits = RenderLimits::default();
        let hang =
            t("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
        let compiled = CompiledTemplate::compile(&hang, limits).unwrap();
        assert!(matches!(
            compiled.trial(&json!({}), 256 * 1024),
            Err(TemplateError::Limit { .. })
        ));
        let fine = t("Hi {{ user.name }}, {% for i in items %}{{ i }}{% endfor %}");
        let compiled = CompiledTemplate::compile(&fine, limits).unwrap();
        assert_eq!(compiled.trial(&json!(null), 256 * 1024), Ok(()));
    }

    #[test]
    fn names_are_restricted() {
        assert!(TemplateName::parse("order.shipped-v2").is_ok());
        assert!(TemplateName::parse("../etc").is_err());
        assert!(TemplateName::parse("").is_err());
    }
}
