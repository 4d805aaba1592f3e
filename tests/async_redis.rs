//! The async Redis Streams transport against a real Redis server, alone and beside the
//! blocking one on the same stream.
//!
//! They need one at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`): `.ci/redis` starts
//! one. Without it they fail, never skip. Each test works on its own stream and deletes its keys.

mod redis_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use upcaster_worker::aio::{AsyncQueue, AsyncRedisTransport};
use upcaster_worker::prelude::*;
use upcaster_worker::{Access, Delivery, FailureRecord, RedisTransport, TransportErrorKind};

use redis_support::{dsn, raw, redis_url, Stream};

/// How long a test waits for what should come at once, before it fails rather than hang.
const PATIENCE: Duration = Duration::from_secs(10);

async fn open(stream: &Stream) -> AsyncRedisTransport {
    AsyncRedisTransport::open_dsn(&stream.dsn(), "unused")
        .await
        .unwrap_or_else(|e| panic!("{e} (is Redis running? .ci/redis starts one)"))
}

/// Receives until a message comes, failing after [`PATIENCE`].
async fn receive_one(q: &AsyncRedisTransport) -> Delivery {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = tokio::time::timeout(PATIENCE, q.receive(Duration::from_millis(200)))
            .await
            .expect("receive did not return")
            .expect("receive");
        if let Some(d) = got {
            return d;
        }
        assert!(Instant::now() < deadline, "no message within {PATIENCE:?}");
    }
}

/// Receives on the blocking transport, failing after [`PATIENCE`].
fn blocking_receive_one(t: &mut RedisTransport) -> Delivery {
    t.receive(PATIENCE)
        .expect("receive")
        .unwrap_or_else(|| panic!("no message within {PATIENCE:?}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[tokio::test]
async fn a_message_round_trips_with_its_bytes_intact() {
    let stream = Stream::new("async-round-trip");
    let q = open(&stream).await;
    assert_eq!(q.name(), stream.dsn());
    assert_eq!((q.stream(), q.group()), (stream.name.as_str(), "upcaster"));
    assert!(!q.consumer().is_empty());

    let mut body: Vec<u8> = (0..=255u8).rev().collect();
    body.extend_from_slice(b"\r\n\0body\r\nattempt\0");
    let id = q.send(&body).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), 1);
    let d = receive_one(&q).await;
    assert_eq!(d.id, id);
    assert_eq!(d.body, body);
    assert_eq!((d.attempt, d.deliveries, d.reclaimed), (0, 1, false));
    q.ack(&d).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), 0);
    assert_eq!(q.receive(Duration::ZERO).await.unwrap(), None);
}

#[tokio::test]
async fn a_receive_on_an_empty_stream_waits_its_timeout_and_zero_does_not() {
    let stream = Stream::new("async-empty");
    // Reclaim scans every 100 ms wake the read early: the receive still waits its timeout out.
    let queues = [
        (open(&stream).await, Duration::from_millis(300)),
        (
            open(&stream)
                .await
                .reclaim_after(Duration::from_millis(100)),
            Duration::from_millis(700),
        ),
    ];
    for (q, timeout) in &queues {
        let started = Instant::now();
        let got = tokio::time::timeout(*timeout + PATIENCE, q.receive(*timeout))
            .await
            .unwrap_or_else(|_| panic!("receive({timeout:?}) did not return"));
        assert_eq!(got.unwrap(), None);
        let took = started.elapsed();
        assert!(
            took >= *timeout,
            "returned after {took:?}, before its {timeout:?}"
        );
    }
    let started = Instant::now();
    assert_eq!(queues[0].0.receive(Duration::ZERO).await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_secs(1), "zero waited");
}

