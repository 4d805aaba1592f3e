//! The worker side: hands decoded messages to the handler and settles the jobs that did not
//! decode as one task each.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::layers::Service;
use apalis_core::task::task_fn::{task_fn, TaskFn};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use upcaster::{Disposition, Message};

use crate::{DecodeError, Job};

/// How long [`Upcast`] holds a job of a newer version before handing it back, unless told
/// otherwise ([`Upcast::requeue_after`]): as long as upcaster's own worker waits.
pub const DEFAULT_REQUEUE_AFTER: Duration = Duration::from_secs(30);

/// How often a held job checks whether its worker is shutting down.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Wraps an apalis handler of `T` (an `async fn` taking `T` and any extractors) into the
/// service of [`Job<T>`] to `build` a worker with.
///
/// ```no_run
/// # use apalis_core::error::BoxDynError;
/// # use apalis_core::worker::builder::WorkerBuilder;
/// # use apalis_core::worker::context::WorkerContext;
/// # use upcaster_apalis::{upcast, Arrived, Job};
/// # #[derive(serde::Serialize, serde::Deserialize, upcaster::Message)]
/// # #[message(version = 1)]
/// # struct Ping {}
/// async fn ping(_: Ping, arrived: Arrived, worker: WorkerContext) -> Result<(), BoxDynError> {
///     Ok(())
/// }
/// # fn backend() -> apalis_core::backend::memory::MemoryStorage<Job<Ping>> {
/// #     apalis_core::backend::memory::MemoryStorage::new()
/// # }
/// let worker = WorkerBuilder::new("ping").backend(backend()).build(upcast(ping));
/// ```
pub fn upcast<F, T, K>(handler: F) -> Upcast<TaskFn<F, T, K>> {
    Upcast::new(task_fn(handler))
}

/// A service of [`Job<T>`] around a service of `T`: the decoded message goes to the inner
/// service (with an [`crate::Arrived`] in the task's data), and a job that did not decode
/// becomes the task's error, by upcaster's [`Disposition`]:
///
/// - [`Disposition::Requeue`] (a newer version): held for [`Upcast::requeue_after`] (less if
///   the worker shuts down meanwhile), then a [`RetryAfterError`]: apalis marks the task
///   `Pending`, for a worker with newer code.
/// - [`Disposition::Retry`] (an unknown type, which newer code may know): the
///   [`DecodeError`] itself: `Failed`, retried as the backend retries failures.
/// - [`Disposition::DeadLetter`] and anything else: an [`AbortError`]: `Killed`, the
///   backend's dead letter, where the job keeps its bytes.
///
/// The [`DecodeError`] is the source of the apalis error, so an `on_event` listener can
/// downcast to it and read the versions and bytes.
#[derive(Clone, Debug)]
pub struct Upcast<S> {
    inner: S,
    requeue_after: Duration,
}

impl<S> Upcast<S> {
    /// Wraps a service of `Task<T>`.
    pub fn new(inner: S) -> Self {
        Upcast {
            inner,
            requeue_after: DEFAULT_REQUEUE_AFTER,
        }
    }

    /// How long a job of a newer version is held before it goes back to the backend
    /// ([`DEFAULT_REQUEUE_AFTER`] unless set; [`Duration::ZERO`] hands it back at once).
    pub fn requeue_after(mut self, delay: Duration) -> Self {
        self.requeue_after = delay;
        self
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, T> Service<Task<Job<T>>> for Upcast<S>
where
    T: Message,
    S: Service<Task<T>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Job<T>>) -> Self::Future {
        let worker = task.data().get::<WorkerContext>().cloned();
        let mut arrived = None;
        let mapped = task.try_map_args(|job| {
            job.into_parts().map(|(message, a)| {
                arrived = Some(a);
                message
            })
        });
        match mapped {
            Ok(mut task) => {
                if let Some(arrived) = arrived {
                    task.inject_data(arrived);
                }
                let handled = self.inner.call(task);
                Box::pin(async move { handled.await.map_err(Into::into) })
            }
            Err(error) => {
                let delay = self.requeue_after;
                Box::pin(async move { Err(settle(error, delay, worker).await) })
            }
        }
    }
}

/// The task's error for a job that did not decode.
async fn settle(error: DecodeError, delay: Duration, worker: Option<WorkerContext>) -> BoxDynError {
    match error.disposition() {
        Disposition::Requeue => {
            hold(delay, worker.as_ref()).await;
            Box::new(RetryAfterError::new(error, delay))
        }
        Disposition::Retry => Box::new(error),
        _ => Box::new(AbortError::new(error)),
    }
}

