//! The async worker's own promises, beyond the transport contract (which both runtimes
//! pass): messages in flight up to a bound, limits and stop conditions with messages in
//! flight, a shutdown future the service owns, panics in async handlers, and types that a
//! tokio service can spawn and share.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ponka::{self, AddPonkaToImage};
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::aio::{AsyncHandlers, AsyncQueue, AsyncWorker, Blocking};
use upcaster_worker::prelude::*;
use upcaster_worker::{
    FileSignal, Limits, RestartSignal, RetryPolicy, SqliteTransport, StopReason,
};

/// How long a test waits for something that must happen before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "upcaster-async-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn queue(&self) -> SqliteTransport {
        SqliteTransport::open(self.0.join("queue.db"), "async").unwrap()
    }
    /// A queue holding messages 1 to `n`.
    fn filled(&self, registry: &Registry, n: u64) -> SqliteTransport {
        let mut q = self.queue();
        for id in 1..=n {
            let bytes = registry
                .encode(&AddPonkaToImage { image_post: id }, Format::Json)
                .unwrap();
            q.send(&bytes).unwrap();
        }
        q
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts handlers running at once, and the most seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn registry() -> Arc<Registry> {
    Arc::new(ponka::registry().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_handled_side_by_side_up_to_the_in_flight_bound_and_no_further() {
    let s = Scratch::new("bound");
    let registry = registry();
    s.filled(&registry, 16);
    let gauge = Arc::new(Gauge::default());
    // Eight handlers must be running at once for any to pass: a bound below eight would
    // time out here, one above would show in the gauge.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let (g, b) = (gauge.clone(), barrier.clone());
    let handlers = AsyncHandlers::new(registry)
        .on(move |_: Decoded<AddPonkaToImage>| {
            let (g, b) = (g.clone(), b.clone());
            async move {
                g.enter();
                let met = tokio::time::timeout(PATIENCE, b.wait()).await;
                g.leave();
                met.map(|_| ())
                    .map_err(|_| "fewer than 8 handlers ran at once")
            }
        })
        .unwrap();
    let report = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .in_flight(8)
        .poll_interval(Duration::from_millis(20))
        .limits(Limits::default().stop_when_empty())
        .run()
        .await;
    assert_eq!(
        (report.reason.clone(), report.handled),
        (StopReason::Empty, 16),
        "{report}"
    );
    assert_eq!(gauge.most.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_limit_stops_taking_new_ones_and_lets_those_in_flight_finish() {
    let s = Scratch::new("limit");
    let registry = registry();
    let mut q = s.filled(&registry, 20);
    let finished = Arc::new(Mutex::new(Vec::new()));
    let f = finished.clone();
    let handlers = AsyncHandlers::new(registry)
        .on(move |m: Decoded<AddPonkaToImage>| {
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                f.lock().unwrap().push(m.message.image_post);
                Ok::<(), &str>(())
            }
        })
        .unwrap();
    let report = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .in_flight(4)
        .limits(Limits::default().messages(6))
        .run()
        .await;
    assert_eq!(report.reason, StopReason::MessageLimit(6));
    assert_eq!((report.received, report.handled), (6, 6), "{report}");
    assert_eq!(
        finished.lock().unwrap().len(),
        6,
        "each taken message finished"
    );
    assert_eq!(q.pending().unwrap(), 14, "nothing taken is left unsettled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_s_shutdown_future_stops_the_worker_after_those_in_flight() {
    let s = Scratch::new("shutdown");
    let registry = registry();
    let mut q = s.filled(&registry, 10);
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (st, rel) = (started.clone(), release.clone());
    let handlers = AsyncHandlers::new(registry)
        .on(move |_: Decoded<AddPonkaToImage>| {
            let (st, rel) = (st.clone(), rel.clone());
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                rel.notified().await;
                Ok::<(), &str>(())
            }
        })
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .in_flight(3)
        .poll_interval(Duration::from_millis(20));
    // Spawned: the worker, its handlers and its queue are `Send + 'static`.
    let run = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(PATIENCE, async {
        while started.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("three messages in flight");
    stop.send(()).unwrap();
    // Shut down, it still waits for the three in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!run.is_finished(), "returned with messages in flight");
    release.notify_waiters();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert_eq!(report.reason, StopReason::Shutdown);
    assert_eq!(report.handled, 3, "{report}");
    assert_eq!(
        started.load(Ordering::SeqCst),
        3,
        "no message taken after shutdown"
    );
    assert_eq!(q.pending().unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_workers_and_the_stop_flag_reach_the_async_worker_between_messages() {
    let s = Scratch::new("restart");
    let registry = registry();
    s.filled(&registry, 50);
    let signal_path = s.0.join("restart-requested-at");
    let handled = Arc::new(AtomicUsize::new(0));
    let (h, path) = (handled.clone(), signal_path.clone());
    let handlers = AsyncHandlers::new(registry.clone())
        .on(move |_: Decoded<AddPonkaToImage>| {
            let (h, path) = (h.clone(), path.clone());
            async move {
                if h.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                    let request = move || FileSignal::new(path).request().map(|_| ());
                    tokio::task::spawn_blocking(request).await.unwrap().unwrap();
                }
                Ok::<(), &str>(())
            }
        })
        .unwrap();
    let report = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .restart_signal(Box::new(FileSignal::new(&signal_path)))
        .run()
        .await;
    assert!(
        matches!(report.reason, StopReason::RestartRequested { .. }),
        "{report}"
    );
    // The request is read before the next message is taken: the fifth settles, no sixth.
    assert_eq!(report.handled, 5, "{report}");

    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let handlers = AsyncHandlers::new(registry)
        .on(move |_: Decoded<AddPonkaToImage>| {
            set.store(true, Ordering::SeqCst);
            async { Ok::<(), &str>(()) }
        })
        .unwrap();
    let report = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .stop_flag(flag)
        .run()
        .await;
    assert_eq!((report.reason, report.handled), (StopReason::Signal, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_while_awaited_is_a_failed_attempt_not_a_dead_worker() {
    let s = Scratch::new("panic");
    let registry = registry();
    let mut q = s.filled(&registry, 3);
    let handlers = AsyncHandlers::new(registry)
        .on(|m: Decoded<AddPonkaToImage>| async move {
            tokio::task::yield_now().await;
            if m.message.image_post == 2 {
                panic!("no ponka for 2");
            }
            Ok::<(), &str>(())
        })
        .unwrap();
    let report = AsyncWorker::new(handlers, Blocking::new(s.queue()))
        .in_flight(2)
        .retry(RetryPolicy::default().max_retries(0))
        .poll_interval(Duration::from_millis(20))
        .limits(Limits::default().stop_when_empty())
        .run()
        .await;
    assert_eq!(report.reason, StopReason::Empty);
    assert_eq!((report.handled, report.failed), (2, 1), "{report}");
    let failed = q.failed(10).unwrap();
    assert!(
        failed[0]
            .record
            .error
            .contains("handler panicked: no ponka for 2"),
        "{:?}",
        failed[0].record
    );
}

#[test]
fn handlers_and_the_worker_can_live_in_an_arc_and_move_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    fn sent<T: Send + 'static>() {}
    shared::<AsyncHandlers>();
    shared::<Blocking<SqliteTransport>>();
    shared::<upcaster_worker::aio::AnyQueue>();
    sent::<AsyncWorker>();
    shared::<upcaster::Dispatcher<'static, u32>>();
}

#[tokio::test(flavor = "current_thread")]
async fn the_blocking_adapter_works_on_a_current_thread_runtime() {
    let s = Scratch::new("current");
    let q = Blocking::new(s.queue());
    q.send(b"x").await.unwrap();
    let d = q
        .receive(Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    q.ack(&d).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), 0);
}

#[test]
fn an_async_handler_s_events_carry_the_message_span_with_type_version_and_ids() {
    let s = Scratch::new("tracing");
    s.queue().send(&common::traced_message()).unwrap();
    let captured = common::Captured::default();
    // A runtime on this thread, so that the subscriber set here sees the tasks' events.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(captured.subscriber(), || {
        let handlers = AsyncHandlers::new(registry())
            .on(|m: Decoded<AddPonkaToImage>| async move {
                tokio::task::yield_now().await;
                // After an await, still inside the message's span.
                tracing::info!(image_post = m.message.image_post, "adding Ponka");
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        let report = runtime.block_on(
            AsyncWorker::new(handlers, Blocking::new(s.queue()))
                .poll_interval(Duration::from_millis(20))
                .limits(Limits::default().stop_when_empty())
                .run(),
        );
        assert_eq!(report.handled, 1);
    });
    common::assert_handler_event_in_message_span(&captured.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_memory_and_failure_limits_stop_the_async_worker_too() {
    let s = Scratch::new("limits");
    let registry = registry();
    let mut q = s.filled(&registry, 10);
    let failing = || {
        AsyncHandlers::new(registry.clone())
            .on(|_: Decoded<AddPonkaToImage>| async { Err::<(), _>("no ponka today") })
            .unwrap()
    };
    // Three failed attempts in a row, with two in flight: it stops taking messages once the
    // third failure is settled (those in flight and settling may add a few).
    let report = AsyncWorker::new(failing(), Blocking::new(s.queue()))
        .in_flight(2)
        .retry(RetryPolicy::default().max_retries(0))
        .limits(Limits::default().failures(3))
        .run()
        .await;
    assert_eq!(report.reason, StopReason::FailureLimit(3), "{report}");
    assert!((3..=7).contains(&report.received), "{report}");
    assert_eq!(report.failed, report.received, "each taken message settled");
    assert_eq!(q.pending().unwrap(), 10 - report.received);

    let report = AsyncWorker::new(failing(), Blocking::new(s.queue()))
        .limits(Limits::default().memory(1))
        .run()
        .await;
    assert!(
        matches!(report.reason, StopReason::MemoryLimit { limit: 1, .. }),
        "{report}"
    );
    assert_eq!(report.received, 0);

    let empty = Scratch::new("time");
    let started = std::time::Instant::now();
    let report = AsyncWorker::new(failing(), Blocking::new(empty.queue()))
        .limits(Limits::default().time(Duration::from_millis(300)))
        .run()
        .await;
    assert_eq!(
        report.reason,
        StopReason::TimeLimit(Duration::from_millis(300))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}
