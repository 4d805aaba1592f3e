//! A blocking queue as an async one: each call runs on tokio's blocking threads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{AsyncQueue, Readable};
use crate::transport::{Delivery, FailureRecord, Queue, TransportError, TransportErrorKind};

/// Any blocking [`Queue`] (the SQLite queue, a queue of your own) as an [`AsyncQueue`].
///
/// Every call runs on tokio's blocking threads (`spawn_blocking`), so the executor never
/// waits for a file lock or a disk. A receive asks the queue without waiting and, while
/// nothing comes, sleeps on tokio's timer between asks (5 ms, doubling up to 100 ms), so that
/// the deliveries in flight settle in between instead of queueing behind a long wait.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use upcaster_worker::aio::{AsyncQueue, Blocking};
/// use upcaster_worker::SqliteTransport;
///
/// let dir = std::env::temp_dir().join(format!("upcaster-blocking-doc-{}", std::process::id()));
/// let queue = Blocking::new(SqliteTransport::open(dir.join("queue.db"), "async")?);
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#).await?;
/// let delivery = queue.receive(Duration::from_millis(100)).await?.expect("a message");
/// queue.ack(&delivery).await?;
/// assert_eq!(queue.pending().await?, 0);
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(()) }
/// ```
pub struct Blocking<Q: Queue + 'static> {
    /// `None` once dropped: the queue itself is closed on a blocking thread.
    inner: Arc<Mutex<Option<Q>>>,
    name: Arc<str>,
}

impl<Q: Queue + 'static> Blocking<Q> {
    /// Wraps `queue`.
    pub fn new(queue: Q) -> Self {
        Blocking {
            name: queue.name().into(),
            inner: Arc::new(Mutex::new(Some(queue))),
        }
    }

    /// Runs `f` on the queue on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Q) -> Result<T, TransportError> + Send + 'static,
    ) -> Result<T, TransportError> {
        let inner = Arc::clone(&self.inner);
        let name = Arc::clone(&self.name);
        let joined = tokio::task::spawn_blocking(move || match lock(&inner).as_mut() {
            Some(queue) => f(queue),
            None => Err(TransportError::new(
                name,
                TransportErrorKind::Configuration,
                "the queue was closed",
            )),
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(TransportError::new(
                &self.name,
                TransportErrorKind::Storage,
                format!("the blocking call failed: {e}"),
            ))
        })
    }
}

impl<Q: Queue + 'static> Drop for Blocking<Q> {
    /// Drops the queue on a blocking thread when inside a runtime: closing a blocking
    /// client (PostgreSQL's drives a runtime of its own) must not block the executor.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let queue = lock(&self.inner).take();
            runtime.spawn_blocking(move || drop(queue));
        }
    }
}

/// The queue, even after a call panicked while holding it: the queue's own transactions
/// keep its state consistent.
fn lock<Q>(inner: &Mutex<Q>) -> MutexGuard<'_, Q> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A delivery to settle, without the body the settle does not send again.
fn settling(delivery: &Delivery) -> Delivery {
    Delivery {
        id: delivery.id.clone(),
        body: Vec::new(),
        attempt: delivery.attempt,
        reclaimed: delivery.reclaimed,
        deliveries: delivery.deliveries,
        counted: delivery.counted,
        counts_as: delivery.counts_as.clone(),
    }
}

impl<Q: Queue + 'static> AsyncQueue for Blocking<Q> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &[u8]) -> Result<String, TransportError> {
        let body = body.to_vec();
        self.call(move |q| q.send(&body)).await
    }

    async fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(delivery) = self.call(|q| q.receive(Duration::ZERO)).await? {
                return Ok(Some(delivery));
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let delivery = settling(delivery);
        self.call(move |q| q.ack(&delivery)).await
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        let delivery = delivery.clone();
        self.call(move |q| q.retry_later(&delivery, delay, attempt))
            .await
    }

    async fn requeue_for_newer(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        let delivery = delivery.clone();
        self.call(move |q| q.requeue_for_newer(&delivery, delay))
            .await
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let (delivery, record) = (delivery.clone(), record.clone());
        self.call(move |q| q.fail(&delivery, &record)).await
    }

    async fn pending(&self) -> Result<u64, TransportError> {
        self.call(|q| q.pending()).await
    }

    async fn release_waiting(&self, readable: Readable) -> Result<u64, TransportError> {
        self.call(move |q| q.release_waiting(&mut |body| readable(body)))
            .await
    }
}
