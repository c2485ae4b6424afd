//! Downloads the media providers send: Twilio's MMS URLs with the account's credentials (they
//! need them; its redirect to storage drops them, as reqwest does across hosts), WhatsApp's
//! media ids through the Graph API with the access token, anything else plainly. A download
//! stops at the size cap, whatever the provider said the size was.

use async_trait::async_trait;
use reqwest::{RequestBuilder, StatusCode};

use super::twilio::TwilioConfig;
use super::whatsapp::WhatsappConfig;
use crate::ports::{FetchError, Fetched, MediaFetcher};

/// `whatsapp:<media id>`: the source a WhatsApp message's media is recorded as.
pub const WHATSAPP_MEDIA: &str = "whatsapp:";

pub struct HttpMediaFetcher {
    client: reqwest::Client,
    twilio: Option<TwilioConfig>,
    whatsapp: Option<WhatsappConfig>,
}

impl HttpMediaFetcher {
    pub fn new(twilio: Option<TwilioConfig>, whatsapp: Option<WhatsappConfig>) -> Self {
        HttpMediaFetcher {
            client: super::http::client(),
            twilio,
            whatsapp,
        }
    }

    /// The request for `url`, with Twilio's credentials when it is Twilio's.
    fn get(&self, url: &str) -> RequestBuilder {
        let request = self.client.get(url);
        match &self.twilio {
            Some(t) if same_origin(url, &t.base_url) => {
                let (user, password) = t.credentials();
                request.basic_auth(user, Some(password))
            }
            _ => request,
        }
    }

    async fn whatsapp_url(&self, media: &str) -> Result<(String, String), FetchError> {
        let wa = self
            .whatsapp
            .as_ref()
            .ok_or_else(|| FetchError::Permanent("whatsapp is not configured".into()))?;
        let url = format!(
            "{}/{}/{}",
            wa.base_url.trim_end_matches('/'),
            wa.api_version,
            path_safe(media)
        );
        let token = wa.access_token.expose();
        let answer = self.client.get(url).bearer_auth(token).send().await;
        let answer = check(answer.map_err(transient)?)?;
        let v: serde_json::Value = answer.json().await.map_err(transient)?;
        let url = v["url"]
            .as_str()
            .filter(|u| fetchable(u))
            .ok_or_else(|| FetchError::Permanent("whatsapp media has no https url".into()))?;
        Ok((url.to_owned(), token.to_owned()))
    }
}

/// Media is fetched over https only (plain http to this machine, for development).
fn fetchable(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    u.scheme() == "https" || (u.scheme() == "http" && loopback)
}

fn same_origin(url: &str, base: &str) -> bool {
    let origin = |u: &str| reqwest::Url::parse(u).ok().map(|u| u.origin());
    origin(url).is_some_and(|o| Some(o) == origin(base))
}

/// A media id as a path segment: only the characters Meta's ids have.
fn path_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

fn transient(e: reqwest::Error) -> FetchError {
    FetchError::Transient(format!("download: {}", e.without_url()))
}

/// A success, or the failure its status means.
fn check(response: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let what = format!("download answered {}", status.as_u16());
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(FetchError::Transient(what))
    } else {
        Err(FetchError::Permanent(what))
    }
}

/// The body, read chunk by chunk and stopped past `max_bytes`.
async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(FetchError::TooLarge);
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transient)? {
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(FetchError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        content_type,
        bytes,
    })
}

#[async_trait]
impl MediaFetcher for HttpMediaFetcher {
    async fn fetch(&self, source: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        let request = match source.strip_prefix(WHATSAPP_MEDIA) {
            Some(media) => {
                let (url, token) = self.whatsapp_url(media).await?;
                self.client.get(url).bearer_auth(token)
            }
            None => {
                if !fetchable(source) {
                    return Err(FetchError::Permanent("not an https media URL".into()));
                }
                self.get(source)
            }
        };
        let response = check(request.send().await.map_err(transient)?)?;
        read_capped(response, max_bytes).await
    }
}