/// Waits `delay`, or until the worker starts shutting down.
async fn hold(delay: Duration, worker: Option<&WorkerContext>) {
    let start = Instant::now();
    loop {
        let left = delay.saturating_sub(start.elapsed());
        if left.is_zero() || worker.is_some_and(WorkerContext::is_shutting_down) {
            return;
        }
        apalis_core::timer::sleep(left.min(SHUTDOWN_CHECK)).await;
    }
}

#[cfg(test)]
mod tests {
    use apalis_core::backend::codec::Codec;
    use apalis_core::error::BoxDynError;
    use serde::{Deserialize, Serialize};
    use upcaster::Registry;

    use super::*;
    use crate::{Arrived, UpcasterCodec};

    #[derive(Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
    #[message(name = "Ping", version = 2)]
    struct Ping {
        n: u32,
    }

    fn codec() -> UpcasterCodec {
        let registry = Registry::builder()
            .register::<Ping>()
            .upcaster::<Ping>(upcaster::Upcaster::new(1, 2, |_| Ok(())))
            .build()
            .unwrap();
        UpcasterCodec::new(registry)
    }

    /// Runs `stored` through the codec of `Job<Ping>` and an `Upcast` around a handler that
    /// reports what it got.
    async fn run(stored: &[u8]) -> Result<(u32, Arrived), BoxDynError> {
        let job: Job<Ping> = codec().decode(&stored.to_vec())?;
        let handler =
            |ping: Ping, arrived: Arrived| async move { Ok::<_, BoxDynError>((ping.n, arrived)) };
        let mut service = upcast(handler).requeue_after(Duration::from_millis(20));
        service.call(Task::new(job)).await
    }

    fn decode_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'a DecodeError {
        e.downcast_ref::<DecodeError>()
            .or_else(|| e.source().and_then(|s| s.downcast_ref::<DecodeError>()))
            .unwrap_or_else(|| panic!("no DecodeError in {e:?}"))
    }

    #[tokio::test]
    async fn the_handler_gets_the_upcast_message_and_its_arrived_version() {
        let (n, arrived) = run(br#"{"type":"Ping","version":1,"payload":{"n":4}}"#)
            .await
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(arrived.version, 1);
        assert_eq!(arrived.current, 2);
        assert!(arrived.was_upcast());
    }

    #[tokio::test]
    async fn a_newer_version_is_held_then_retried_after() {
        let stored = br#"{"type":"Ping","version":3,"payload":{"n":4}}"#;
        let started = Instant::now();
        let e = run(stored).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(20));
        let retry = e
            .downcast_ref::<RetryAfterError>()
            .expect("a RetryAfterError");
        assert_eq!(retry.get_duration(), Duration::from_millis(20));
        let decode = decode_error(retry);
        assert!(decode.is_future_version());
        assert_eq!(decode.expected(), "Ping");
        assert_eq!(decode.found_version(), Some(3));
        assert_eq!(decode.current(), 2);
        assert_eq!(decode.raw(), stored);
        assert!(
            e.to_string().contains("v3 is newer than this code's v2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unknown_type_fails_to_be_retried() {
        let e = run(br#"{"type":"Pong","version":1,"payload":{}}"#)
            .await
            .unwrap_err();
        let decode = e
            .downcast_ref::<DecodeError>()
            .expect("the DecodeError itself");
        assert_eq!(decode.disposition(), Disposition::Retry);
        assert_eq!(decode.found_type(), Some("Pong"));
    }

    #[tokio::test]
    async fn garbage_and_bad_payloads_are_aborted_with_their_bytes() {
        for stored in [
            &b"\x00\x01 not an envelope"[..],
            br#"{"type":"Ping","version":2,"payload":{"n":"four"}}"#,
        ] {
            let e = run(stored).await.unwrap_err();
            let abort = e.downcast_ref::<AbortError>().expect("an AbortError");
            let decode = decode_error(abort);
            assert_eq!(decode.disposition(), Disposition::DeadLetter);
            assert_eq!(decode.raw(), stored);
        }
    }

    #[tokio::test]
    async fn holding_stops_when_the_worker_shuts_down() {
        let mut worker = WorkerContext::new("shutting-down");
        worker.start().unwrap();
        let held = worker.clone();
        let started = Instant::now();
        let holding = tokio::spawn(async move { hold(Duration::from_secs(30), Some(&held)).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!holding.is_finished());
        worker.stop().unwrap();
        tokio::time::timeout(Duration::from_secs(5), holding)
            .await
            .expect("the hold ends when the worker stops")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
