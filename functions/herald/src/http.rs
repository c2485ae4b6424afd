//! The HTTP server of `herald serve`. `axum::serve` has no read timeouts and no connection cap,
//! so this runs hyper's HTTP/1 connections itself:
//! - a new connection must deliver a request head within `header_read`; on a kept-alive
//!   connection the next head must be complete `header_read` after its first byte;
//! - a kept-alive connection may wait `idle` for its next request;
//! - a request body may stall at most `body_read` between chunks, and a request may take at
//!   most `request` in all (both 408, and the connection closes);
//! - at most `max_connections` are open. At the cap, the connection that has waited longest
//!   without a request in progress is closed to make room, so slow or idle sockets cannot lock
//!   a new client out (`/healthz` keeps answering). Only when every connection is in a request
//!   does the server stop accepting until one is free (the kernel's backlog holds newcomers):
//!   closing a newcomer instead would turn a short wait into an error.
//!
//! Each request carries its peer's address as `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use shared::api::problem::Problem;
use shared::detached::run_detached;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};
use tracing::{debug, info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
    pub request: Duration,
    pub max_connections: usize,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Descriptors left for the database, logs and outbound calls when the cap follows the
/// open-file limit.
const RESERVED_FILES: u64 = 128;

/// The connection cap: the configured one, or 1,024 but no more than the open-file limit leaves.
pub fn connection_cap(configured: Option<usize>, open_files: Option<u64>) -> usize {
    let room =
        open_files.map(|n| usize::try_from(n.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX));
    match (configured, room) {
        (Some(n), Some(room)) if n > room => {
            warn!(max_connections = n, room, "more connections allowed than the open-file limit leaves room for; accepts may fail");
            n
        }
        (Some(n), _) => n,
        (None, room) => DEFAULT_MAX_CONNECTIONS
            .min(room.unwrap_or(usize::MAX))
            .max(1),
    }
}

/// How long in-flight requests may finish after a stop before their connections are dropped.
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);
/// How long requests ended after the grace get to let go of their slots.
const ABANDON_GRACE: Duration = Duration::from_millis(500);
/// Pause after a failed accept (out of descriptors): the error repeats until one frees.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a newcomer at the cap looks again for a slot or a connection to close.
const RECHECK: Duration = Duration::from_millis(50);

/// Serves `router` until `stop` turns true; then in-flight requests get `DRAIN_GRACE` to finish
/// and the connections and requests still open are dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    // Never sent: dropped after the grace, which ends the requests whose client left that
    // still run then.
    let (abandon, abandoned) = watch::channel(());
    let (mut tasks, slots) = accept_loop(listener, router, limits, stop, abandoned).await;
    let open = tasks.len();
    let every_slot = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while tasks.join_next().await.is_some() {}
        // A request whose client left runs on in a task of its own, holding its slot.
        let _ = slots.acquire_many(every_slot).await;
    })
    .await
    .is_ok();
    if !drained {
        let busy = (every_slot as usize).saturating_sub(slots.available_permits());
        warn!(
            connections = tasks.len(),
            busy, "connections or requests still busy after the grace period; dropping them"
        );
        tasks.shutdown().await;
        drop(abandon);
        // Their tasks end at their next await; the writer is closed only after.
        let ended = tokio::time::timeout(ABANDON_GRACE, slots.acquire_many(every_slot));
        let _ = ended.await;
    }
    info!(open_at_stop = open, "HTTP connections closed");
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    abandoned: watch::Receiver<()>,
) -> (JoinSet<()>, Arc<Semaphore>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let live = Arc::new(Live::default());
    let mut tasks = JoinSet::new();
    while !*stop.borrow() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = make_room(&slots, &live, &mut stop).await else {
            break;
        };
        while tasks.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            entry: live.register(),
            peer,
            router: router.clone(),
            limits,
            slot: Arc::new(slot),
            abandoned: abandoned.clone(),
        };
        tasks.spawn(conn.run(stream, stop.clone()));
    }
    (tasks, slots)
}

