//! Delivery options a send carries in `metadata` (`unsubscribe_url`, `media_urls`,
//! `whatsapp_template`, `topic`, `locale`, `recipient_timezone`), parsed at accept: a bad value is a 422 there, never a warning at send.
//! The metadata is stored as given; these types are read back from it with the same parser.

use serde::{Deserialize, Serialize};

use super::locale::Locale;
use super::rules::TimeZone;
use super::suppression::Topic;
use super::FieldError;

/// Twilio's cap on pictures in one MMS.
pub const MAX_MEDIA_URLS: usize = 10;
const MAX_URL_CHARS: usize = 2048;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOptions {
    /// For List-Unsubscribe: an http(s) or mailto URL that is safe inside a header.
    pub unsubscribe_url: Option<HeaderSafeUrl>,
    /// Pictures for MMS: http(s) URLs the provider fetches.
    pub media_urls: Vec<HeaderSafeUrl>,
    /// A WhatsApp template message instead of text.
    pub whatsapp_template: Option<WhatsappTemplate>,
    /// The list this send is on: a recipient who left it (a topic suppression) is skipped, and
    /// the unsubscribe link leaves only it.
    #[serde(default)]
    pub topic: Option<Topic>,
    /// The template variant wanted (`es-MX` falls back to `es`, then the template's default).
    #[serde(default)]
    pub locale: Option<Locale>,
    /// The recipient's zone, for quiet hours (an IANA name).
    #[serde(default)]
    pub recipient_timezone: Option<TimeZone>,
}

/// A URL with a scheme Herald allows and nothing that could break out of a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderSafeUrl(String);

impl HeaderSafeUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    fn parse(raw: &str, schemes: &[&str]) -> Result<HeaderSafeUrl, String> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(format!("longer than {MAX_URL_CHARS} characters"));
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
        {
            return Err("contains whitespace or one of < > , \"".into());
        }
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!("the scheme must be one of {}", schemes.join(", ")));
        }
        if url.scheme() != "mailto" && url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        Ok(HeaderSafeUrl(raw.to_owned()))
    }
}

impl TryFrom<String> for HeaderSafeUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HeaderSafeUrl::parse(&s, &["https", "http", "mailto"])
    }
}

impl From<HeaderSafeUrl> for String {
    fn from(u: HeaderSafeUrl) -> String {
        u.0
    }
}

/// The Cloud API's template object: a name, a language code, and optional components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    pub name: String,
    pub language: WhatsappLanguage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappLanguage {
    pub code: String,
}

impl DeliveryOptions {
    /// Parses the options out of a send's metadata; other keys are the tenant's own.
    pub fn from_metadata(
        metadata: Option<&serde_json::Value>,
    ) -> Result<DeliveryOptions, FieldError> {
        let Some(md) = metadata else {
            return Ok(DeliveryOptions::default());
        };
        let mut options = DeliveryOptions::default();
        if let Some(v) = md.get("unsubscribe_url") {
            options.unsubscribe_url = Some(url_at(
                v,
                "/metadata/unsubscribe_url",
                &["https", "http", "mailto"],
            )?);
        }
        if let Some(v) = md.get("media_urls") {
            let list = v.as_array().ok_or_else(|| {
                FieldError::new(
                    "/metadata/media_urls",
                    "invalid",
                    "media_urls must be a list of URLs",
                )
            })?;
            if list.len() > MAX_MEDIA_URLS {
                return Err(FieldError::new(
                    "/metadata/media_urls",
                    "too_many",
                    format!("at most {MAX_MEDIA_URLS} media URLs"),
                ));
            }
            for (i, u) in list.iter().enumerate() {
                let url = url_at(u, &format!("/metadata/media_urls/{i}"), &["https", "http"])?;
                options.media_urls.push(url);
            }
        }
        if let Some(v) = md.get("whatsapp_template") {
            let template = WhatsappTemplate::deserialize(v).map_err(|e| {
                FieldError::new(
                    "/metadata/whatsapp_template",
                    "invalid",
                    format!("whatsapp_template: {e}"),
                )
            })?;
            if template.name.is_empty() || template.language.code.is_empty() {
                return Err(FieldError::new(
                    "/metadata/whatsapp_template",
                    "invalid",
                    "whatsapp_template needs a name and a language code",
                ));
            }
            options.whatsapp_template = Some(template);
        }
        options.topic = typed(md, "topic", Topic::parse)?;
        options.locale = typed(md, "locale", Locale::parse)?;
        options.recipient_timezone = typed(md, "recipient_timezone", |raw| {
            raw.parse::<chrono_tz::Tz>()
                .map(TimeZone)
                .map_err(|_| format!("`{raw}` is not an IANA time zone like America/New_York"))
        })?;
        Ok(options)
    }
}

