//! API keys: made here, stored as a hash by whichever backend holds the tenants.

use crate::domain::{ApiKey, KeyScopes, TenantId};
use crate::ports::{StoreError, TenantStore};

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
