//! Sending pace: token buckets per gateway (a provider's account rate) and per recipient
//! domain for email (what the big mailbox providers accept before they start deferring).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Channel, TenantId};

/// A bucket's pace: `per_second` tokens refill, up to `burst` (default: one second's worth).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    #[serde(default)]
    pub burst: Option<f64>,
}

impl Rate {
    /// A gateway without a configured pace: never short of tokens, but still pausable by the
    /// provider's Retry-After.
    pub const UNLIMITED: Rate = Rate {
        per_second: 1e9,
        burst: None,
    };

    pub fn is_unlimited(&self) -> bool {
        self.per_second >= Rate::UNLIMITED.per_second
    }

    pub fn per_second(per_second: f64) -> Rate {
        Rate {
            per_second,
            burst: None,
        }
    }

    pub fn capacity(&self) -> f64 {
        self.burst.unwrap_or(self.per_second).max(1.0)
    }
}

/// Mailbox providers that take mail for several domains pace them as one.
const PROVIDER_DOMAINS: &[(&str, &[&str])] = &[
    ("gmail", &["gmail.com", "googlemail.com"]),
    ("yahoo", &["yahoo.com", "ymail.com", "rocketmail.com"]),
    (
        "microsoft",
        &["outlook.com", "hotmail.com", "live.com", "msn.com"],
    ),
    ("aol", &["aol.com"]),
    ("icloud", &["icloud.com", "me.com", "mac.com"]),
];

/// The pace Herald assumes for the big mailbox providers unless configured otherwise: well
/// under what each accepts from a sender with a good reputation, so a burst is never deferred.
pub const DEFAULT_PROVIDER_RATES: &[(&str, f64)] = &[
    ("gmail", 100.0),
    ("microsoft", 50.0),
    ("yahoo", 50.0),
    ("aol", 20.0),
    ("icloud", 20.0),
];

/// The default share of every bucket the bulk lanes (P2, P3) may use.
pub const DEFAULT_BULK_SHARE: f64 = 0.8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Share (0-1] of each bucket the bulk lanes may use; the rest is kept for P0, P1 and P4.
    pub bulk_share: f64,
    /// Per gateway name (`ses`, `sandbox`, ...).
    pub gateways: BTreeMap<String, Rate>,
    /// Per recipient domain, or provider (`gmail`, `microsoft`, ...); over the defaults.
    pub domains: BTreeMap<String, Rate>,
    /// Per tenant, domain paces of its own (its own buckets).
    pub tenants: BTreeMap<String, BTreeMap<String, Rate>>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            bulk_share: DEFAULT_BULK_SHARE,
            gateways: BTreeMap::new(),
            domains: DEFAULT_PROVIDER_RATES
                .iter()
                .map(|(p, r)| ((*p).to_owned(), Rate::per_second(*r)))
                .collect(),
            tenants: BTreeMap::new(),
        }
    }
}

/// What a lane entry says about the buckets its send takes from (the channel and, for email,
/// the recipient's domain group), so a consumer can take tokens before it claims anything.
/// The domain group is a routing fact like the channel, not the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaceKey {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl PaceKey {
    pub fn of(channel: Channel, to: &str) -> PaceKey {
        let domain = match channel {
            Channel::Email => to.rsplit_once('@').map(|(_, d)| domain_group(d)),
            _ => None,
        };
        PaceKey { channel, domain }
    }
}

/// One bucket a send must take a token from.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    pub key: String,
    pub rate: Rate,
}

/// The bucket key of a recipient domain: its provider's when it has one.
fn domain_group(domain: &str) -> String {
    let domain = domain.to_ascii_lowercase();
    PROVIDER_DOMAINS
        .iter()
        .find(|(_, domains)| domains.contains(&domain.as_str()))
        .map(|(provider, _)| (*provider).to_owned())
        .unwrap_or(domain)
}

impl RateLimits {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.bulk_share > 0.0 && self.bulk_share <= 1.0) {
            return Err(format!(
                "bulk_share must be in (0, 1], not {}",
                self.bulk_share
            ));
        }
        let all = self
            .gateways
            .iter()
            .chain(&self.domains)
            .chain(self.tenants.values().flatten());
        for (name, rate) in all {
            let positive = rate.per_second > 0.0 && rate.per_second.is_finite();
            if !positive || rate.burst.is_some_and(|b| b < 1.0 || b.is_nan()) {
                return Err(format!(
                    "rate for {name}: per_second must be > 0 and burst >= 1"
                ));
            }
        }
        Ok(())
    }

    /// The buckets a send through `gateway` to `to` takes from: the gateway's, and for email
    /// the recipient domain's (the tenant's own pace for it, if it has one).
    pub fn buckets_for(
        &self,
        gateway: &str,
        tenant: &TenantId,
        channel: Channel,
        to: &str,
    ) -> Vec<BucketSpec> {
        self.buckets_of(gateway, tenant, &PaceKey::of(channel, to))
    }

    /// As [`RateLimits::buckets_for`], from what a lane entry carries.
    pub fn buckets_of(&self, gateway: &str, tenant: &TenantId, pace: &PaceKey) -> Vec<BucketSpec> {
        let mut buckets = Vec::with_capacity(2);
        buckets.push(BucketSpec {
            key: format!("gateway:{gateway}"),
            rate: self
                .gateways
                .get(gateway)
                .copied()
                .unwrap_or(Rate::UNLIMITED),
        });
        let Some(group) = pace
            .domain
            .as_ref()
            .filter(|_| pace.channel == Channel::Email)
        else {
            return buckets;
        };
        let own = self.tenants.get(tenant.as_str()).and_then(|d| d.get(group));
        if let Some(rate) = own {
            buckets.push(BucketSpec {
                key: format!("domain:{group}:tenant:{tenant}"),
                rate: *rate,
            });
        } else if let Some(rate) = self.domains.get(group) {
            buckets.push(BucketSpec {
                key: format!("domain:{group}"),
                rate: *rate,
            });
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_share_a_bucket_and_tenants_may_override() {
        let mut limits = RateLimits::default();
        limits.gateways.insert("ses".into(), Rate::per_second(14.0));
        limits
            .tenants
            .entry("acme".into())
            .or_default()
            .insert("gmail".into(), Rate::per_second(5.0));
        let globex = TenantId::parse("globex").unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let keys = |t: &TenantId, to: &str| -> Vec<String> {
            limits
                .buckets_for("ses", t, Channel::Email, to)
                .into_iter()
                .map(|b| b.key)
                .collect()
        };
        assert_eq!(
            keys(&globex, "a@GoogleMail.com"),
            ["gateway:ses", "domain:gmail"]
        );
        assert_eq!(
            keys(&globex, "a@gmail.com"),
            ["gateway:ses", "domain:gmail"]
        );
        assert_eq!(
            keys(&acme, "a@gmail.com"),
            ["gateway:ses", "domain:gmail:tenant:acme"]
        );
        assert_eq!(
            keys(&globex, "a@example.org"),
            ["gateway:ses"],
            "no pace for other domains"
        );
        let sms = limits.buckets_for("sandbox", &globex, Channel::Sms, "+15005550006");
        assert_eq!(sms.len(), 1);
        assert!(
            sms[0].rate.is_unlimited(),
            "unconfigured gateways are only pausable"
        );
        let bad = RateLimits {
            bulk_share: 1.5,
            ..RateLimits::default()
        };
        assert!(bad.validate().is_err());
    }
}
