//! `POST /webhooks/ses`: SES events over SNS HTTP(S). The signature (v1 SHA-1, v2 SHA-256) is
//! checked against the certificate at SigningCertURL, which must be on an SNS host and is
//! fetched once; the topic must be allowed; then notifications go to the SES event processor
//! and subscription confirmations are confirmed.
//!
//! A signature of any age is accepted: SNS retries an HTTP(S) endpoint for up to an hour (its
//! hard limit) and keeps the first attempt's Timestamp, so a skew check would refuse genuine
//! retries. Replays are dropped by MessageId instead, and a MessageId is remembered for
//! `EVENT_ID_KEEP` (7 days), far longer than SNS retries.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::Response;
use parking_lot::Mutex;
use rsa::RsaPublicKey;
use serde::Deserialize;
use tracing::info;

use super::guard::clip;
use super::signature::{certificate_key, verify_rsa, RsaHash};
use super::{admit, apply, respond, Refusal, Webhooks};
use crate::gateway::ses_events;

/// Signing certificates remembered; SNS uses one or two per region at a time.
const MAX_CERTIFICATES: usize = 64;

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
    certificates: Mutex<Certificates>,
}

/// The keys of certificates that verified a signature, by normalised URL, least recently used
/// first; at most [`MAX_CERTIFICATES`].
#[derive(Default)]
struct Certificates(VecDeque<(String, RsaPublicKey)>);

impl Certificates {
    fn get(&mut self, url: &str) -> Option<RsaPublicKey> {
        let at = self.0.iter().position(|(u, _)| u == url)?;
        let entry = self.0.remove(at)?;
        let key = entry.1.clone();
        self.0.push_back(entry);
        Some(key)
    }

    fn insert(&mut self, url: String, key: RsaPublicKey) {
        self.0.retain(|(u, _)| *u != url);
        if self.0.len() >= MAX_CERTIFICATES {
            self.0.pop_front();
        }
        self.0.push_back((url, key));
    }
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

/// The normalised form of a signing certificate's URL (scheme and host in lower case, no
/// default port, no dot segments), so every spelling of one certificate is one cache entry.
/// Only an SNS host, the `SimpleNotificationService-<id>.pem` path and no query qualify, so a
/// sender cannot make Herald fetch (and cache) arbitrary URLs.
fn certificate_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let name = parsed
        .path()
        .strip_prefix("/SimpleNotificationService-")
        .and_then(|p| p.strip_suffix(".pem"))
        .unwrap_or_default();
    let valid = is_sns_url(url)
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    valid.then(|| parsed.to_string())
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
            other => {
                return Err(Refusal::Malformed(format!(
                    "unknown SNS type {}",
                    clip(other)
                )))
            }
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
            certificates: Mutex::new(Certificates::default()),
        }
    }

    /// The key of the certificate at `url` (normalised), and whether it came from the cache.
    /// A `suspect` client gets no fetch: only certificates that verified before.
    async fn key(&self, url: &str, suspect: bool) -> Result<(String, RsaPublicKey, bool), Refusal> {
        let Some(url) = certificate_url(url) else {
            return Err(Refusal::BadSignature(format!(
                "SigningCertURL {} is not an SNS signing certificate",
                clip(url)
            )));
        };
        if let Some(key) = self.certificates.lock().get(&url) {
            return Ok((url, key, true));
        }
        if suspect {
            return Err(Refusal::BadSignature(
                "unknown certificate, and the client is over its failure limit".into(),
            ));
        }
        let pem =
            self.fetch.get(&url).await.map_err(|e| {
                Refusal::BadSignature(format!("certificate not fetched: {}", clip(&e)))
            })?;
        let key = certificate_key(&pem)
            .map_err(|e| Refusal::BadSignature(format!("certificate unreadable: {}", clip(&e))))?;
        Ok((url, key, false))
    }

    /// Checks the signature; a fetched certificate is remembered only once it verified one.
    async fn verify(&self, envelope: &Envelope, suspect: bool) -> Result<(), Refusal> {
        let hash = match envelope.signature_version.as_str() {
            "1" => RsaHash::Sha1,
            "2" => RsaHash::Sha256,
            v => {
                return Err(Refusal::BadSignature(format!(
                    "SignatureVersion {}",
                    clip(v)
                )))
            }
        };
        let signed = envelope.string_to_sign()?;
        let (url, key, cached) = self.key(&envelope.signing_cert_url, suspect).await?;
        verify_rsa(&key, hash, signed.as_bytes(), &envelope.signature)
            .map_err(Refusal::BadSignature)?;
        if !cached {
            self.certificates.lock().insert(url, key);
        }
        Ok(())
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.certificates.lock().0.len()
    }
}

pub(super) async fn handle(State(webhooks): State<Arc<Webhooks>>, request: Request) -> Response {
    respond(&webhooks, "sns", process(&webhooks, request).await)
}

