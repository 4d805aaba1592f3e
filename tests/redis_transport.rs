//! The Redis Streams transport and restart signal against a real Redis server.
//!
//! They need one at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`): `.ci/redis` starts
//! one. Without it they fail, never skip. Each test works on its own stream and deletes its keys.

mod common;
mod redis_support;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use upcaster_worker::prelude::*;
use upcaster_worker::{
    Delivery, FailureRecord, RedisSignal, RedisTransport, RestartSignal, StatRow,
};

use redis_support::{dsn, raw, redis_url, Stream};

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

/// The stream's length: entries waiting or taken, not yet settled.
fn xlen(conn: &mut redis::Connection, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query(conn).expect("XLEN")
}

/// The consumer names of the stream's group `upcaster`.
fn consumers(conn: &mut redis::Connection, stream: &str) -> BTreeSet<String> {
    let reply: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg("upcaster")
        .query(conn)
        .expect("XINFO CONSUMERS");
    reply
        .into_iter()
        .filter_map(|fields| {
            let at = fields
                .iter()
                .position(|f| *f == redis::Value::BulkString(b"name".to_vec()))?;
            match fields.get(at + 1)? {
                redis::Value::BulkString(name) => String::from_utf8(name.clone()).ok(),
                _ => None,
            }
        })
        .collect()
}

/// A failure record for tests that only need one.
fn a_record() -> FailureRecord {
    FailureRecord::new("handler", "boom")
        .message("Ping", 1)
        .attempts(1)
        .failed_at_ms(1_700_000_000_000)
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
    let mut by_queue = upcaster_worker::open(&url, &stream.name).unwrap();
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

    // The score is clamped to an exact integer (below 2^53), far in the future: not the
    // 1.8e19 of u64::MAX milliseconds, which a double cannot hold exactly.
    let mut conn = raw(&stream.url);
    let scores: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
        .arg(format!("{{{}}}:delayed", stream.name))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut conn)
        .unwrap();
    assert_eq!(scores.len(), 1);
    let score: u64 = scores[0].1.parse().unwrap_or_else(|_| {
        panic!("score {} is not an integer", scores[0].1);
    });
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        score < 1 << 53 && score > now_ms + 1_000 * 3600 * 24 * 365 * 1000,
        "score {score}"
    );
}

#[test]
fn counts_and_timeouts_past_what_redis_takes_are_clamped() {
    let stream = Stream::new("clamped");
    let mut t = stream.open();
    t.send(b"broken").unwrap();
    let d = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    t.fail(&d, &a_record()).unwrap();

    // `failed show` and `failed retry` list with no limit: COUNT 2^64-1 is refused by Redis.
    let failed = t.failed(usize::MAX).expect("failed(usize::MAX)");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].body, b"broken");

    // A reclaim timeout past any clock: XAUTOCLAIM's min-idle is clamped, not refused.
    let mut never = stream.open().reclaim_after(Duration::MAX);
    assert_eq!(never.receive(Duration::from_millis(100)).unwrap(), None);
    let held = t.send(b"held").unwrap();
    let d = never
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("held");
    assert_eq!(d.id, held);
    let mut other = stream.open().reclaim_after(Duration::MAX);
    assert_eq!(
        other.receive(Duration::from_millis(100)).unwrap(),
        None,
        "nothing is idle for Duration::MAX"
    );
    never.ack(&d).unwrap();

    // A receive with no end returns as soon as a message comes.
    let url = stream.dsn();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut t = RedisTransport::open_dsn(&url, "unused").unwrap();
        t.send(b"later").unwrap()
    });
    let d = t
        .receive(Duration::MAX)
        .unwrap()
        .expect("a message, eventually");
    assert_eq!(d.id, sender.join().unwrap());
    t.ack(&d).unwrap();
}

#[test]
fn stats_past_i64_saturate_instead_of_failing() {
    let stream = Stream::new("stats-huge");
    let mut t = stream.open();
    let row = |count| StatRow::new("Order", 1, count, 1_000);
    t.record_stats(&[row(u64::MAX)]).expect("a count past i64");
    assert_eq!(t.stats().unwrap()[0].count, i64::MAX as u64);
    t.record_stats(&[row(5)]).expect("a sum past i64");
    assert_eq!(t.stats().unwrap()[0].count, i64::MAX as u64);
}

