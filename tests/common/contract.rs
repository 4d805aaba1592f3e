//! The transport contract: checks every transport must pass, written once and run against
//! each by `transport_contract!` (`tests/worker.rs` for SQLite, `tests/redis_transport.rs`
//! for Redis). A new transport proves itself by passing it unchanged.
//!
//! Times are checked from below only ("not before"), which no slow machine can break; an
//! upper bound is a generous patience, there only so that a broken transport fails instead of
//! hanging.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use upcaster::{Decoded, Format, Message, Registry};
use upcaster_worker::aio::{AnyQueue, AsyncHandlers, AsyncQueue, AsyncWorker};
use upcaster_worker::{
    Delivery, Event, FailedMessage, FailureRecord, Handlers, Limits, Report, RestartSignal,
    RetryPolicy, StatRow, StopReason, Transport, TransportError, Worker,
};

use super::ponka::{self, AddPonkaToImage};

/// How long a taken message may stay unsettled before another consumer takes it, in the
/// queues a [`Fixture`] opens.
pub const RECLAIM_AFTER: Duration = Duration::from_millis(300);
/// How long a check waits for something that must happen, before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The runtime a check runs the transport in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The blocking `Queue` and `Worker`.
    Blocking,
    /// The async `AsyncQueue` and `AsyncWorker`, on tokio.
    Tokio,
}

/// The tokio runtime the async checks share.
pub fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    &RT
}

/// When a message a consumer took comes back to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// A lease (SQLite, Redis, PostgreSQL): once [`RECLAIM_AFTER`] passes unsettled, another
    /// consumer takes the message, even from a holder still working on it, whose late
    /// settle then changes nothing.
    Lease,
    /// While its holder lives (NATS JetStream: the holder renews it; AMQP: the channel):
    /// a live holder keeps it however long its handler takes; a consumer that dies without
    /// settling loses it to the others, after [`RECLAIM_AFTER`] at the latest.
    WhileHolderLives,
}

/// One test's queue: `make` opens a new blocking handle (a new consumer) on it, `make_async`
/// a new async one (called outside the tokio runtime of [`tokio()`]), both with a reclaim timeout of
/// [`RECLAIM_AFTER`]; what `_cleanup` holds removes the queue when dropped.
pub struct Fixture {
    pub make: Box<dyn Fn() -> Box<dyn Transport>>,
    pub make_async: Box<dyn Fn() -> AnyQueue + Send + Sync>,
    /// The queue's DSN, for a worker in another process.
    pub dsn: String,
    /// How the transport reclaims a message from a consumer that took it.
    pub reclaim: Reclaim,
    /// Whether a count and its ack are one write (SQLite, Redis, PostgreSQL). When not
    /// (NATS: the count first, deduplicated by message), a kill between the two leaves one
    /// message counted and still queued, and its redelivery is not counted again.
    pub counts_with_ack: bool,
    pub _cleanup: Box<dyn std::any::Any>,
}

/// One consumer of a fixture's queue in the runtime under test. Queue jobs go through that
/// runtime; the failure store and the drain statistics, which the commands read, through
/// the blocking transport in both.
pub struct Handle {
    blocking: Box<dyn Transport>,
    tokio: Option<AnyQueue>,
}

impl Fixture {
    /// A fixture of a blocking transport on the queue `dsn`: `open` opens a handle on it,
    /// which the async runtime runs on its blocking threads.
    pub fn blocking(
        dsn: String,
        open: impl Fn() -> Box<dyn Transport> + Send + Sync + 'static,
        cleanup: impl std::any::Any,
    ) -> Fixture {
        let open = Arc::new(open);
        let again = Arc::clone(&open);
        Fixture {
            make: Box::new(move || open()),
            make_async: Box::new(move || {
                AnyQueue::Blocking(upcaster_worker::aio::Blocking::new(again()))
            }),
            dsn,
            reclaim: Reclaim::Lease,
            counts_with_ack: true,
            _cleanup: Box::new(cleanup),
        }
    }

