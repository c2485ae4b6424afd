//! Media that recipients send (MMS pictures, WhatsApp media, email attachments): downloaded
//! and stored by Herald, each file's type read from its bytes and held to a policy (an
//! allow-list, a size cap per file and per message), and kept for a retention period.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::TenantId;

/// A stored file's id. Derived from what it is (the provider's message and the file's place
/// in it), so a provider's retry stores the same file under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MediaId(Uuid);

impl MediaId {
    /// The id of file `index` of the provider's message `(gateway, provider_message_id)`.
    pub fn derive(
        tenant: &TenantId,
        gateway: &str,
        provider_message_id: &str,
        index: usize,
    ) -> MediaId {
        let digest = Sha256::digest(
            format!("{tenant}\n{gateway}\n{provider_message_id}\n{index}").as_bytes(),
        );
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        MediaId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    pub fn parse(s: &str) -> Option<MediaId> {
        Uuid::try_parse(s).ok().map(MediaId)
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What may be stored, and for how long. `[media]` in herald.toml, `HERALD_MEDIA` on AWS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaPolicy {
    pub max_file_bytes: u64,
    pub max_message_bytes: u64,
    /// Content types stored, as read from the bytes.
    pub allowed_types: Vec<String>,
    /// Days a file is kept.
    pub retention_days: u32,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            max_file_bytes: 10 * 1024 * 1024,
            max_message_bytes: 25 * 1024 * 1024,
            allowed_types: [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "image/heif",
                "application/pdf",
                "audio/mpeg",
                "audio/ogg",
                "audio/amr",
                "audio/mp4",
                "video/mp4",
                "video/3gpp",
                "text/plain",
                "text/vcard",
            ]
            .map(str::to_owned)
            .to_vec(),
            retention_days: 90,
        }
    }
}

/// Types no magic number shows; stored only when the bytes are UTF-8 text.
const TEXT_TYPES: [&str; 3] = ["text/plain", "text/vcard", "text/x-vcard"];

impl MediaPolicy {
    /// The type to store `bytes` as, or why they are refused: their type is read from the
    /// bytes and must be allowed, and a declared type must agree with it (a PNG header on an
    /// HTML page is refused).
    pub fn check(&self, declared: Option<&str>, bytes: &[u8]) -> Result<String, MediaRefusal> {
        if bytes.len() as u64 > self.max_file_bytes {
            return Err(MediaRefusal::TooLarge);
        }
        let declared = declared
            .map(|d| d.split(';').next().unwrap_or(d).trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty() && d != "application/octet-stream");
        let found = match infer::get(bytes).map(|t| t.mime_type().to_owned()) {
            Some(found) => found,
            None => match declared.as_deref() {
                Some(text) if TEXT_TYPES.contains(&text) && is_text(bytes) => text.to_owned(),
                _ => return Err(MediaRefusal::UnknownType),
            },
        };
        if let Some(d) = &declared {
            if !same_type(d, &found) {
                return Err(MediaRefusal::Mismatch);
            }
        }
        if !self.allowed_types.iter().any(|a| same_type(a, &found)) {
            return Err(MediaRefusal::NotAllowed);
        }
        Ok(found)
    }

    /// Refuses settings no deployment means: no files at all, or a retention past ten years.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_file_bytes == 0 || self.max_message_bytes < self.max_file_bytes {
            return Err(
                "media: max_file_bytes must be above 0 and at most max_message_bytes".into(),
            );
        }
        if self.retention_days > 3650 {
            return Err("media: retention_days must be at most 3650".into());
        }
        Ok(())
    }

    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.retention_days))
    }
}

fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|t| !t.contains('\0'))
}

/// The same type, allowing the usual aliases.
fn same_type(a: &str, b: &str) -> bool {
    let canonical = |t: &str| match t {
        "image/jpg" | "image/pjpeg" => "image/jpeg".to_owned(),
        "text/x-vcard" => "text/vcard".to_owned(),
        "audio/mp3" => "audio/mpeg".to_owned(),
        "audio/x-m4a" | "audio/m4a" => "audio/mp4".to_owned(),
        "image/heic" => "image/heif".to_owned(),
        other => other.to_owned(),
    };
    canonical(a) == canonical(b)
}

/// Why a file was not stored; its code is what the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaRefusal {
    #[error("too_large")]
    TooLarge,
    #[error("message_too_large")]
    MessageTooLarge,
    #[error("unknown_type")]
    UnknownType,
    #[error("type_mismatch")]
    Mismatch,
    #[error("type_not_allowed")]
    NotAllowed,
}

/// A file of an inbound message, as the message records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaItem {
    #[schema(value_type = String, format = Uuid)]
    pub id: MediaId,
    /// `stored`, `refused` (by the policy) or `failed` (the download, after its tries).
    pub state: MediaState,
    /// The type read from the bytes, once stored.
    pub content_type: Option<String>,
    pub size: Option<u64>,
    pub filename: Option<String>,
    /// Why it was refused or failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaState {
    Stored,
    Refused,
    Failed,
}

impl MediaItem {
    pub fn stored(id: MediaId, content_type: String, size: u64, filename: Option<String>) -> Self {
        MediaItem {
            id,
            state: MediaState::Stored,
            content_type: Some(content_type),
            size: Some(size),
            filename,
            error: None,
        }
    }

    pub fn not_stored(
        id: MediaId,
        state: MediaState,
        error: String,
        filename: Option<String>,
    ) -> Self {
        MediaItem {
            id,
            state,
            content_type: None,
            size: None,
            filename,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n";
    const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0";

    #[test]
    fn the_type_comes_from_the_bytes_and_must_agree_with_the_header() {
        let p = MediaPolicy::default();
        assert_eq!(p.check(Some("image/png"), PNG).unwrap(), "image/png");
        assert_eq!(p.check(None, PNG).unwrap(), "image/png");
        assert_eq!(
            p.check(Some("application/octet-stream"), PDF).unwrap(),
            "application/pdf"
        );
        assert_eq!(p.check(Some("image/png"), PDF), Err(MediaRefusal::Mismatch));
        assert_eq!(
            p.check(Some("image/png"), b"<html><script>x</script></html>"),
            Err(MediaRefusal::Mismatch)
        );
        assert_eq!(
            p.check(Some("image/png"), b"just some words"),
            Err(MediaRefusal::UnknownType)
        );
        assert_eq!(p.check(None, EXE), Err(MediaRefusal::NotAllowed));
        assert_eq!(
            p.check(Some("text/plain; charset=utf-8"), b"hello")
                .unwrap(),
            "text/plain"
        );
        assert_eq!(
            p.check(Some("text/plain"), b"\xff\xfe\0binary"),
            Err(MediaRefusal::UnknownType)
        );
        let small = MediaPolicy {
            max_file_bytes: 10,
            ..MediaPolicy::default()
        };
        assert_eq!(small.check(None, PNG), Err(MediaRefusal::TooLarge));
    }

    #[test]
    fn ids_are_the_same_for_the_same_file_only() {
        let acme = TenantId::parse("acme").unwrap();
        let id = MediaId::derive(&acme, "twilio", "MM1", 0);
        assert_eq!(id, MediaId::derive(&acme, "twilio", "MM1", 0));
        assert_ne!(id, MediaId::derive(&acme, "twilio", "MM1", 1));
        let other = TenantId::parse("other").unwrap();
        assert_ne!(id, MediaId::derive(&other, "twilio", "MM1", 0));
        assert_eq!(MediaId::parse(&id.to_string()), Some(id));
    }
}
