//! The embedded backend's media: files under `<data dir>/media/<tenant>/`, each beside a small
//! JSON file with its type, name and expiry. Written to a temporary name and renamed, so a
//! crash never leaves half a file under a real id.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::media::MediaId;
use crate::domain::TenantId;
use crate::ports::{MediaBody, MediaFile, MediaStore, StoreError};

pub struct FileMediaStore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    content_type: String,
    filename: Option<String>,
    expires_at: DateTime<Utc>,
}

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .map_err(|e| StoreError::Unavailable(format!("media files: {e}")))
}

impl FileMediaStore {
    pub fn new(dir: &Path) -> FileMediaStore {
        FileMediaStore {
            dir: dir.join("media"),
        }
    }

    fn path(&self, tenant: &TenantId, id: MediaId) -> PathBuf {
        // Tenant names are a-z, 0-9, '-' and '_': safe as a directory name.
        self.dir.join(tenant.as_str()).join(id.to_string())
    }
}

fn meta_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Writes `bytes` to `path` through a temporary file of its own and a rename, so two writes
/// of the same file at once each rename a whole one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A file left without its description (or a temporary one) by a crash mid-write: removed
/// once it is this old.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn older_than(path: &Path, age: std::time::Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

fn read_meta(path: &Path) -> std::io::Result<Option<Meta>> {
    match std::fs::read(meta_path(path)) {
        Ok(raw) => Ok(serde_json::from_slice(&raw).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn purge(dir: &Path, now: DateTime<Utc>) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(tenants) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for tenant in tenants.flatten() {
        for entry in std::fs::read_dir(tenant.path())?.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                if older_than(&path, ORPHAN_AGE) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_some() {
                continue;
            }
            let expired = match read_meta(&path)? {
                Some(meta) => meta.expires_at <= now,
                None => older_than(&path, ORPHAN_AGE),
            };
            if expired {
                let _ = std::fs::remove_file(meta_path(&path));
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[async_trait]
impl MediaStore for FileMediaStore {
    async fn put_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
        file: MediaFile,
    ) -> Result<(), StoreError> {
        let path = self.path(tenant, id);
        let meta = Meta {
            content_type: file.content_type,
            filename: file.filename,
            expires_at: file.expires_at,
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // The file first, its description last: a file without one is not served.
            write_atomically(&path, &file.bytes)?;
            write_atomically(&meta_path(&path), &meta)
        })
        .await
    }

    async fn open_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
    ) -> Result<Option<MediaBody>, StoreError> {
        let path = self.path(tenant, id);
        blocking(move || {
            let Some(meta) = read_meta(&path)? else {
                return Ok(None);
            };
            if meta.expires_at <= Utc::now() {
                return Ok(None);
            }
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(MediaBody::Bytes {
                    content_type: meta.content_type,
                    filename: meta.filename,
                    bytes,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn purge_media(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let dir = self.dir.clone();
        blocking(move || purge(&dir, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_their_tenants_own_and_go_when_their_retention_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMediaStore::new(dir.path());
        let (acme, other) = (
            TenantId::parse("acme").unwrap(),
            TenantId::parse("other").unwrap(),
        );
        let id = MediaId::derive(&acme, "twilio", "MM1", 0);
        let file = |days: i64| MediaFile {
            content_type: "image/png".into(),
            filename: Some("dog.png".into()),
            bytes: b"png bytes".to_vec(),
            expires_at: Utc::now() + chrono::Duration::days(days),
        };
        store.put_media(&acme, id, file(1)).await.unwrap();
        store.put_media(&acme, id, file(1)).await.unwrap();
        let opened = store.open_media(&acme, id).await.unwrap().unwrap();
        assert_eq!(
            opened,
            MediaBody::Bytes {
                content_type: "image/png".into(),
                filename: Some("dog.png".into()),
                bytes: b"png bytes".to_vec()
            }
        );
        assert_eq!(store.open_media(&other, id).await.unwrap(), None);
        let old = MediaId::derive(&acme, "twilio", "MM0", 0);
        store.put_media(&acme, old, file(-1)).await.unwrap();
        assert_eq!(store.open_media(&acme, old).await.unwrap(), None, "expired");
        assert_eq!(store.purge_media(Utc::now()).await.unwrap(), 1);
        assert!(!store.path(&acme, old).exists());
        assert!(store.open_media(&acme, id).await.unwrap().is_some());
    }
}