#[test]
fn a_failing_write_leaves_the_message_pending_rather_than_losing_it() {
    let stream = Stream::new("write-first");
    let mut t = stream.open();
    let id = t.send(b"precious").unwrap();
    let d = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    let mut conn = raw(&stream.url);
    let failed_key = format!("{{{}}}:failed", stream.name);
    let delayed_key = format!("{{{}}}:delayed", stream.name);

    // The failure stream's key holds a string: XADD fails with WRONGTYPE. Redis does not roll
    // back what a script did before, so the entry must not have been acked and deleted yet.
    redis::cmd("SET")
        .arg(&failed_key)
        .arg("not a stream")
        .exec(&mut conn)
        .unwrap();
    assert!(t.fail(&d, &a_record()).is_err());
    assert_eq!(xlen(&mut conn, &stream.name), 1, "the message was lost");

    redis::cmd("SET")
        .arg(&delayed_key)
        .arg("not a sorted set")
        .exec(&mut conn)
        .unwrap();
    assert!(t.retry_later(&d, Duration::from_secs(1), 1).is_err());
    assert_eq!(xlen(&mut conn, &stream.name), 1, "the message was lost");

    // Still pending for this consumer: settled once the keys are fixed.
    redis::cmd("DEL")
        .arg(&failed_key)
        .arg(&delayed_key)
        .exec(&mut conn)
        .unwrap();
    t.fail(&d, &a_record()).unwrap();
    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].body, b"precious");
    assert_eq!(t.pending().unwrap(), 0);
    assert_eq!(d.id, id);
}

#[test]
fn deliveries_count_the_reads_since_the_message_was_queued() {
    let stream = Stream::new("deliveries");
    let mut first = stream.open();
    first.send(b"poison").unwrap();
    let d = first
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    assert_eq!((d.deliveries, d.reclaimed), (1, false));

    // Each consumer "crashes" (never settles); the next reclaims it.
    let mut last = d;
    let mut consumers = Vec::new();
    for expected in 2..=4 {
        thread::sleep(Duration::from_millis(120));
        let mut next = stream.open().reclaim_after(Duration::from_millis(100));
        let d = receive_one(&mut next, Duration::from_secs(10)).expect("reclaimed");
        assert_eq!(d.id, last.id);
        assert!(d.reclaimed);
        assert_eq!(d.deliveries, expected, "delivery {expected}");
        last = d;
        consumers.push(next);
    }

    // A retry queues it afresh: the count starts over.
    let owner = consumers.last_mut().unwrap();
    owner.retry_later(&last, Duration::ZERO, 1).unwrap();
    let again = owner
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("the retry");
    assert_ne!(again.id, last.id);
    assert_eq!(
        (again.deliveries, again.reclaimed, again.attempt),
        (1, false, 1)
    );
    owner.ack(&again).unwrap();
    assert_eq!(owner.pending().unwrap(), 0);
}

#[test]
fn entries_without_a_body_or_with_a_bad_attempt_are_delivered_not_errors() {
    let stream = Stream::new("foreign-entries");
    let mut conn = raw(&stream.url);
    let mut t = stream.open();
    // An entry's fields, and the body and attempt it must be delivered with.
    type Foreign<'a> = (&'a [(&'a str, &'a str)], &'a [u8], u32);
    let entries: [Foreign<'_>; 6] = [
        (&[("payload", "{}")], b"", 0),
        (&[("body", "a"), ("attempt", "many")], b"a", 0),
        (&[("body", "b"), ("attempt", "-1")], b"b", 0),
        (&[("body", "c"), ("attempt", "4294967296")], b"c", u32::MAX),
        (
            &[("body", "d"), ("attempt", "99999999999999999999999")],
            b"d",
            u32::MAX,
        ),
        (&[("body", "e")], b"e", 0),
    ];
    for (fields, _, _) in &entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream.name).arg("*");
        for (k, v) in *fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.exec(&mut conn).unwrap();
    }
    for (fields, body, attempt) in &entries {
        let d = t
            .receive(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("entry {fields:?}: {e}"))
            .expect("an entry");
        assert_eq!(
            (d.body.as_slice(), d.attempt),
            (*body, *attempt),
            "{fields:?}"
        );
        t.fail(&d, &a_record()).unwrap();
    }
    assert_eq!(t.pending().unwrap(), 0);
    assert_eq!(t.failed(10).unwrap().len(), entries.len());
}

