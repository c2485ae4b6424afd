//! One writer thread with group commit, and a small pool of WAL readers.
//!
//! Every write is a job run inside its own savepoint, so one failing job does not undo the
//! others; the writer batches whatever jobs are waiting into one transaction, so throughput
//! does not pay one commit per message. Jobs wait in one queue per priority rank and the
//! writer drains the highest rank first: P0 work is never stuck behind a bulk backlog. A
//! priority-lane job that arrives while a group of bulk work runs ends that group after the
//! job in progress, so it waits behind one batch, not a whole group; and a group that starts
//! with priority-lane jobs takes no bulk work after them, so their commit waits for none.

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use crate::ports::StoreError;

/// Most rows in one transaction (a job's weight is the rows it writes, one for a single-message
/// job): large groups pay fewer commits.
const MAX_WEIGHT_PER_COMMIT: usize = 2048;
pub(crate) const RANKS: usize = 5;
/// Jobs of these ranks (the priority lanes P0, P1, P4) cut a group of bulk work short: the
/// group commits what it ran and they go next, so they wait behind one job, not a group.
pub(crate) const URGENT_RANKS: usize = 3;
/// The rank of outcomes and callbacks: they are not on a priority message's way to its gateway,
/// so they never cut a group short. (A priority lane's worker records its batch's outcomes at
/// its lane's rank, with its next claim: `queue.rs`, `record_and_ack`.)
pub(crate) const OUTCOMES_RANK: usize = URGENT_RANKS;
/// Urgent-only groups in a row, while other jobs wait, after which a group with urgent jobs
/// takes other jobs too, as far as the weight budget allows.
const MAX_URGENT_ONLY_GROUPS: usize = 8;
/// WAL pages past which the writer checkpoints after a commit (SQLite's own default) when no
/// urgent job waits, and past which it checkpoints anyway, so a stream of urgent jobs that never
/// pauses cannot grow the WAL without bound.
const CHECKPOINT_PAGES: i32 = 1000;
const CHECKPOINT_PAGES_ANYWAY: i32 = 2 * CHECKPOINT_PAGES;
/// New WAL pages after which the writer wakes the checkpoint thread, so that it copies frames
/// on the other core while the writer works, and the writer's own checkpoint finds little left.
const BELL_PAGES: i32 = 256;

thread_local! {
    /// Pages in the WAL after the writer's last commit (its WAL hook runs on the writer thread).
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
    /// WAL pages when the writer last rang the checkpoint thread (or the WAL restarted).
    static BELL_RUNG_AT: Cell<i32> = const { Cell::new(0) };
}

/// The writer's WAL hook: it replaces SQLite's auto-checkpoint, which ran inside `COMMIT`,
/// before the group's jobs heard that they were durable, and ahead of urgent jobs.
fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Checkpoints from the writer, between two groups, once the WAL is long and no urgent job
/// waits: copying the frames the checkpoint thread has not copied yet, so that the WAL is all
/// copied when the writer's next transaction begins, which then restarts it.
fn checkpoint_when_idle(conn: &Connection, shared: &Shared) {
    let pages = WAL_PAGES.with(Cell::get);
    let bell = &shared.checkpoint_bell;
    if pages < CHECKPOINT_PAGES {
        // Short, or restarted: the thread copies again.
        bell.writer_waits.store(false, Ordering::SeqCst);
        bell.note(pages);
        return;
    }
    // From here the checkpoint is the writer's to take: the thread is not woken, and holds off
    // until the WAL has restarted, so that no run of its own is under way as the writer's
    // next transaction begins (which keeps the WAL from restarting; on a busy machine, often).
    bell.writer_waits.store(true, Ordering::SeqCst);
    let waiting = shared.urgent.load(Ordering::SeqCst) > 0;
    if waiting && pages < CHECKPOINT_PAGES_ANYWAY {
        return;
    }
    // Busy (1) only when the checkpoint thread held the checkpoint (PASSIVE waits for no
    // reader): the WAL did not restart, and the writer tries again after its next group.
    let busy = match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
        Ok(busy) => busy != 0,
        Err(e) => {
            tracing::warn!(error = %e, "wal checkpoint failed");
            false
        }
    };
    if !busy {
        WAL_PAGES.with(|p| p.set(0));
    }
}

/// How the writer wakes the checkpoint thread.
#[derive(Default)]
struct CheckpointBell {
    rung: Mutex<bool>,
    bell: Condvar,
    /// The WAL is long enough for the writer's own checkpoint: the thread skips its runs
    /// until the WAL has restarted.
    writer_waits: AtomicBool,
}