async fn process(webhooks: &Webhooks, request: Request) -> Result<(), Refusal> {
    let allowed = &webhooks
        .config
        .ses
        .as_ref()
        .ok_or(Refusal::NotConfigured("ses"))?
        .topic_arns;
    let request = admit(request).await?;
    let envelope: Envelope = serde_json::from_slice(&request.body)
        .map_err(|e| Refusal::Malformed(format!("not an SNS message: {}", clip(&e.to_string()))))?;
    // A foreign topic is refused before any certificate is fetched for it.
    if !allowed.contains(&envelope.topic_arn) {
        return Err(Refusal::BadSignature(format!(
            "topic {} is not allowed",
            clip(&envelope.topic_arn)
        )));
    }
    webhooks.sns.verify(&envelope, request.suspect).await?;
    match envelope.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = envelope.subscribe_url.as_deref().unwrap_or_default();
            if !is_sns_url(url) {
                return Err(Refusal::BadSignature(format!(
                    "SubscribeURL {} is not an https SNS host",
                    clip(url)
                )));
            }
            webhooks.sns.fetch.get(url).await.map_err(|e| {
                Refusal::Malformed(format!("subscription not confirmed: {}", clip(&e)))
            })?;
            info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
            Ok(())
        }
        "Notification" => match received_mail(&envelope.message) {
            Some(mail) => super::email::ses_received(webhooks, &mail).await,
            None => ses_event(webhooks, &envelope).await,
        },
        _ => {
            info!(kind = %envelope.kind, topic = %envelope.topic_arn, "SNS message ignored");
            Ok(())
        }
    }
}

/// An SES receipt notification (`notificationType: Received`), if the message is one.
fn received_mail(message: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(message).ok()?;
    (v["notificationType"] == "Received").then_some(v)
}

async fn ses_event(webhooks: &Webhooks, envelope: &Envelope) -> Result<(), Refusal> {
    match ses_events::ses_events(&envelope.message) {
        Ok(events) => {
            apply(webhooks, "sns", &envelope.message_id, events).await?;
            Ok(())
        }
        Err(e) => {
            info!(sns_message_id = %envelope.message_id, error = %e, "SNS notification is no SES event; ignored");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use base64::Engine;
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::RsaPrivateKey;

    use super::{certificate_url, is_sns_url, Envelope, HttpsFetch, SnsVerifier, MAX_CERTIFICATES};

    /// Serves one certificate at every URL.
    struct Serves(String);

    #[async_trait]
    impl HttpsFetch for Serves {
        async fn get(&self, _: &str) -> Result<String, String> {
            Ok(self.0.clone())
        }
    }

    fn certificate(key: &RsaPrivateKey) -> String {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::EncodePem;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        let signer = SigningKey::<sha2::Sha256>::new(key.clone());
        let der = key.to_public_key().to_public_key_der().unwrap();
        let spki = SubjectPublicKeyInfoOwned::try_from(der.as_bytes()).unwrap();
        let validity =
            x509_cert::time::Validity::from_now(std::time::Duration::from_secs(3600)).unwrap();
        let builder = CertificateBuilder::new(
            Profile::Root,
            x509_cert::serial_number::SerialNumber::from(7u32),
            validity,
            "CN=sns.amazonaws.com".parse().unwrap(),
            spki,
            &signer,
        )
        .unwrap();
        let cert = builder.build::<rsa::pkcs1v15::Signature>().unwrap();
        cert.to_pem(LineEnding::LF).unwrap()
    }

    /// A notification signed (SignatureVersion 2) with `key`, naming `cert_url`.
    fn notification(key: &RsaPrivateKey, cert_url: &str) -> Envelope {
        let mut e = Envelope {
            kind: "Notification".into(),
            message_id: "m-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:123456789012:t".into(),
            message: "{}".into(),
            timestamp: "2020-01-01T00:00:00.000Z".into(),
            signature_version: "2".into(),
            signature: String::new(),
            signing_cert_url: cert_url.into(),
            subject: None,
            token: None,
            subscribe_url: None,
        };
        let signed = e.string_to_sign().unwrap();
        let signature = SigningKey::<sha2::Sha256>::new(key.clone()).sign(signed.as_bytes());
        e.signature = base64::engine::general_purpose::STANDARD.encode(signature.to_vec());
        e
    }

    fn cert_url(name: &str) -> String {
        format!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{name}.pem")
    }

    #[test]
    fn certificate_urls_are_normalised() {
        let canonical = cert_url("abc");
        for spelling in [
            canonical.as_str(),
            "https://sns.us-east-1.amazonaws.com:443/./SimpleNotificationService-abc.pem",
            "HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/a/b/../../SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(
                certificate_url(spelling).as_deref(),
                Some(canonical.as_str()),
                "{spelling}"
            );
        }
    }

    #[tokio::test]
    async fn only_certificates_that_verified_are_cached_and_at_most_64() {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let verifier = SnsVerifier::new(Arc::new(Serves(certificate(&key))));
        let stranger = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        for i in 0..100 {
            let forged = notification(&stranger, &cert_url(&format!("f{i}")));
            assert!(verifier.verify(&forged, false).await.is_err());
        }
        assert_eq!(verifier.cached(), 0, "a failed verification caches nothing");
        for spelling in [
            cert_url("one"),
            "https://SNS.us-east-1.amazonaws.com:443/./SimpleNotificationService-one.pem".into(),
        ] {
            verifier
                .verify(&notification(&key, &spelling), false)
                .await
                .unwrap();
        }
        assert_eq!(verifier.cached(), 1, "two spellings, one entry");
        // Unknown certificates are not fetched for a client over its failure limit.
        let unknown = notification(&key, &cert_url("new"));
        assert!(verifier.verify(&unknown, true).await.is_err());
        assert!(verifier
            .verify(&notification(&key, &cert_url("one")), true)
            .await
            .is_ok());
        for i in 0..100 {
            let genuine = notification(&key, &cert_url(&format!("g{i}")));
            verifier.verify(&genuine, false).await.unwrap();
        }
        assert_eq!(verifier.cached(), MAX_CERTIFICATES);
    }

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
        assert!(certificate_url(
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem"
        )
        .is_some());
        for bad in [
            "https://sns.eu-west-1.amazonaws.com/cert.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem?1",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-../x.pem",
        ] {
            assert!(certificate_url(bad).is_none(), "{bad}");
        }
    }
}
