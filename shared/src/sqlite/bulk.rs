//! Bulk sends, written in chunks: the job and its idempotency key are stored in one
//! transaction (that is the accept), then its messages are rendered and written a chunk per
//! transaction, each with the job's progress. Memory stays bounded whatever the job's size or
//! template, a large bulk never holds the writer for long, and a crash between chunks is
//! finished at the next start by [`SqliteBackend::resume_bulk_jobs`].

use std::sync::Arc;

use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{params, OptionalExtension};

use super::inserts::insert_messages;
use super::messages::{find_key, insert_key};
use super::SqliteBackend;
use crate::domain::{packed, BulkJob, NewMessage};
use crate::ports::{AcceptOutcome, BulkSummary, IdempotencyRecord, StoreError};

/// Bulk sends being written. The accepted job is written once and deleted once; its progress
/// is a row of its own, updated after every chunk. Kept in one row, every progress update
/// rewrote the whole job (SQLite writes a row whole): about 1.2 MB per chunk of a 10,000-recipient
/// send, copied and logged to the WAL 40 times. `job` holds the job's JSON deflated
/// (`domain/packed.rs`), a blob, or as text when an older Herald stored it.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bulk_job_bodies (
    bulk_id TEXT PRIMARY KEY,
    job TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bulk_job_progress (
    bulk_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    total INTEGER NOT NULL,
    next_index INTEGER NOT NULL
) WITHOUT ROWID;";

/// The most JSON a stored job may inflate to: far above a 32 MB bulk request's.
const STORED_JOB_LIMIT: usize = 256 * 1024 * 1024;

/// Messages per chunk, and the rendered content after which a chunk is cut short.
const CHUNK_MESSAGES: usize = 256;
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

impl SqliteBackend {
    pub(super) async fn accept_bulk_in_chunks(
        &self,
        job: BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        let stored = self.store_bulk_job(&job, idempotency).await?;
        if matches!(stored, AcceptOutcome::Accepted) {
            self.write_bulk(Arc::new(job), 0).await?;
        }
        Ok(stored)
    }

    /// The accept itself: the job and its idempotency key, durable before any message is
    /// written (a job stored but not written to the end is finished at the next start).
    pub async fn store_bulk_job(
        &self,
        job: &BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        let json = serde_json::to_vec(&job)
            .map_err(|e| StoreError::Corrupt(format!("bulk job does not serialize: {e}")))?;
        let packed = packed::pack(&json);
        let (bulk_id, rank) = (job.bulk_id.clone(), job.envelope.priority.rank());
        let (tenant, listed) = (job.tenant.clone(), BulkSummary::of(job));
        let total = job.recipients.len() as i64;
        self.writer
            .run(rank, move |conn| {
                if let Some(key) = &idempotency {
                    if let Some(existing) = find_key(conn, &key.tenant, &key.key)? {
                        return Ok(AcceptOutcome::KeyExists(existing));
                    }
                    insert_key(conn, key)?;
                }
                conn.prepare_cached("INSERT INTO bulk_job_bodies (bulk_id, job) VALUES (?1, ?2)")?
                    .execute(params![bulk_id, packed])?;
                conn.prepare_cached(
                    "INSERT INTO bulk_job_progress (bulk_id, tenant, total, next_index) \
                     VALUES (?1, ?2, ?3, 0)",
                )?
                .execute(params![bulk_id, tenant.as_str(), total])?;
                super::bulk_sends::list_bulk_send(conn, &tenant, &listed)?;
                Ok(AcceptOutcome::Accepted)
            })
            .await
    }