#[test]
fn a_dropped_transport_leaves_the_group_unless_messages_are_pending_for_it() {
    let stream = Stream::new("consumers");
    let mut conn = raw(&stream.url);

    // A consumer that handled its message (Redis 7.0 adds a consumer on its first read).
    let mut idle = stream.open();
    idle.send(b"done").unwrap();
    let d = idle
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("a message");
    idle.ack(&d).unwrap();
    let idle_name = idle.consumer().to_owned();
    assert!(consumers(&mut conn, &stream.name).contains(&idle_name));
    drop(idle);
    assert!(
        !consumers(&mut conn, &stream.name).contains(&idle_name),
        "a consumer with nothing pending stays in the group"
    );

    // One that dies holding a message stays, so that the message can be reclaimed.
    let mut holder = stream.open();
    holder.send(b"held").unwrap();
    let held = holder
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("held");
    let holder_name = holder.consumer().to_owned();
    drop(holder);
    assert!(consumers(&mut conn, &stream.name).contains(&holder_name));

    let mut rescuer = stream.open().reclaim_after(Duration::from_millis(50));
    let d = receive_one(&mut rescuer, Duration::from_secs(10)).expect("reclaimed");
    assert_eq!(d.id, held.id);
    rescuer.ack(&d).unwrap();
    let rescuer_name = rescuer.consumer().to_owned();
    drop(rescuer);
    let left = consumers(&mut conn, &stream.name);
    assert!(!left.contains(&rescuer_name), "{left:?}");
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
        upcaster_worker::open_restart_signal(&dsn(&url, &format!("key={key}"))).unwrap();
    assert_eq!(other.requested_at().unwrap(), Some(at));

    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    redis::cmd("DEL").arg(&key).exec(&mut conn).unwrap();
    assert_eq!(signal.requested_at().unwrap(), None);

    // Something else in the key: an error (the worker warns), not "no request".
    redis::cmd("SET")
        .arg(&key)
        .arg("yesterday")
        .exec(&mut conn)
        .unwrap();
    let err = signal.requested_at().expect_err("a value that is no time");
    assert!(err.to_string().contains(&key), "{err}");
    redis::cmd("DEL").arg(&key).exec(&mut conn).unwrap();
}

#[test]
fn the_restart_signal_needs_its_key_named_in_the_dsn() {
    let url = redis_url();
    // No shared default: two applications on one Redis would restart each other's workers.
    for dsn in [url.clone(), dsn(&url, "stream=orders")] {
        let err = RedisSignal::open_dsn(&dsn).expect_err("a DSN without a key");
        let text = err.to_string();
        assert!(text.contains(&dsn), "{text}");
        assert!(text.contains("?key=<app>:restart-requested-at"), "{text}");
        let err = upcaster_worker::open_restart_signal(&dsn)
            .err()
            .expect("a DSN without a key");
        assert!(err.to_string().contains("key="), "{err}");
    }
    assert!(RedisSignal::open_dsn(&dsn(&url, "key=")).is_err());
}

#[test]
fn queues_whose_names_look_like_another_queues_keys_never_share_a_key() {
    let orders = Stream::new("orders");
    // Queues named as the old layout named `orders`' delayed set and failure stream.
    let delayed_named = Stream {
        url: orders.url.clone(),
        name: format!("{}:delayed", orders.name),
    };
    let failed_named = Stream {
        url: orders.url.clone(),
        name: format!("{}:failed", orders.name),
    };
    let mut t = orders.open();
    t.send(b"retry me").unwrap();
    t.send(b"fail me").unwrap();
    let d = receive_one(&mut t, Duration::from_secs(2)).expect("a message");
    t.retry_later(&d, Duration::from_millis(300), 1).unwrap();
    let d = receive_one(&mut t, Duration::from_secs(2)).expect("a message");
    t.fail(&d, &a_record()).unwrap();

    // A worker on each of them opens and reads its own (empty) queue: no WRONGTYPE, and
    // nothing of `orders` is taken.
    let mut on_delayed = delayed_named.open();
    let mut on_failed = failed_named.open();
    assert_eq!(
        on_delayed.receive(Duration::from_millis(100)).unwrap(),
        None
    );
    assert_eq!(on_failed.receive(Duration::from_millis(100)).unwrap(), None);
    on_delayed.send(b"its own").unwrap();
    assert_eq!(
        on_delayed
            .receive(Duration::from_secs(1))
            .unwrap()
            .map(|d| d.body),
        Some(b"its own".to_vec())
    );

    // `orders` still has its dead letter and gets its retry back when due.
    assert_eq!(t.failed(10).unwrap().len(), 1);
    let back = receive_one(&mut t, Duration::from_secs(3)).expect("the retry came back");
    assert_eq!((back.body.as_slice(), back.attempt), (&b"retry me"[..], 1));
    t.ack(&back).unwrap();

    // Braces would move a stream to another hash slot than its keys: refused.
    let e = RedisTransport::open_dsn(&dsn(&orders.url, "stream=a{b}"), "unused").unwrap_err();
    assert!(e.to_string().contains("must not contain"), "{e}");
}