/// A string option parsed into its type, or a 422 naming it.
fn typed<T>(
    md: &serde_json::Value,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, FieldError> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let pointer = format!("/metadata/{key}");
    let raw = v
        .as_str()
        .ok_or_else(|| FieldError::new(&pointer, "invalid", format!("{key} must be a string")))?;
    parse(raw)
        .map(Some)
        .map_err(|e| FieldError::new(&pointer, "invalid", e))
}

fn url_at(
    v: &serde_json::Value,
    pointer: &str,
    schemes: &[&str],
) -> Result<HeaderSafeUrl, FieldError> {
    let raw = v
        .as_str()
        .ok_or_else(|| FieldError::new(pointer, "invalid", "must be a string URL"))?;
    HeaderSafeUrl::parse(raw, schemes)
        .map_err(|e| FieldError::new(pointer, "invalid", format!("URL {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_parsed_from_metadata() {
        let md = json!({
            "unsubscribe_url": "https://example.com/u?t=1",
            "media_urls": ["https://example.com/a.png"],
            "whatsapp_template": {"name": "order", "language": {"code": "en"}},
            "own": "kept for the tenant",
            "topic": "newsletter",
            "locale": "es_mx",
            "recipient_timezone": "America/Chicago",
        });
        let o = DeliveryOptions::from_metadata(Some(&md)).unwrap();
        assert_eq!(o.topic.as_ref().map(|t| t.as_str()), Some("newsletter"));
        assert_eq!(o.locale.as_ref().map(|l| l.as_str()), Some("es-MX"));
        assert_eq!(
            o.recipient_timezone.map(|t| t.0.name()),
            Some("America/Chicago")
        );
        assert!(o.unsubscribe_url.unwrap().is_https());
        assert_eq!(o.media_urls.len(), 1);
        assert_eq!(o.whatsapp_template.unwrap().name, "order");
        assert_eq!(
            DeliveryOptions::from_metadata(None).unwrap(),
            DeliveryOptions::default()
        );
    }

    #[test]
    fn bad_options_name_their_field() {
        let cases = [
            (
                json!({"unsubscribe_url": "https://x.com/a>b"}),
                "/metadata/unsubscribe_url",
            ),
            (
                json!({"unsubscribe_url": "javascript:alert(1)"}),
                "/metadata/unsubscribe_url",
            ),
            (json!({"unsubscribe_url": 7}), "/metadata/unsubscribe_url"),
            (
                json!({"media_urls": "https://x.com/a.png"}),
                "/metadata/media_urls",
            ),
            (
                json!({"media_urls": ["https://x.com/a.png", "ftp://x.com/b"]}),
                "/metadata/media_urls/1",
            ),
            (
                json!({"whatsapp_template": {"name": "x"}}),
                "/metadata/whatsapp_template",
            ),
            (
                json!({"whatsapp_template": {"name": "", "language": {"code": "en"}}}),
                "/metadata/whatsapp_template",
            ),
            (json!({"topic": "News Letter"}), "/metadata/topic"),
            (json!({"locale": "english"}), "/metadata/locale"),
            (
                json!({"recipient_timezone": "Mars/Base"}),
                "/metadata/recipient_timezone",
            ),
            (
                json!({"recipient_timezone": 5}),
                "/metadata/recipient_timezone",
            ),
        ];
        for (md, pointer) in cases {
            let err = DeliveryOptions::from_metadata(Some(&md)).unwrap_err();
            assert_eq!(err.pointer, pointer, "{md}");
        }
        let many: Vec<String> = (0..11).map(|i| format!("https://x.com/{i}.png")).collect();
        let err = DeliveryOptions::from_metadata(Some(&json!({ "media_urls": many }))).unwrap_err();
        assert_eq!(err.code, "too_many");
    }
}