impl CheckpointBell {
    /// Rings once the WAL has grown by `BELL_PAGES` since the last ring (on the writer thread).
    fn note(&self, pages: i32) {
        // A restarted WAL is shorter than at the last ring: counted from its length.
        let last = BELL_RUNG_AT.with(Cell::get).min(pages);
        let ring = pages - last >= BELL_PAGES;
        BELL_RUNG_AT.with(|r| r.set(if ring { pages } else { last }));
        if ring {
            self.ring();
        }
    }

    fn ring(&self) {
        *self.rung.lock() = true;
        self.bell.notify_one();
    }

    /// Waits until rung or `timeout`; false while the writer waits for its own checkpoint.
    fn wait(&self, timeout: std::time::Duration) -> bool {
        let mut rung = self.rung.lock();
        if !*rung {
            self.bell.wait_for(&mut rung, timeout);
        }
        *rung = false;
        !self.writer_waits.load(Ordering::SeqCst)
    }
}

/// A unit of work for the writer. `run` may be called twice: once in the group transaction, and
/// again on its own (in a savepoint) if another job of the group failed.
trait Job: Send {
    fn weight(&self) -> usize;
    /// Whether taking it releases a job parked for its rank (see `Writer::park_rows`).
    fn wakes_parked(&self) -> bool;
    fn run(&mut self, conn: &Connection) -> bool;
    fn complete(self: Box<Self>, committed: Result<(), String>);
}

struct TypedJob<F, R> {
    weight: usize,
    wakes_parked: bool,
    work: F,
    result: Option<Result<R, rusqlite::Error>>,
    reply: tokio::sync::oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Job for TypedJob<F, R>
where
    F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send,
    R: Send,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn wakes_parked(&self) -> bool {
        self.wakes_parked
    }

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
    /// Jobs parked by idle priority-lane workers (their lane's claim), each to run right after
    /// the next accept of its rank, in that accept's group (`Writer::park_rows`).
    parked: [VecDeque<(u64, Box<dyn Job>)>; URGENT_RANKS],
    parked_seq: u64,
    closed: bool,
}

/// A parked job. Dropped, it is taken back, unless [`ParkedJob::ran`] says its result came
/// (so a caller that gives up half-way leaves no claim to run for nobody).
pub(crate) struct ParkedJob {
    shared: Arc<Shared>,
    rank: usize,
    ticket: u64,
    armed: bool,
}

impl ParkedJob {
    /// Takes it back: true when it had not been taken to run (it never will), false when it
    /// had been (its result comes), or the writer stopped.
    pub(crate) fn unpark(mut self) -> bool {
        self.armed = false;
        self.take_back()
    }

    /// Its result came: nothing to take back.
    pub(crate) fn ran(mut self) {
        self.armed = false;
    }

    fn take_back(&self) -> bool {
        let mut q = self.shared.queues.lock();
        let queue = &mut q.parked[self.rank];
        let at = queue.iter().position(|(t, _)| *t == self.ticket);
        at.and_then(|at| queue.remove(at)).is_some()
    }
}

impl Drop for ParkedJob {
    fn drop(&mut self) {
        if self.armed {
            self.take_back();
        }
    }
}

struct Shared {
    queues: Mutex<Queues>,
    /// Urgent jobs queued and not yet taken into a group.
    urgent: AtomicUsize,
    ready: Condvar,
    /// Turns true when the writer thread has run its last job.
    stopped: tokio::sync::watch::Sender<bool>,
    checkpoint_bell: CheckpointBell,
}

#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every statement the writer runs: at rusqlite's default of 16, the hot path's
    // statements evicted each other and were parsed again (7% of the writer's time).
    conn.set_prepared_statement_cache_capacity(256);
    // Plans that never depend on bound values. Without it SQLite reads a bound `LIMIT ?` while
    // planning, so binding it again expires the cached statement, and the next step parses and
    // plans it afresh: the lane queue's claim was re-prepared on every call, 20% of the
    // writer's time while single sends flowed. Every plan that needs an index names it.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
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

/// Work for the writer's idle time, one transaction per call, until it answers that none is
/// left (folding `delivered_marks` into their rows, `sets.rs`).
pub(crate) type IdleWork = fn(&Connection) -> rusqlite::Result<bool>;

/// How long no row may have changed before the writer's idle work starts (`IdleTime`).
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

