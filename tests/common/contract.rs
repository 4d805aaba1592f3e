//! The transport contract: checks every transport must pass, written once and run against
//! each by `transport_contract!` (`tests/worker.rs` for SQLite, `tests/redis_transport.rs`
//! for Redis). A new transport proves itself by passing it unchanged.
//!
//! Times are checked from below only ("not before"), which no slow machine can break; an
//! upper bound is a generous patience, there only so that a broken transport fails instead of
//! hanging.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use upcaster::{Decoded, Format};
use upcaster_worker::{
    Event, FailureRecord, Handlers, Limits, RestartSignal, RetryPolicy, StatRow, StopReason,
    Transport, Worker,
};

use super::ponka::{self, AddPonkaToImage};

/// How long a taken message may stay unsettled before another consumer takes it, in the
/// queues a [`Fixture`] opens.
pub const RECLAIM_AFTER: Duration = Duration::from_millis(300);
/// How long a check waits for something that must happen, before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// One test's queue: `make` opens a new handle (a new consumer) on it, with a reclaim
/// timeout of [`RECLAIM_AFTER`]; what `_cleanup` holds removes the queue when dropped.
pub struct Fixture {
    pub make: Box<dyn Fn() -> Box<dyn Transport>>,
    pub _cleanup: Box<dyn std::any::Any>,
}