/// A slot for a new connection. At the cap, the connection waiting longest without a request
/// in progress is closed; while every connection is in a request, this waits.
async fn make_room(
    slots: &Arc<Semaphore>,
    live: &Live,
    stop: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        live.evict_longest_waiting();
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            _ = tokio::time::sleep(RECHECK) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// One accepted connection and what it holds: its slot (shared with a request that outlives
/// it) and its entry among the live ones.
struct Conn {
    entry: Entry,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    slot: Arc<OwnedSemaphorePermit>,
    abandoned: watch::Receiver<()>,
}

impl Conn {
    /// Serves the connection until it ends or its deadline passes. On stop it answers the
    /// request in progress, if any, and closes.
    async fn run(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let (state, limits, peer) = (self.entry.state.clone(), self.limits, self.peer);
        let io = TokioIo::new(Watched {
            stream,
            state: state.clone(),
        });
        let (router, slot) = (self.router.clone(), self.slot.clone());
        let abandoned = self.abandoned.clone();
        let service = hyper::service::service_fn(move |req| {
            let (router, state) = (router.clone(), state.clone());
            let outlives = (slot.clone(), abandoned.clone());
            async move {
                state.begin();
                let res = answer(router, req, peer, limits, outlives).await;
                Ok::<_, Infallible>(end_when_sent(res, state))
            }
        });
        let conn = http1::Builder::new()
            // The deadlines below replace hyper's timer, which cannot tell idle from slow.
            .header_read_timeout(None)
            .serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut stopping = std::pin::pin!(stopping);
        let (state, mut draining) = (&self.entry.state, false);
        loop {
            let deadline = state.deadline(&limits);
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = until(deadline) => if state.expired(&limits) {
                    debug!(%peer, "closing a connection: read timeout or room for a newcomer");
                    return;
                },
                _ = state.changed.notified() => {}
                _ = &mut stopping, if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Answers one request. A request that may change something runs to its end in a task of
/// its own, holding its connection's slot: hyper drops a request's future when its client
/// hangs up, and that must not cut an accepted send short between its store and what follows
/// it (the announce, a thread's timeline entry, a STOP's suppression, an audit entry). The
/// request timeout still bounds it, inside the task, so a 408 means what it meant.
async fn answer(
    router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: Limits,
    (slot, mut abandoned): (Arc<OwnedSemaphorePermit>, watch::Receiver<()>),
) -> Response {
    if req.method().is_safe() {
        return answer_within_limits(router, req, peer, &limits).await;
    }
    let answering = async move {
        let _slot = slot;
        tokio::select! {
            biased;
            // The stop's grace is over: dropped, as a connection still open then is.
            _ = abandoned.changed() => stopping(),
            res = answer_within_limits(router, req, peer, &limits) => res,
        }
    };
    run_detached(answering).await.unwrap_or_else(|_| stopping())
}

fn stopping() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "stopping",
        "the server is stopping; retry with the same Idempotency-Key",
    )
    .into_response()
}

/// Answers one request: the peer's address in its extensions, the body-read and request
/// timeouts around the router.
async fn answer_within_limits(
    router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: &Limits,
) -> Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = stalled.clone();
    let mut req = req.map(|body| {
        Body::new(TimeoutBody::new(limits.body_read, body).map_err(move |e| {
            if e.is::<TimeoutError>() {
                flag.store(true, Ordering::Relaxed);
            }
            e
        }))
    });
    req.extensions_mut().insert(ConnectInfo(peer));
    match tokio::time::timeout(limits.request, router.oneshot(req)).await {
        Ok(Ok(res)) if !stalled.load(Ordering::Relaxed) => res,
        Ok(Ok(_)) => timed_out(
            "body-read-timeout",
            format!(
                "the request body stalled for {:?} (the body read timeout)",
                limits.body_read
            ),
        ),
        Ok(Err(never)) => match never {},
        Err(_) => timed_out(
            "request-timeout",
            format!(
                "no answer within the {:?} request timeout; retry with the same Idempotency-Key",
                limits.request
            ),
        ),
    }
}

/// Marks the request done once its answer's body is sent (or abandoned), not when the handler
/// returns: a streamed answer (server-sent events, a CSV export) is in progress until its end,
/// so neither the idle deadline nor the room made for a newcomer closes it midway. The body
/// keeps its size, so a `Content-Length` answer stays one.
fn end_when_sent(res: Response, state: Arc<ConnState>) -> Response {
    let sending = Sending(state);
    res.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _ = &sending;
            frame
        }))
    })
}

/// Ends its connection's request when dropped: when the body is sent or abandoned.
struct Sending(Arc<ConnState>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.end();
    }
}

fn timed_out(slug: &str, detail: String) -> Response {
    let mut res = Problem::new(StatusCode::REQUEST_TIMEOUT, slug, detail).into_response();
    // Part of the request may still be on the wire: this connection carries no other.
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The open connections, to choose one to close at the cap.
#[derive(Default)]
struct Live {
    conns: Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

impl Live {
    fn register(self: &Arc<Self>) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        lock(&self.conns).insert(id, state.clone());
        Entry {
            live: self.clone(),
            id,
            state,
        }
    }

    /// Closes the connection that has waited longest for a request, if one is waiting.
    fn evict_longest_waiting(&self) {
        let conns = lock(&self.conns);
        let longest = conns
            .values()
            .filter_map(|c| c.waiting_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, conn)) = longest {
            conn.evict();
        }
    }
}

/// A connection's place among the live ones, given up when the connection ends.
struct Entry {
    live: Arc<Live>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.live.conns).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a connection is in its request cycle: read by its own task and by eviction.
struct ConnState {
    phase: Mutex<Phase>,
    /// Wakes the connection's task to look at its deadline again.
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    /// A request is being answered: no read deadline (the request timeout bounds it).
    busy: bool,
    /// Since when it has waited for a request: its opening, or its last answer.
    since: Instant,
    /// When the first byte of the next request arrived.
    first_byte: Option<Instant>,
    /// It has answered a request: it may then wait `idle` for the next one.
    served: bool,
    /// Chosen to close, to make room for a newcomer.
    evicted: bool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            phase: Mutex::new(Phase {
                busy: false,
                since: Instant::now(),
                first_byte: None,
                served: false,
                evicted: false,
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Phase)) {
        change(&mut lock(&self.phase));
        self.changed.notify_one();
    }