#[test]
fn the_blocking_and_async_transports_share_one_stream() {
    let rt = runtime();
    let stream = Stream::new("async-interop");
    let mut blocking = stream.open();
    let q = rt.block_on(open(&stream));

    blocking.send(b"from blocking").unwrap();
    let d = rt.block_on(receive_one(&q));
    assert_eq!(d.body, b"from blocking");
    rt.block_on(q.ack(&d)).unwrap();
    assert_eq!(blocking.pending().unwrap(), 0);

    rt.block_on(q.send(b"from async")).unwrap();
    let d = blocking_receive_one(&mut blocking);
    assert_eq!(d.body, b"from async");
    blocking.ack(&d).unwrap();
    assert_eq!(rt.block_on(q.pending()).unwrap(), 0);

    // A retry one puts in the delayed set, the other moves back and receives.
    rt.block_on(q.send(b"retried")).unwrap();
    let d = rt.block_on(receive_one(&q));
    rt.block_on(q.retry_later(&d, Duration::from_millis(50), 2))
        .unwrap();
    let back = blocking_receive_one(&mut blocking);
    assert_eq!((back.body.as_slice(), back.attempt), (&b"retried"[..], 2));
    blocking
        .retry_later(&back, Duration::from_millis(50), 3)
        .unwrap();
    let again = rt.block_on(receive_one(&q));
    assert_eq!((again.body.as_slice(), again.attempt), (&b"retried"[..], 3));
    rt.block_on(q.ack(&again)).unwrap();
    assert_eq!(blocking.pending().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_acks_from_spawned_tasks_all_land_while_a_receive_waits() {
    let stream = Stream::new("async-fifty");
    let q = Arc::new(open(&stream).await);
    for i in 0..50 {
        q.send(format!("message {i}").as_bytes()).await.unwrap();
    }
    let mut deliveries = Vec::new();
    while deliveries.len() < 50 {
        deliveries.push(receive_one(&q).await);
    }
    let bodies: BTreeSet<Vec<u8>> = deliveries.iter().map(|d| d.body.clone()).collect();
    assert_eq!(bodies.len(), 50, "a message was delivered twice");
    assert_eq!(q.pending().await.unwrap(), 50);

    // The worker's shape: the next receive waits while the tasks in flight settle.
    let waiting = tokio::spawn({
        let q = Arc::clone(&q);
        async move { q.receive(Duration::from_millis(1500)).await }
    });
    let acks: Vec<_> = deliveries
        .into_iter()
        .map(|d| {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.ack(&d).await })
        })
        .collect();
    for ack in acks {
        ack.await.expect("the ack task").expect("ack");
    }
    assert_eq!(q.pending().await.unwrap(), 0);
    let got = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the receive did not return")
        .expect("the receive task");
    assert_eq!(got.unwrap(), None);
}

#[tokio::test]
async fn a_delayed_retry_is_not_delivered_before_its_delay() {
    let stream = Stream::new("async-delayed");
    let q = open(&stream).await;
    q.send(b"later").await.unwrap();
    let d = receive_one(&q).await;
    let delay = Duration::from_millis(700);
    let retried = Instant::now();
    q.retry_later(&d, delay, 1).await.unwrap();
    assert_eq!(
        q.pending().await.unwrap(),
        1,
        "a delayed retry is still pending"
    );
    assert_eq!(q.receive(Duration::ZERO).await.unwrap(), None);
    // One receive longer than the delay wakes for the retry instead of waiting it out.
    let back = tokio::time::timeout(PATIENCE, q.receive(Duration::from_secs(5)))
        .await
        .expect("receive did not return")
        .unwrap()
        .expect("the retry, within the receive");
    let waited = retried.elapsed();
    assert!(
        waited >= delay,
        "delivered after {waited:?}, before its {delay:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "woke for it only after {waited:?}"
    );
    assert_eq!((back.body.as_slice(), back.attempt), (&b"later"[..], 1));
    q.ack(&back).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), 0);
}

#[test]
fn fail_stores_the_raw_bytes_where_the_blocking_failure_store_reads_them() {
    let rt = runtime();
    let stream = Stream::new("async-fail");
    let q = rt.block_on(open(&stream));
    let body = b"\xff\xfe not an envelope \0 at all".to_vec();
    rt.block_on(q.send(&body)).unwrap();
    let d = rt.block_on(receive_one(&q));
    let record = FailureRecord::new("malformed", "not an envelope")
        .message("Ping", 2)
        .attempts(1)
        .failed_at_ms(1_700_000_000_000);
    let id = rt
        .block_on(q.fail(&d, &record))
        .unwrap()
        .expect("the failed entry's id");
    assert_eq!(rt.block_on(q.pending()).unwrap(), 0);

    let failed = stream.open().failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, id);
    assert_eq!(failed[0].body, body);
    assert_eq!(failed[0].record, record);
    // Settled: no longer this consumer's to fail again.
    assert_eq!(rt.block_on(q.fail(&d, &record)).unwrap(), None);
}

