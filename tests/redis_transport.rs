//! The Redis Streams transport and restart signal against a real Redis server.
//!
//! They need one at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`): `.ci/redis` starts
//! one. Without it they fail, never skip. Each test works on its own stream and deletes its keys.

#![cfg(feature = "redis")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use upcaster::worker::{
    Delivery, FailureRecord, Handlers, Limits, RedisSignal, RedisTransport, RestartSignal,
    RetryPolicy, StatRow, StopReason, Transport, Worker,
};
use upcaster::{Decoded, Format, Message, Registry};

fn redis_url() -> String {
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let reached = redis::Client::open(url.as_str()).and_then(|c| {
        let mut conn = c.get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("PING").query::<String>(&mut conn)
    });
    if let Err(e) = reached {
        panic!(
            "cannot reach Redis at {url} ({e}): these tests need a Redis server; \
             run .ci/redis to start one on 127.0.0.1:6379, or set UPCASTER_REDIS_URL"
        );
    }
    url
}

/// A DSN: the server's URL with `params` added to its query.
fn dsn(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A stream of one test, its keys deleted when it goes out of scope (a failing test too).
struct Stream {
    url: String,
    name: String,
}

impl Stream {
    fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Stream {
            url: redis_url(),
            name: format!(
                "upcaster-test:{}-{}-{nanos:08x}:{test}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn dsn(&self) -> String {
        dsn(&self.url, &format!("stream={}", self.name))
    }

    fn open(&self) -> RedisTransport {
        RedisTransport::open_dsn(&self.dsn(), "unused").unwrap_or_else(|e| {
            panic!("{e} (is Redis running? .ci/redis starts one)");
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let n = &self.name;
        let keys = [
            n.clone(),
            format!("{n}:delayed"),
            format!("{n}:failed"),
            format!("{n}:stats"),
            format!("{n}:stats:last-seen"),
        ];
        if let Ok(mut conn) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        {
            let _ = redis::cmd("DEL").arg(&keys).exec(&mut conn);
        }
    }
}

/// Every byte value, CR LF and a NUL in the middle: what a RESP or UTF-8 mistake would mangle.
fn binary_body() -> Vec<u8> {
    let mut body: Vec<u8> = (0..=255u8).rev().collect();
    body.extend_from_slice(b"\r\n\0body\r\nattempt\0");
    body
}

/// Receives, failing rather than hanging if the transport blocks far past `timeout`.
fn receive_within(
    mut t: RedisTransport,
    timeout: Duration,
) -> (RedisTransport, Option<Delivery>, Duration) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let started = Instant::now();
        let got = t.receive(timeout);
        let _ = tx.send((t, got, started.elapsed()));
    });
    let (t, got, took) = rx
        .recv_timeout(timeout + Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("receive({timeout:?}) did not return"));
    (t, got.expect("receive"), took)
}

/// Receives until a message comes or `patience` passes.
fn receive_one(t: &mut RedisTransport, patience: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Some(d) = t.receive(Duration::from_millis(500)).expect("receive") {
            return Some(d);
        }
    }
    None
}

#[test]
fn a_message_round_trips_with_its_bytes_exactly() {
    let stream = Stream::new("round-trip");
    let mut t = stream.open();
    let body = binary_body();
    let id = t.send(&body).unwrap();
    assert_eq!(t.pending().unwrap(), 1);

    let d = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    assert_eq!(d.id, id);
    assert_eq!(d.body, body);
    assert_eq!(d.attempt, 0);
    assert!(!d.reclaimed);
    assert_eq!(
        t.pending().unwrap(),
        1,
        "taken but not settled still counts"
    );

    t.ack(&d).unwrap();
    assert_eq!(t.pending().unwrap(), 0);
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None);
}

