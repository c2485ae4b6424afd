//! Bulk sends, written in chunks: the job and its idempotency key are stored in one
//! transaction (that is the accept), then its messages are rendered and written a chunk per
//! transaction, each with the job's progress. Memory stays bounded whatever the job's size or
//! template, a large bulk never holds the writer for long, and a crash between chunks is
//! finished at the next start by [`SqliteBackend::resume_bulk_jobs`].

use std::collections::VecDeque;
use std::sync::Arc;

use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{params, OptionalExtension};

use super::inserts::insert_messages;
use super::messages::{find_key, insert_key};
use super::pool::URGENT_RANKS;
use super::SqliteBackend;
use crate::detached::run_detached;
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

/// Chunks of one job waiting in the writer's queue at most, the one being written included
/// (with the one rendering, a job holds three chunks in memory).
const CHUNKS_QUEUED: usize = 2;

impl SqliteBackend {
    /// Stores the job, then writes its messages, in a task of its own: a request dropped
    /// half-way (its client gone) must not leave an accepted job unwritten until the next start.
    pub(super) async fn accept_bulk_in_chunks(
        &self,
        job: BulkJob,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AcceptOutcome, StoreError> {
        let backend = self.clone();
        let writing = async move { backend.store_and_write_bulk(job, idempotency).await };
        run_detached(writing)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("bulk accept cancelled".into())))
    }

    async fn store_and_write_bulk(
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
    /// The next chunk renders while the writer stores this one, and up to `CHUNKS_QUEUED`
    /// chunks wait in the writer's queue, so the writer never idles between two chunks while
    /// this task waits for its turn on a busy async worker. A bulk of a priority lane keeps one
    /// there: a P0 single send waits behind every urgent job queued before it.
    async fn write_bulk(&self, job: Arc<BulkJob>, next: usize) -> Result<(), StoreError> {
        let total = job.recipients.len();
        if total == 0 {
            return self.queue_chunk(&job, 0, 0, Vec::new())?.await;
        }
        let ahead = if job.envelope.priority.rank() < URGENT_RANKS {
            1
        } else {
            CHUNKS_QUEUED
        };
        let mut queued = VecDeque::with_capacity(ahead);
        let mut at = next;
        let mut chunk = render_chunk(&job, at).await?;
        while at < total {
            let end = at + chunk.len().max(1);
            queued.push_back(self.queue_chunk(&job, at, end, chunk)?);
            let oldest = if queued.len() >= ahead {
                queued.pop_front()
            } else {
                None
            };
            let settle_oldest = async {
                match oldest {
                    Some(stored) => stored.await,
                    None => Ok(()),
                }
            };
            let render_next = async {
                if end < total {
                    render_chunk(&job, end).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (stored, rendered) = tokio::join!(settle_oldest, render_next);
            stored?;
            chunk = rendered?;
            at = end;
        }
        for stored in queued {
            stored.await?;
        }
        Ok(())
    }

    /// Queues the chunk `from..end` with the job's progress, or the job's removal after its
    /// last chunk. The chunk is written only where the job's progress stands at `from`: if an
    /// earlier chunk failed, the chunks queued behind it write nothing, so no recipient is
    /// skipped, and the job is finished from where it stopped at the next start.
    fn queue_chunk(
        &self,
        job: &BulkJob,
        from: usize,
        end: usize,
        chunk: Vec<NewMessage>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, StoreError> {
        let done = end >= job.recipients.len();
        let bulk_id = job.bulk_id.clone();
        let rank = job.envelope.priority.rank();
        let written = self
            .writer
            .submit_rows_waking(rank, chunk.len(), move |conn| {
                // A compare-and-set on the progress: it moves (or goes, after the last chunk) only
                // from `from`. A failed chunk's savepoint undoes it with the chunk's rows.
                let (from, end) = (from as i64, end as i64);
                let moved = if done {
                    conn.prepare_cached(
                        "DELETE FROM bulk_job_progress WHERE bulk_id = ?1 AND next_index = ?2",
                    )?
                    .execute(params![bulk_id, from])?
                } else {
                    conn.prepare_cached(
                        "UPDATE bulk_job_progress SET next_index = ?3 \
                     WHERE bulk_id = ?1 AND next_index = ?2",
                    )?
                    .execute(params![bulk_id, from, end])?
                };
                if moved == 0 {
                    return progress_of(conn, &bulk_id).map(Err);
                }
                insert_messages(conn, &chunk)?;
                if done {
                    conn.prepare_cached("DELETE FROM bulk_job_bodies WHERE bulk_id = ?1")?
                        .execute([&bulk_id])?;
                }
                Ok(Ok(()))
            })?;
        let bulk_id = job.bulk_id.clone();
        Ok(async move {
            written.await?.map_err(|progress| {
                let stands = match progress {
                    Some(at) => format!("stands at recipient {at}"),
                    None => "is no longer stored".to_owned(),
                };
                StoreError::Unavailable(format!(
                    "bulk job {bulk_id}: its chunk from recipient {from} was not written, as the \
                     job {stands}"
                ))
            })
        })
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

/// Where a stored job's writing stands (none once it is finished).
fn progress_of(conn: &rusqlite::Connection, bulk_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT next_index FROM bulk_job_progress WHERE bulk_id = ?1")?
        .query_row([bulk_id], |r| r.get(0))
        .optional()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::domain::TenantId;
    use crate::ports::contract::bulk_job;
    use crate::ports::MessageStore;
    use crate::sqlite::pool::{RANKS, URGENT_RANKS};
    use crate::sqlite::SqliteBackend;

    /// The one number a counting query answers.
    fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A backend on a fresh database, and a connection of the test's own to look into it.
    fn opened() -> (tempfile::TempDir, SqliteBackend, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let backend = SqliteBackend::open(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        (dir, backend, conn)
    }

    /// Chunks wait in the writer's queue behind the one being written. When that one fails,
    /// those behind it write nothing (a chunk written past a gap would skip the gap's
    /// recipients for good), and the next start writes the rest, each recipient once.
    #[tokio::test]
    async fn a_failed_chunk_stops_the_chunks_queued_behind_it() {
        let (_dir, b, conn) = opened();
        let tenant = TenantId::parse("acme").unwrap();
        let job = bulk_job(&tenant, "bulk_gap", 1_000);
        // A bulk lane: a priority lane's bulk keeps one chunk queued, and nothing would be
        // behind the failed one.
        assert!(job.envelope.priority.rank() >= URGENT_RANKS);
        let ids: Vec<_> = job.recipients.iter().map(|r| r.id).collect();
        // Recipient 300 cannot be written, so the second chunk (256..512) fails.
        let refuse = format!(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON messages WHEN NEW.id = '{}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            ids[300]
        );
        conn.execute_batch(&refuse).unwrap();

        assert!(b.accept_bulk_in_chunks(job, None).await.is_err());
        // Every chunk queued behind the failed one has run once this job of the lowest rank has.
        b.writer.run(RANKS - 1, |_| Ok(())).await.unwrap();
        let written = "SELECT COUNT(*) FROM messages WHERE bulk_id = 'bulk_gap'";
        assert_eq!(
            count(&conn, written),
            256,
            "only the first chunk is written"
        );
        assert!(b.get(&tenant, ids[999]).await.unwrap().is_none());

        conn.execute_batch("DROP TRIGGER refuse_one;").unwrap();
        assert_eq!(b.resume_bulk_jobs().await.unwrap(), 1);
        assert_eq!(count(&conn, written), 1_000, "every recipient, once");
        for id in [ids[256], ids[300], ids[511], ids[999]] {
            assert!(b.get(&tenant, id).await.unwrap().is_some());
        }
        b.close_and_wait(Duration::from_secs(5)).await;
    }

    /// A request dropped once its job is stored (its client gone) still writes every message:
    /// the job is accepted, and nothing but the next start would finish it otherwise.
    #[tokio::test]
    async fn a_dropped_request_still_writes_its_whole_job() {
        let (_dir, b, conn) = opened();
        let job = bulk_job(&TenantId::parse("acme").unwrap(), "bulk_dropped", 5_000);
        let stored = "SELECT COUNT(*) FROM bulk_job_progress WHERE bulk_id = 'bulk_dropped'";
        let written = "SELECT COUNT(*) FROM messages WHERE bulk_id = 'bulk_dropped'";

        let mut accept = Box::pin(b.accept_bulk_in_chunks(job, None));
        while count(&conn, stored) == 0 {
            tokio::select! {
                _ = &mut accept => panic!("the whole job was written before it could be dropped"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        drop(accept);
        assert!(count(&conn, written) < 5_000, "dropped before the end");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while count(&conn, written) < 5_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            count(&conn, written),
            5_000,
            "every message, without a restart"
        );
        assert_eq!(count(&conn, stored), 0, "the finished job is removed");
        b.close_and_wait(Duration::from_secs(5)).await;
    }
}
