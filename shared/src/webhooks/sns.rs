//! `POST /webhooks/ses`: SES events over SNS HTTP(S). The signature (v1 SHA-1, v2 SHA-256) is
//! checked against the certificate at SigningCertURL, which must be on an SNS host and is
//! fetched once; the topic must be allowed; then notifications go to the SES event processor
//! and subscription confirmations are confirmed.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rsa::RsaPublicKey;
use serde::Deserialize;
use tracing::info;

use super::signature::{certificate_key, verify_rsa, RsaHash};
use super::{admit, apply, respond, Refusal, Webhooks};
use crate::gateway::ses_events;

/// Notifications signed longer ago (or ahead) than this are refused.
const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// HTTPS GETs to SNS: its signing certificates and subscription confirmations. A port, so
/// tests can serve their own certificate.
#[async_trait]
pub trait HttpsFetch: Send + Sync + 'static {
    async fn get(&self, url: &str) -> Result<String, String>;
}

pub struct ReqwestFetch(reqwest::Client);

impl ReqwestFetch {
    pub fn new() -> Result<ReqwestFetch, String> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(ReqwestFetch)
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl HttpsFetch for ReqwestFetch {
    async fn get(&self, url: &str) -> Result<String, String> {
        let res = self.0.get(url).send().await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("{url}: HTTP {}", res.status()));
        }
        res.text().await.map_err(|e| e.to_string())
    }
}

pub(super) struct SnsVerifier {
    fetch: Arc<dyn HttpsFetch>,
    certificates: Mutex<HashMap<String, RsaPublicKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    message_id: String,
    topic_arn: String,
    message: String,
    timestamp: String,
    signature_version: String,
    signature: String,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    subject: Option<String>,
    token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
}

/// SNS hosts only: `sns.<region>.amazonaws.com` (or `.com.cn`) over https, where the region
/// looks like one (`us-east-1`, `ap-southeast-2`, `us-gov-west-1`): never an S3 bucket host
/// such as `sns.s3.amazonaws.com`, and no credentials or port in the URL.
fn is_sns_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or_default();
    url.scheme() == "https"
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && is_region(region)
}

fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
}

/// A signing certificate's URL: an SNS host, the `SimpleNotificationService-<id>.pem` path and
/// no query, so a sender cannot make Herald fetch (and cache) arbitrary URLs.
fn is_certificate_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let name = parsed
        .path()
        .strip_prefix("/SimpleNotificationService-")
        .and_then(|p| p.strip_suffix(".pem"))
        .unwrap_or_default();
    is_sns_url(url)
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

impl Envelope {
    /// The string SNS signs: chosen fields as `name\nvalue\n`, in this order.
    fn string_to_sign(&self) -> Result<String, Refusal> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let missing = |f: &str| Refusal::Malformed(format!("{} without {f}", self.kind));
                fields.push((
                    "SubscribeURL",
                    self.subscribe_url
                        .as_deref()
                        .ok_or_else(|| missing("SubscribeURL"))?,
                ));
                fields.push(("Timestamp", &self.timestamp));
                fields.push((
                    "Token",
                    self.token.as_deref().ok_or_else(|| missing("Token"))?,
                ));
                fields.push(("TopicArn", &self.topic_arn));
                fields.push(("Type", &self.kind));
                return Ok(join(&fields));
            }
            other => return Err(Refusal::Malformed(format!("unknown SNS type {other}"))),
        }
        fields.push(("Timestamp", &self.timestamp));
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        Ok(join(&fields))
    }
}

fn join(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect()
}

impl SnsVerifier {
    pub(super) fn new(fetch: Arc<dyn HttpsFetch>) -> SnsVerifier {
        SnsVerifier {
            fetch,
            certificates: Mutex::new(HashMap::new()),
        }
    }