impl Writer {
    pub(crate) fn start(conn: Connection, idle: Option<IdleWork>) -> Result<Writer, StoreError> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                ranks: Default::default(),
                parked: Default::default(),
                parked_seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            urgent: AtomicUsize::new(0),
            stopped: tokio::sync::watch::Sender::new(false),
            checkpoint_bell: CheckpointBell::default(),
        });
        let for_thread = shared.clone();
        conn.wal_hook(Some(note_wal_pages));
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || {
                writer_loop(&for_thread, conn, idle);
                for_thread.stopped.send_replace(true);
                // The checkpoint thread's last run (TRUNCATE) comes now, not up to 500 ms later.
                for_thread.checkpoint_bell.ring();
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
        self.run_rows(rank, 1, work).await
    }

    /// As `run`, for a job that writes about `rows` rows (a batch).
    pub(crate) async fn run_rows<R, F>(
        &self,
        rank: usize,
        rows: usize,
        work: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        self.submit_rows(rank, rows, work)?.await
    }

    /// As `run_rows`, but the job is queued now, when this is called, and the returned future
    /// only waits for its result: jobs submitted one after another from one task run in that
    /// order (a rank is first in, first out), without waiting for each other's commits.
    /// Dropping the future does not take the job back: it runs all the same.
    pub(crate) fn submit_rows<R, F>(
        &self,
        rank: usize,
        rows: usize,
        work: F,
    ) -> Result<impl std::future::Future<Output = Result<R, StoreError>>, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        self.submit(rank, rows, work, false)
    }

    /// As `submit_rows`, for a job that makes messages due on its rank's lane (an accept, a
    /// bulk chunk): taking it releases a claim parked for that rank (`park_rows`). Any other
    /// job releases none, so idle workers' own looks do not set each other's off, and a
    /// write that makes no work wakes no claim.
    pub(crate) fn submit_rows_waking<R, F>(
        &self,
        rank: usize,
        rows: usize,
        work: F,
    ) -> Result<impl std::future::Future<Output = Result<R, StoreError>>, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        self.submit(rank, rows, work, true)
    }

    fn submit<R, F>(
        &self,
        rank: usize,
        rows: usize,
        work: F,
        wakes_parked: bool,
    ) -> Result<impl std::future::Future<Output = Result<R, StoreError>>, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (job, result) = typed_job(rows, work, wakes_parked);
        {
            let mut q = self.shared.queues.lock();
            if q.closed {
                return Err(StoreError::ShutDown);
            }
            let rank = rank.min(RANKS - 1);
            if rank < URGENT_RANKS {
                self.shared.urgent.fetch_add(1, Ordering::SeqCst);
            }
            q.ranks[rank].push_back(job);
        }
        self.shared.ready.notify_one();
        Ok(result)
    }

    /// Parks a job of an urgent `rank` (an idle priority-lane worker's claim): once a job of
    /// that rank submitted with [`Writer::submit_rows_waking`] (an accept) is taken into a
    /// group, one parked job runs right after that rank's jobs, in the same transaction, so the
    /// claim takes the accepted message in the accept's own commit. Until then it does not run
    /// at all: take it back with [`ParkedJob::unpark`], or by dropping it.
    pub(crate) fn park_rows<R, F>(
        &self,
        rank: usize,
        rows: usize,
        work: F,
    ) -> Result<
        (
            ParkedJob,
            impl std::future::Future<Output = Result<R, StoreError>>,
        ),
        StoreError,
    >
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        if rank >= URGENT_RANKS {
            return Err(StoreError::Unavailable(format!("rank {rank} cannot park")));
        }
        let (job, result) = typed_job(rows, work, false);
        let mut q = self.shared.queues.lock();
        if q.closed {
            return Err(StoreError::ShutDown);
        }
        q.parked_seq += 1;
        let ticket = q.parked_seq;
        q.parked[rank].push_back((ticket, job));
        let shared = self.shared.clone();
        let parked = ParkedJob {
            shared,
            rank,
            ticket,
            armed: true,
        };
        Ok((parked, result))
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
}