/// Runs every check of the contract against the transport of `$fixture`, a
/// `fn(&str) -> Fixture` that gives each check a queue of its own.
#[allow(unused_macros)]
macro_rules! transport_contract {
    ($fixture:ident) => {
        mod transport_contract {
            use super::common::contract as c;
            #[test]
            fn receive_waits_out_its_timeout_and_no_longer() {
                c::receive_waits_out_its_timeout(&super::$fixture("wait"));
            }
            #[test]
            fn a_message_round_trips_with_its_bytes_exactly() {
                c::round_trips_bytes(&super::$fixture("bytes"));
            }
            #[test]
            fn only_the_consumer_holding_a_message_settles_it() {
                c::only_the_holder_settles(&super::$fixture("holder"));
            }
            #[test]
            fn a_message_a_consumer_took_and_left_is_reclaimed_and_counted() {
                c::crash_reclaim(&super::$fixture("reclaim"));
            }
            #[test]
            fn a_delayed_retry_comes_back_after_its_delay_with_its_attempt() {
                c::delayed_retry(&super::$fixture("delayed"));
            }
            #[test]
            fn the_failure_store_keeps_bytes_and_record_and_requeues_or_removes() {
                c::failure_store(&super::$fixture("failures"));
            }
            #[test]
            fn drain_statistics_add_up_and_keep_the_latest_time() {
                c::drain_statistics(&super::$fixture("stats"));
            }
            #[test]
            fn each_message_is_counted_once_through_retries_and_failed_retry() {
                c::each_message_is_counted_once(&super::$fixture("counted"));
            }
            #[test]
            fn messages_requeued_for_newer_code_are_released_when_newer_code_starts() {
                c::released_for_newer_code(&super::$fixture("newer"));
            }
            #[test]
            fn a_worker_retries_with_backoff_then_fails_and_stops_when_empty() {
                c::worker_drains(&super::$fixture("worker"));
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
fn receive_one(t: &mut dyn Transport) -> upcaster_worker::Delivery {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(d) = t.receive(Duration::from_millis(100)).expect("receive") {
            return d;
        }
        assert!(Instant::now() < deadline, "no message within {PATIENCE:?}");
    }
}

pub fn receive_waits_out_its_timeout(f: &Fixture) {
    let mut t = (f.make)();
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

pub fn round_trips_bytes(f: &Fixture) {
    let mut t = (f.make)();
    let body = binary_body();
    t.send(&body).unwrap();
    assert_eq!(t.pending().unwrap(), 1);
    let d = receive_one(&mut *t);
    assert_eq!(d.body, body);
    assert_eq!(
        (d.attempt, d.deliveries, d.reclaimed, d.counted),
        (0, 1, false, false)
    );
    t.ack(&d).unwrap();
    assert_eq!(t.pending().unwrap(), 0);
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
}

pub fn only_the_holder_settles(f: &Fixture) {
    let (mut a, mut b) = ((f.make)(), (f.make)());
    a.send(b"one").unwrap();
    let d = receive_one(&mut *a);
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

pub fn crash_reclaim(f: &Fixture) {
    let mut first = (f.make)();
    first.send(b"held").unwrap();
    let held = receive_one(&mut *first);
    let taken = Instant::now();
    // The consumer dies holding it.
    drop(first);
    let mut second = (f.make)();
    let again = receive_one(&mut *second);
    assert!(
        taken.elapsed() >= RECLAIM_AFTER,
        "reclaimed before its timeout"
    );
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

pub fn delayed_retry(f: &Fixture) {
    let mut t = (f.make)();
    t.send(b"later").unwrap();
    let d = receive_one(&mut *t);
    let delay = Duration::from_millis(700);
    let retried = Instant::now();
    t.retry_later(&d, delay, 3).unwrap();
    assert_eq!(t.pending().unwrap(), 1, "a delayed retry is still pending");
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
    let back = receive_one(&mut *t);
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
    let d = receive_one(&mut *t);
    t.retry_later(&d, Duration::ZERO, 1).unwrap();
    let d = receive_one(&mut *t);
    assert_eq!(d.attempt, 1);
    t.retry_later(&d, Duration::MAX, 2).unwrap();
    assert_eq!(t.receive(Duration::from_millis(50)).unwrap(), None);
    assert_eq!(t.pending().unwrap(), 1);
}

pub fn failure_store(f: &Fixture) {
    let mut t = (f.make)();
    let body = binary_body();
    t.send(&body).unwrap();
    t.send(b"not JSON").unwrap();
    let first = receive_one(&mut *t);
    let record = FailureRecord::new(
        "handler",
        "handler of Ping (arrived as v3) failed: disk full",
    )
    .message("Ping", 3)
    .attempts(4)
    .failed_at_ms(1_700_000_000_123);
    let first_id = t.fail(&first, &record).unwrap().expect("ours to fail");
    let second = receive_one(&mut *t);
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
    let back = receive_one(&mut *t);
    assert_eq!((back.body.as_slice(), back.attempt), (body.as_slice(), 0));
    t.ack(&back).unwrap();
    // Remove the other.
    assert!(t.remove_failed(&second_id).unwrap());
    assert!(!t.remove_failed(&second_id).unwrap());
    assert!(t.failed(10).unwrap().is_empty());
}

pub fn drain_statistics(f: &Fixture) {
    let mut t = (f.make)();
    assert!(t.stats().unwrap().is_empty());
    t.record_stats(&[
        StatRow::new("Order", 1, 3, 1_000),
        StatRow::new("Order", 2, 1, 2_000),
    ])
    .unwrap();
    // From another consumer, with an older last-seen: counts add, the latest time stays.
    (f.make)()
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
pub fn each_message_is_counted_once(f: &Fixture) {
    let make = &f.make;
    let registry = ponka::registry().unwrap();
    let bytes = registry
        .encode(&AddPonkaToImage { image_post: 7 }, Format::Json)
        .unwrap();
    // A message before it, so that its queue id and its failure id differ on any transport.
    let mut t = make();
    t.send(b"filler").unwrap();
    let filler = receive_one(&mut *t);
    t.ack(&filler).unwrap();
    t.send(&bytes).unwrap();
    drop(t);
    let retries = RetryPolicy::default()
        .max_retries(1)
        .delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(2));
    let failing = AtomicBool::new(true);
    let calls = AtomicU32::new(0);
    let logged_ids = Mutex::new(Vec::new());
    let drain = || {
        let handlers = Handlers::new(&registry)
            .on(|_: Decoded<AddPonkaToImage>| {
                calls.fetch_add(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) {
                    Err("not yet")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        Worker::new(handlers)
            .transport(make())
            .retry(retries.clone())
            .poll_interval(Duration::from_millis(20))
            .limits(Limits::default().stop_when_empty())
            .on_event(|e| {
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
        let rows = make().stats().unwrap();
        rows.iter()
            .filter(|r| r.type_name == "AddPonkaToImage")
            .map(|r| r.count)
            .sum::<u64>()
    };
    assert_eq!(count(), 1, "counted once through its retry");
    // `failed retry`, with the fixed code.
    let mut t = make();
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
pub fn worker_drains(f: &Fixture) {
    let registry = ponka::registry().unwrap();
    let mut t = (f.make)();
    for id in [1, 2, 3] {
        let bytes = registry
            .encode(&AddPonkaToImage { image_post: id }, Format::MessagePack)
            .unwrap();
        t.send(&bytes).unwrap();
    }
    let delay = Duration::from_millis(200);
    let tries = Mutex::new(Vec::new());
    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<AddPonkaToImage>| {
            tries
                .lock()
                .unwrap()
                .push((m.message.image_post, Instant::now()));
            match m.message.image_post {
                2 => Err("always"),
                _ => Ok(()),
            }
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport((f.make)())
        .retry(
            RetryPolicy::default()
                .max_retries(2)
                .delay(delay)
                .multiplier(1.0)
                .jitter(0.0),
        )
        .poll_interval(Duration::from_millis(20))
        .limits(Limits::default().stop_when_empty())
        .run();
    assert_eq!(report.reason, StopReason::Empty);
    assert_eq!((report.handled, report.retried, report.failed), (2, 2, 1));
    let tries = tries.into_inner().unwrap();
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
pub fn released_for_newer_code(f: &Fixture) {
    let today = ponka::registry().unwrap();
    let yesterday = ponka::registry_v1().unwrap();
    let mut t = (f.make)();
    let v2 = today
        .encode(&AddPonkaToImage { image_post: 1 }, Format::Json)
        .unwrap();
    t.send(&v2).unwrap();
    // Yesterday's worker requeues it for a minute.
    let handlers = Handlers::new(&yesterday)
        .on(|_: Decoded<ponka::v1::AddPonkaToImage>| Ok::<(), &str>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport((f.make)())
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
    let d = receive_one(&mut *t);
    t.retry_later(&d, Duration::from_secs(60), 1).unwrap();
    // Today's worker takes the first at once; the retry keeps its minute.
    let handled = Mutex::new(Vec::new());
    let released = Mutex::new(0);
    let handlers = Handlers::new(&today)
        .on(|m: Decoded<AddPonkaToImage>| {
            handled.lock().unwrap().push(m.message.image_post);
            Ok::<(), &str>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport((f.make)())
        .poll_interval(Duration::from_millis(50))
        .limits(Limits::default().time(Duration::from_secs(2)))
        .on_event(|e| {
            if let Event::Released { count, .. } = e {
                *released.lock().unwrap() += count;
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

/// The variable that makes a test binary the child of [`counts_survive_a_kill`].
const KILL_CHILD: &str = "UPCASTER_CONTRACT_KILL_DSN";

/// When this process is the child of [`counts_survive_a_kill`]: runs a worker on the queue it
/// was given that kills itself with SIGKILL inside the fourth message, and returns `true`.
pub fn killed_child() -> bool {
    let Ok(dsn) = std::env::var(KILL_CHILD) else {
        return false;
    };
    let registry = ponka::registry().unwrap();
    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<AddPonkaToImage>| {
            if m.message.image_post == 4 {
                let me = std::process::id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-9", &me])
                    .status();
                std::thread::sleep(Duration::from_secs(30));
            }
            Ok::<(), &str>(())
        })
        .unwrap();
    let queue = upcaster_worker::open(&dsn, "q").unwrap();
    Worker::new(handlers)
        .transport(queue)
        .limits(Limits::default().stop_when_empty())
        .run();
    true
}

/// A worker killed with SIGKILL keeps the drain statistics of every message it settled:
/// counts are written with the settle, not buffered. `test` is the calling test's name, run
/// again in a child process on `dsn`.
pub fn counts_survive_a_kill(dsn: &str, test: &str) {
    let registry = ponka::registry().unwrap();
    let mut t = upcaster_worker::open(dsn, "q").unwrap();
    for id in 1..=6 {
        let bytes = registry
            .encode(&AddPonkaToImage { image_post: id }, Format::Json)
            .unwrap();
        t.send(&bytes).unwrap();
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(KILL_CHILD, dsn)
        .output()
        .unwrap();
    assert!(
        !child.status.success(),
        "the child was not killed: {}",
        String::from_utf8_lossy(&child.stdout)
    );
    let counted: u64 = t.stats().unwrap().iter().map(|r| r.count).sum();
    assert_eq!(counted, 3, "messages 1 to 3 were acked before the kill");
    assert_eq!(t.pending().unwrap(), 3, "4 (held when killed), 5 and 6");
}