    /// A new consumer in `runtime`.
    pub fn open(&self, runtime: Runtime) -> Handle {
        Handle {
            blocking: (self.make)(),
            tokio: match runtime {
                Runtime::Blocking => None,
                Runtime::Tokio => Some((self.make_async)()),
            },
        }
    }
}

type Res<T> = Result<T, TransportError>;

impl Handle {
    pub fn send(&mut self, body: &[u8]) -> Res<String> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.send(body)),
            None => self.blocking.send(body),
        }
    }
    pub fn receive(&mut self, timeout: Duration) -> Res<Option<Delivery>> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.receive(timeout)),
            None => self.blocking.receive(timeout),
        }
    }
    pub fn ack(&mut self, d: &Delivery) -> Res<()> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.ack(d)),
            None => self.blocking.ack(d),
        }
    }
    pub fn retry_later(&mut self, d: &Delivery, delay: Duration, attempt: u32) -> Res<()> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.retry_later(d, delay, attempt)),
            None => self.blocking.retry_later(d, delay, attempt),
        }
    }
    pub fn fail(&mut self, d: &Delivery, record: &FailureRecord) -> Res<Option<String>> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.fail(d, record)),
            None => self.blocking.fail(d, record),
        }
    }
    pub fn pending(&mut self) -> Res<u64> {
        match &self.tokio {
            Some(q) => tokio().block_on(q.pending()),
            None => self.blocking.pending(),
        }
    }
    pub fn failed(&mut self, limit: usize) -> Res<Vec<FailedMessage>> {
        self.blocking.failed(limit)
    }
    pub fn requeue_failed(&mut self, id: &str) -> Res<bool> {
        self.blocking.requeue_failed(id)
    }
    pub fn remove_failed(&mut self, id: &str) -> Res<bool> {
        self.blocking.remove_failed(id)
    }
    pub fn stats(&mut self) -> Res<Vec<StatRow>> {
        self.blocking.stats()
    }
    pub fn record_stats(&mut self, rows: &[StatRow]) -> Res<()> {
        self.blocking.record_stats(rows)
    }
}

/// A handler a check gives to a worker in either runtime: called with each message.
type Handler<T> = Arc<dyn Fn(T) -> Result<(), String> + Send + Sync>;

/// A worker over one new consumer of `f`, in `runtime`, with `handler` for `T` (the async
/// worker with four messages in flight).
pub struct Run<'f, T> {
    f: &'f Fixture,
    runtime: Runtime,
    registry: Arc<Registry>,
    handler: Handler<T>,
    retry: RetryPolicy,
    limits: Limits,
    poll: Duration,
    on_event: Arc<dyn Fn(&Event<'_>) + Send + Sync>,
}

impl<'f, T: Message + Send + 'static> Run<'f, T> {
    pub fn new(
        f: &'f Fixture,
        runtime: Runtime,
        registry: &Arc<Registry>,
        handler: impl Fn(T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Run {
            f,
            runtime,
            registry: Arc::clone(registry),
            handler: Arc::new(handler),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            poll: Duration::from_secs(1),
            on_event: Arc::new(|_| {}),
        }
    }
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
    pub fn on_event(mut self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.on_event = Arc::new(f);
        self
    }
    pub fn run(self) -> Report {
        let (handler, on_event) = (self.handler, self.on_event);
        match self.runtime {
            Runtime::Blocking => {
                let handlers = Handlers::new(&self.registry)
                    .on(move |m: Decoded<T>| handler(m.message))
                    .unwrap();
                Worker::new(handlers)
                    .transport((self.f.make)())
                    .retry(self.retry)
                    .limits(self.limits)
                    .poll_interval(self.poll)
                    .on_event(move |e| on_event(e))
                    .run()
            }
            Runtime::Tokio => {
                let queue = (self.f.make_async)();
                tokio().block_on(async {
                    let handlers = AsyncHandlers::new(Arc::clone(&self.registry))
                        .on(move |m: Decoded<T>| {
                            let handler = Arc::clone(&handler);
                            async move {
                                tokio::task::yield_now().await;
                                handler(m.message)
                            }
                        })
                        .unwrap();
                    AsyncWorker::new(handlers, queue)
                        .in_flight(4)
                        .retry(self.retry)
                        .limits(self.limits)
                        .poll_interval(self.poll)
                        .on_event(move |e| on_event(e))
                        .run()
                        .await
                })
            }
        }
    }
}