/// A job and the future of its result.
fn typed_job<R, F>(
    rows: usize,
    work: F,
    wakes_parked: bool,
) -> (
    Box<dyn Job>,
    impl std::future::Future<Output = Result<R, StoreError>>,
)
where
    R: Send + 'static,
    F: Fn(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
{
    let (reply, rx) = tokio::sync::oneshot::channel::<Result<R, StoreError>>();
    let job = Box::new(TypedJob {
        weight: rows.max(1),
        wakes_parked,
        work,
        result: None,
        reply,
    });
    let result = async move {
        rx.await
            .map_err(|_| StoreError::Unavailable("writer thread stopped".into()))?
    };
    (job, result)
}

/// Copies WAL frames into the database file from its own thread and connection (PASSIVE: it
/// never blocks the writer), each time the writer has added `BELL_PAGES` and at least every
/// 500 ms. The writer's own checkpoint (`checkpoint_when_idle`, past 1000 pages) then finds
/// most frames copied, and lets the WAL restart from the beginning: the WAL restarts only
/// when it is all copied as a writer's transaction begins, which a checkpoint the writer makes
/// between two of its transactions ensures, so both are needed to keep commits fast and the
/// WAL file small.
pub(crate) fn start_checkpointer(path: &Path, writer: Writer) -> Result<(), StoreError> {
    let conn = open_connection(path).map_err(to_store_error)?;
    std::thread::Builder::new()
        .name("herald-sqlite-checkpoint".into())
        .spawn(move || {
            let bell = &writer.shared.checkpoint_bell;
            // Until the writer's thread has made its last commit, so that the final TRUNCATE
            // finds nothing left to copy after it.
            loop {
                let writer_free = bell.wait(std::time::Duration::from_millis(500));
                if *writer.shared.stopped.borrow() {
                    break;
                }
                if writer_free {
                    let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = copied {
                        tracing::warn!(error = %e, "wal checkpoint failed");
                    }
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
/// Returns how many of the group's jobs ran; the rest go back to their queues.
fn commit_group(
    conn: &Connection,
    group: &mut Group,
    urgent: &AtomicUsize,
) -> (Result<(), String>, usize) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        return (Err(e), group.jobs.len());
    }
    let mut ran = 0;
    let mut all_ok = true;
    while ran < group.jobs.len() && group.runs_before_urgent(ran, urgent) {
        all_ok &= group.jobs[ran].run(conn);
        ran += 1;
    }
    (finish_group(conn, &mut group.jobs[..ran], all_ok), ran)
}

/// Commits the jobs that ran; on a failure, replays them each in its own savepoint.
fn finish_group(conn: &Connection, jobs: &mut [Box<dyn Job>], all_ok: bool) -> Result<(), String> {
    if all_ok {
        return exec(conn, "COMMIT").inspect_err(|_| {
            let _ = exec(conn, "ROLLBACK");
        });
    }
    exec(conn, "ROLLBACK")?;
    exec(conn, "BEGIN IMMEDIATE")?;
    // Whatever fails in the replay, the transaction must not stay open: every later group's
    // BEGIN would fail.
    replay_in_savepoints(conn, jobs)
        .and_then(|()| exec(conn, "COMMIT"))
        .inspect_err(|_| {
            let _ = exec(conn, "ROLLBACK");
        })
}

fn replay_in_savepoints(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), String> {
    for job in jobs.iter_mut() {
        exec(conn, "SAVEPOINT job")?;
        if !job.run(conn) {
            exec(conn, "ROLLBACK TO job")?;
        }
        exec(conn, "RELEASE job")?;
    }
    Ok(())
}

fn writer_loop(shared: &Shared, conn: Connection, idle: Option<IdleWork>) {
    let mut taker = Taker::default();
    let mut idle = IdleTime::new(idle, &conn);
    loop {
        let mut group = match next_work(shared, &mut taker, idle.due_in()) {
            Next::Group(group) => group,
            Next::Idle => {
                idle.run(&conn);
                checkpoint_when_idle(&conn, shared);
                continue;
            }
            Next::Closed => return,
        };
        let started = std::time::Instant::now();
        let (committed, ran) = commit_group(&conn, &mut group, &shared.urgent);
        crate::telemetry::writer_commit(started.elapsed());
        taker.ran(&group, ran);
        let jobs = put_back_unrun(shared, group, ran);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "sqlite: group commit failed");
        }
        for job in jobs {
            job.complete(committed.clone());
        }
        idle.after_group(&conn);
        checkpoint_when_idle(&conn, shared);
    }
}

/// The writer's idle work and when it is due. Idle means no row changed for `IDLE_AFTER`,
/// not no job: idle lane workers look for work every 100 ms, and a look that finds none
/// changes nothing.
struct IdleTime {
    work: Option<IdleWork>,
    state: IdleState,
    /// `total_changes` as last seen, and when it last moved by a job's writes.
    changes: u64,
    last_change: std::time::Instant,
}

/// None to do until a job changes something, due once nothing has changed for `IDLE_AFTER`, or
/// under way (its next transaction runs as soon as no job waits).
#[derive(Clone, Copy)]
enum IdleState {
    Done,
    Pending,
    Running,
}

impl IdleTime {
    fn new(work: Option<IdleWork>, conn: &Connection) -> IdleTime {
        IdleTime {
            state: match work {
                Some(_) => IdleState::Pending,
                None => IdleState::Done,
            },
            work,
            changes: conn.total_changes(),
            last_change: std::time::Instant::now(),
        }
    }

    /// How long until the idle work is due; `None` while there is none.
    fn due_in(&self) -> Option<std::time::Duration> {
        match self.state {
            IdleState::Done => None,
            IdleState::Running => Some(std::time::Duration::ZERO),
            IdleState::Pending => Some(IDLE_AFTER.saturating_sub(self.last_change.elapsed())),
        }
    }

    fn after_group(&mut self, conn: &Connection) {
        let changes = conn.total_changes();
        if changes != self.changes && self.work.is_some() {
            (self.changes, self.last_change) = (changes, std::time::Instant::now());
            self.state = IdleState::Pending;
        }
    }

    fn run(&mut self, conn: &Connection) {
        let more = self.work.is_some_and(|work| run_idle(conn, work));
        self.state = match more {
            true => IdleState::Running,
            false => IdleState::Done,
        };
        // Its own changes are not a job's: they do not put the idle time off.
        self.changes = conn.total_changes();
    }
}

enum Next {
    Group(Group),
    Idle,
    Closed,
}

/// Waits for the next group of jobs, or until the idle work is due (`idle_in`) with no job
/// waiting.
fn next_work(shared: &Shared, taker: &mut Taker, idle_in: Option<std::time::Duration>) -> Next {
    let mut q = shared.queues.lock();
    let empty = |q: &Queues| q.ranks.iter().all(VecDeque::is_empty) && !q.closed;
    while empty(&q) {
        match idle_in {
            None => shared.ready.wait(&mut q),
            Some(wait) => {
                if wait.is_zero() || (shared.ready.wait_for(&mut q, wait).timed_out() && empty(&q))
                {
                    return Next::Idle;
                }
            }
        }
    }
    if q.closed && q.ranks.iter().all(VecDeque::is_empty) {
        // Parked jobs never run now: their callers hear so.
        q.parked.iter_mut().for_each(VecDeque::clear);
        return Next::Closed;
    }
    let group = taker.next(shared, &mut q);
    crate::telemetry::writer_queue(q.ranks.iter().map(VecDeque::len).sum());
    Next::Group(group)
}

/// One transaction of idle work; whether more is left. A failure is logged and ends the idle
/// work until a job changes something (it is retried then, not in a loop).
fn run_idle(conn: &Connection, work: IdleWork) -> bool {
    let done = exec(conn, "BEGIN IMMEDIATE")
        .and_then(|()| work(conn).map_err(|e| e.to_string()))
        .and_then(|more| exec(conn, "COMMIT").map(|()| more));
    done.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "sqlite: the writer's idle work failed");
        let _ = exec(conn, "ROLLBACK");
        false
    })
}