    async fn key(&self, url: &str) -> Result<RsaPublicKey, Refusal> {
        if !is_certificate_url(url) {
            return Err(Refusal::BadSignature(format!(
                "SigningCertURL {url} is not an SNS signing certificate"
            )));
        }
        if let Some(key) = self.certificates.lock().get(url) {
            return Ok(key.clone());
        }
        let pem = self
            .fetch
            .get(url)
            .await
            .map_err(|e| Refusal::BadSignature(format!("certificate not fetched: {e}")))?;
        let key = certificate_key(&pem)
            .map_err(|e| Refusal::BadSignature(format!("certificate unreadable: {e}")))?;
        self.certificates.lock().insert(url.to_owned(), key.clone());
        Ok(key)
    }

    async fn verify(&self, envelope: &Envelope, now: DateTime<Utc>) -> Result<(), Refusal> {
        let hash = match envelope.signature_version.as_str() {
            "1" => RsaHash::Sha1,
            "2" => RsaHash::Sha256,
            v => return Err(Refusal::BadSignature(format!("SignatureVersion {v}"))),
        };
        let signed = envelope.string_to_sign()?;
        let key = self.key(&envelope.signing_cert_url).await?;
        verify_rsa(&key, hash, signed.as_bytes(), &envelope.signature)
            .map_err(Refusal::BadSignature)?;
        let at = DateTime::parse_from_rfc3339(&envelope.timestamp)
            .map_err(|e| Refusal::BadSignature(format!("Timestamp: {e}")))?;
        if (now - at.with_timezone(&Utc)).abs() > MAX_SKEW {
            return Err(Refusal::BadSignature(format!(
                "Timestamp {} is more than 5 minutes off",
                envelope.timestamp
            )));
        }
        Ok(())
    }
}

pub(super) async fn handle(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    respond("sns", process(&webhooks, request).await)
}

async fn process(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let allowed = &webhooks
        .config
        .ses
        .as_ref()
        .ok_or(Refusal::NotConfigured("ses"))?
        .topic_arns;
    let (_, _, body) = admit(webhooks, "sns", request).await?;
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| Refusal::Malformed(format!("not an SNS message: {e}")))?;
    // A foreign topic is refused before any certificate is fetched for it.
    if !allowed.contains(&envelope.topic_arn) {
        return Err(Refusal::BadSignature(format!(
            "topic {} is not allowed",
            envelope.topic_arn
        )));
    }
    webhooks.sns.verify(&envelope, Utc::now()).await?;
    match envelope.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = envelope.subscribe_url.as_deref().unwrap_or_default();
            if !is_sns_url(url) {
                return Err(Refusal::BadSignature(format!(
                    "SubscribeURL {url} is not an https SNS host"
                )));
            }
            webhooks
                .sns
                .fetch
                .get(url)
                .await
                .map_err(|e| Refusal::Malformed(format!("subscription not confirmed: {e}")))?;
            info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
            Ok(())
        }
        "Notification" => match ses_events::ses_events(&envelope.message) {
            Ok(events) => {
                apply(webhooks, "sns", &envelope.message_id, events).await?;
                Ok(())
            }
            Err(e) => {
                info!(sns_message_id = %envelope.message_id, error = %e, "SNS notification is no SES event; ignored");
                Ok(())
            }
        },
        _ => {
            info!(kind = %envelope.kind, topic = %envelope.topic_arn, "SNS message ignored");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_certificate_url, is_sns_url};

    #[test]
    fn certificates_come_from_sns_hosts_over_https_only() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(is_sns_url(good), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns..amazonaws.com/cert.pem",
            "https://s3.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "not a url",
        ] {
            assert!(!is_sns_url(bad), "{bad}");
        }
        assert!(is_sns_url(
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
        ));
        assert!(is_certificate_url(
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem"
        ));
        for bad in [
            "https://sns.eu-west-1.amazonaws.com/cert.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem?1",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-../x.pem",
        ] {
            assert!(!is_certificate_url(bad), "{bad}");
        }
    }
}
