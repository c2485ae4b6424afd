//! Provider webhooks served beside an embedded Herald for tests: every provider's secret
//! known (Twilio's token, Postal's and SNS's keys, Meta's app secret, Telegram's token), SNS's
//! certificate fetch faked, and requests signed as each provider signs them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use parking_lot::Mutex;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use shared::webhooks::signature::twilio_signature;
use shared::webhooks::{HttpsFetch, Webhooks, WebhooksConfig};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{shared, TestServer};

pub const PUBLIC: &str = "https://herald.example.com";
pub const TWILIO_TOKEN: &str = "twilio-auth-token";
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:herald-ses-events";
pub const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";

/// SNS's HTTPS side: serves the test certificate, records every URL fetched.
#[derive(Default)]
pub struct FakeSns {
    pub certificate: Mutex<String>,
    pub fetched: Mutex<Vec<String>>,
}

#[async_trait]
impl HttpsFetch for FakeSns {
    async fn get(&self, url: &str) -> Result<String, String> {
        self.fetched.lock().push(url.to_owned());
        if url == CERT_URL {
            Ok(self.certificate.lock().clone())
        } else {
            Ok("<ConfirmSubscriptionResponse/>".into())
        }
    }
}

pub struct Hooks {
    pub s: TestServer,
    /// Where the webhooks are served (with the fake SNS behind them).
    pub url: String,
    pub sns: Arc<FakeSns>,
    pub provider: MockServer,
    pub postal_key: RsaPrivateKey,
    pub sns_key: RsaPrivateKey,
}

pub fn rsa_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap()
}

/// A self-signed certificate for `key`, as SNS's signing certificate would be.
pub fn certificate(key: &RsaPrivateKey) -> String {
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::EncodePem;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;
    let signer = SigningKey::<sha2::Sha256>::new(key.clone());
    let spki_der = key.to_public_key().to_public_key_der().unwrap();
    let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).unwrap();
    let subject: Name = "CN=sns.amazonaws.com".parse().unwrap();
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(7u32),
        Validity::from_now(Duration::from_secs(3600)).unwrap(),
        subject,
        spki,
        &signer,
    )
    .unwrap();
    let cert = builder.build::<rsa::pkcs1v15::Signature>().unwrap();
    cert.to_pem(LineEnding::LF).unwrap()
}

impl Hooks {
    pub async fn start() -> Hooks {
        Hooks::start_with("sandbox", |_| {}).await
    }

    /// With email sent by `email_gateway` (`sandbox` or `postal`), and `tune` applied.
    pub async fn start_with(email_gateway: &str, tune: impl FnOnce(&mut WebhooksConfig)) -> Hooks {
        let provider = MockServer::start().await;
        let (postal_key, sns_key) = (rsa_key(), rsa_key());
        let postal_public = postal_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let mut webhooks: WebhooksConfig = serde_json::from_value(json!({
            "public_base_url": PUBLIC,
            "ses": { "topic_arns": [TOPIC] },
            "twilio": { "auth_token": TWILIO_TOKEN },
            "postal": { "public_key": postal_public },
            "whatsapp": { "app_secret": "meta-app-secret", "verify_token": "verify-me" },
            "telegram": { "secret_token": "tg-secret", "tenant": "acme" },
            "mailboxes": [
                { "address": "desk@acme.example", "tenant": "acme" },
                { "address": "globex.example", "tenant": "globex" }
            ],
            "numbers": [
                { "number": "+15557654321", "tenant": "acme",
                  "replies": { "help": "Acme alerts. Reply STOP to opt out." } },
                { "number": "15550001111", "tenant": "acme" }
            ]
        }))
        .unwrap();
        tune(&mut webhooks);
        let gateways = json!({
            "order": { "email": [email_gateway] },
            "twilio": { "account_sid": "AC0123", "auth_token": TWILIO_TOKEN, "from": "+15557654321",
                        "public_base_url": PUBLIC, "base_url": provider.uri() },
            "postal": { "base_url": provider.uri(), "api_key": "postal-key", "from": "alerts@acme.example" },
            "whatsapp": { "phone_number_id": "1066", "access_token": "wa-token", "base_url": provider.uri() }
        });
        let config = webhooks.clone();
        let s = TestServer::start_with(move |cfg| {
            cfg.gateways = serde_json::from_value(gateways).unwrap();
            cfg.webhooks = config;
        })
        .await;
        let sns = Arc::new(FakeSns::default());
        *sns.certificate.lock() = certificate(&sns_key);
        let hooks = Webhooks::with_fetch(s.embedded.herald.clone(), webhooks, sns.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = shared::webhooks::router(Arc::new(hooks));
        tokio::spawn(async move {
            // As `herald serve` does: failed verifications are counted per peer address.
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service).await;
        });
        Hooks {
            s,
            url,
            sns,
            provider,
            postal_key,
            sns_key,
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut req = self.s.client.post(format!("{}{path}", self.url)).body(body);
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A Twilio callback to `path_and_query`, signed over the public URL unless `tamper`.
    pub async fn twilio(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        tamper: bool,
    ) -> (u16, String) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let signature =
            twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC}{path_and_query}"), &owned);
        let mut body = serde_urlencoded::to_string(&owned).unwrap();
        if tamper {
            body = body
                .replace("delivered", "undelivered")
                .replace("Body=", "Body=x");
        }
        self.post(
            path_and_query,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", &signature),
            ],
            body.into_bytes(),
        )
        .await
    }

    pub async fn answer(&self, body: Value) {
        self.provider.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.provider)
            .await;
    }
}

