//! One writer thread with group commit, and a small pool of WAL readers.
//!
//! Every write is a job run inside its own savepoint, so one failing job does not undo the
//! others; the writer batches whatever jobs are waiting into one transaction, so throughput
//! does not pay one commit per message. Jobs wait in one queue per priority rank and the
//! writer drains the highest rank first: P0 work is never stuck behind a bulk backlog.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use crate::ports::StoreError;

/// Most jobs in one transaction: bounds how long a P0 job can wait for the one in progress.
const MAX_JOBS_PER_COMMIT: usize = 256;
pub(crate) const RANKS: usize = 5;

/// A unit of work for the writer. `run` may be called twice: once in the group transaction, and
/// again on its own (in a savepoint) if another job of the group failed.
trait Job: Send {
    fn run(&mut self, conn: &Connection) -> bool;
    fn complete(self: Box<Self>, committed: Result<(), String>);
}

struct TypedJob<F, R> {
    work: F,
    result: Option<Result<R, rusqlite::Error>>,
    reply: tokio::sync::oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Job for TypedJob<F, R>
where
    F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.work)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, committed: Result<(), String>) {
        let outcome = match (committed, self.result) {
            (Ok(()), Some(result)) => result.map_err(to_store_error),
            (Ok(()), None) => Err(StoreError::Unavailable("write job did not run".into())),
            (Err(e), _) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(outcome);
    }
}

struct Queues {
    ranks: [VecDeque<Box<dyn Job>>; RANKS],
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    /// Turns true when the writer thread has run its last job.
    stopped: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL with synchronous=NORMAL: a commit survives a process crash (kill -9) without an fsync
    // per transaction; only an OS crash can lose the last few commits.
    // A 4 MB page cache, not more: when a B-tree page split renumbers pages, SQLite parks a page
    // on the lock-byte page number (1 GiB / page size), and until the file is that large every
    // commit then scans the whole page-cache hash table, whose size follows the cache's.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-4000; PRAGMA foreign_keys=OFF;",
    )?;
    Ok(conn)
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                ranks: Default::default(),
                closed: false,
            }),
            ready: Condvar::new(),
            stopped: tokio::sync::watch::Sender::new(false),
        });
        let for_thread = shared.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || {
                writer_loop(&for_thread, conn);
                for_thread.stopped.send_replace(true);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { shared })
    }

    /// Runs `work` in the next group commit and returns its result once that commit is durable.
    /// `work` must be safe to run twice (it is re-run alone if another job of its group fails).
    pub(crate) async fn run<R, F>(&self, rank: usize, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel::<Result<R, StoreError>>();
        let job: Box<dyn Job> = Box::new(TypedJob {
            work,
            result: None,
            reply,
        });
        {
            let mut q = self.shared.queues.lock();
            if q.closed {
                return Err(StoreError::Unavailable("store is shut down".into()));
            }
            q.ranks[rank.min(RANKS - 1)].push_back(job);
        }
        self.shared.ready.notify_one();
        rx.await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?
    }

    pub(crate) fn close(&self) {
        self.shared.queues.lock().closed = true;
        self.shared.ready.notify_all();
    }

    /// Closes, then waits for the jobs already submitted; false if that took over `within`.
    pub(crate) async fn close_and_wait(&self, within: std::time::Duration) -> bool {
        self.close();
        let mut stopped = self.shared.stopped.subscribe();
        let done = tokio::time::timeout(within, stopped.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok());
        done
    }

    fn is_closed(&self) -> bool {
        self.shared.queues.lock().closed
    }
}

/// Copies WAL frames into the database file from its own thread and connection (PASSIVE: it
/// never blocks the writer). The writer's own auto-checkpoint (every 1000 pages) then finds
/// almost everything copied, finishes quickly, and lets the WAL restart from the beginning:
/// only a checkpoint between two of the writer's transactions can do that, so both are needed
/// to keep commits fast and the WAL file small.
pub(crate) fn start_checkpointer(path: &Path, writer: Writer) -> Result<(), StoreError> {
    let conn = open_connection(path).map_err(to_store_error)?;
    std::thread::Builder::new()
        .name("herald-sqlite-checkpoint".into())
        .spawn(move || {
            while !writer.is_closed() {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
            // Leave a small WAL behind on shutdown.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

fn exec(conn: &Connection, sql: &str) -> Result<(), String> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]).map(|_| ()))
        .map_err(|e| e.to_string())
}

/// Runs a group of jobs in one transaction. Fast path: no savepoints. If any job fails, the
/// group is rolled back and replayed with each job in its own savepoint, so one bad job never
/// undoes the others.
fn commit_group(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), String> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let mut all_ok = true;
    for job in jobs.iter_mut() {
        all_ok &= job.run(conn);
    }
    if all_ok {
        return exec(conn, "COMMIT").inspect_err(|_| {
            let _ = exec(conn, "ROLLBACK");
        });
    }
    exec(conn, "ROLLBACK")?;
    exec(conn, "BEGIN IMMEDIATE")?;
    for job in jobs.iter_mut() {
        exec(conn, "SAVEPOINT job")?;
        if job.run(conn) {
            exec(conn, "RELEASE job")?;
        } else {
            exec(conn, "ROLLBACK TO job")?;
            exec(conn, "RELEASE job")?;
        }
    }
    exec(conn, "COMMIT").inspect_err(|_| {
        let _ = exec(conn, "ROLLBACK");
    })
}

fn writer_loop(shared: &Shared, conn: Connection) {
    loop {
        let mut jobs: Vec<Box<dyn Job>> = {
            let mut q = shared.queues.lock();
            while q.ranks.iter().all(VecDeque::is_empty) && !q.closed {
                shared.ready.wait(&mut q);
            }
            if q.closed && q.ranks.iter().all(VecDeque::is_empty) {
                return;
            }
            let mut taken = Vec::new();
            for rank in q.ranks.iter_mut() {
                while taken.len() < MAX_JOBS_PER_COMMIT {
                    match rank.pop_front() {
                        Some(job) => taken.push(job),
                        None => break,
                    }
                }
            }
            taken
        };
        let committed = commit_group(&conn, &mut jobs);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "sqlite: group commit failed");
        }
        for job in jobs {
            job.complete(committed.clone());
        }
    }
}

/// Readers: WAL lets them run beside the writer.
pub(crate) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    pub(crate) fn open(path: &Path, count: usize) -> Result<Readers, StoreError> {
        let conns = (0..count.max(1))
            .map(|_| {
                open_connection(path)
                    .map(Mutex::new)
                    .map_err(to_store_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readers {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let start = me.next.fetch_add(1, Ordering::Relaxed);
            let n = me.conns.len();
            let guard = (0..n)
                .find_map(|i| me.conns[(start + i) % n].try_lock())
                .unwrap_or_else(|| me.conns[start % n].lock());
            f(&guard).map_err(to_store_error)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

pub(crate) fn to_store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}
