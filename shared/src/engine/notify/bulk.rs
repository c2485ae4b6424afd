//! A bulk send's recipients announced as `message.queued` (or `message.suppressed`) when the
//! job is accepted. Their messages are written later, part by part, so each payload is made
//! here from the job (the fields a single send's has: [`message_data`]), and the notifier
//! reads nothing.

use serde_json::Value;

use crate::domain::notify::{message_data, EventType, MessageFields, Notice, Subject};
use crate::domain::{BulkJob, MessageStatus};
use crate::engine::Herald;

/// Notices handed to the notifier at once.
const CHUNK: usize = 1000;

impl Herald {
    /// The notices for a job's recipients that the tenant's endpoints or streams want; none
    /// (and nothing built) when no one wants either type.
    pub(crate) async fn bulk_notices(&self, job: &BulkJob) -> Vec<Notice> {
        let [queued, suppressed] = self
            .tenant_wants(
                &job.tenant,
                [EventType::MessageQueued, EventType::MessageSuppressed],
            )
            .await;
        if !queued && !suppressed {
            return Vec::new();
        }
        let env = &job.envelope;
        job.recipients
            .iter()
            .filter_map(|r| {
                let (event_type, status, detail) = match &r.suppressed {
                    Some(note) if suppressed => (
                        EventType::MessageSuppressed,
                        MessageStatus::Suppressed,
                        note.clone(),
                    ),
                    None if queued => {
                        (EventType::MessageQueued, MessageStatus::Queued, Value::Null)
                    }
                    _ => return None,
                };
                let fields = MessageFields {
                    channel: env.channel,
                    to: &r.to,
                    source_type: env.source_type.as_deref(),
                    source_id: env.source_id.as_deref(),
                    external_id: r.external_id.as_deref(),
                    metadata: env.metadata.as_ref(),
                    bulk_id: Some(&job.bulk_id),
                    correlation_id: &env.correlation_id,
                };
                let data = message_data(r.id, status, detail, Some(fields));
                Some(Notice::new(
                    Some(job.tenant.clone()),
                    event_type,
                    Subject::Data { data },
                ))
            })
            .collect()
    }

    /// Hands a job's notices to the notifier, a chunk at a time.
    pub(crate) async fn announce_bulk(&self, mut notices: Vec<Notice>) {
        while !notices.is_empty() {
            let rest = notices.split_off(notices.len().min(CHUNK));
            self.notify(notices).await;
            notices = rest;
        }
    }
}