/// Returns the first `ran` jobs; the others go back to the front of their queues, in order.
fn put_back_unrun(shared: &Shared, mut group: Group, ran: usize) -> Vec<Box<dyn Job>> {
    let rest = group.jobs.split_off(ran);
    if !rest.is_empty() {
        let mut q = shared.queues.lock();
        for (job, rank) in rest.into_iter().zip(&group.ranks[ran..]).rev() {
            q.ranks[*rank].push_front(job);
        }
    }
    group.jobs
}

/// Takes the groups, counting those in a row that ran no other job while others waited.
#[derive(Default)]
struct Taker {
    urgent_only_streak: usize,
    others_wait: bool,
}

impl Taker {
    fn next(&mut self, shared: &Shared, q: &mut Queues) -> Group {
        let forced = self.urgent_only_streak >= MAX_URGENT_ONLY_GROUPS;
        let mut group = take_group(shared, q, !forced);
        group.forced = forced;
        self.others_wait = q.ranks[URGENT_RANKS..].iter().any(|r| !r.is_empty());
        group
    }

    /// Counts a group that ran its first `ran` jobs.
    fn ran(&mut self, group: &Group, ran: usize) {
        let others = |ranks: &[usize]| ranks.iter().any(|r| *r >= URGENT_RANKS);
        let (done, put_back) = group.ranks.split_at(ran.min(group.ranks.len()));
        self.urgent_only_streak = if others(done) || !(self.others_wait || others(put_back)) {
            0
        } else {
            self.urgent_only_streak + 1
        };
    }
}

/// The next group: highest rank first, up to the weight budget (always at least one job). A
/// group with urgent jobs takes no other job, so they wait for no bulk work to run before their
/// commit, unless `urgent_alone` is false (so that a stream of urgent jobs cannot hold bulk
/// work back for good). One job parked for an urgent rank goes right after that rank's jobs,
/// if one of them made work for it (an accept).
fn take_group(shared: &Shared, q: &mut Queues, urgent_alone: bool) -> Group {
    let mut group = Group::default();
    let mut weight = 0;
    let Queues { ranks, parked, .. } = q;
    for (rank, queue) in ranks.iter_mut().enumerate() {
        if rank >= URGENT_RANKS && urgent_alone && group.is_urgent() {
            break;
        }
        let before = group.jobs.len();
        let mut full = false;
        while let Some(job) = queue.front() {
            if !group.jobs.is_empty() && weight + job.weight() > MAX_WEIGHT_PER_COMMIT {
                full = true;
                break;
            }
            weight += job.weight();
            if rank < URGENT_RANKS {
                shared.urgent.fetch_sub(1, Ordering::SeqCst);
            }
            group.jobs.extend(queue.pop_front());
            group.ranks.push(rank);
        }
        let woken = group.jobs[before..].iter().any(|j| j.wakes_parked());
        let parked_here = parked.get_mut(rank).filter(|_| woken);
        if let Some((_, job)) = parked_here.and_then(VecDeque::pop_front) {
            weight += job.weight();
            group.jobs.push(job);
            group.ranks.push(rank);
        }
        if full {
            break;
        }
    }
    group
}

