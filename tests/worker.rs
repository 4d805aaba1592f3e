//! The worker on the embedded queue: stop conditions, retries, the failure transport, the
//! restart signal, drain statistics and the `failed` commands.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ponka::{self, v1, AddPonkaToImage, DeleteImagePost};
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::cli::{Command, Console, FailedCommand};
use upcaster_worker::prelude::*;
use upcaster_worker::{
    FileSignal, Handlers, Limits, RestartSignal, RetryPolicy, SqliteTransport, StopReason, Worker,
};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "upcaster-worker-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn queue(&self) -> SqliteTransport {
        SqliteTransport::open(self.0.join("queue.db"), "async").unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn today() -> Registry {
    ponka::registry().unwrap()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(2)
        .delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
        .future_version_delay(Duration::from_millis(1))
}

fn send(q: &mut SqliteTransport, registry: &Registry, id: u64) -> Vec<u8> {
    let bytes = registry
        .encode(&AddPonkaToImage { image_post: id }, Format::Json)
        .unwrap();
    q.send(&bytes).unwrap();
    bytes
}

fn until_empty() -> Limits {
    Limits::default().stop_when_empty()
}

#[test]
fn the_message_limit_ends_the_worker_between_messages() {
    let s = Scratch::new("limit");
    let registry = today();
    let mut q = s.queue();
    for id in 0..5 {
        send(&mut q, &registry, id);
    }
    let handled = common::Shared::new(0);
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| {
            handled.set(handled.get() + 1);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .limits(Limits::default().messages(3))
        .run();
    assert_eq!(report.reason, StopReason::MessageLimit(3));
    assert_eq!((report.received, report.handled, handled.get()), (3, 3, 3));
    assert_eq!(s.queue().pending().unwrap(), 2);
}

#[test]
fn the_time_limit_ends_a_worker_waiting_on_an_empty_queue() {
    let s = Scratch::new("time");
    let registry = today();
    let handlers = Handlers::new(&registry);
    let report = Worker::new(handlers)
        .transport(Box::new(s.queue()))
        .limits(Limits::default().time(Duration::from_millis(200)))
        .poll_interval(Duration::from_secs(3600))
        .run();
    // The receive waits at most the time left, not the hour-long poll interval.
    assert_eq!(
        report.reason,
        StopReason::TimeLimit(Duration::from_millis(200))
    );
    assert!(
        report.elapsed < Duration::from_secs(60),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn the_memory_limit_is_checked_before_taking_a_message() {
    let s = Scratch::new("memory");
    let registry = today();
    let mut q = s.queue();
    send(&mut q, &registry, 1);
    let report = Worker::new(Handlers::new(&registry))
        .transport(Box::new(q))
        .limits(Limits::default().memory(1024))
        .run();
    assert!(
        matches!(report.reason, StopReason::MemoryLimit { rss, limit: 1024 } if rss > 1024),
        "{:?}",
        report.reason
    );
    assert_eq!(report.received, 0);
    assert_eq!(s.queue().pending().unwrap(), 1);
}

#[test]
fn consecutive_failures_end_the_worker() {
    let s = Scratch::new("failures");
    let registry = today();
    let mut q = s.queue();
    for id in 0..10 {
        send(&mut q, &registry, id);
    }
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Err("the image store is down"))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries().delay(Duration::from_secs(60)))
        .limits(Limits::default().failures(4))
        .run();
    assert_eq!(report.reason, StopReason::FailureLimit(4));
    assert_eq!((report.received, report.retried), (4, 4));
    // Retried messages wait their delay; none is lost.
    assert_eq!(s.queue().pending().unwrap(), 10);
}

#[test]
fn a_stop_flag_raised_during_a_message_lets_it_finish() {
    let s = Scratch::new("signal");
    let registry = today();
    let mut q = s.queue();
    for id in 0..3 {
        send(&mut q, &registry, id);
    }
    let flag = Arc::new(AtomicBool::new(false));
    let raise = Arc::clone(&flag);
    let handlers = Handlers::new(&registry)
        .on(move |_: Decoded<AddPonkaToImage>| {
            raise.store(true, Ordering::SeqCst); // as SIGTERM would
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .stop_flag(flag)
        .run();
    assert_eq!(report.reason, StopReason::Signal);
    assert_eq!((report.received, report.handled), (1, 1));
    assert_eq!(s.queue().pending().unwrap(), 2);
}

#[test]
fn stop_workers_stops_only_workers_started_before_it() {
    let s = Scratch::new("restart");
    let registry = today();
    let path = s.0.join("restart-requested-at");
    // A request from before this worker started does not concern it.
    FileSignal::new(&path).request().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mut q = s.queue();
    for id in 0..3 {
        send(&mut q, &registry, id);
    }
    let signal_path = path.clone();
    let handlers = Handlers::new(&registry)
        .on(move |m: Decoded<AddPonkaToImage>| {
            if m.message.image_post == 1 {
                std::thread::sleep(Duration::from_millis(5));
                FileSignal::new(&signal_path).request().unwrap();
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .restart_signal(Box::new(FileSignal::new(&path)))
        .run();
    assert!(
        matches!(report.reason, StopReason::RestartRequested { .. }),
        "{:?}",
        report.reason
    );
    assert_eq!(report.handled, 2, "the message during the request finished");
    assert_eq!(s.queue().pending().unwrap(), 1);
}

#[test]
fn a_failing_handler_is_retried_with_backoff_then_failed_with_its_record() {
    let s = Scratch::new("retry");
    let registry = today();
    let mut q = s.queue();
    let bytes = send(&mut q, &registry, 7);
    let calls = common::Shared::new(0);
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| {
            calls.set(calls.get() + 1);
            Err("the image store is down")
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(until_empty())
        .run();
    assert_eq!(report.reason, StopReason::Empty);
    assert_eq!(calls.get(), 3, "one attempt and max_retries = 2 retries");
    assert_eq!((report.retried, report.failed), (2, 1));
    let failed = s.queue().failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.body, bytes, "the original bytes are kept");
    assert_eq!(f.record.attempts, 3);
    assert_eq!(f.record.class, "handler");
    assert_eq!(f.record.type_name.as_deref(), Some("AddPonkaToImage"));
    assert_eq!(f.record.version, Some(2));
    assert!(
        f.record.error.contains("the image store is down"),
        "{}",
        f.record.error
    );
}

#[test]
fn a_handler_that_succeeds_on_retry_is_handled_once() {
    let s = Scratch::new("flaky");
    let registry = today();
    let mut q = s.queue();
    send(&mut q, &registry, 7);
    let calls = common::Shared::new(0);
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err("flaky")
            } else {
                Ok(())
            }
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(until_empty())
        .run();
    assert_eq!((report.handled, report.retried, report.failed), (1, 2, 0));
    assert!(s.queue().failed(10).unwrap().is_empty());
}

#[test]
fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let s = Scratch::new("panic");
    let registry = today();
    let mut q = s.queue();
    send(&mut q, &registry, 7);
    let handlers = Handlers::new(&registry)
        .on(
            |_: Decoded<AddPonkaToImage>| -> Result<(), std::io::Error> {
                panic!("index out of bounds")
            },
        )
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries().max_retries(0))
        .limits(until_empty())
        .run();
    assert_eq!(report.failed, 1);
    let failed = s.queue().failed(10).unwrap();
    assert!(
        failed[0]
            .record
            .error
            .contains("handler panicked: index out of bounds"),
        "{}",
        failed[0].record.error
    );
}

#[test]
fn an_undecodable_message_goes_to_the_failure_transport_with_its_bytes() {
    let s = Scratch::new("malformed");
    let registry = today();
    let mut q = s.queue();
    let cut = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imageP"#;
    q.send(cut).unwrap();
    let wrong = br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":"seven"}}"#;
    q.send(wrong).unwrap();
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(until_empty())
        .run();
    assert_eq!(
        (report.failed, report.retried),
        (2, 0),
        "no retry can fix bytes"
    );
    let failed = s.queue().failed(10).unwrap();
    assert_eq!(failed[0].body, cut);
    assert_eq!(failed[0].record.class, "malformed");
    assert_eq!(failed[0].record.attempts, 1);
    assert_eq!(failed[1].body, wrong);
    assert_eq!(failed[1].record.class, "payload-invalid");
    assert_eq!(failed[1].record.version, Some(2));
    assert!(
        failed[1].record.error.contains("/imagePost"),
        "{}",
        failed[1].record.error
    );
}

#[test]
fn a_newer_version_is_requeued_without_spending_attempts_and_todays_worker_takes_it() {
    let s = Scratch::new("future");
    let yesterday = ponka::registry_v1().unwrap();
    let registry = today();
    let mut q = s.queue();
    send(&mut q, &registry, 9);
    let handlers = Handlers::new(&yesterday)
        .on(|_: Decoded<v1::AddPonkaToImage>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(Limits::default().messages(5))
        .run();
    assert_eq!((report.requeued, report.failed, report.handled), (5, 0, 0));
    let mut q = s.queue();
    let d = q.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        d.attempt, 0,
        "a requeue for a newer worker is not a failed attempt"
    );
    q.retry_later(&d, Duration::ZERO, 0).unwrap();

    let seen = common::Shared::new(0);
    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<AddPonkaToImage>| {
            seen.set(m.message.image_post);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .limits(until_empty())
        .run();
    assert_eq!((report.handled, seen.get()), (1, 9));
}

#[test]
fn an_unknown_type_is_retried_then_failed() {
    let s = Scratch::new("unknown");
    let registry = today();
    let mut q = s.queue();
    q.send(br#"{"type":"CropImage","version":1,"payload":{}}"#)
        .unwrap();
    let report = Worker::new(Handlers::new(&registry))
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(until_empty())
        .run();
    assert_eq!((report.retried, report.failed), (2, 1));
    let failed = s.queue().failed(10).unwrap();
    assert_eq!(failed[0].record.class, "unknown-type");
    assert_eq!(failed[0].record.type_name.as_deref(), Some("CropImage"));
}

#[test]
fn drain_statistics_count_each_type_by_arrived_version() {
    let s = Scratch::new("stats");
    let yesterday = ponka::registry_v1().unwrap();
    let registry = today();
    let mut q = s.queue();
    for id in 0..3 {
        q.send(
            &yesterday
                .encode(
                    &v1::AddPonkaToImage { image_post_id: id },
                    Format::MessagePack,
                )
                .unwrap(),
        )
        .unwrap();
    }
    send(&mut q, &registry, 5);
    let delete = DeleteImagePost {
        image_post: 1,
        filename: "f".into(),
    };
    q.send(&registry.encode(&delete, Format::Json).unwrap())
        .unwrap();
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
        .unwrap()
        .on(|_: Decoded<DeleteImagePost>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .limits(until_empty())
        .run();
    assert_eq!(report.handled, 5);
    let rows: Vec<(String, u32, u64)> = s
        .queue()
        .stats()
        .unwrap()
        .into_iter()
        .map(|r| (r.type_name, r.version, r.count))
        .collect();
    assert_eq!(
        rows,
        [
            ("AddPonkaToImage".to_owned(), 1, 3),
            ("AddPonkaToImage".to_owned(), 2, 1),
            ("DeleteImagePost".to_owned(), 1, 1),
        ]
    );
}

#[test]
fn failed_retry_sends_back_what_the_fixed_code_decodes_and_keeps_the_rest() {
    let s = Scratch::new("failed-retry");
    let registry = today();
    let mut q = s.queue();
    let good = send(&mut q, &registry, 3);
    q.send(br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":"x"}}"#)
        .unwrap();
    // The buggy release fails every AddPonkaToImage.
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Err("bug"))
        .unwrap();
    Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries().max_retries(0))
        .limits(until_empty())
        .run();
    assert_eq!(s.queue().failed(10).unwrap().len(), 2);

    // The fix is deployed: `failed retry --all` re-decodes each with the new code.
    let dsn = format!("sqlite://{}/queue.db", s.0.display());
    let console = |registry| {
        let handlers = Handlers::new(registry)
            .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
            .unwrap();
        Console::new(handlers).transport("async", &dsn)
    };
    let code = console(&registry).run(Command::Failed(FailedCommand::Retry {
        ids: vec![],
        all: true,
        force: false,
        transport: None,
    }));
    assert_eq!(code, ExitCode::FAILURE, "one message still fails");
    let left = s.queue().failed(10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record.class, "payload-invalid");
    let mut q = s.queue();
    let d = q.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((d.body, d.attempt), (good, 0));

    let code = console(&registry).run(Command::Failed(FailedCommand::Remove {
        ids: vec![left[0].id.clone()],
        transport: None,
    }));
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(s.queue().failed(10).unwrap().is_empty());
    let code = console(&registry).run(Command::Failed(FailedCommand::Remove {
        ids: vec![left[0].id.clone()],
        transport: None,
    }));
    assert_eq!(code, ExitCode::FAILURE, "an unknown id is an error");
}

#[test]
fn a_message_taken_by_a_crashed_worker_is_delivered_again() {
    let s = Scratch::new("crash");
    let registry = today();
    let mut q = s.queue();
    let bytes = send(&mut q, &registry, 1);
    let taken = q.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert!(!taken.reclaimed);
    drop(q); // the worker dies without settling it

    let mut other = s.queue().reclaim_after(Duration::from_secs(3600));
    assert_eq!(other.receive(Duration::ZERO).unwrap(), None, "still taken");
    let mut other = s.queue().reclaim_after(Duration::ZERO);
    let again = other.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert!(again.reclaimed);
    assert_eq!((again.id, again.body), (taken.id, bytes));
}

#[test]
fn stop_workers_without_a_restart_signal_is_an_error_not_a_silent_success() {
    let s = Scratch::new("no-signal");
    let registry = today();
    let dsn = format!("sqlite://{}/queue.db", s.0.display());
    let code = Console::new(Handlers::new(&registry))
        .transport("async", &dsn)
        .run(Command::StopWorkers);
    assert_eq!(code, ExitCode::FAILURE);
    let signal = s.0.join("restart");
    let code = Console::new(Handlers::new(&registry))
        .transport("async", &dsn)
        .restart_signal(signal.to_str().unwrap())
        .run(Command::StopWorkers);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(FileSignal::new(&signal).requested_at().unwrap().is_some());
}

#[test]
fn several_transports_are_drained_first_first_and_count_their_own_statistics() {
    let s = Scratch::new("several");
    let registry = today();
    let mut high = SqliteTransport::open(s.0.join("queue.db"), "high").unwrap();
    let mut low = s.queue();
    send(&mut low, &registry, 1);
    send(&mut high, &registry, 2);
    send(&mut high, &registry, 3);
    let order = std::sync::Mutex::new(Vec::new());
    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<AddPonkaToImage>| {
            order.lock().unwrap().push(m.message.image_post);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(high))
        .transport(Box::new(low))
        .limits(until_empty())
        .run();
    assert_eq!(report.handled, 3);
    assert_eq!(*order.lock().unwrap(), [2, 3, 1]);
    let count = |t: &mut SqliteTransport| t.stats().unwrap().iter().map(|r| r.count).sum::<u64>();
    let mut high = SqliteTransport::open(s.0.join("queue.db"), "high").unwrap();
    assert_eq!((count(&mut high), count(&mut s.queue())), (2, 1));
}

#[derive(Debug, serde::Serialize, serde::Deserialize, upcaster::Message)]
#[message(name = "Thumbnail", version = 2)]
struct Thumbnail {
    size: u32,
}

#[test]
fn a_panicking_upcaster_fails_the_message_and_the_worker_goes_on() {
    let s = Scratch::new("upcast-panic");
    let registry = Registry::builder()
        .register::<Thumbnail>()
        .upcaster::<Thumbnail>(upcaster::Upcaster::new(1, 2, |_| {
            panic!("this step was never meant to see that")
        }))
        .build()
        .unwrap();
    let mut q = s.queue();
    let old = br#"{"type":"Thumbnail","version":1,"payload":{"size":1}}"#;
    q.send(old).unwrap();
    q.send(br#"{"type":"Thumbnail","version":2,"payload":{"size":2}}"#)
        .unwrap();
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<Thumbnail>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .retry(quick_retries())
        .limits(until_empty())
        .run();
    assert_eq!((report.failed, report.handled), (1, 1));
    let failed = s.queue().failed(10).unwrap();
    assert_eq!(failed[0].body, old);
    assert_eq!(failed[0].record.class, "decode-panicked");
    assert!(
        failed[0].record.error.contains("never meant"),
        "{}",
        failed[0].record.error
    );
}

#[test]
fn a_message_that_keeps_killing_its_workers_is_failed_without_running_the_handler() {
    let s = Scratch::new("poison");
    let registry = today();
    let mut q = s.queue();
    let bytes = send(&mut q, &registry, 1);
    drop(q);
    // Three workers took it and died (reclaim at once, for the test).
    for _ in 0..3 {
        let mut q = s.queue().reclaim_after(Duration::ZERO);
        assert!(q.receive(Duration::from_secs(5)).unwrap().is_some());
    }
    let called = common::Shared::new(false);
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| {
            called.set(true);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(s.queue().reclaim_after(Duration::ZERO)))
        .retry(quick_retries()) // max_retries 2: a fourth delivery is one too many
        .limits(until_empty())
        .run();
    assert!(!called.get());
    assert_eq!(report.failed, 1);
    let failed = s.queue().failed(10).unwrap();
    assert_eq!(failed[0].body, bytes);
    assert_eq!(failed[0].record.class, "abandoned");
    assert_eq!(
        failed[0].record.type_name.as_deref(),
        Some("AddPonkaToImage")
    );
}

#[test]
fn only_the_consumer_holding_a_message_settles_it() {
    let s = Scratch::new("lease");
    let registry = today();
    let mut slow = s.queue();
    send(&mut slow, &registry, 1);
    let late = slow.receive(Duration::from_secs(5)).unwrap().unwrap();
    // The slow consumer's time ran out; another took the message over.
    let mut other = s.queue().reclaim_after(Duration::ZERO);
    let taken = other.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(taken.deliveries, 2);
    let record = upcaster_worker::FailureRecord::new("handler", "too late")
        .attempts(1)
        .failed_at_ms(0);
    slow.ack(&late).unwrap();
    slow.fail(&late, &record).unwrap();
    slow.retry_later(&late, Duration::ZERO, 1).unwrap();
    assert_eq!(
        s.queue().pending().unwrap(),
        1,
        "still the other consumer's"
    );
    assert!(s.queue().failed(10).unwrap().is_empty());
    other.ack(&taken).unwrap();
    assert_eq!(s.queue().pending().unwrap(), 0);
}

#[test]
fn rows_written_by_other_producers_are_read_not_stuck() {
    let s = Scratch::new("foreign");
    let registry = today();
    drop(s.queue()); // creates the schema
    let conn = rusqlite::Connection::open(s.0.join("queue.db")).unwrap();
    // A producer in another language stored its JSON as TEXT and a wild attempt count.
    conn.execute(
        "INSERT INTO upcaster_messages (queue, body, attempt, available_at) VALUES ('async', ?1, -5, 0)",
        [r#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":4}}"#],
    )
    .unwrap();
    let seen = common::Shared::new(0);
    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<AddPonkaToImage>| {
            seen.set(m.message.image_post);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(s.queue()))
        .limits(until_empty())
        .run();
    assert_eq!((report.handled, seen.get()), (1, 4));
}

#[test]
fn an_unreadable_restart_signal_is_a_warning_not_a_crash_loop() {
    let s = Scratch::new("bad-signal");
    let registry = today();
    let path = s.0.join("restart-requested-at");
    std::fs::write(&path, "").unwrap(); // `touch`ed, or cut short
    let mut q = s.queue();
    send(&mut q, &registry, 1);
    send(&mut q, &registry, 2);
    let warnings = std::sync::Mutex::new(Vec::new());
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .restart_signal(Box::new(FileSignal::new(&path)))
        .limits(until_empty())
        .on_event(|e| {
            if let upcaster_worker::Event::Warning { problem } = e {
                warnings.lock().unwrap().push(problem.to_string());
            }
        })
        .run();
    assert_eq!((report.reason, report.handled), (StopReason::Empty, 2));
    let warnings = warnings.lock().unwrap();
    assert_eq!(
        warnings.len(),
        1,
        "warned once, not per message: {warnings:?}"
    );
    assert!(
        warnings[0].contains("restart-requested-at"),
        "{}",
        warnings[0]
    );
}

#[test]
fn an_endless_retry_delay_is_far_away_not_immediate() {
    let s = Scratch::new("max-delay");
    let registry = today();
    let mut q = s.queue();
    send(&mut q, &registry, 1);
    let d = q.receive(Duration::from_secs(5)).unwrap().unwrap();
    q.retry_later(&d, Duration::MAX, 1).unwrap();
    assert_eq!(q.receive(Duration::ZERO).unwrap(), None);
    assert_eq!(q.pending().unwrap(), 1);
}

#[test]
fn dsn_mistakes_are_refused_not_guessed() {
    let s = Scratch::new("dsn");
    let open = |dsn: &str| {
        upcaster_worker::open(dsn, "async")
            .err()
            .map(|e| e.to_string())
    };
    assert!(open("sqlite:queue.db").is_some_and(|e| e.contains("unknown DSN scheme")));
    // Percent-encoded paths are decoded; parameters are refused as the Redis transport
    // refuses them.
    let spaced = format!("sqlite://{}/with%20space/q.db", s.0.display());
    assert!(open(&spaced).is_none());
    assert!(s.0.join("with space/q.db").exists());
    let hash = format!("sqlite://{}/q4.db?queue=orders#x", s.0.display());
    assert!(open(&hash).is_some_and(|e| e.contains("%23")));
    let twice = format!("sqlite://{}/q2.db?queue=a&queue=b", s.0.display());
    assert!(open(&twice).is_some_and(|e| e.contains("given twice")));
    let typo = format!("sqlite://{}/q3.db?qeue=a", s.0.display());
    assert!(open(&typo).is_some_and(
        |e| e.contains("unknown parameter `qeue`; expected one of: queue, reclaim_after")
    ));
    let misspelt = format!("sqlite://{}/q.db?reclaim-after=5", s.0.display());
    assert!(open(&misspelt).is_some_and(|e| e.contains("`reclaim-after`")));
    assert!(
        !s.0.join("q.db").exists(),
        "nothing created for a refused DSN"
    );
    let signal = |dsn: &str| {
        upcaster_worker::open_restart_signal(dsn)
            .err()
            .map(|e| e.to_string())
    };
    assert!(signal("var/restart").is_some_and(|e| e.contains("absolute path")));
    assert!(signal("sqlite:///tmp/restart").is_some_and(|e| e.contains("expected")));
    assert!(signal(s.0.join("restart").to_str().unwrap()).is_none());
}

#[test]
fn transport_errors_say_what_kind_of_failure_and_keep_their_cause() {
    use std::error::Error as _;
    use upcaster_worker::TransportErrorKind;
    let s = Scratch::new("error-kinds");
    let e = upcaster_worker::open("sqlite:queue.db", "async")
        .err()
        .unwrap();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
    assert!(e.source().is_none());
    // A directory where the queue file should be: SQLite itself refuses, and says why.
    std::fs::create_dir_all(s.0.join("q.db")).unwrap();
    let dsn = format!("sqlite://{}/q.db", s.0.display());
    let e = upcaster_worker::open(&dsn, "async").err().unwrap();
    assert_eq!(e.kind, TransportErrorKind::Storage, "{e}");
    let cause = e.source().expect("rusqlite's error is the source");
    assert!(e.to_string().contains(&cause.to_string()), "{e}");
    // Nothing listens on this port: a connection failure, with redis's error as cause.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = upcaster_worker::open(&format!("redis://127.0.0.1:{port}"), "q")
        .err()
        .unwrap();
    assert_eq!(e.kind, TransportErrorKind::Connection, "{e}");
    assert!(e.source().is_some());
}

#[test]
fn commands_that_only_look_refuse_a_queue_that_does_not_exist() {
    let s = Scratch::new("mistyped");
    let registry = today();
    // A typo in the path: `stats` and `failed show` must not create an empty queue there and
    // report "0 messages".
    let mistyped = s.0.join("qeueu.db");
    let dsn = format!("sqlite://{}", mistyped.display());
    let console = || Console::new(Handlers::new(&registry)).transport("async", &dsn);
    let stats = Command::Stats(upcaster_worker::cli::StatsArgs {
        transports: Vec::new(),
    });
    assert_eq!(console().run(stats), ExitCode::FAILURE);
    let show = Command::Failed(FailedCommand::Show {
        id: None,
        transport: None,
        max: 10,
    });
    assert_eq!(console().run(show), ExitCode::FAILURE);
    assert!(
        !mistyped.exists(),
        "a command that only looks created {mistyped:?}"
    );
    let e = upcaster_worker::open_with(&dsn, "async", upcaster_worker::Access::Existing)
        .err()
        .unwrap();
    assert!(e.to_string().contains("creates none"), "{e}");
    // Another SQLite file is not a queue either, and is left as it was.
    let other = s.0.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = upcaster_worker::open_with(
        &format!("sqlite://{}", other.display()),
        "async",
        upcaster_worker::Access::Existing,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("holds no upcaster queue"), "{e}");
    // Once a worker made the queue, the same commands work.
    drop(s.queue());
    let dsn = format!("sqlite://{}/queue.db", s.0.display());
    let stats = Command::Stats(upcaster_worker::cli::StatsArgs {
        transports: Vec::new(),
    });
    let code = Console::new(Handlers::new(&registry))
        .transport("async", &dsn)
        .run(stats);
    assert_eq!(code, ExitCode::SUCCESS);
}

#[test]
fn registries_dispatchers_and_handlers_are_send_and_sync_and_workers_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    fn only_send<T: Send>() {}
    send_and_sync::<Registry>();
    send_and_sync::<upcaster::Dispatcher<'static, ()>>();
    send_and_sync::<Handlers<'static>>();
    only_send::<Worker<'static>>();
    // As a service holds them: the registry in an `Arc`, a worker run on another thread.
    let s = Scratch::new("threads");
    let registry = Arc::new(today());
    let mut q = s.queue();
    send(&mut q, &registry, 1);
    let shared = Arc::clone(&registry);
    let report = std::thread::spawn(move || {
        let handlers = Handlers::new(&shared)
            .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
            .unwrap();
        Worker::new(handlers)
            .transport(Box::new(q))
            .limits(until_empty())
            .run()
    })
    .join()
    .unwrap();
    assert_eq!(report.handled, 1);
}

fn contract_fixture(name: &str) -> common::contract::Fixture {
    let s = Scratch::new(&format!("contract-{name}"));
    let path = s.0.join("queue.db");
    let dsn = format!("sqlite://{}?queue=async", path.display());
    common::contract::Fixture::blocking(
        dsn,
        move || {
            let queue = SqliteTransport::open(&path, "async").unwrap();
            Box::new(queue.reclaim_after(common::contract::RECLAIM_AFTER))
        },
        s,
    )
}

common::contract::transport_contract!(contract_fixture);

#[test]
fn each_message_has_a_tracing_span_with_its_type_version_ids_and_transport() {
    let s = Scratch::new("tracing");
    let registry = today();
    let mut q = s.queue();
    q.send(&common::traced_message()).unwrap();
    let captured = common::Captured::default();
    tracing::subscriber::with_default(captured.subscriber(), || {
        let handlers = Handlers::new(&registry)
            .on(|m: Decoded<AddPonkaToImage>| {
                // A handler's own event, inside the message's span.
                tracing::info!(image_post = m.message.image_post, "adding Ponka");
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        let report = Worker::new(handlers)
            .transport(Box::new(q))
            .limits(until_empty())
            .run();
        assert_eq!(report.handled, 1);
    });
    common::assert_handler_event_in_message_span(&captured.text());
}
