//! `herald keys`: API keys in a data directory, or in a deployed stack's DynamoDB tables.

use std::sync::Arc;

use anyhow::Context;
use shared::aws::settings::Tables;
use shared::aws::DynamoStore;
use shared::aws::{sdk_config, AwsBackend, AwsSettings};
use shared::domain::audit::{Actor, AuditAction, AuditEntry};
use shared::domain::suppression::Scope;
use shared::domain::TenantId;
use shared::embedded::{create_key, open_backend};
use shared::ports::{AuditLog, TenantStore};
use shared::sqlite::SqliteBackend;

use crate::cli::{KeyStore, KeysCommand};

/// The tenant store the flags name.
enum Keys {
    Local(SqliteBackend),
    Stack(Arc<DynamoStore>),
}

impl Keys {
    async fn open(store: &KeyStore) -> anyhow::Result<Keys> {
        Ok(match &store.aws_stack {
            None => Keys::Local(open_backend(&store.data_dir)?),
            Some(stack) => {
                let sdk = sdk_config(None, store.aws_region.as_deref()).await;
                let settings = AwsSettings {
                    tables: Tables::of_stack(stack),
                    ..AwsSettings::from_vars(|_| None)?
                };
                Keys::Stack(AwsBackend::new(&sdk, &settings).store)
            }
        })
    }

    fn tenants(&self) -> &dyn TenantStore {
        match self {
            Keys::Local(backend) => backend,
            Keys::Stack(store) => store.as_ref(),
        }
    }

    fn audit(&self) -> &dyn AuditLog {
        match self {
            Keys::Local(backend) => backend,
            Keys::Stack(store) => store.as_ref(),
        }
    }

    /// Records a key's creation or revocation, by the operator at this terminal.
    async fn record(&self, tenant: &TenantId, action: AuditAction, prefix: &str) {
        let entry = AuditEntry::now(Scope::Tenant(tenant.clone()), operator(), action)
            .target(format!("hk_{prefix}"));
        if let Err(e) = self.audit().append(&entry).await {
            eprintln!("warning: the audit log did not take the entry: {e}");
        }
    }

    fn close(self) {
        if let Keys::Local(backend) = self {
            backend.close();
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
        KeysCommand::Create { tenant, store } => {
            let tenant = TenantId::parse(&tenant).map_err(anyhow::Error::msg)?;
            let keys = Keys::open(&store).await?;
            let key = create_key(keys.tenants(), &tenant)
                .await
                .context("creating the key");
            if let Ok(key) = &key {
                keys.record(&tenant, AuditAction::KeyCreated, &key.prefix)
                    .await;
            }
            keys.close();
            let key = key?;
            eprintln!(
                "Key for tenant `{tenant}` (prefix {}). It is not stored and is shown once:",
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
            let keys = Keys::open(&store).await?;
            let owner = keys.tenants().find_key(&prefix).await;
            let revoked = keys.tenants().revoke_key(&prefix).await;
            if let (Ok(Some(owner)), Ok(true)) = (&owner, &revoked) {
                keys.record(&owner.tenant, AuditAction::KeyRevoked, &prefix)
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