/// Jobs taken for one transaction, with their ranks.
#[derive(Default)]
struct Group {
    jobs: Vec<Box<dyn Job>>,
    ranks: Vec<usize>,
    /// Taken after too many urgent-only groups: its first other job runs even if an urgent job
    /// comes meanwhile.
    forced: bool,
}

impl Group {
    /// Whether it starts with an urgent job (ranks are taken in order).
    fn is_urgent(&self) -> bool {
        self.ranks.first().is_some_and(|r| *r < URGENT_RANKS)
    }

    /// Whether the job at `at` runs in this group: every job does, but an urgent job queued
    /// meanwhile ends the group before the next non-urgent one.
    fn runs_before_urgent(&self, at: usize, urgent: &AtomicUsize) -> bool {
        let first_other = self.forced && at > 0 && self.ranks[at - 1] < URGENT_RANKS;
        at == 0
            || self.ranks[at] < URGENT_RANKS
            || first_other
            || urgent.load(Ordering::SeqCst) == 0
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

    /// A read of a few rows by key (an API key, an idempotency record, a contact's identity):
    /// it runs on the calling thread when a connection is free. Such a read takes microseconds,
    /// less than the two thread wake-ups of a hop to the blocking pool; on a busy machine that
    /// hop cost single sends a fifth of their throughput. Anything that may scan goes through
    /// [`Readers::run`], so a slow read never holds an async worker.
    pub(crate) async fn lookup<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        {
            // The guard must not live across the await below: it is not `Send`.
            let free = self.conns.iter().find_map(|c| c.try_lock());
            if let Some(conn) = free {
                return f(&conn).map_err(to_store_error);
            }
        }
        self.run(f).await
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rusqlite::StatementStatus;

    /// A queued job of `rank` that writes nothing (counted urgent, as `submit_rows` does).
    fn queue_noop(shared: &super::Shared, q: &mut super::Queues, rank: usize) {
        let (job, _) = super::typed_job(1, |_: &rusqlite::Connection| Ok(()), true);
        if rank < super::URGENT_RANKS {
            shared
                .urgent
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        q.ranks[rank].push_back(job);
    }

    fn no_queues() -> super::Queues {
        super::Queues {
            ranks: Default::default(),
            parked: Default::default(),
            parked_seq: 0,
            closed: false,
        }
    }

    /// Takes the next group and runs all of it (as far as the cut for urgent jobs allows, with
    /// `urgent_meanwhile` urgent jobs queued while it runs); its ranks and how many ran.
    fn take_and_run(
        taker: &mut super::Taker,
        shared: &super::Shared,
        q: &mut super::Queues,
        urgent_meanwhile: bool,
    ) -> (Vec<usize>, usize) {
        let group = taker.next(shared, q);
        let urgent = std::sync::atomic::AtomicUsize::new(usize::from(urgent_meanwhile));
        let ran = (0..group.ranks.len())
            .take_while(|at| group.runs_before_urgent(*at, &urgent))
            .count();
        taker.ran(&group, ran);
        // What did not run goes back to the front of its queue, as `put_back_unrun` does.
        let super::Group { jobs, ranks, .. } = group;
        for (job, rank) in jobs.into_iter().zip(&ranks).skip(ran).rev() {
            q.ranks[*rank].push_front(job);
        }
        (ranks, ran)
    }

    #[test]
    fn urgent_jobs_commit_without_bulk_work_but_cannot_hold_it_back_for_good() {
        use super::{Taker, MAX_URGENT_ONLY_GROUPS, URGENT_RANKS};
        let shared = &super::Writer::start(rusqlite::Connection::open_in_memory().unwrap(), None)
            .unwrap()
            .shared;
        let q = &mut no_queues();
        let bulk = super::RANKS - 1;
        queue_noop(shared, q, bulk);
        let mut taker = Taker::default();
        for _ in 0..MAX_URGENT_ONLY_GROUPS {
            queue_noop(shared, q, 0);
            queue_noop(shared, q, URGENT_RANKS - 1);
            let (ranks, _) = take_and_run(&mut taker, shared, q, false);
            assert_eq!(ranks, [0, URGENT_RANKS - 1], "urgent jobs alone");
        }
        queue_noop(shared, q, 0);
        queue_noop(shared, q, bulk);
        let (ranks, ran) = take_and_run(&mut taker, shared, q, true);
        assert_eq!(
            ranks,
            [0, bulk, bulk],
            "then the waiting bulk jobs go along"
        );
        assert_eq!(ran, 2, "the first runs though an urgent job came meanwhile");
        queue_noop(shared, q, 0);
        let (ranks, _) = take_and_run(&mut taker, shared, q, false);
        assert_eq!(ranks, [0], "and urgent jobs go alone again");
        let (ranks, _) = take_and_run(&mut taker, shared, q, false);
        assert_eq!(ranks, [bulk], "bulk work goes when nothing urgent waits");
    }

    /// A parked job runs right after the next job of its rank, in its commit, and sees what
    /// that job wrote; one taken back never runs.
    #[tokio::test]
    async fn a_parked_job_runs_with_the_next_job_of_its_rank() {
        let (_dir, writer, _) = blob_writer();
        let count =
            |c: &rusqlite::Connection| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0));
        let (gone, never) = writer.park_rows(0, 1, count).unwrap();
        assert!(gone.unpark(), "taken back before any job of its rank");
        let (kept, seen) = writer.park_rows(0, 1, count).unwrap();
        let insert = |c: &rusqlite::Connection| c.execute("INSERT INTO t VALUES (1)", []);
        for rank in [1, 4] {
            writer
                .submit_rows_waking(rank, 1, insert)
                .unwrap()
                .await
                .unwrap();
        }
        let (other, _) = writer.park_rows(1, 1, count).unwrap();
        writer.run(1, insert).await.unwrap();
        assert!(
            other.unpark(),
            "a job that makes no work wakes no parked job"
        );
        writer
            .submit_rows_waking(0, 1, insert)
            .unwrap()
            .await
            .unwrap();
        let seen: i64 = seen.await.unwrap();
        assert_eq!(seen, 4, "ran in the group of the rank-0 job, after it");
        assert!(!kept.unpark(), "it ran: nothing to take back");
        let (dropped, _) = writer.park_rows(0, 1, count).unwrap();
        drop(dropped);
        let (after, _) = writer.park_rows(0, 1, count).unwrap();
        writer
            .submit_rows_waking(0, 1, insert)
            .unwrap()
            .await
            .unwrap();
        assert!(
            !after.unpark(),
            "the dropped one was taken back: this one ran"
        );
        assert!(
            never.await.is_err(),
            "a job taken back reports it never ran"
        );
        let bulk = writer.park_rows(super::URGENT_RANKS, 1, count).map(|_| ());
        assert!(bulk.is_err(), "only urgent ranks park");
    }

