//! The store itself, for the commands that work without a server (`herald keys`,
//! `herald audit platform`, `herald upgrade`): a data directory, or a deployed stack's
//! DynamoDB tables.

use std::sync::Arc;

use shared::aws::settings::Tables;
use shared::aws::DynamoStore;
use shared::aws::{sdk_config, AwsBackend, AwsSettings};
use shared::embedded::open_backend;
use shared::ports::{AuditLog, TenantStore};
use shared::sqlite::SqliteBackend;

use crate::cli::StoreLocation;

/// The store the flags name.
pub enum DirectStore {
    Local(SqliteBackend),
    Stack(Arc<DynamoStore>),
}

impl DirectStore {
    pub async fn open(store: &StoreLocation) -> anyhow::Result<DirectStore> {
        Ok(match &store.aws_stack {
            None => DirectStore::Local(open_backend(&store.data_dir)?),
            Some(stack) => {
                let sdk = sdk_config(None, store.aws_region.as_deref()).await;
                let settings = AwsSettings {
                    tables: Tables::of_stack(stack),
                    ..AwsSettings::from_vars(|_| None)?
                };
                DirectStore::Stack(AwsBackend::new(&sdk, &settings).store)
            }
        })
    }

    pub fn tenants(&self) -> &dyn TenantStore {
        match self {
            DirectStore::Local(backend) => backend,
            DirectStore::Stack(store) => store.as_ref(),
        }
    }

    pub fn audit(&self) -> &dyn AuditLog {
        match self {
            DirectStore::Local(backend) => backend,
            DirectStore::Stack(store) => store.as_ref(),
        }
    }

    /// Closes a data directory's database (a stack has nothing to close).
    pub fn close(self) {
        if let DirectStore::Local(backend) = self {
            backend.close();
        }
    }
}

/// `herald upgrade`: what an older version stored, in this version's layout.
pub async fn upgrade(location: &StoreLocation) -> anyhow::Result<()> {
    match DirectStore::open(location).await? {
        DirectStore::Local(backend) => {
            // Opening it ran its migrations.
            backend.close();
            println!("{}: up to date", location.data_dir.display());
        }
        DirectStore::Stack(store) => {
            let done = store.index_suppressions_by_address().await?;
            println!(
                "suppression look-ups written: {}; entries changed meanwhile (their own writes \
                 set them): {}; items that are no entry (see the log): {}",
                done.indexed, done.changed_meanwhile, done.unreadable
            );
            if !done.marked {
                anyhow::bail!(
                    "the suppression list is not marked as upgraded: fix or delete the {} \
                     items the log names, then run this again (until then the check also \
                     reads the entries themselves)",
                    done.unreadable
                );
            }
            // Every function runs this release now: dispatchers can create bulk messages.
            store.mark_claims_create().await?;
            println!("bulk messages are created at their claims from now on");
        }
    }
    Ok(())
}