#[test]
fn the_dsn_names_stream_and_group_and_open_routes_redis_dsns_here() {
    let stream = Stream::new("dsn");
    let url = redis_url();
    let with_group = dsn(&url, &format!("stream={}&group=billing", stream.name));
    let t = RedisTransport::open_dsn(&with_group, "ignored").unwrap();
    assert_eq!(t.name(), with_group);
    assert_eq!(t.stream(), stream.name);
    assert_eq!(t.group(), "billing");
    assert!(!t.consumer().is_empty());

    // The queue argument names the stream when the DSN does not.
    let mut by_queue = upcaster::worker::open(&url, &stream.name).unwrap();
    by_queue.send(b"hello").unwrap();
    let d = by_queue
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    assert_eq!(d.body, b"hello");
    by_queue.ack(&d).unwrap();

    assert!(RedisTransport::open_dsn(&dsn(&url, "reclaim_after=soon"), "q").is_err());
}

#[test]
fn receive_on_an_empty_stream_returns_none_after_its_timeout() {
    let stream = Stream::new("timeout");
    let (_, got, took) = receive_within(stream.open(), Duration::from_millis(200));
    assert_eq!(got, None);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn receive_with_a_zero_timeout_does_not_block() {
    let stream = Stream::new("zero");
    // BLOCK 0 would wait forever: receive_within fails the test if it does.
    let (mut t, got, took) = receive_within(stream.open(), Duration::ZERO);
    assert_eq!(got, None);
    assert!(took < Duration::from_secs(5), "took {took:?}");

    t.send(b"now").unwrap();
    let d = t
        .receive(Duration::ZERO)
        .unwrap()
        .expect("a waiting message");
    assert_eq!(d.body, b"now");
    t.ack(&d).unwrap();
}

#[test]
fn a_delayed_retry_is_not_delivered_before_it_is_due_and_carries_its_attempt() {
    let stream = Stream::new("delayed");
    let mut t = stream.open();
    let body = binary_body();
    t.send(&body).unwrap();
    let d = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");

    let delay = Duration::from_millis(800);
    let asked = Instant::now();
    t.retry_later(&d, delay, 1).unwrap();
    assert_eq!(
        t.pending().unwrap(),
        1,
        "a delayed retry still counts as pending"
    );
    assert_eq!(t.receive(Duration::ZERO).unwrap(), None, "not due yet");

    let again = receive_one(&mut t, Duration::from_secs(10)).expect("the retry, once due");
    assert!(
        asked.elapsed() >= delay,
        "delivered after {:?}, before its delay of {delay:?}",
        asked.elapsed()
    );
    assert_eq!(again.body, body);
    assert_eq!(again.attempt, 1);
    assert_ne!(again.id, d.id);

    // Without a delay it is back at once.
    t.retry_later(&again, Duration::ZERO, 2).unwrap();
    let third = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("an immediate retry");
    assert_eq!((third.body.as_slice(), third.attempt), (body.as_slice(), 2));
    t.ack(&third).unwrap();
    assert_eq!(t.pending().unwrap(), 0);
}

#[test]
fn a_retry_delayed_past_any_clock_waits_without_overflowing() {
    let stream = Stream::new("delayed-forever");
    let mut t = stream.open();
    t.send(b"someday").unwrap();
    let d = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    t.retry_later(&d, Duration::MAX, 1).unwrap();
    let (mut t, got, _) = receive_within(t, Duration::from_millis(300));
    assert_eq!(got, None);
    assert_eq!(t.pending().unwrap(), 1);
}

#[test]
fn failed_messages_keep_their_bytes_and_record_and_can_be_requeued_or_removed() {
    let stream = Stream::new("failed");
    let mut t = stream.open();
    let body = binary_body();
    t.send(&body).unwrap();
    t.send(b"not an envelope").unwrap();

    let first = t.receive(Duration::from_secs(2)).unwrap().expect("first");
    let record = FailureRecord {
        type_name: Some("ResizeImage".to_owned()),
        version: Some(3),
        class: "handler".to_owned(),
        error: "handler of ResizeImage (arrived as v3) failed: disk full".to_owned(),
        attempts: 4,
        failed_at_ms: 1_700_000_000_123,
    };
    t.fail(&first, &record).unwrap();
    let second = t.receive(Duration::from_secs(2)).unwrap().expect("second");
    let malformed = FailureRecord {
        type_name: None,
        version: None,
        class: "malformed".to_owned(),
        error: "not JSON".to_owned(),
        attempts: 1,
        failed_at_ms: 1_700_000_000_456,
    };
    t.fail(&second, &malformed).unwrap();
    assert_eq!(t.pending().unwrap(), 0, "failed messages leave the queue");

    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].body, body);
    assert_eq!(failed[0].record, record);
    assert_eq!(failed[1].body, b"not an envelope");
    assert_eq!(failed[1].record, malformed);
    assert_eq!(t.failed(1).unwrap().len(), 1);

    assert!(t.requeue_failed(&failed[0].id).unwrap());
    assert!(
        !t.requeue_failed(&failed[0].id).unwrap(),
        "already requeued"
    );
    let back = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("requeued");
    assert_eq!((back.body.as_slice(), back.attempt), (body.as_slice(), 0));
    t.ack(&back).unwrap();

    assert!(t.remove_failed(&failed[1].id).unwrap());
    assert!(!t.remove_failed(&failed[1].id).unwrap(), "already removed");
    assert!(t.failed(10).unwrap().is_empty());
    assert!(!t.requeue_failed("1-0").unwrap());
    assert!(!t.remove_failed("1-0").unwrap());
    assert!(t.requeue_failed("not-an-id").is_err());
}