/// Runs every check of the contract against the transport of `$fixture`, a
/// `fn(&str) -> Fixture` that gives each check a queue of its own, in both runtimes.
#[allow(unused_macros)]
macro_rules! transport_contract {
    ($fixture:ident) => {
        mod transport_contract {
            macro_rules! checks {
                ($runtime:expr, $module:literal) => {
                    use super::super::common::contract as c;
                    use super::super::$fixture as fixture;
                    #[test]
                    fn receive_waits_out_its_timeout_and_no_longer() {
                        c::receive_waits_out_its_timeout(&fixture("wait"), $runtime);
                    }
                    #[test]
                    fn a_message_round_trips_with_its_bytes_exactly() {
                        c::round_trips_bytes(&fixture("bytes"), $runtime);
                    }
                    #[test]
                    fn only_the_consumer_holding_a_message_settles_it() {
                        c::only_the_holder_settles(&fixture("holder"), $runtime);
                    }
                    #[test]
                    fn a_message_a_consumer_took_and_left_is_reclaimed_and_counted() {
                        c::crash_reclaim(&fixture("reclaim"), $runtime);
                    }
                    #[test]
                    fn a_consumer_is_never_handed_back_a_message_it_holds() {
                        c::holder_is_not_handed_its_own(&fixture("own"), $runtime);
                    }
                    #[test]
                    fn a_delayed_retry_comes_back_after_its_delay_with_its_attempt() {
                        c::delayed_retry(&fixture("delayed"), $runtime);
                    }
                    #[test]
                    fn the_failure_store_keeps_bytes_and_record_and_requeues_or_removes() {
                        c::failure_store(&fixture("failures"), $runtime);
                    }
                    #[test]
                    fn drain_statistics_add_up_and_keep_the_latest_time() {
                        c::drain_statistics(&fixture("stats"), $runtime);
                    }
                    #[test]
                    fn each_message_is_counted_once_through_retries_and_failed_retry() {
                        c::each_message_is_counted_once(&fixture("counted"), $runtime);
                    }
                    #[test]
                    fn messages_requeued_for_newer_code_are_released_when_newer_code_starts() {
                        c::released_for_newer_code(&fixture("newer"), $runtime);
                    }
                    #[test]
                    fn a_worker_retries_with_backoff_then_fails_and_stops_when_empty() {
                        c::worker_drains(&fixture("worker"), $runtime);
                    }
                    #[test]
                    fn a_killed_worker_keeps_the_counts_of_what_it_settled() {
                        if c::killed_child() {
                            return;
                        }
                        c::counts_survive_a_kill(
                            &fixture("killed"),
                            concat!(
                                "transport_contract::",
                                $module,
                                "::a_killed_worker_keeps_the_counts_of_what_it_settled"
                            ),
                            $runtime,
                        );
                    }
                };
            }
            mod blocking {
                checks!(
                    super::super::common::contract::Runtime::Blocking,
                    "blocking"
                );
            }
            mod tokio {
                checks!(super::super::common::contract::Runtime::Tokio, "tokio");
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use transport_contract;

/// A message body no codec or text layer may alter: every byte value, CR LF, NULs.
fn binary_body() -> Vec<u8> {
    let mut body: Vec<u8> = (0..=255u8).rev().collect();
    body.extend_from_slice(b"\r\n\0body\r\nattempt\0");
    body
}

/// Receives until a message comes, failing after [`PATIENCE`].
fn receive_one(t: &mut Handle) -> Delivery {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(d) = t.receive(Duration::from_millis(100)).expect("receive") {
            return d;
        }
        assert!(Instant::now() < deadline, "no message within {PATIENCE:?}");
    }
}

pub fn receive_waits_out_its_timeout(f: &Fixture, rt: Runtime) {
    let mut t = f.open(rt);
    for timeout in [Duration::from_millis(150), Duration::from_millis(600)] {
        let started = Instant::now();
        assert_eq!(t.receive(timeout).unwrap(), None);
        let took = started.elapsed();
        assert!(
            took >= timeout,
            "returned after {took:?}, before its {timeout:?}"
        );
        assert!(
            took < timeout + PATIENCE,
            "blocked {took:?} for {timeout:?}"
        );
    }
    // Zero asks without waiting.
    let started = Instant::now();
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
    assert!(started.elapsed() < PATIENCE);
}

pub fn round_trips_bytes(f: &Fixture, rt: Runtime) {
    let mut t = f.open(rt);
    let body = binary_body();
    t.send(&body).unwrap();
    assert_eq!(t.pending().unwrap(), 1);
    let d = receive_one(&mut t);
    assert_eq!(d.body, body);
    assert_eq!(
        (d.attempt, d.deliveries, d.reclaimed, d.counted),
        (0, 1, false, false)
    );
    t.ack(&d).unwrap();
    assert_eq!(t.pending().unwrap(), 0);
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
}

pub fn only_the_holder_settles(f: &Fixture, rt: Runtime) {
    let (mut a, mut b) = (f.open(rt), f.open(rt));
    a.send(b"one").unwrap();
    let d = receive_one(&mut a);
    // Taken: the other consumer does not get it, and cannot settle it.
    assert_eq!(b.receive(Duration::from_millis(50)).unwrap(), None);
    b.ack(&d).unwrap();
    b.retry_later(&d, Duration::ZERO, 1).unwrap();
    assert_eq!(
        b.fail(&d, &FailureRecord::new("handler", "not mine"))
            .unwrap(),
        None
    );
    assert_eq!(
        a.pending().unwrap(),
        1,
        "settled by a consumer that did not hold it"
    );
    assert!(b.failed(10).unwrap().is_empty());
    a.ack(&d).unwrap();
    assert_eq!(a.pending().unwrap(), 0);
}

pub fn crash_reclaim(f: &Fixture, rt: Runtime) {
    let mut first = f.open(rt);
    first.send(b"held").unwrap();
    let held = receive_one(&mut first);
    let taken = Instant::now();
    // The consumer dies holding it.
    drop(first);
    let mut second = f.open(rt);
    let again = receive_one(&mut second);
    if f.reclaim == Reclaim::Lease {
        assert!(
            taken.elapsed() >= RECLAIM_AFTER,
            "reclaimed before its timeout"
        );
    }
    assert_eq!(again.body, b"held");
    assert!(again.reclaimed);
    assert_eq!(
        again.deliveries, 2,
        "the second delivery since it was queued"
    );
    assert_eq!(again.attempt, held.attempt, "a crash spends no attempt");
    second.ack(&again).unwrap();
    assert_eq!(second.pending().unwrap(), 0);
}

/// A handler slower than the reclaim timeout: its own consumer is never handed its message
/// again (the async runtime receives while handlers run). With a lease, another consumer
/// takes it, and the first one's late settle changes nothing; while its holder lives, nobody
/// else gets it, and the holder's settle stands.
pub fn holder_is_not_handed_its_own(f: &Fixture, rt: Runtime) {
    let mut a = f.open(rt);
    a.send(b"slow").unwrap();
    let held = receive_one(&mut a);
    std::thread::sleep(RECLAIM_AFTER * 2);
    assert_eq!(
        a.receive(RECLAIM_AFTER * 2).unwrap(),
        None,
        "handed back to the consumer holding it"
    );
    let mut b = f.open(rt);
    match f.reclaim {
        Reclaim::Lease => {
            let again = receive_one(&mut b);
            assert_eq!(
                (again.body.as_slice(), again.reclaimed),
                (&b"slow"[..], true)
            );
            assert_eq!(again.deliveries, 2);
            // Its new holder settles it; the first one's late ack changes nothing.
            a.ack(&held).unwrap();
            assert_eq!(b.pending().unwrap(), 1);
            b.ack(&again).unwrap();
        }
        Reclaim::WhileHolderLives => {
            assert_eq!(
                b.receive(RECLAIM_AFTER * 2).unwrap(),
                None,
                "taken from a holder that is alive"
            );
            b.ack(&held).unwrap();
            assert_eq!(
                b.pending().unwrap(),
                1,
                "settled by a consumer that did not hold it"
            );
            a.ack(&held).unwrap();
        }
    }
    assert_eq!(b.pending().unwrap(), 0);
}

pub fn delayed_retry(f: &Fixture, rt: Runtime) {
    let mut t = f.open(rt);
    t.send(b"later").unwrap();
    let d = receive_one(&mut t);
    let delay = Duration::from_millis(700);
    let retried = Instant::now();
    t.retry_later(&d, delay, 3).unwrap();
    assert_eq!(t.pending().unwrap(), 1, "a delayed retry is still pending");
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
    let back = receive_one(&mut t);
    let waited = retried.elapsed();
    assert!(
        waited >= delay,
        "delivered after {waited:?}, before its {delay:?}"
    );
    assert_eq!((back.body.as_slice(), back.attempt), (&b"later"[..], 3));
    assert_eq!(back.deliveries, 1, "a retry is a new delivery count");
    t.ack(&back).unwrap();
    // A retry without delay is at once, and one that never comes stays pending.
    t.send(b"now").unwrap();
    let d = receive_one(&mut t);
    t.retry_later(&d, Duration::ZERO, 1).unwrap();
    let d = receive_one(&mut t);
    assert_eq!(d.attempt, 1);
    t.retry_later(&d, Duration::MAX, 2).unwrap();
    assert_eq!(t.receive(Duration::from_millis(50)).unwrap(), None);
    assert_eq!(t.pending().unwrap(), 1);
}

pub fn failure_store(f: &Fixture, rt: Runtime) {
    let mut t = f.open(rt);
    let body = binary_body();
    t.send(&body).unwrap();
    t.send(b"not JSON").unwrap();
    let first = receive_one(&mut t);
    let record = FailureRecord::new(
        "handler",
        "handler of Ping (arrived as v3) failed: disk full",
    )
    .message("Ping", 3)
    .attempts(4)
    .failed_at_ms(1_700_000_000_123);
    let first_id = t.fail(&first, &record).unwrap().expect("ours to fail");
    let second = receive_one(&mut t);
    let malformed = FailureRecord::new("malformed", "not JSON")
        .attempts(1)
        .failed_at_ms(1_700_000_000_456);
    let second_id = t.fail(&second, &malformed).unwrap().expect("ours to fail");
    assert_eq!(t.pending().unwrap(), 0, "failed messages leave the queue");
    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(
        (failed[0].id.as_str(), failed[0].body.as_slice()),
        (first_id.as_str(), body.as_slice())
    );
    assert_eq!(failed[0].record, record);
    assert_eq!(failed[1].id, second_id);
    assert_eq!(failed[1].record, malformed);
    assert_eq!(t.failed(1).unwrap().len(), 1, "the limit holds");
    assert!(t.failed(0).unwrap().is_empty());
    // Requeue one: back in the queue, from attempt 0, with its bytes.
    assert!(t.requeue_failed(&first_id).unwrap());
    assert!(!t.requeue_failed(&first_id).unwrap(), "requeued twice");
    let back = receive_one(&mut t);
    assert_eq!((back.body.as_slice(), back.attempt), (body.as_slice(), 0));
    t.ack(&back).unwrap();
    // Remove the other.
    assert!(t.remove_failed(&second_id).unwrap());
    assert!(!t.remove_failed(&second_id).unwrap());
    assert!(t.failed(10).unwrap().is_empty());
}

pub fn drain_statistics(f: &Fixture, rt: Runtime) {
    let mut t = f.open(rt);
    assert!(t.stats().unwrap().is_empty());
    t.record_stats(&[
        StatRow::new("Order", 1, 3, 1_000),
        StatRow::new("Order", 2, 1, 2_000),
    ])
    .unwrap();
    // From another consumer, with an older last-seen: counts add, the latest time stays.
    f.open(rt)
        .record_stats(&[StatRow::new("Order", 1, 2, 500)])
        .unwrap();
    assert_eq!(
        t.stats().unwrap(),
        vec![
            StatRow::new("Order", 1, 5, 1_000),
            StatRow::new("Order", 2, 1, 2_000)
        ]
    );
    t.record_stats(&[]).unwrap();
}

/// The drain statistics count each message once, the first time it decodes: not again on
/// its retries, nor after the failure store and `failed retry`. The log names the id the
/// failure store lists.
pub fn each_message_is_counted_once(f: &Fixture, rt: Runtime) {
    let registry = Arc::new(ponka::registry().unwrap());
    let bytes = registry
        .encode(&AddPonkaToImage { image_post: 7 }, Format::Json)
        .unwrap();
    // A message before it, so that its queue id and its failure id differ on any transport.
    let mut t = f.open(rt);
    t.send(b"filler").unwrap();
    let filler = receive_one(&mut t);
    t.ack(&filler).unwrap();
    t.send(&bytes).unwrap();
    drop(t);
    let retries = RetryPolicy::default()
        .max_retries(1)
        .delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(2));
    let failing = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let logged_ids = Arc::new(Mutex::new(Vec::new()));
    let drain = || {
        let (failing, calls, logged_ids) = (failing.clone(), calls.clone(), logged_ids.clone());
        Run::new(f, rt, &registry, move |_: AddPonkaToImage| {
            calls.fetch_add(1, Ordering::SeqCst);
            match failing.load(Ordering::SeqCst) {
                true => Err("not yet".to_owned()),
                false => Ok(()),
            }
        })
        .retry(retries.clone())
        .poll(Duration::from_millis(20))
        .limits(Limits::default().stop_when_empty())
        .on_event(move |e| {
            if let Event::Failed { failed_id, .. } = e {
                logged_ids.lock().unwrap().push(failed_id.to_string());
            }
        })
        .run()
    };
    // Two attempts, then the failure store.
    let report = drain();
    assert_eq!((report.reason, report.failed), (StopReason::Empty, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let count = || {
        let rows = f.open(rt).stats().unwrap();
        rows.iter()
            .filter(|r| r.type_name == "AddPonkaToImage")
            .map(|r| r.count)
            .sum::<u64>()
    };
    assert_eq!(count(), 1, "counted once through its retry");
    // `failed retry`, with the fixed code.
    let mut t = f.open(rt);
    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(*logged_ids.lock().unwrap(), [failed[0].id.clone()]);
    assert!(t.requeue_failed(&failed[0].id).unwrap());
    failing.store(false, Ordering::SeqCst);
    let report = drain();
    assert_eq!((report.reason, report.handled), (StopReason::Empty, 1));
    assert_eq!(count(), 1, "counted again after `failed retry`");
}

/// A worker over the transport: handled messages are acked, a failing handler is retried
/// with backoff (not before it) and then failed, and the worker stops when all is settled.
pub fn worker_drains(f: &Fixture, rt: Runtime) {
    let registry = Arc::new(ponka::registry().unwrap());
    let mut t = f.open(rt);
    for id in [1, 2, 3] {
        let bytes = registry
            .encode(&AddPonkaToImage { image_post: id }, Format::MessagePack)
            .unwrap();
        t.send(&bytes).unwrap();
    }
    let delay = Duration::from_millis(200);
    let tries = Arc::new(Mutex::new(Vec::new()));
    let seen = tries.clone();
    let report = Run::new(f, rt, &registry, move |m: AddPonkaToImage| {
        seen.lock().unwrap().push((m.image_post, Instant::now()));
        match m.image_post {
            2 => Err("always".to_owned()),
            _ => Ok(()),
        }
    })
    .retry(
        RetryPolicy::default()
            .max_retries(2)
            .delay(delay)
            .multiplier(1.0)
            .jitter(0.0),
    )
    .poll(Duration::from_millis(20))
    .limits(Limits::default().stop_when_empty())
    .run();
    assert_eq!(report.reason, StopReason::Empty);
    assert_eq!((report.handled, report.retried, report.failed), (2, 2, 1));
    let tries = tries.lock().unwrap().clone();
    let failing: Vec<Instant> = tries
        .iter()
        .filter(|(id, _)| *id == 2)
        .map(|t| t.1)
        .collect();
    assert_eq!(
        failing.len(),
        3,
        "the first attempt and two retries: {tries:?}"
    );
    for pair in failing.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= delay,
            "retried after {gap:?}, before its backoff of {delay:?}"
        );
    }
    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].record.class.as_str(), failed[0].record.attempts),
        ("handler", 3)
    );
    assert_eq!(t.pending().unwrap(), 0);
}

