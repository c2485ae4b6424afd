//! A tenant's webhook endpoint: where events go, which ones, and the secrets that sign them.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::{EndpointId, EventType, ProviderSource};
use crate::domain::TenantId;

pub const MAX_URL: usize = 2048;
pub const MAX_DESCRIPTION: usize = 500;

/// An endpoint's address: absolute http(s), with a host, no credentials and no fragment.
/// Whether Herald may call it (https, not private) is the notifier's policy, checked when it
/// is registered and again at every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub fn parse(s: &str) -> Result<EndpointUrl, String> {
        if s.len() > MAX_URL {
            return Err(format!("longer than {MAX_URL} bytes"));
        }
        let url = url::Url::parse(s).map_err(|e| format!("not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("the scheme must be https".into());
        }
        if url.host().is_none() {
            return Err("the URL has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL would be shown to every reader; put them in the path or query instead".into());
        }
        if url.fragment().is_some() {
            return Err("a fragment is never sent; remove it".into());
        }
        Ok(EndpointUrl(url))
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A signing secret: `whsec_` and the base64 of 32 random bytes. Shown once, when made; never
/// in a list, a log or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub fn generate() -> SigningSecret {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SigningSecret(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// A stored secret; `None` unless it has the generated form.
    pub fn from_stored(s: String) -> Option<SigningSecret> {
        let raw = s.strip_prefix("whsec_")?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        (decoded.len() >= 24).then_some(SigningSecret(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("whsec_***")
    }
}

/// A secret and, once a newer one replaced it, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSecret {
    pub secret: SigningSecret,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where an endpoint's events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Herald POSTs each event to the URL, signed, with retries.
    Push(EndpointUrl),
    /// An event stream (`GET /v1/events/stream`, `herald tail`) reads the events itself, and
    /// keeps this subscription while it reads: it lapses at `until` unless a reader renews it.
    Stream { until: DateTime<Utc> },
}

/// What an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// Herald's events (`message.sent`, ...): registered with the endpoints API.
    #[default]
    Events,
    /// Verified provider webhooks, as received: a development forward (admin only).
    DevForward,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: EndpointId,
    pub tenant: TenantId,
    pub target: Target,
    pub purpose: Purpose,
    /// The types it wants; empty means every type.
    pub event_types: Vec<EventType>,
    pub description: String,
    pub enabled: bool,
    /// Why Herald turned it off (410 Gone, failing for days); `None` when a person did.
    pub disabled_reason: Option<String>,
    /// The current secret first, then older ones still signing until they expire.
    pub secrets: Vec<EndpointSecret>,
    /// Since when every delivery has failed; cleared by a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a tenant registers.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: EndpointUrl,
    pub event_types: Vec<EventType>,
    pub description: String,
    pub enabled: bool,
}

/// A partial update: each field set replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<EndpointUrl>,
    pub event_types: Option<Vec<EventType>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

impl WebhookEndpoint {
    /// A new endpoint with a fresh secret.
    pub fn create(tenant: TenantId, new: NewEndpoint, now: DateTime<Utc>) -> WebhookEndpoint {
        let target = Target::Push(new.url);
        let mut ep = WebhookEndpoint::with_target(tenant, target, new.event_types, now);
        ep.description = new.description;
        ep.enabled = new.enabled;
        ep
    }

    /// A stream's subscription, lapsing at `until` unless renewed; its secret is never used.
    pub fn stream(
        tenant: TenantId,
        event_types: Vec<EventType>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> WebhookEndpoint {
        WebhookEndpoint::with_target(tenant, Target::Stream { until }, event_types, now)
    }

    /// A development forward of the `sources`' webhooks (none: every source's) to `target`.
    pub fn dev_forward(
        tenant: TenantId,
        target: Target,
        sources: &[ProviderSource],
        now: DateTime<Utc>,
    ) -> WebhookEndpoint {
        let types = ProviderSource::event_types(sources);
        let mut ep = WebhookEndpoint::with_target(tenant, target, types, now);
        ep.purpose = Purpose::DevForward;
        ep
    }

    /// The providers a development forward passes on.
    pub fn sources(&self) -> Vec<ProviderSource> {
        ProviderSource::ALL
            .into_iter()
            .filter(|s| self.event_types.contains(&s.event_type()))
            .collect()
    }

    fn with_target(
        tenant: TenantId,
        target: Target,
        event_types: Vec<EventType>,
        now: DateTime<Utc>,
    ) -> WebhookEndpoint {
        WebhookEndpoint {
            id: EndpointId::new(),
            tenant,
            target,
            purpose: Purpose::Events,
            event_types: dedup(event_types),
            description: String::new(),
            enabled: true,
            disabled_reason: None,
            secrets: vec![EndpointSecret {
                secret: SigningSecret::generate(),
                expires_at: None,
            }],
            failing_since: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The URL events are pushed to; `None` for a stream.
    pub fn url(&self) -> Option<&EndpointUrl> {
        match &self.target {
            Target::Push(url) => Some(url),
            Target::Stream { .. } => None,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.target, Target::Stream { .. })
    }

    /// False once a stream's subscription has lapsed; a pushed endpoint never lapses.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        match self.target {
            Target::Push(_) => true,
            Target::Stream { until } => until > now,
        }
    }

    pub fn wants(&self, t: EventType) -> bool {
        match self.purpose {
            Purpose::Events => {
                !t.is_forward() && (self.event_types.is_empty() || self.event_types.contains(&t))
            }
            Purpose::DevForward => t.is_forward() && self.event_types.contains(&t),
        }
    }

    /// The secrets that sign a delivery made at `now`: the current one and any in overlap.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|e| e > now))
            .map(|s| &s.secret)
    }