#[test]
fn a_message_of_a_consumer_that_died_is_reclaimed_by_another() {
    let stream = Stream::new("reclaim");
    let mut dead = stream.open();
    dead.send(b"orphan").unwrap();
    let taken = dead
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    drop(dead);

    // With the default reclaim timeout (5 minutes) another consumer leaves it alone.
    let mut patient = stream.open();
    assert_eq!(patient.receive(Duration::from_millis(200)).unwrap(), None);

    let mut rescuer = stream.open().reclaim_after(Duration::from_millis(100));
    let d = receive_one(&mut rescuer, Duration::from_secs(10)).expect("the orphan, reclaimed");
    assert!(d.reclaimed);
    assert_eq!(d.id, taken.id);
    assert_eq!(d.body, b"orphan");
    rescuer.ack(&d).unwrap();
    assert_eq!(rescuer.pending().unwrap(), 0);
    assert_eq!(rescuer.receive(Duration::from_millis(200)).unwrap(), None);
}

#[test]
fn two_consumers_never_receive_the_same_message() {
    let stream = Stream::new("two-consumers");
    let mut producer = stream.open();
    let n = 200;
    let sent: BTreeSet<String> = (0..n)
        .map(|i| producer.send(format!("m{i}").as_bytes()).unwrap())
        .collect();

    let consume = |mut t: RedisTransport| {
        thread::spawn(move || {
            let mut ids = Vec::new();
            while let Some(d) = t.receive(Duration::from_millis(300)).expect("receive") {
                t.ack(&d).expect("ack");
                ids.push(d.id);
            }
            ids
        })
    };
    let a = consume(stream.open());
    let b = consume(stream.open());
    let a = a.join().unwrap();
    let b = b.join().unwrap();

    let a_set: BTreeSet<String> = a.iter().cloned().collect();
    let b_set: BTreeSet<String> = b.iter().cloned().collect();
    assert_eq!(a_set.len(), a.len(), "a consumer saw a message twice");
    assert_eq!(b_set.len(), b.len(), "a consumer saw a message twice");
    assert!(
        a_set.is_disjoint(&b_set),
        "both consumers received one message"
    );
    let all: BTreeSet<String> = a_set.union(&b_set).cloned().collect();
    assert_eq!(all, sent);
    assert_eq!(producer.pending().unwrap(), 0);
}