    /// Writes a job's messages from `next` on, chunk by chunk; the last chunk removes the job.
    /// The next chunk renders while the writer stores this one, so render and write overlap.
    async fn write_bulk(&self, job: Arc<BulkJob>, next: usize) -> Result<(), StoreError> {
        if job.recipients.is_empty() {
            return self.finish_bulk(&job, 0, Vec::new()).await;
        }
        let mut at = next;
        let mut chunk = render_chunk(&job, at).await?;
        while at < job.recipients.len() {
            let end = at + chunk.len().max(1);
            let store = self.finish_bulk(&job, end, chunk);
            let render_next = async {
                match end < job.recipients.len() {
                    true => render_chunk(&job, end).await,
                    false => Ok(Vec::new()),
                }
            };
            let (stored, rendered) = tokio::join!(store, render_next);
            stored?;
            chunk = rendered?;
            at = end;
        }
        Ok(())
    }

    /// Stores a chunk with the job's progress (`end`), or removes the job after its last one.
    async fn finish_bulk(
        &self,
        job: &BulkJob,
        end: usize,
        chunk: Vec<NewMessage>,
    ) -> Result<(), StoreError> {
        let done = end >= job.recipients.len();
        let bulk_id = job.bulk_id.clone();
        self.writer
            .run_rows(job.envelope.priority.rank(), chunk.len(), move |conn| {
                insert_messages(conn, &chunk)?;
                if done {
                    conn.prepare_cached("DELETE FROM bulk_job_bodies WHERE bulk_id = ?1")?
                        .execute([&bulk_id])?;
                    conn.prepare_cached("DELETE FROM bulk_job_progress WHERE bulk_id = ?1")?
                        .execute([&bulk_id])?;
                } else {
                    conn.prepare_cached(
                        "UPDATE bulk_job_progress SET next_index = ?2 WHERE bulk_id = ?1",
                    )?
                    .execute(params![bulk_id, end as i64])?;
                }
                Ok(())
            })
            .await
    }

    /// Finishes the bulk jobs a previous process accepted but did not write to the end.
    /// Returns how many it finished.
    pub async fn resume_bulk_jobs(&self) -> Result<usize, StoreError> {
        let mut resumed = 0;
        while let Some((json, next)) = self.next_unfinished_job().await? {
            let job: BulkJob = serde_json::from_slice(&json)
                .map_err(|e| StoreError::Corrupt(format!("stored bulk job: {e}")))?;
            self.write_bulk(Arc::new(job), next).await?;
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The JSON of a job not yet written to the end, and where its writing stopped.
    async fn next_unfinished_job(&self) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        self.readers
            .run(|conn| {
                conn.query_row(
                    "SELECT b.job, p.next_index FROM bulk_job_progress p \
                     JOIN bulk_job_bodies b USING (bulk_id) LIMIT 1",
                    [],
                    |r| Ok((job_json(r.get_ref(0)?)?, r.get::<_, i64>(1)? as usize)),
                )
                .optional()
            })
            .await
    }
}

/// A stored job's JSON: deflated (a blob), or as text from a Herald before that.
fn job_json(stored: ValueRef<'_>) -> rusqlite::Result<Vec<u8>> {
    let corrupt = |e: String| FromSqlError::Other(e.into());
    match stored {
        ValueRef::Blob(b) => {
            packed::unpack(b, STORED_JOB_LIMIT).map_err(|e| corrupt(e.to_string()).into())
        }
        ValueRef::Text(t) => Ok(t.to_vec()),
        other => Err(corrupt(format!("a stored job of type {:?}", other.data_type())).into()),
    }
}

/// The chunk of `job`'s messages from `from`, rendered on a blocking thread.
async fn render_chunk(job: &Arc<BulkJob>, from: usize) -> Result<Vec<NewMessage>, StoreError> {
    let source = job.clone();
    tokio::task::spawn_blocking(move || source.chunk_from(from, CHUNK_MESSAGES, CHUNK_BYTES))
        .await
        .map_err(|e| StoreError::Unavailable(format!("bulk render stopped: {e}")))?
        .map_err(|e| StoreError::Corrupt(format!("bulk job {} does not render: {e}", job.bulk_id)))
}
