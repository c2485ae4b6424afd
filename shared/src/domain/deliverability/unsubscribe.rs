//! One-click unsubscribe tokens (RFC 8058 links Herald hosts): who is leaving what, signed with
//! HMAC-SHA256 under a server key. Keys rotate: the first signs, every key listed verifies, and
//! each token names its key by a short id so verifying tries one key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::suppression::Topic;
use crate::domain::{Channel, TenantId};

/// The longest token accepted: an address of 320 characters and a topic fit well inside.
pub const MAX_TOKEN_CHARS: usize = 1024;
/// Bytes of the MAC kept: 128 bits is beyond guessing.
const MAC_BYTES: usize = 16;
/// Keys shorter than this are refused at start-up.
pub const MIN_KEY_BYTES: usize = 32;

/// Who leaves which list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    #[serde(rename = "t")]
    pub tenant: TenantId,
    #[serde(rename = "c")]
    pub channel: Channel,
    #[serde(rename = "a")]
    pub address: String,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Topic>,
}

/// The server keys, newest first.
#[derive(Clone, Default)]
pub struct UnsubscribeKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for UnsubscribeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnsubscribeKeys({} keys)", self.0.len())
    }
}

impl UnsubscribeKeys {
    pub fn new(keys: Vec<Vec<u8>>) -> Result<UnsubscribeKeys, String> {
        if keys.iter().any(|k| k.len() < MIN_KEY_BYTES) {
            return Err(format!(
                "an unsubscribe key must be at least {MIN_KEY_BYTES} bytes"
            ));
        }
        Ok(UnsubscribeKeys(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `<payload>.<key id>.<mac>`, each base64url; None without a key.
    pub fn sign(&self, u: &Unsubscribe) -> Option<String> {
        let key = self.0.first()?;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(u).ok()?);
        let id = key_id(key);
        let mac = URL_SAFE_NO_PAD.encode(mac(key, &id, &payload)?);
        Some(format!("{payload}.{id}.{mac}"))
    }

    /// The unsubscribe a token carries, when one of the keys signed it unchanged.
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let mut parts = token.split('.');
        let (payload, id, given) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let key = self.0.iter().find(|k| key_id(k) == id)?;
        let given = URL_SAFE_NO_PAD.decode(given).ok()?;
        if given.len() != MAC_BYTES {
            return None;
        }
        let mut check = Hmac::<Sha256>::new_from_slice(key).ok()?;
        check.update(format!("{id}.{payload}").as_bytes());
        // Constant-time comparison of the truncated MAC.
        check.verify_truncated_left(&given).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

fn key_id(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(key: &[u8], id: &str, payload: &str) -> Option<Vec<u8>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
    m.update(format!("{id}.{payload}").as_bytes());
    Some(m.finalize().into_bytes()[..MAC_BYTES].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seeds: &[u8]) -> UnsubscribeKeys {
        UnsubscribeKeys::new(seeds.iter().map(|s| vec![*s; 32]).collect()).unwrap()
    }

    fn ann(topic: Option<&str>) -> Unsubscribe {
        Unsubscribe {
            tenant: TenantId::parse("acme").unwrap(),
            channel: Channel::Email,
            address: "ann@example.com".into(),
            topic: topic.map(|t| Topic::parse(t).unwrap()),
        }
    }

    #[test]
    fn a_token_round_trips_and_survives_a_key_rotation() {
        let old = keys(&[1]);
        let token = old.sign(&ann(Some("newsletter"))).unwrap();
        assert_eq!(old.verify(&token), Some(ann(Some("newsletter"))));
        // The new key signs; the old one still verifies what it signed.
        let rotated = keys(&[2, 1]);
        assert_eq!(rotated.verify(&token), Some(ann(Some("newsletter"))));
        assert_ne!(
            rotated.sign(&ann(None)).unwrap(),
            old.sign(&ann(None)).unwrap()
        );
        // Retired: no longer verifies.
        assert_eq!(keys(&[2]).verify(&token), None);
    }

    #[test]
    fn forged_or_edited_tokens_are_refused() {
        let k = keys(&[1]);
        let token = k.sign(&ann(None)).unwrap();
        let (payload, rest) = token.split_once('.').unwrap();
        // Another address under the same MAC.
        let mut other = ann(None);
        other.address = "bob@example.com".into();
        let edited = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(k.verify(&format!("{edited}.{rest}")), None);
        // Signed by a key Herald does not have.
        assert_eq!(k.verify(&keys(&[9]).sign(&ann(None)).unwrap()), None);
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{payload}.00000000.AAAA"),
            &"x".repeat(2000),
        ] {
            assert_eq!(k.verify(bad), None, "{bad}");
        }
        // A truncated MAC is not accepted as a prefix match.
        let short = &token[..token.len() - 4];
        assert_eq!(k.verify(short), None);
        assert!(UnsubscribeKeys::new(vec![vec![0; 8]]).is_err());
    }
}