#[test]
fn stats_add_up_and_keep_the_latest_last_seen() {
    let stream = Stream::new("stats");
    let mut t = stream.open();
    let row = |type_name: &str, version, count, last_seen_ms| StatRow {
        type_name: type_name.to_owned(),
        version,
        count,
        last_seen_ms,
    };
    t.record_stats(&[row("Order", 1, 2, 1_000), row("Invoice", 2, 1, 5_000)])
        .unwrap();
    t.record_stats(&[row("Order", 1, 3, 500), row("Order", 2, 1, 7)])
        .unwrap();
    t.record_stats(&[]).unwrap();
    assert_eq!(
        t.stats().unwrap(),
        vec![
            row("Invoice", 2, 1, 5_000),
            row("Order", 1, 5, 1_000),
            row("Order", 2, 1, 7),
        ]
    );
}

#[derive(Serialize, Deserialize, Message)]
#[message(version = 1)]
struct Ping {
    n: u64,
}

#[test]
fn a_worker_drains_the_stream_retries_then_fails_and_stops_when_empty() {
    let stream = Stream::new("worker");
    let registry = Registry::builder().register::<Ping>().build().unwrap();
    let mut t = stream.open();
    for n in 0..3 {
        t.send(&registry.encode(&Ping { n }, Format::Json).unwrap())
            .unwrap();
    }
    t.send(b"{not json").unwrap();

    let handlers = Handlers::new(&registry)
        .on(|m: Decoded<Ping>| {
            if m.message.n == 2 {
                return Err(std::io::Error::other("two is unlucky"));
            }
            Ok(())
        })
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(t))
        .retry(RetryPolicy {
            max_retries: 1,
            delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .poll_interval(Duration::from_millis(100))
        .limits(Limits {
            stop_when_empty: true,
            time: Some(Duration::from_secs(30)),
            ..Limits::default()
        })
        .run();
    assert_eq!(report.reason, StopReason::Empty, "{report}");
    assert_eq!(
        (report.handled, report.retried, report.failed),
        (2, 1, 2),
        "{report}"
    );

    let mut t = stream.open();
    let failed = t.failed(10).unwrap();
    let classes: BTreeSet<&str> = failed.iter().map(|f| f.record.class.as_str()).collect();
    assert_eq!(classes, BTreeSet::from(["handler", "malformed"]));
    let stats = t.stats().unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].type_name.as_str(), stats[0].count), ("Ping", 4));
}

#[test]
fn the_restart_signal_keeps_the_servers_time() {
    let url = redis_url();
    let stream = Stream::new("signal");
    let key = format!("{}:restart-requested-at", stream.name);
    let mut signal = RedisSignal::open_dsn(&dsn(&url, &format!("key={key}"))).unwrap();
    assert_eq!(signal.key(), key);
    assert!(signal.name().contains(&key));
    assert_eq!(signal.requested_at().unwrap(), None, "no request yet");
    assert!(
        signal.check_interval() > Duration::ZERO,
        "a worker must not read Redis before every message"
    );

    let at = signal.request().unwrap();
    assert_eq!(signal.requested_at().unwrap(), Some(at));
    let now = signal.now().unwrap();
    assert!(
        now >= at && now - at < 60_000,
        "now {now}, requested at {at}"
    );

    // Another process (a worker on another host) reads the same key.
    let mut other =
        upcaster::worker::open_restart_signal(&dsn(&url, &format!("key={key}"))).unwrap();
    assert_eq!(other.requested_at().unwrap(), Some(at));

    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    redis::cmd("DEL").arg(&key).exec(&mut conn).unwrap();
    assert_eq!(signal.requested_at().unwrap(), None);
    assert_eq!(
        RedisSignal::open_dsn(&url).unwrap().key(),
        RedisSignal::DEFAULT_KEY
    );
}
