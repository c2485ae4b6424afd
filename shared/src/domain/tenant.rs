use rand::Rng;
use sha2::{Digest, Sha256};

/// A tenant: the owner of messages, templates and keys. Every record is scoped by one.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(s: String) -> Result<TenantId, String> {
        TenantId::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl TenantId {
    /// Tenant names: 1-64 of `a-z 0-9 - _`.
    pub fn parse(s: &str) -> Result<TenantId, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(format!(
                "tenant name {s:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing a key may do: `send` (send and cancel messages), `read` (read messages, events,
/// suppressions, templates, stats) or `admin` (change configuration: templates, suppressions,
/// sender identities, webhook endpoints; read the audit log; redrive dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    Send,
    Read,
    Admin,
}

impl KeyScope {
    pub const ALL: [KeyScope; 3] = [KeyScope::Send, KeyScope::Read, KeyScope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Send => "send",
            KeyScope::Read => "read",
            KeyScope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The scopes a key has; a key made without naming any has all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyScopes(u8);

impl KeyScopes {
    pub const ALL: KeyScopes = KeyScopes(0b111);

    /// A comma-separated list (`send,read`): at least one, each known.
    pub fn parse(s: &str) -> Result<KeyScopes, String> {
        let mut bits = 0;
        for name in s.split(',').map(str::trim) {
            let scope = KeyScope::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .ok_or_else(|| format!("`{name}` is not a scope (send, read, admin)"))?;
            bits |= scope.bit();
        }
        Ok(KeyScopes(bits))
    }

    pub fn allows(self, scope: KeyScope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl std::fmt::Display for KeyScopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = KeyScope::ALL
            .into_iter()
            .filter(|k| self.allows(*k))
            .map(KeyScope::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// An API key as handed to its owner once: `hk_<prefix>_<secret>`. Only the prefix (to find the
/// record) and a SHA-256 of the whole key are stored; the secret has 192 bits of entropy, so a
/// fast hash is enough.
#[derive(Clone)]
pub struct ApiKey {
    pub prefix: String,
    pub secret: String,
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl ApiKey {
    pub fn generate() -> ApiKey {
        let mut rng = rand::thread_rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        ApiKey {
            prefix: pick(8),
            secret: pick(38),
        }
    }

    /// Splits a presented key into prefix and the whole; `None` when it is not shaped like a key.
    pub fn parse(presented: &str) -> Option<ApiKey> {
        let rest = presented.strip_prefix("hk_")?;
        let (prefix, secret) = rest.split_once('_')?;
        let valid = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
        (valid(prefix, 8) && valid(secret, 38)).then(|| ApiKey {
            prefix: prefix.into(),
            secret: secret.into(),
        })
    }

    pub fn expose(&self) -> String {
        format!("hk_{}_{}", self.prefix, self.secret)
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.expose().as_bytes()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(hk_{}_…)", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_back_as_written_and_unknown_ones_are_refused() {
        let s = KeyScopes::parse("read, send").unwrap();
        assert!(s.allows(KeyScope::Read) && s.allows(KeyScope::Send));
        assert!(!s.allows(KeyScope::Admin));
        assert_eq!(s.to_string(), "send,read");
        assert_eq!(
            KeyScopes::parse(&KeyScopes::ALL.to_string()),
            Ok(KeyScopes::ALL)
        );
        for bad in ["", "send,", "owner", "SEND"] {
            assert!(KeyScopes::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_keys_parse_back_and_hash_stably() {
        let key = ApiKey::generate();
        let parsed = ApiKey::parse(&key.expose()).map(|k| k.hash());
        assert_eq!(parsed, Some(key.hash()));
        assert_ne!(ApiKey::generate().hash(), key.hash());
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "hk_",
            "hk_abc_def",
            "sk_abcdefgh_0123456789012345678901234567890123456",
            "hk_ABCDEFGH_xx",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tenant_names() {
        assert!(TenantId::parse("dev").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("").is_err());
    }
}
