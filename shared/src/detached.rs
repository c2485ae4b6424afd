//! Work that must run to its end even when whoever awaits it goes away (a client that hung
//! up drops its request's future at the next await).

use std::future::Future;

use tracing::Instrument;

/// The runtime cancelled the work: it is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled: the runtime is shutting down")]
pub struct Cancelled;

/// Runs `work` in a task of its own, in the caller's span (its logs keep the request id), and
/// waits for it. Dropping the returned future leaves the task running. A panic in `work`
/// stays a panic, raised again here, as it would have been in the caller's own task.
pub async fn run_detached<T, F>(work: F) -> Result<T, Cancelled>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work.in_current_span()).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Cancelled),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::run_detached;

    #[tokio::test]
    async fn the_work_ends_although_its_caller_left() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let caller = run_detached(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // The caller is dropped before the work is half-way.
        let _ = tokio::time::timeout(Duration::from_millis(5), caller).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panic_in_the_work_reaches_its_caller() {
        let caller = tokio::spawn(run_detached(async { panic!("a bug") }));
        let err = caller.await.unwrap_err();
        assert!(err.is_panic());
    }
}
