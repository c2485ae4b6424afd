//! Where stored media lives (embedded: files under the data directory; AWS: an S3 bucket),
//! and how provider media is downloaded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::media::MediaId;
use crate::domain::TenantId;

/// A file to store.
#[derive(Debug, Clone)]
pub struct MediaFile {
    pub content_type: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
    /// When retention removes it.
    pub expires_at: DateTime<Utc>,
}

/// How a stored file is handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaBody {
    /// Its bytes, served by Herald.
    Bytes {
        content_type: String,
        filename: Option<String>,
        bytes: Vec<u8>,
    },
    /// A URL that serves it for a short while (an S3 presigned URL).
    Url(String),
}

/// Tenants' stored media, each file under its tenant.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Stores a file (again: the same id holds the same file).
    async fn put_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
        file: MediaFile,
    ) -> Result<(), StoreError>;
    /// A tenant's file, unless it is missing or expired.
    async fn open_media(
        &self,
        tenant: &TenantId,
        id: MediaId,
    ) -> Result<Option<MediaBody>, StoreError>;
    /// Removes files whose retention ended by `now`; how many. (A bucket whose lifecycle
    /// expires them removes none here.)
    async fn purge_media(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;
}

/// A provider's file, downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The type the provider declared (checked against the bytes before storing).
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth trying again (a timeout, a 5xx, a 429).
    #[error("{0}")]
    Transient(String),
    /// It will not work (a 404, a refused credential).
    #[error("{0}")]
    Permanent(String),
    /// The file is over the size cap (said so, or found so while reading).
    #[error("too_large")]
    TooLarge,
}

/// Downloads provider media, with the provider's credentials where its URLs need them.
#[async_trait]
pub trait MediaFetcher: Send + Sync + 'static {
    /// Downloads `source` (a URL, or `whatsapp:<media id>`), at most `max_bytes`.
    async fn fetch(&self, source: &str, max_bytes: u64) -> Result<Fetched, FetchError>;
}
