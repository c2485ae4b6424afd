//! `herald keys`: API keys in a data directory, or in a deployed stack's DynamoDB tables.

use anyhow::Context;
use shared::domain::audit::{Actor, AuditAction, AuditEntry};
use shared::domain::suppression::Scope;
use shared::domain::TenantId;
use shared::embedded::create_key;

use crate::cli::KeysCommand;
use crate::store::DirectStore;

impl DirectStore {
    /// Records a key's creation or revocation, by the operator at this terminal.
    async fn record(
        &self,
        tenant: &TenantId,
        action: AuditAction,
        prefix: &str,
        detail: Option<serde_json::Value>,
    ) {
        let mut entry = AuditEntry::now(Scope::Tenant(tenant.clone()), operator(), action)
            .target(Actor::Key(prefix.to_owned()).label());
        if let Some(detail) = detail {
            entry = entry.detail(detail);
        }
        if let Err(e) = self.audit().append(&entry).await {
            eprintln!("warning: the audit log did not take the entry: {e}");
        }
    }
}

/// The operator as the audit log names them: the login name, else `operator`.
fn operator() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_default();
    Actor::parse(&format!("cli:{user}")).unwrap_or_else(|| Actor::Cli("operator".into()))
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            tenant,
            scopes,
            store,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(anyhow::Error::msg)?;
            let keys = DirectStore::open(&store).await?;
            let key = create_key(keys.tenants(), &tenant, scopes)
                .await
                .context("creating the key");
            if let Ok(key) = &key {
                let detail = serde_json::json!({ "scopes": scopes.to_string() });
                keys.record(&tenant, AuditAction::KeyCreated, &key.prefix, Some(detail))
                    .await;
            }
            keys.close();
            let key = key?;
            eprintln!(
                "Key for tenant `{tenant}` (prefix {}, scopes {scopes}). It is not stored and is shown once:",
                key.prefix
            );
            println!("{}", key.expose());
        }
        KeysCommand::Revoke { key_prefix, store } => {
            let prefix = key_prefix
                .trim_start_matches("hk_")
                .split('_')
                .next()
                .unwrap_or_default()
                .to_owned();
            let keys = DirectStore::open(&store).await?;
            let owner = keys.tenants().find_key(&prefix).await;
            let revoked = keys.tenants().revoke_key(&prefix).await;
            if let (Ok(Some(owner)), Ok(true)) = (&owner, &revoked) {
                keys.record(&owner.tenant, AuditAction::KeyRevoked, &prefix, None)
                    .await;
            }
            keys.close();
            if !revoked? {
                anyhow::bail!("no active key with prefix {prefix:?}");
            }
            println!("revoked hk_{prefix}_…");
        }
    }
    Ok(())
}