/// A message of a newer version that old code requeued waits out its delay only for old
/// code: a worker that reads it takes it as soon as it starts. A plain retry keeps its delay.
pub fn released_for_newer_code(f: &Fixture, rt: Runtime) {
    let today = Arc::new(ponka::registry().unwrap());
    let yesterday = Arc::new(ponka::registry_v1().unwrap());
    let mut t = f.open(rt);
    let v2 = today
        .encode(&AddPonkaToImage { image_post: 1 }, Format::Json)
        .unwrap();
    t.send(&v2).unwrap();
    // Yesterday's worker requeues it for a minute.
    let report = Run::new(f, rt, &yesterday, |_: ponka::v1::AddPonkaToImage| Ok(()))
        .retry(RetryPolicy::default().future_version_delay(Duration::from_secs(60)))
        .limits(Limits::default().messages(1))
        .run();
    assert_eq!(report.requeued, 1, "{report}");
    assert_eq!(
        t.receive(Duration::ZERO).unwrap(),
        None,
        "requeued with its delay"
    );
    // And a message of today's that waits for a plain retry, a minute away too.
    let other = today
        .encode(&AddPonkaToImage { image_post: 2 }, Format::Json)
        .unwrap();
    t.send(&other).unwrap();
    let d = receive_one(&mut t);
    t.retry_later(&d, Duration::from_secs(60), 1).unwrap();
    // Today's worker takes the first at once; the retry keeps its minute.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let released = Arc::new(Mutex::new(0));
    let (seen, counted) = (handled.clone(), released.clone());
    let report = Run::new(f, rt, &today, move |m: AddPonkaToImage| {
        seen.lock().unwrap().push(m.image_post);
        Ok(())
    })
    .poll(Duration::from_millis(50))
    .limits(Limits::default().time(Duration::from_secs(2)))
    .on_event(move |e| {
        if let Event::Released { count, .. } = e {
            *counted.lock().unwrap() += count;
        }
    })
    .run();
    assert_eq!(*handled.lock().unwrap(), [1], "{report}");
    assert_eq!(*released.lock().unwrap(), 1);
    assert_eq!(t.pending().unwrap(), 1, "the plain retry still waits");
}