/// An SNS message for `message`, signed with `key` (v1: SHA-1, v2: SHA-256).
pub fn sns(
    key: &RsaPrivateKey,
    version: u8,
    kind: &str,
    message: &str,
    topic: &str,
    cert_url: &str,
) -> Value {
    let mut v = json!({
        "Type": kind, "MessageId": uuid::Uuid::now_v7().to_string(), "TopicArn": topic,
        "Message": message, "Timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "SignatureVersion": version.to_string(), "SigningCertURL": cert_url,
    });
    if kind != "Notification" {
        v["Token"] = json!("token-1");
        v["SubscribeURL"] =
            json!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=token-1");
    }
    sign_sns(key, &mut v);
    v
}

/// Signs an SNS message (again, after a signed field changed) as SNS does.
pub fn sign_sns(key: &RsaPrivateKey, v: &mut Value) {
    let mut fields = vec!["Message", "MessageId"];
    if v["Type"] == "Notification" {
        fields.extend(["Timestamp", "TopicArn", "Type"]);
    } else {
        fields.extend(["SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]);
    }
    let signed: String = fields
        .iter()
        .map(|f| format!("{f}\n{}\n", v[*f].as_str().unwrap()))
        .collect();
    let sha1 = v["SignatureVersion"] == "1";
    v["Signature"] = json!(rsa_sign(key, sha1, signed.as_bytes()));
}

pub fn rsa_sign(key: &RsaPrivateKey, sha1: bool, data: &[u8]) -> String {
    let signature = if sha1 {
        SigningKey::<sha1::Sha1>::new(key.clone())
            .sign(data)
            .to_vec()
    } else {
        SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(data)
            .to_vec()
    };
    STANDARD.encode(signature)
}

/// Postal's post of a raw message for `rcpt` (a route's HTTP endpoint, "raw message" as a
/// JSON body), and its SHA-256 signature with `key`.
pub fn postal_raw(key: &RsaPrivateKey, id: u64, rcpt: &str, raw: &str) -> (String, String) {
    // Postal's base64 comes in lines of 60, as Ruby's encode64 writes it.
    let encoded = STANDARD.encode(raw);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = json!({ "id": id, "rcpt_to": rcpt, "mail_from": "bounce@example.com",
                       "message": lines.join("\n") + "\n", "base64": true, "size": raw.len() })
    .to_string();
    let signature = rsa_sign(key, false, body.as_bytes());
    (body, signature)
}

/// A plain-text email, as a mail client writes a reply.
pub fn raw_email(
    from: &str,
    to: &str,
    subject: &str,
    in_reply_to: Option<&str>,
    text: &str,
) -> String {
    let mut raw = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@mail.example.com>\r\n",
        uuid::Uuid::now_v7()
    );
    if let Some(id) = in_reply_to {
        raw.push_str(&format!("In-Reply-To: {id}\r\nReferences: {id}\r\n"));
    }
    raw.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    raw.push_str(&text.replace('\n', "\r\n"));
    raw
}

impl Hooks {
    /// An SNS message (signed or not) posted to the SES route, as SNS posts it.
    pub async fn post_sns(&self, message: &Value) -> (u16, String) {
        self.post(
            "/webhooks/ses",
            &[("content-type", "text/plain; charset=UTF-8")],
            message.to_string().into_bytes(),
        )
        .await
    }

    /// Mail for `rcpt`, posted by Postal and signed with its key.
    pub async fn email_in(&self, id: u64, rcpt: &str, raw: &str) -> (u16, String) {
        let (body, signature) = postal_raw(&self.postal_key, id, rcpt, raw);
        self.post(
            "/webhooks/postal/inbound",
            &[
                ("content-type", "application/json"),
                ("x-postal-signature-256", &signature),
            ],
            body.into_bytes(),
        )
        .await
    }
}