    /// Makes a new current secret; the old one keeps signing for `overlap`, and secrets already
    /// expired are dropped.
    pub fn rotate(&mut self, now: DateTime<Utc>, overlap: chrono::Duration) -> SigningSecret {
        self.secrets
            .retain(|s| s.expires_at.is_none_or(|e| e > now));
        for s in &mut self.secrets {
            s.expires_at = Some(s.expires_at.map_or(now + overlap, |e| e.min(now + overlap)));
        }
        let secret = SigningSecret::generate();
        self.secrets.insert(
            0,
            EndpointSecret {
                secret: secret.clone(),
                expires_at: None,
            },
        );
        self.updated_at = now;
        secret
    }

    pub fn apply(&mut self, patch: EndpointPatch, now: DateTime<Utc>) {
        if let (Some(url), Target::Push(_)) = (patch.url, &self.target) {
            self.target = Target::Push(url);
        }
        if let Some(types) = patch.event_types {
            self.event_types = dedup(types);
        }
        if let Some(d) = patch.description {
            self.description = d;
        }
        if let Some(enabled) = patch.enabled {
            if enabled && !self.enabled {
                // A person turned it back on: start counting failures afresh.
                self.failing_since = None;
                self.disabled_reason = None;
            }
            self.enabled = enabled;
        }
        self.updated_at = now;
    }

    /// Notes a delivery's result: failing since when (`None`: it succeeded; a streak runs
    /// from its first failure, whoever noted it first), and, when Herald turns it off, why.
    pub fn note_health(
        &mut self,
        failing_since: Option<DateTime<Utc>>,
        disable: Option<&str>,
        now: DateTime<Utc>,
    ) {
        self.failing_since = failing_since.map(|t| self.failing_since.map_or(t, |s| s.min(t)));
        if let Some(reason) = disable {
            self.disable(reason, now);
        }
    }

    /// Herald turns the endpoint off, saying why.
    pub fn disable(&mut self, reason: &str, now: DateTime<Utc>) {
        self.enabled = false;
        self.disabled_reason = Some(reason.to_owned());
        self.updated_at = now;
    }
}

fn dedup(mut types: Vec<EventType>) -> Vec<EventType> {
    types.sort();
    types.dedup();
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> WebhookEndpoint {
        let new = NewEndpoint {
            url: EndpointUrl::parse("https://hooks.example.com/herald").unwrap(),
            event_types: vec![EventType::MessageSent, EventType::MessageSent],
            description: String::new(),
            enabled: true,
        };
        WebhookEndpoint::create(TenantId::parse("acme").unwrap(), new, Utc::now())
    }

    #[test]
    fn urls_with_credentials_fragments_or_other_schemes_are_refused() {
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "/relative",
            "mailto:a@example.com",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(EndpointUrl::parse(&format!("https://e.com/{}", "a".repeat(MAX_URL))).is_err());
        assert!(EndpointUrl::parse("https://example.com/hook?x=1").is_ok());
    }

    #[test]
    fn secrets_have_the_standard_form_and_never_show_in_debug() {
        let s = SigningSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert!(SigningSecret::from_stored(s.expose().to_owned()).is_some());
        assert!(SigningSecret::from_stored("whsec_c2hvcnQ=".into()).is_none());
        assert!(!format!("{s:?} {:?}", endpoint()).contains(&s.expose()[6..]));
    }

    #[test]
    fn rotation_keeps_the_old_secret_signing_for_the_overlap_only() {
        let mut ep = endpoint();
        let now = Utc::now();
        let old = ep.secrets[0].secret.clone();
        let new = ep.rotate(now, chrono::Duration::hours(1));
        let signing: Vec<_> = ep.signing_secrets(now).cloned().collect();
        assert_eq!(signing, vec![new.clone(), old]);
        let later: Vec<_> = ep
            .signing_secrets(now + chrono::Duration::hours(2))
            .collect();
        assert_eq!(later, vec![&new]);
        ep.rotate(now + chrono::Duration::hours(2), chrono::Duration::zero());
        assert_eq!(ep.secrets.len(), 2, "the expired secret is dropped");
    }

    #[test]
    fn no_types_means_every_type_and_repeats_are_dropped() {
        let mut ep = endpoint();
        assert_eq!(ep.event_types, vec![EventType::MessageSent]);
        assert!(!ep.wants(EventType::MessageQueued));
        ep.apply(
            EndpointPatch {
                event_types: Some(vec![]),
                ..Default::default()
            },
            Utc::now(),
        );
        assert!(ep.wants(EventType::MessageQueued));
        assert!(
            !ep.wants(EventType::ForwardTwilio),
            "every type is every event"
        );
    }

    #[test]
    fn a_dev_forward_hears_its_sources_webhooks_and_nothing_else() {
        let tenant = TenantId::parse("acme").unwrap();
        let target = endpoint().target;
        let ep = WebhookEndpoint::dev_forward(tenant.clone(), target.clone(), &[], Utc::now());
        assert_eq!(ep.sources(), ProviderSource::ALL);
        assert!(!ep.wants(EventType::MessageSent));
        let ses = WebhookEndpoint::dev_forward(tenant, target, &[ProviderSource::Ses], Utc::now());
        assert!(ses.wants(EventType::ForwardSes) && !ses.wants(EventType::ForwardTwilio));
    }
}
