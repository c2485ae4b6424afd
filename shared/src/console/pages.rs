//! Rendering: the console's templates, compiled into the binary and rendered with minijinja
//! (HTML-escaped, as every `.html` template is), and the pages for errors.

use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("messages.html", include_str!("templates/messages.html")),
    ("message.html", include_str!("templates/message.html")),
    (
        "overview_live.html",
        include_str!("templates/overview_live.html"),
    ),
    (
        "suppressions.html",
        include_str!("templates/suppressions.html"),
    ),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("templates.html", include_str!("templates/templates.html")),
    ("threads.html", include_str!("templates/threads.html")),
    ("thread.html", include_str!("templates/thread.html")),
    ("numbers.html", include_str!("templates/numbers.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("bulk.html", include_str!("templates/bulk.html")),
    ("bulk_list.html", include_str!("templates/bulk_list.html")),
    (
        "import_report.html",
        include_str!("templates/import_report.html"),
    ),
    ("template.html", include_str!("templates/template.html")),
    (
        "template_preview.html",
        include_str!("templates/template_preview.html"),
    ),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("when", when);
    for &(name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
});

/// `{{ t | when }}`: a stored time (RFC 3339) as a `<time>` element in UTC, which the
/// console's script shows in the viewer's own zone, keeping UTC on hover. Anything that is not
/// a time is shown as it is, escaped.
fn when(value: String) -> Value {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(&value) else {
        return Value::from(value);
    };
    let utc = t.with_timezone(&chrono::Utc);
    Value::from_safe_string(format!(
        "<time datetime=\"{}\" title=\"{} UTC\">{} UTC</time>",
        utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        utc.format("%Y-%m-%d %H:%M:%S"),
        utc.format("%Y-%m-%d %H:%M:%S"),
    ))
}

/// One page: its template, its title, and what it shows.
pub struct Page {
    template: &'static str,
    title: String,
    context: Value,
}

impl Page {
    pub fn new(template: &'static str, title: impl Into<String>) -> Page {
        Page {
            template,
            title: title.into(),
            context: Value::UNDEFINED,
        }
    }

    pub fn with(mut self, context: Value) -> Page {
        self.context = context;
        self
    }
}

pub fn render(page: &Page) -> Response {
    render_status(StatusCode::OK, page)
}

/// The page's HTML.
fn html(page: &Page) -> Result<String, minijinja::Error> {
    let ctx = minijinja::context! { title => &page.title, ..page.context.clone() };
    ENV.get_template(page.template).and_then(|t| t.render(ctx))
}

pub fn render_status(status: StatusCode, page: &Page) -> Response {
    match html(page) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = page.template, error = %e, "console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>This page could not be shown.</p>"),
            )
                .into_response()
        }
    }
}

/// A page that says what went wrong, with the status it deserves.
pub fn error(status: StatusCode, message: &str) -> Response {
    let page = Page::new("error.html", status.canonical_reason().unwrap_or("Error"))
        .with(minijinja::context! { message => message, status => status.as_u16() });
    render_status(status, &page)
}

pub fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Herald's storage did not answer. Try again in a moment.",
    )
}

pub fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("No such {what}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for &(name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
    }

    #[tokio::test]
    async fn values_are_escaped() {
        let page = Page::new("error.html", "x")
            .with(minijinja::context! { message => "<script>alert(1)</script>", status => 400 });
        let response = render_status(StatusCode::BAD_REQUEST, &page);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>alert"),
            "{html}"
        );
    }

    fn rendered(page: &Page) -> String {
        html(page).unwrap()
    }

    /// A first count still running: the lanes say so, with their sends per minute beside.
    #[test]
    fn an_overview_without_a_count_says_it_is_counting() {
        let chart = crate::console::chart::throughput(&[], chrono::Utc::now());
        let page = Page::new("overview_live.html", "Overview").with(minijinja::context! {
            lanes => Option::<Vec<u8>>::None,
            counted_at => Option::<String>::None,
            lanes_per_tenant => true,
            chart => chart,
            gateways => Vec::<u8>::new(),
        });
        let html = rendered(&page);
        assert!(html.contains("Counting the lanes"), "{html}");
        assert_eq!(html.matches(">counting</td>").count(), 5, "{html}");
    }

    #[test]
    fn times_are_utc_time_elements_and_other_text_is_left_to_escaping() {
        assert_eq!(
            when("2026-12-04T15:06:20.5+01:00".into()).to_string(),
            "<time datetime=\"2026-12-04T14:06:20.500Z\" title=\"2026-12-04 14:06:20 UTC\">\
             2026-12-04 14:06:20 UTC</time>"
        );
        assert!(
            !when("<b>".into()).is_safe(),
            "not a time: left to escaping"
        );
    }
}
