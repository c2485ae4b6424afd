//! Firebase Cloud Messaging, HTTP v1: an OAuth2 access token from a service account (a signed
//! JWT exchanged at the token endpoint, cached until shortly before it expires), then
//! `messages:send` to a device token.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::http;
use super::redact::Redactor;
use super::secret::Secret;
use crate::domain::suppression::Reason;
use crate::domain::Channel;
use crate::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};

pub const FCM: &str = "fcm";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    pub project_id: String,
    /// The service account key file's JSON (from an environment variable, usually).
    pub service_account: Secret,
    #[serde(default = "default_base_url")]
    pub base_url: String,
}

fn default_base_url() -> String {
    "https://fcm.googleapis.com".into()
}

/// The fields of a Google service account key that the JWT grant needs.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    token_uri: String,
}

impl ServiceAccount {
    /// The key file's JSON, read without quoting it back: serde's messages can include the
    /// value they choke on, and this one holds a private key.
    fn parse(json: &str) -> Result<ServiceAccount, String> {
        serde_json::from_str(json).map_err(|e| {
            format!(
                "fcm service_account is not a service account key file's JSON with client_email, \
                 private_key and token_uri ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })
    }
}

impl FcmConfig {
    pub(super) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("service_account", &self.service_account)]
    }

    /// The private key, whole and line by line (a partial echo of the PEM is still the key).
    pub(super) fn secret_forms(&self) -> Vec<String> {
        let Ok(account) = ServiceAccount::parse(self.service_account.expose()) else {
            return Vec::new();
        };
        let lines = account
            .private_key
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        std::iter::once(account.private_key).chain(lines).collect()
    }
}

pub struct FcmGateway {
    config: FcmConfig,
    client_email: String,
    token_uri: String,
    key: SigningKey<Sha256>,
    client: reqwest::Client,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl FcmGateway {
    pub fn new(config: FcmConfig) -> Result<FcmGateway, String> {
        let account = ServiceAccount::parse(config.service_account.expose())?;
        let key = RsaPrivateKey::from_pkcs8_pem(&account.private_key)
            .map_err(|e| format!("fcm service account private_key: {e}"))?;
        Ok(FcmGateway {
            client_email: account.client_email,
            token_uri: account.token_uri,
            key: SigningKey::<Sha256>::new(key),
            config,
            client: http::client(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The JWT bearer assertion: RS256 over the service account's claims, valid an hour.
    fn assertion(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({ "iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
                    "iat": now, "exp": now + 3600 })
            .to_string(),
        );
        let signed = format!("{header}.{claims}");
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// A valid access token, exchanging a new assertion when the cached one is near its end.
    async fn access_token(&self) -> Result<String, GatewayError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() + RENEW_BEFORE < *until {
                return Ok(token.clone());
            }
        }
        // The assertion buys tokens for an hour: an endpoint that quotes it must not leak it.
        let assertion = self.assertion();
        let scrub = Redactor::new([assertion.as_str()]);
        let http::Answer {
            status,
            body: answer,
            ..
        } = http::call(
            "fcm token",
            self.client.post(&self.token_uri).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ]),
        )
        .await
        .map_err(|e| scrub.error(e))?;
        let token = answer["access_token"].as_str();
        match (status.is_success(), token) {
            (true, Some(token)) => {
                let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(3600));
                *cached = Some((token.to_owned(), Instant::now() + lifetime));
                Ok(token.to_owned())
            }
            // A refused grant will not succeed on retry: the key is wrong or revoked. OAuth's
            // `error` and `error_description` say why; the rest of the answer is not needed.
            _ if status.is_client_error() => Err(scrub.error(GatewayError::Permanent {
                code: "TOKEN_GRANT_REFUSED".into(),
                message: format!(
                    "fcm token endpoint {status}: {} {}",
                    answer["error"].as_str().unwrap_or("no error code"),
                    answer["error_description"].as_str().unwrap_or_default()
                )
                .trim_end()
                .to_owned(),
            })),
            _ => Err(GatewayError::Transient(format!(
                "fcm token endpoint {status}"
            ))),
        }
    }
}

/// FCM's error code: the FcmError detail when present, else the status.
fn error_code(answer: &Value) -> String {
    answer["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .or_else(|| answer["error"]["status"].as_str())
        .unwrap_or("UNKNOWN")
        .to_owned()
}

#[async_trait]
impl Gateway for FcmGateway {
    fn name(&self) -> &str {
        FCM
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Push]
    }

    fn suppression_for(&self, code: &str) -> Option<Reason> {
        matches!(code, "UNREGISTERED" | "INVALID_ARGUMENT").then_some(Reason::InvalidToken)
    }

    async fn send(&self, m: &OutboundMessage) -> Result<GatewayReceipt, GatewayError> {
        let token = self.access_token().await?;
        let mut notification = json!({ "body": m.content.body });
        if let Some(title) = &m.content.subject {
            notification["title"] = json!(title);
        }
        let body = json!({ "message": {
            "token": m.to,
            "notification": notification,
            "data": { "herald_id": m.id.to_string() },
        }});
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.base_url.trim_end_matches('/'),
            self.config.project_id
        );
        let sent = http::call(FCM, self.client.post(url).bearer_auth(&token).json(&body)).await;
        let outcome = match sent {
            Ok(answer) if answer.status.is_success() => {
                http::receipt(FCM, answer.body["name"].as_str().map(str::to_owned))
            }
            Ok(answer) => Err(self.refusal(answer).await),
            Err(e) => Err(e),
        };
        // The access token is no configured secret, but it is one: an answer may quote it.
        outcome.map_err(|e| Redactor::new([token.as_str()]).error(e))
    }
}

impl FcmGateway {
    /// What an error answer to `messages:send` means for the message.
    async fn refusal(&self, answer: http::Answer) -> GatewayError {
        let http::Answer {
            status,
            headers,
            body: answer,
        } = answer;
        let code = error_code(&answer);
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        match code.as_str() {
            "UNREGISTERED" | "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR" => {
                GatewayError::Permanent { code, message }
            }
            // Only a bad token is the address's fault; a bad payload is ours.
            "INVALID_ARGUMENT" if message.to_lowercase().contains("token") => {
                GatewayError::Permanent { code, message }
            }
            "INVALID_ARGUMENT" => GatewayError::Permanent {
                code: "INVALID_PAYLOAD".into(),
                message,
            },
            "QUOTA_EXCEEDED" => GatewayError::Throttled {
                retry_after: http::retry_after(&headers),
            },
            _ if status == reqwest::StatusCode::UNAUTHORIZED => {
                // The token went stale early: the next send fetches another.
                *self.token.lock().await = None;
                GatewayError::Transient(format!("fcm: {code}: {message}"))
            }
            _ => http::by_status(FCM, status, &headers, code, message),
        }
    }
}