#[test]
fn every_key_of_one_queue_hashes_to_the_stream_s_own_slot() {
    let stream = Stream::new("slots");
    let mut t = stream.open();
    t.send(b"x").unwrap();
    let d = receive_one(&mut t, Duration::from_secs(2)).expect("a message");
    t.retry_later(&d, Duration::from_secs(60), 1).unwrap();
    t.record_stats(&[StatRow::new("T".to_owned(), 1, 1, 1)])
        .unwrap();
    // Redis Cluster's rule, from its specification: CRC16 (XMODEM) of the key's hash tag
    // (the text between the first `{` and the next `}`, if not empty) or of the whole key.
    fn crc16(bytes: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }
    fn slot(key: &str) -> u16 {
        let tagged = key.find('{').and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &key[open + 1..close])
        });
        crc16(tagged.unwrap_or(key).as_bytes()) % 16384
    }
    assert_eq!(
        crc16(b"123456789"),
        0x31c3,
        "the specification's check value"
    );
    let own = slot(&stream.name);
    let n = &stream.name;
    for key in [
        format!("{{{n}}}:delayed"),
        format!("{{{n}}}:failed"),
        format!("{{{n}}}:stats"),
        format!("{{{n}}}:stats:last-seen"),
    ] {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut raw(&stream.url))
            .unwrap();
        assert!(
            exists == 1 || key.ends_with(":failed"),
            "the transport does not write {key}"
        );
        assert_eq!(slot(&key), own, "{key}");
    }
}

#[test]
fn commands_that_only_look_refuse_a_stream_that_does_not_exist() {
    use upcaster_worker::{Access, TransportErrorKind};
    let stream = Stream::new("mistyped");
    let e = RedisTransport::open_dsn_with(&stream.dsn(), "unused", Access::Existing).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("creates none"), "{e}");
    let mut conn = raw(&stream.url);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&stream.name)
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0, "the stream was created");
    // Once a worker made it, it opens, and reads what is there.
    let mut t = stream.open();
    t.send(b"x").unwrap();
    let mut look =
        RedisTransport::open_dsn_with(&stream.dsn(), "unused", Access::Existing).unwrap();
    assert_eq!(look.pending().unwrap(), 1);
}

fn contract_fixture(name: &str) -> common::contract::Fixture {
    let stream = Stream::new(name);
    let dsn = stream.dsn();
    let again = dsn.clone();
    let shown = dsn.clone();
    common::contract::Fixture {
        dsn: shown,
        make: Box::new(move || {
            let queue = RedisTransport::open_dsn(&dsn, "unused").unwrap();
            Box::new(queue.reclaim_after(common::contract::RECLAIM_AFTER))
        }),
        make_async: Box::new(move || {
            let open = upcaster_worker::aio::AsyncRedisTransport::open_dsn(&again, "unused");
            let queue = common::contract::tokio().block_on(open);
            upcaster_worker::aio::AnyQueue::Redis(
                queue
                    .unwrap()
                    .reclaim_after(common::contract::RECLAIM_AFTER),
            )
        }),
        reclaim: common::contract::Reclaim::Lease,
        counts_with_ack: true,
        _cleanup: Box::new(stream),
    }
}

common::contract::transport_contract!(contract_fixture);