#[tokio::test]
async fn the_dsn_is_read_and_refused_as_the_blocking_transport_reads_it() {
    let url = redis_url();
    let stream = Stream::new("async-dsn");
    let with_group = dsn(&url, &format!("stream={}&group=billing", stream.name));
    let q = AsyncRedisTransport::open_dsn(&with_group, "ignored")
        .await
        .unwrap();
    assert_eq!((q.stream(), q.group()), (stream.name.as_str(), "billing"));

    for bad in [
        "colour=blue",
        "stream=a%7Bb%7D",
        "reclaim_after=soon",
        "group=",
    ] {
        let e = AsyncRedisTransport::open_dsn(&dsn(&url, bad), "q")
            .await
            .unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Configuration, "{bad}: {e}");
    }

    let missing = Stream::new("async-missing");
    let e = AsyncRedisTransport::open_dsn_with(&missing.dsn(), "unused", Access::Existing)
        .await
        .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("creates none"), "{e}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&missing.name)
        .query(&mut raw(&missing.url))
        .unwrap();
    assert_eq!(exists, 0, "the stream was created");

    // Nothing answers on port 1: a connection error, without the password.
    let e = AsyncRedisTransport::open_dsn("redis://user:s3cret@127.0.0.1:1/0", "q")
        .await
        .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Connection, "{e}");
    assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
}

/// `url` on database `db`: a test that cuts connections off tells its own from the others' by it.
fn in_db(url: &str, db: u32) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let (scheme, rest) = base.split_once("://").expect("a redis:// URL");
    let host = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{host}/{db}?{query}"),
        None => format!("{scheme}://{host}/{db}"),
    }
}

/// Kills the connections on database `db` whose last command was `XREADGROUP`, as a proxy or
/// a failover would; how many.
fn kill_readers(url: &str, db: u32) -> usize {
    let mut conn = raw(url);
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(&mut conn)
        .expect("CLIENT LIST");
    let on_db = format!("db={db}");
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == on_db) && l.split(' ').any(|f| f == "cmd=xreadgroup"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect();
    for id in &ids {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut conn)
            .expect("CLIENT KILL");
    }
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_off_delivers_what_its_consumer_was_given_and_nothing_in_flight() {
    const DB: u32 = 9;
    let mut stream = Stream::new("async-cut-off");
    stream.url = in_db(&stream.url, DB);
    let q = Arc::new(open(&stream).await);
    q.send(b"in flight").await.unwrap();
    let held = receive_one(&q).await;
    // The server gives this consumer an entry, and the reply is lost: taken here by hand.
    q.send(b"given").await.unwrap();
    {
        let mut conn = raw(&stream.url);
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("upcaster")
            .arg(q.consumer())
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream.name)
            .arg(">")
            .query(&mut conn)
            .unwrap();
    }
    let waiting = tokio::spawn({
        let q = Arc::clone(&q);
        async move { q.receive(Duration::from_secs(5)).await }
    });
    let url = stream.url.clone();
    let killed = tokio::task::spawn_blocking(move || kill_readers(&url, DB))
        .await
        .unwrap();
    assert_eq!(killed, 1, "the receive's reader was not found");
    let got = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the receive did not return")
        .expect("the receive task")
        .expect("a receive whose connection was cut off")
        .expect("the entry the lost reply gave");
    assert_eq!(
        got.body, b"given",
        "a message in flight was delivered again"
    );
    q.ack(&got).await.unwrap();
    q.ack(&held).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn a_worker_that_stops_leaves_no_consumer_behind_in_the_group() {
    use upcaster::{Decoded, Format};
    let stream = Stream::new("async-close");
    let registry = Arc::new(
        upcaster::Registry::builder()
            .register::<Ping>()
            .build()
            .unwrap(),
    );
    let queue = open(&stream).await;
    for n in 0..3 {
        queue
            .send(&registry.encode(&Ping { n }, Format::Json).unwrap())
            .await
            .unwrap();
    }
    let handlers = upcaster_worker::aio::AsyncHandlers::new(registry)
        .on(|_: Decoded<Ping>| async { Ok::<(), std::io::Error>(()) })
        .unwrap();
    let report = upcaster_worker::aio::AsyncWorker::new(handlers, queue)
        .in_flight(2)
        .poll_interval(Duration::from_millis(50))
        .limits(upcaster_worker::Limits::default().stop_when_empty())
        .run()
        .await;
    assert_eq!(report.handled, 3, "{report}");
    // Still inside the runtime: what the worker left is in the group now, not after a drop.
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream.name)
        .arg("upcaster")
        .query(&mut raw(&stream.url))
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(Vec::new()), "{consumers:?}");
}

#[derive(serde::Serialize, serde::Deserialize, upcaster::Message)]
#[message(version = 1)]
struct Ping {
    n: u32,
}
