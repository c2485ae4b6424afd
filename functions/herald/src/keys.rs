use anyhow::Context;
use shared::domain::TenantId;
use shared::embedded::{create_key, open_backend};
use shared::ports::TenantStore;

use crate::cli::KeysCommand;

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { tenant, data_dir } => {
            let tenant = TenantId::parse(&tenant).map_err(anyhow::Error::msg)?;
            let backend = open_backend(&data_dir)?;
            let key = create_key(&backend, &tenant)
                .await
                .context("creating the key")?;
            eprintln!(
                "Key for tenant `{tenant}` (prefix {}). It is not stored and is shown once:",
                key.prefix
            );
            println!("{}", key.expose());
            backend.close();
        }
        KeysCommand::Revoke {
            key_prefix,
            data_dir,
        } => {
            let backend = open_backend(&data_dir)?;
            let prefix = key_prefix
                .trim_start_matches("hk_")
                .split('_')
                .next()
                .unwrap_or_default()
                .to_owned();
            let revoked = backend.revoke_key(&prefix).await?;
            backend.close();
            if !revoked {
                anyhow::bail!("no active key with prefix {prefix:?}");
            }
            println!("revoked hk_{prefix}_…");
        }
    }
    Ok(())
}