    fn bytes_arrived(&self) {
        let mut phase = lock(&self.phase);
        if !phase.busy && phase.first_byte.is_none() {
            phase.first_byte = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn begin(&self) {
        self.update(|p| p.busy = true);
    }

    fn end(&self) {
        self.update(|p| {
            *p = Phase {
                busy: false,
                since: Instant::now(),
                first_byte: None,
                served: true,
                // Chosen while busy: a newer waiting connection is closed instead.
                evicted: false,
            }
        });
    }

    fn waiting_since(&self) -> Option<Instant> {
        let p = lock(&self.phase);
        (!p.busy && !p.evicted).then_some(p.since)
    }

    fn evict(&self) {
        let mut p = lock(&self.phase);
        if !p.busy {
            p.evicted = true;
            drop(p);
            self.changed.notify_one();
        }
    }

    /// When the connection closes unless something happens first; none while answering.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let p = *lock(&self.phase);
        if p.busy {
            return None;
        }
        if p.evicted {
            return Some(p.since);
        }
        Some(match (p.first_byte, p.served) {
            (Some(first), _) => first + limits.header_read,
            (None, true) => p.since + limits.idle,
            (None, false) => p.since + limits.header_read,
        })
    }

    fn expired(&self, limits: &Limits) -> bool {
        self.deadline(limits).is_some_and(|at| at <= Instant::now())
    }
}

/// The socket, noting when the first byte of a request arrives (its head's deadline starts).
struct Watched {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.state.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let peer = |ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.to_string() };
        let router = Router::new().route("/peer", axum::routing::get(peer));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, router, Limits::default(), stopped));

        let mut socket = TcpStream::connect(addr).await.unwrap();
        let local = socket.local_addr().unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        socket
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with(&local.to_string()), "{reply}");

        stop.send(true).unwrap();
        server.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no accepts after the stop"
        );
    }

    /// A POST handler that signals its start, takes 300 ms, then counts itself finished.
    fn slow_change() -> (axum::routing::MethodRouter, Arc<AtomicU64>, Arc<Notify>) {
        let (finished, started) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        let (counter, start) = (finished.clone(), started.clone());
        let change = move || async move {
            start.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        };
        (axum::routing::post(change), finished, started)
    }

    /// Posts to `/change` and hangs up once its handler started.
    async fn post_and_leave(addr: SocketAddr, started: &Notify) {
        use tokio::io::AsyncWriteExt;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"POST /change HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        started.notified().await;
        drop(socket);
        // Time for the server to see the hang-up.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// A client that hangs up does not cut a POST short, and the stop waits for it.
    #[tokio::test]
    async fn a_change_runs_to_its_end_when_its_client_hangs_up() {
        let (change, finished, started) = slow_change();
        let router = Router::new().route("/change", change);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, router, Limits::default(), stopped));

        post_and_leave(addr, &started).await;
        stop.send(true).unwrap();
        server.await.unwrap();
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the change ran to its end before the server stopped"
        );
    }

    /// A request whose client left keeps its connection's slot: at the cap, a newcomer waits
    /// until it is done.
    #[tokio::test]
    async fn a_change_whose_client_left_holds_its_slot() {
        let (change, finished, started) = slow_change();
        let reader = finished.clone();
        let read = move || async move { reader.load(Ordering::SeqCst).to_string() };
        let router = Router::new()
            .route("/change", change)
            .route("/count", axum::routing::get(read));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let server = tokio::spawn(serve(listener, router, limits, stopped));

        post_and_leave(addr, &started).await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut newcomer = TcpStream::connect(addr).await.unwrap();
        newcomer
            .write_all(b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        newcomer.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.ends_with("\r\n\r\n1"),
            "answered after the change: {reply}"
        );
        stop.send(true).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn the_cap_follows_the_open_file_limit_unless_configured() {
        assert_eq!(connection_cap(None, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(None, Some(1024)), 1024 - 128);
        assert_eq!(connection_cap(None, None), 1024);
        assert_eq!(connection_cap(None, Some(10)), 1);
        assert_eq!(
            connection_cap(Some(5000), Some(1024)),
            5000,
            "the operator's word"
        );
    }

    #[test]
    fn a_connection_waits_header_read_then_idle_between_requests() {
        let limits = Limits::default();
        let conn = ConnState::new();
        let opened = lock(&conn.phase).since;
        assert_eq!(conn.deadline(&limits), Some(opened + limits.header_read));
        conn.bytes_arrived();
        let first = lock(&conn.phase).first_byte.unwrap();
        assert_eq!(conn.deadline(&limits), Some(first + limits.header_read));
        conn.begin();
        assert_eq!(conn.deadline(&limits), None, "answering: no read deadline");
        assert_eq!(conn.waiting_since(), None, "answering: never evicted");
        conn.end();
        let answered = lock(&conn.phase).since;
        assert_eq!(conn.deadline(&limits), Some(answered + limits.idle));
        conn.evict();
        assert!(conn.expired(&limits), "evicted: closes at once");
    }
}
