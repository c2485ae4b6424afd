//! Inbound media kept: an email's attachments when it is received, a message's linked files
//! (MMS, WhatsApp) by the inbound pipeline, each checked against the policy and stored under
//! an id made from the provider's message, so retries store nothing twice. A download that
//! fails for now makes the pipeline try the message again; after its last try the file is
//! recorded as failed, never dropped silently.

use std::time::Instant;

use chrono::Utc;
use tracing::warn;

use super::Herald;
use crate::domain::inbound_email::Attachment;
use crate::domain::media::{MediaId, MediaItem, MediaRefusal, MediaState};
use crate::domain::{InboundMessage, TenantId};
use crate::ports::{FetchError, MediaFile, StoreError};

/// Files downloaded per message at most (Twilio sends up to 10).
const MAX_LINKED_FILES: usize = 10;

/// What a try's downloads came to.
pub(crate) enum Downloads {
    /// Every file is stored, refused or failed for good.
    Settled,
    /// A download failed for now: try the message again.
    Retry,
}

impl Herald {
    /// Stores an email's attachments (file `i` of the provider's message gets the same id on
    /// every retry); what each came to.
    pub async fn store_attachments(
        &self,
        tenant: &TenantId,
        (gateway, provider_id): (&str, &str),
        attachments: Vec<Attachment>,
    ) -> Result<Vec<MediaItem>, StoreError> {
        let mut total = 0;
        let mut items = Vec::with_capacity(attachments.len());
        for (i, a) in attachments.into_iter().enumerate() {
            let id = MediaId::derive(tenant, gateway, provider_id, i);
            let declared = Some(a.info.content_type.as_str());
            let item = self
                .keep(
                    tenant,
                    id,
                    a.info.filename.clone(),
                    declared,
                    a.bytes,
                    &mut total,
                )
                .await?;
            items.push(item);
        }
        Ok(items)
    }

    /// Checks a file against the policy and stores it; `total` counts the message's bytes.
    async fn keep(
        &self,
        tenant: &TenantId,
        id: MediaId,
        filename: Option<String>,
        declared: Option<&str>,
        bytes: Vec<u8>,
        total: &mut u64,
    ) -> Result<MediaItem, StoreError> {
        let policy = &self.config.media;
        let size = bytes.len() as u64;
        let checked = match *total + size > policy.max_message_bytes {
            true => Err(MediaRefusal::MessageTooLarge),
            false => policy.check(declared, &bytes),
        };
        let content_type = match checked {
            Ok(t) => t,
            Err(refusal) => {
                let why = refusal.to_string();
                return Ok(MediaItem::not_stored(
                    id,
                    MediaState::Refused,
                    why,
                    filename,
                ));
            }
        };
        *total += size;
        let file = MediaFile {
            content_type: content_type.clone(),
            filename: filename.clone(),
            bytes,
            expires_at: Utc::now() + policy.retention(),
        };
        self.media.put_media(tenant, id, file).await?;
        Ok(MediaItem::stored(id, content_type, size, filename))
    }

    /// Downloads and stores the files a message links to that earlier tries did not settle,
    /// and records what each came to on the message.
    pub(crate) async fn download_media(
        &self,
        m: &InboundMessage,
        last_try: bool,
    ) -> Result<Downloads, StoreError> {
        if m.media_urls.is_empty() {
            return Ok(Downloads::Settled);
        }
        let mut items = m.media.clone();
        let mut total: u64 = items.iter().filter_map(|i| i.size).sum();
        let mut retry = false;
        // Downloads end well inside the claim's lease, so no other worker takes the message
        // meanwhile; what is left is tried again.
        let deadline = Instant::now() + self.config.inbound_lease / 2;
        for (i, source) in m.media_urls.iter().take(MAX_LINKED_FILES).enumerate() {
            let id = MediaId::derive(&m.tenant, &m.gateway, &m.provider_message_id, i);
            if items.iter().any(|item| item.id == id) {
                continue;
            }
            let max = self.config.media.max_file_bytes;
            let failed = |why: String| MediaItem::not_stored(id, MediaState::Failed, why, None);
            let left = deadline.saturating_duration_since(Instant::now());
            let fetched = tokio::time::timeout(left, self.media_fetcher.fetch(source, max))
                .await
                .unwrap_or_else(|_| Err(FetchError::Transient("download took too long".into())));
            let item = match fetched {
                Ok(f) => {
                    let declared = f.content_type.as_deref();
                    self.keep(&m.tenant, id, None, declared, f.bytes, &mut total)
                        .await?
                }
                Err(FetchError::TooLarge) => {
                    let why = MediaRefusal::TooLarge.to_string();
                    MediaItem::not_stored(id, MediaState::Refused, why, None)
                }
                Err(FetchError::Permanent(why)) => failed(why),
                Err(FetchError::Transient(why)) if last_try => failed(why),
                Err(FetchError::Transient(why)) => {
                    warn!(tenant = %m.tenant, inbound = %m.id, error = %why, "media download failed; trying again");
                    retry = true;
                    continue;
                }
            };
            items.push(item);
        }
        if items != m.media {
            self.inbound
                .set_inbound_media(&m.tenant, m.id, m.progress.attempts, &items)
                .await?;
        }
        Ok(if retry {
            Downloads::Retry
        } else {
            Downloads::Settled
        })
    }
}