    /// The idle work runs once no row has changed for `IDLE_AFTER`, however many jobs that
    /// change nothing (idle lane workers' looks) come meanwhile, and not while jobs write.
    #[tokio::test]
    async fn idle_work_waits_for_no_row_changed_not_for_no_job() {
        static IDLE_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn count(_: &rusqlite::Connection) -> rusqlite::Result<bool> {
            IDLE_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(false)
        }
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let writer = super::Writer::start(conn, Some(count)).unwrap();
        let runs = || IDLE_RUNS.load(std::sync::atomic::Ordering::SeqCst);
        let every = |sql: &'static str| {
            let writer = writer.clone();
            async move {
                for _ in 0..30 {
                    writer.run(1, move |c| c.execute(sql, [])).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        every("INSERT INTO t VALUES (1)").await;
        assert_eq!(
            runs(),
            0,
            "a write every 20 ms for 600 ms leaves no idle time"
        );
        every("UPDATE t SET x = 2 WHERE x = 3").await;
        assert_eq!(runs(), 1, "looks that change nothing leave the writer idle");
    }

    /// Once shut down, the writer refuses new jobs as shut down (not as a failure), and the
    /// checkpoint thread's last run, after the writer's last commit, leaves the WAL empty.
    #[tokio::test]
    async fn a_shut_down_writer_refuses_as_shut_down_and_leaves_an_empty_wal() {
        let (_dir, writer, wal) = blob_writer();
        for _ in 0..3 {
            write_blobs(&writer, 4, 4096).await;
        }
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        assert!(writer.close_and_wait(Duration::from_secs(10)).await);
        let refused = writer.run(1, |_| Ok(())).await.unwrap_err();
        assert!(
            matches!(refused, crate::ports::StoreError::ShutDown),
            "{refused}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Removed, once the last connection has closed.
        while std::fs::metadata(&wal).map_or(0, |m| m.len()) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not truncated"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A writer on a new database with one table of blobs, and where its WAL is.
    fn blob_writer() -> (tempfile::TempDir, super::Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let wal = dir.path().join("t.db-wal");
        let writer = super::Writer::start(conn, None).unwrap();
        super::start_checkpointer(&dir.path().join("t.db"), writer.clone()).unwrap();
        (dir, writer, wal)
    }

    /// A job of `rank` that writes 100 blobs of `bytes` each.
    async fn write_blobs(writer: &super::Writer, rank: usize, bytes: usize) {
        let sql = format!("INSERT INTO t VALUES (zeroblob({bytes}))");
        writer
            .run_rows(rank, 100, move |c| {
                let mut insert = c.prepare_cached(&sql)?;
                for _ in 0..100 {
                    insert.execute([])?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    /// The writer wakes the checkpoint thread each time the WAL has grown by `BELL_PAGES`
    /// since it last did, counting again from a restarted WAL.
    #[test]
    fn the_checkpoint_bell_rings_every_bell_pages() {
        let bell = super::CheckpointBell::default();
        let rings = |pages: &[i32]| -> Vec<bool> {
            pages
                .iter()
                .map(|p| {
                    bell.note(*p);
                    std::mem::take(&mut *bell.rung.lock())
                })
                .collect()
        };
        let step = super::BELL_PAGES;
        assert_eq!(
            rings(&[1, step - 1, step, step + 1, 2 * step - 1, 2 * step + 5]),
            [false, false, true, false, false, true]
        );
        // The WAL restarted: counted from its new length.
        assert_eq!(
            rings(&[10, step, step + 10, 2 * step + 10]),
            [false, false, true, true]
        );
    }

    /// The writer checkpoints by itself (its WAL hook replaced SQLite's auto-checkpoint), so the
    /// WAL restarts instead of growing with everything written. The checkpoint thread runs
    /// too: when it is mid-run as the writer's transaction begins, that restart is missed and
    /// the next one comes a checkpoint later, so the WAL reaches 7-10 MB (400 MB written). A
    /// loaded machine that holds the thread off mid-run misses more of them (once in 16 runs
    /// of this suite beside a build, past 16 MB), so the bound is a third of what is written:
    /// a WAL that never restarts holds all of it.
    #[tokio::test]
    async fn the_writer_keeps_the_wal_short() {
        let (_dir, writer, wal) = blob_writer();
        // 100 MB in jobs of 400 KB: twenty-five times the WAL's 1000 pages of 4 KB.
        for _ in 0..250 {
            write_blobs(&writer, 3, 4000).await;
        }
        let wal = std::fs::metadata(wal).unwrap().len();
        assert!(wal < 32 << 20, "the WAL grew to {wal} bytes");
    }

    /// Urgent jobs that never stop coming delay the writer's checkpoint, but only so far.
    #[tokio::test]
    async fn a_stream_of_urgent_jobs_does_not_grow_the_wal_without_bound() {
        let (_dir, writer, wal) = blob_writer();
        // 40 MB in 400 urgent jobs queued at once: after each group, urgent jobs still wait.
        futures::future::join_all((0..400).map(|_| write_blobs(&writer, 0, 1000))).await;
        let wal = std::fs::metadata(wal).unwrap().len();
        assert!(wal < 16 << 20, "the WAL grew to {wal} bytes");
    }

    /// A point read runs with whichever connection is free, and when every connection is busy
    /// it waits for one on the blocking pool rather than failing or spinning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_waits_for_a_busy_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        super::open_connection(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let readers = Arc::new(super::Readers::open(&path, 1).unwrap());
        let read = |conn: &rusqlite::Connection| -> rusqlite::Result<i64> {
            conn.query_row("SELECT x FROM t", [], |r| r.get(0))
        };
        assert_eq!(readers.lookup(read).await.unwrap(), 7_i64);

        let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let holder = readers.clone();
        let thread = std::thread::spawn(move || {
            let _conn = holder.conns[0].lock();
            held.0.send(()).unwrap();
            release.1.recv().unwrap();
        });
        held.1.recv().unwrap();
        let waiting = tokio::spawn({
            let readers = readers.clone();
            async move { readers.lookup(read).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the read waits for the busy connection"
        );
        release.0.send(()).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 7_i64);
        thread.join().unwrap();
    }

    /// A cached statement with a bound `LIMIT` runs again as it was prepared.
    #[test]
    fn a_bound_limit_does_not_re_prepare_its_statement() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        for limit in [1, 2, 3, 2] {
            let mut stmt = conn
                .prepare_cached("SELECT x FROM t WHERE x > ?1 ORDER BY x LIMIT ?2")
                .unwrap();
            let rows: Vec<i64> = stmt
                .query_map([0, limit], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), limit as usize);
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        }
    }
}
