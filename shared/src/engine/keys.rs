//! API keys: made here, stored as a hash by whichever backend holds the tenants.

use crate::domain::secret::constant_time_eq;
use crate::domain::suppression::Scope;
use crate::domain::{ApiKey, KeyScopes, TenantId};
use crate::ports::{StoreError, StoredKey, TenantStore};

/// Makes a new key for a tenant (creating the tenant if needed).
pub async fn create_key(
    tenants: &dyn TenantStore,
    tenant: &TenantId,
    scopes: KeyScopes,
) -> Result<ApiKey, StoreError> {
    tenants.ensure_tenant(tenant).await?;
    let key = ApiKey::generate();
    tenants
        .add_key(tenant, &key.prefix, &key.hash(), scopes)
        .await?;
    Ok(key)
}

/// What a presented key turned out to be.
pub enum KeyCheck {
    /// Not shaped like a key: it names no tenant, so a refusal is only counted.
    Malformed,
    /// A key that is not valid, with the log its refusal belongs in (its tenant's when its
    /// prefix names a key, else the platform's) and why.
    Refused {
        scope: Scope,
        reason: &'static str,
        prefix: String,
    },
    Valid {
        stored: StoredKey,
        prefix: String,
    },
}

/// Checks a presented key against its stored hash, in constant time.
pub async fn check_key(tenants: &dyn TenantStore, presented: &str) -> Result<KeyCheck, StoreError> {
    let Some(key) = ApiKey::parse(presented) else {
        return Ok(KeyCheck::Malformed);
    };
    let refused = |scope, reason| KeyCheck::Refused {
        scope,
        reason,
        prefix: key.prefix.clone(),
    };
    Ok(match tenants.find_key(&key.prefix).await? {
        None => refused(Scope::Global, "unknown key"),
        Some(s) if s.revoked => refused(Scope::Tenant(s.tenant), "revoked key"),
        Some(s) if !constant_time_eq(s.key_hash.as_bytes(), key.hash().as_bytes()) => {
            refused(Scope::Tenant(s.tenant), "wrong secret for the key's prefix")
        }
        Some(stored) => KeyCheck::Valid {
            stored,
            prefix: key.prefix.clone(),
        },
    })
}