/// The restart signal contract: a request is stored in the signal's clock, read back, never
/// in the future, and a store that holds no request says so.
pub fn restart_signal(signal: &mut dyn RestartSignal) {
    assert_eq!(signal.requested_at().unwrap(), None);
    let before = signal.now().unwrap();
    let at = signal.request().unwrap();
    let after = signal.now().unwrap();
    assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
    assert_eq!(signal.requested_at().unwrap(), Some(at));
    assert!(
        signal.request_at(after + 3_600_000).is_err(),
        "a time an hour ahead"
    );
    assert_eq!(
        signal.requested_at().unwrap(),
        Some(at),
        "a refused time is not stored"
    );
    signal.request_at(before).unwrap();
    assert_eq!(signal.requested_at().unwrap(), Some(before));
}

/// The variables that make a test binary the child of [`counts_survive_a_kill`].
const KILL_CHILD: &str = "UPCASTER_CONTRACT_KILL_DSN";
const KILL_RUNTIME: &str = "UPCASTER_CONTRACT_KILL_RUNTIME";

/// The handler of the killed child: SIGKILL inside the fourth message.
fn kill_on_fourth(m: AddPonkaToImage) -> Result<(), String> {
    if m.image_post == 4 {
        let me = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &me])
            .status();
        std::thread::sleep(Duration::from_secs(30));
    }
    Ok(())
}

