//! The task a support module runs, with the token that stops it.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stopping module may take to finish what it holds.
pub const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Default)]
pub struct Background(Mutex<Option<(CancellationToken, JoinHandle<()>)>>);

impl Background {
    /// Runs `work` until its token is cancelled by [`Background::stop`].
    pub fn spawn<F>(&self, work: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(work(cancel.clone()));
        let old = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((cancel, task));
        if let Some((c, _)) = old {
            c.cancel();
        }
    }

    /// Cancels the task and waits for it to finish what it holds. True if one ran.
    pub async fn stop(&self) -> bool {
        let running = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match running {
            Some((cancel, mut task)) => {
                cancel.cancel();
                if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
                    // A backend that does not answer must not hold a shutdown forever.
                    tracing::warn!(wait = ?STOP_WAIT, "a module did not finish in time; abandoning its work");
                    task.abort();
                }
                true
            }
            None => false,
        }
    }
}