/// When this process is the child of [`counts_survive_a_kill`]: runs a worker (in the
/// runtime it was given) on the queue it was given that kills itself with SIGKILL inside the
/// fourth message, and returns `true`.
pub fn killed_child() -> bool {
    let Ok(dsn) = std::env::var(KILL_CHILD) else {
        return false;
    };
    let registry = Arc::new(ponka::registry().unwrap());
    let limits = Limits::default().stop_when_empty();
    if std::env::var(KILL_RUNTIME).as_deref() == Ok("tokio") {
        tokio().block_on(async {
            let handlers = AsyncHandlers::new(registry)
                .on(|m: Decoded<AddPonkaToImage>| async move { kill_on_fourth(m.message) })
                .unwrap();
            let queue = upcaster_worker::open_async(&dsn, "q").await.unwrap();
            AsyncWorker::new(handlers, queue).limits(limits).run().await
        });
    } else {
        let handlers = Handlers::new(&registry)
            .on(|m: Decoded<AddPonkaToImage>| kill_on_fourth(m.message))
            .unwrap();
        let queue = upcaster_worker::open(&dsn, "q").unwrap();
        Worker::new(handlers).transport(queue).limits(limits).run();
    }
    true
}

/// A worker killed with SIGKILL keeps the drain statistics of every message it settled:
/// counts are written with the settle, not buffered; and the message it held is counted
/// when another worker settles it. `test` is the calling test's path, run again in a child
/// process on the fixture's queue (with a reclaim timeout of 200 ms), with a worker in `rt`.
pub fn counts_survive_a_kill(f: &Fixture, test: &str, rt: Runtime) {
    let separator = if f.dsn.contains('?') { '&' } else { '?' };
    let dsn = &format!("{}{separator}reclaim_after=0.2", f.dsn);
    let registry = ponka::registry().unwrap();
    let mut t = upcaster_worker::open(dsn, "q").unwrap();
    for id in 1..=6 {
        let bytes = registry
            .encode(&AddPonkaToImage { image_post: id }, Format::Json)
            .unwrap();
        t.send(&bytes).unwrap();
    }
    let runtime = match rt {
        Runtime::Blocking => "blocking",
        Runtime::Tokio => "tokio",
    };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(KILL_CHILD, dsn)
        .env(KILL_RUNTIME, runtime)
        .output()
        .unwrap();
    assert!(
        !child.status.success(),
        "the child was not killed: {}",
        String::from_utf8_lossy(&child.stdout)
    );
    let counted =
        |t: &mut Box<dyn Transport>| -> u64 { t.stats().unwrap().iter().map(|r| r.count).sum() };
    // The async worker sends a settle beside the next message's handler: message 3's ack may
    // still be on its way when the handler of 4 kills the process.
    let before = counted(&mut t);
    let settled_before_the_kill = match rt {
        Runtime::Blocking => 3..=3,
        Runtime::Tokio => 2..=3,
    };
    assert!(
        settled_before_the_kill.contains(&before),
        "{before} counted: each message acked before the kill is counted"
    );
    let pending = t.pending().unwrap();
    let counted_not_acked = if f.counts_with_ack { 0..=0 } else { 0..=1 };
    assert!(
        (pending + before)
            .checked_sub(6)
            .is_some_and(|extra| counted_not_acked.contains(&extra)),
        "{pending} pending: 4 (held when killed), 5 and 6{}",
        if f.counts_with_ack {
            ""
        } else {
            ", and at most one counted before its ack"
        }
    );
    // Another worker takes 4 back once the reclaim timeout passes, and 5 and 6: each of the
    // six is counted once, 4 too, whose first delivery never settled.
    std::thread::sleep(Duration::from_millis(300));
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Ok::<(), &str>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(upcaster_worker::open(dsn, "q").unwrap())
        .poll_interval(Duration::from_millis(50))
        .limits(Limits::default().stop_when_empty())
        .run();
    assert_eq!(report.handled, 6 - before, "{report}");
    assert_eq!(counted(&mut t), 6, "each message counted once");
}
