//! The NATS JetStream transport against a real server: the transport contract in both
//! runtimes, the restart signal contract, and commands that only look.
//!
//! They need a NATS server with JetStream at `UPCASTER_NATS_URL` (default
//! `nats://127.0.0.1:4222`): `.ci/nats` starts one. Without it they fail, never skip. Each
//! test works on a queue (or restart key) of its own and deletes its streams.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use upcaster_worker::aio::{AnyQueue, AsyncNatsTransport};
use upcaster_worker::prelude::*;
use upcaster_worker::{Access, NatsSignal, NatsTransport, TransportErrorKind};

/// The server's URL, or a failure saying how to start one.
fn nats_url() -> String {
    let url =
        std::env::var("UPCASTER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let address = url.trim_start_matches("nats://").trim_end_matches('/');
    let address = address.rsplit_once('@').map_or(address, |(_, a)| a);
    if let Err(e) = std::net::TcpStream::connect(address) {
        panic!(
            "cannot reach NATS at {url} ({e}): these tests need a server with JetStream; run \
             .ci/nats to start one on 127.0.0.1:4222, or set UPCASTER_NATS_URL"
        );
    }
    url
}

/// A queue of one test; its streams and bucket go when it is dropped.
struct TestQueue {
    url: String,
    name: String,
}

impl TestQueue {
    fn new(test: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestQueue {
            url: nats_url(),
            name: format!("{test}_{}_{nanos}", std::process::id()),
        }
    }

    fn dsn(&self) -> String {
        format!("{}?queue={}", self.url, self.name)
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Ok(client) = async_nats::connect(url.as_str()).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(format!("upcaster_q_{name}")).await;
            let _ = js.delete_stream(format!("upcaster_f_{name}")).await;
            let _ = js.delete_stream(format!("upcaster_s_{name}")).await;
            let _ = js
                .get_key_value("upcaster_restart")
                .await
                .map(|kv| async move {
                    let _ = kv.purge(name.as_str()).await;
                    let _ = kv.purge(format!("{name}.clock")).await;
                });
        });
    }
}

fn with_reclaim(dsn: &str) -> String {
    let secs = common::contract::RECLAIM_AFTER.as_secs_f64();
    format!("{dsn}&reclaim_after={secs}")
}

fn contract_fixture(name: &str) -> common::contract::Fixture {
    let queue = TestQueue::new(name);
    let mut fixture = contract_fixture_on(&queue);
    fixture._cleanup = Box::new(queue);
    fixture
}

/// A fixture on `queue`, which the caller keeps (and which removes the queue when dropped).
fn contract_fixture_on(queue: &TestQueue) -> common::contract::Fixture {
    let dsn = queue.dsn();
    fixture(dsn.clone(), with_reclaim(&dsn))
}

/// A fixture whose consumers open `open` (`dsn`, with parameters the checks need).
fn fixture(dsn: String, open: String) -> common::contract::Fixture {
    let (blocking, not_blocking) = (open.clone(), open);
    common::contract::Fixture {
        dsn,
        make: Box::new(move || Box::new(NatsTransport::open_dsn(&blocking, "unused").unwrap())),
        make_async: Box::new(move || {
            let open = AsyncNatsTransport::open_dsn(&not_blocking, "unused");
            AnyQueue::Nats(common::contract::tokio().block_on(open).unwrap())
        }),
        reclaim: common::contract::Reclaim::WhileHolderLives,
        counts_with_ack: false,
        _cleanup: Box::new(()),
    }
}

common::contract::transport_contract!(contract_fixture);

#[test]
fn the_nats_restart_signal_keeps_the_restart_signal_contract() {
    let queue = TestQueue::new("signal");
    let mut signal = NatsSignal::open_dsn(&format!("{}?key={}", queue.url, queue.name)).unwrap();
    common::contract::restart_signal(&mut signal);
}

#[test]
fn a_restart_signal_without_a_key_is_refused() {
    let e = NatsSignal::open_dsn(&nats_url()).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
    assert!(e.to_string().contains("?key="), "{e}");
}

#[test]
fn commands_that_only_look_refuse_a_queue_that_does_not_exist_and_create_none() {
    let queue = TestQueue::new("missing");
    let e = NatsTransport::open_dsn_with(&queue.dsn(), "unused", Access::Existing).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("no queue"), "{e}");
    // Still not there: a worker creates it, a look does not.
    let e = NatsTransport::open_dsn_with(&queue.dsn(), "unused", Access::Existing).unwrap_err();
    assert!(e.to_string().contains("no queue"), "{e}");
    let mut created = NatsTransport::open_dsn(&queue.dsn(), "unused").unwrap();
    created.send(b"x").unwrap();
    let mut look = NatsTransport::open_dsn_with(&queue.dsn(), "unused", Access::Existing).unwrap();
    assert_eq!(look.pending().unwrap(), 1);
}

#[test]
fn queue_names_that_are_not_plain_words_are_refused() {
    let url = nats_url();
    for bad in ["a.b", "a*", "a>", "a b", ""] {
        let dsn = format!("{url}?queue={}", bad.replace(' ', "%20"));
        let e = NatsTransport::open_dsn(&dsn, "unused").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Configuration, "{bad}: {e}");
    }
    let e = NatsTransport::open_dsn(&format!("{url}?reclaim_after=0"), "q").unwrap_err();
    assert!(e.to_string().contains("reclaim_after"), "{e}");
}

/// A worker in either runtime rides out a server restart in the middle of a drain: it
/// reconnects and goes on, nothing is lost, and each message is counted once.
fn rides_out_a_server_restart(runtime: common::contract::Runtime) {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use upcaster::Format;
    use upcaster_worker::{Limits, StopReason};

    let store = std::env::temp_dir().join(format!(
        "upcaster-nats-restart-{runtime:?}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&store);
    let mut server = common::nats_server::NatsServer::start(&store).unwrap();
    let dsn = format!("nats://127.0.0.1:{}?queue=restarted", server.port);
    let registry = Arc::new(common::ponka::registry().unwrap());
    let mut t = NatsTransport::open_dsn(&dsn, "unused").unwrap();
    const MESSAGES: u64 = 300;
    for id in 1..=MESSAGES {
        let bytes = registry
            .encode(
                &common::ponka::AddPonkaToImage { image_post: id },
                Format::Json,
            )
            .unwrap();
        t.send(&bytes).unwrap();
    }
    drop(t);
    let handled = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let seen = Arc::clone(&handled);
    let fixture = fixture(dsn.clone(), dsn.clone());
    let progress = Arc::clone(&handled);
    let report = std::thread::scope(|scope| {
        let server = &mut server;
        scope.spawn(move || {
            while progress.lock().unwrap().len() < 100 {
                std::thread::sleep(Duration::from_millis(5));
            }
            server.restart(Duration::from_millis(500)).unwrap();
        });
        common::contract::Run::new(
            &fixture,
            runtime,
            &registry,
            move |m: common::ponka::AddPonkaToImage| {
                std::thread::sleep(Duration::from_millis(5));
                *seen.lock().unwrap().entry(m.image_post).or_default() += 1;
                Ok(())
            },
        )
        .poll(Duration::from_millis(50))
        .limits(Limits::default().stop_when_empty())
        .run()
    });
    assert_eq!(report.reason, StopReason::Empty, "{report}");
    let handled = handled.lock().unwrap();
    let missing: Vec<u64> = (1..=MESSAGES)
        .filter(|id| !handled.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?} ({report})");
    let twice: Vec<u64> = handled
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(twice.is_empty(), "handled twice: {twice:?}");
    let mut t = NatsTransport::open_dsn(&dsn, "unused").unwrap();
    assert_eq!(t.pending().unwrap(), 0);
    assert!(t.failed(10).unwrap().is_empty());
    let counted: u64 = t.stats().unwrap().iter().map(|r| r.count).sum();
    assert_eq!(counted, MESSAGES, "each message counted once");
    drop(t);
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn a_blocking_worker_rides_out_a_server_restart() {
    rides_out_a_server_restart(common::contract::Runtime::Blocking);
}

#[test]
fn an_async_worker_rides_out_a_server_restart() {
    rides_out_a_server_restart(common::contract::Runtime::Tokio);
}

/// With `form=split` a producer writes type, version, codec and envelope headers as NATS
/// headers and the bare payload as the body; a consumer reads it back as the same envelope,
/// in both codecs. A producer in another language that writes only `type` and `version`
/// headers is read too, and upcast.
#[test]
fn the_split_form_is_written_when_configured_and_read_either_way() {
    use upcaster::{Format, Headers};

    let queue = TestQueue::new("split");
    let registry = common::ponka::registry().unwrap();
    let v1 = common::ponka::registry_v1().unwrap();
    let mut producer =
        NatsTransport::open_dsn(&format!("{}&form=split", queue.dsn()), "x").unwrap();
    let mut consumer = NatsTransport::open_dsn(&queue.dsn(), "x").unwrap();
    let mut headers = Headers::new();
    headers.insert("message-id", "m-7");
    for format in [Format::Json, Format::MessagePack] {
        let envelope = v1
            .encode_with_headers(
                &common::ponka::v1::AddPonkaToImage { image_post_id: 7 },
                &headers,
                format,
            )
            .unwrap();
        let id: u64 = producer.send(&envelope).unwrap().parse().unwrap();
        // On the wire: headers and the bare payload.
        let stored = common::contract::tokio().block_on(async {
            let client = async_nats::connect(queue.url.as_str()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_stream(format!("upcaster_q_{}", queue.name))
                .await
                .unwrap();
            stream.direct_get(id).await.unwrap()
        });
        let header = |k: &str| stored.headers.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(header("type").as_deref(), Some("AddPonkaToImage"));
        assert_eq!(header("version").as_deref(), Some("1"));
        assert_eq!(header("message-id").as_deref(), Some("m-7"));
        let (split, _, _) = upcaster::Split::from_envelope(&envelope).unwrap();
        assert_eq!(stored.payload.as_ref(), split.body.as_slice());
        // Read back: the envelope as it was written.
        let d = consumer
            .receive(std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(d.body, envelope, "{format:?}");
        consumer.ack(&d).unwrap();
    }
    // Another language's producer: two headers and a JSON body.
    common::contract::tokio().block_on(async {
        let client = async_nats::connect(queue.url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut h = async_nats::HeaderMap::new();
        h.insert("type", "AddPonkaToImage");
        h.insert("version", "1");
        js.publish_with_headers(
            format!("upcaster.{}.ready", queue.name),
            h,
            br#"{"imagePostId":41}"#.to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let mut bad = async_nats::HeaderMap::new();
        bad.insert("type", "AddPonkaToImage");
        bad.insert("version", "01");
        js.publish_with_headers(
            format!("upcaster.{}.ready", queue.name),
            bad,
            br#"{"imagePostId":42}"#.to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    let d = consumer
        .receive(std::time::Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let decoded = registry
        .decode::<common::ponka::AddPonkaToImage>(&d.body)
        .unwrap();
    assert_eq!(
        (decoded.message.image_post, decoded.header.version),
        (41, 1)
    );
    consumer.ack(&d).unwrap();
    // A version that is no version: the body as it came, which fails to decode, bytes kept.
    let d = consumer
        .receive(std::time::Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(d.body, br#"{"imagePostId":42}"#);
    let e = registry
        .decode::<common::ponka::AddPonkaToImage>(&d.body)
        .unwrap_err();
    assert_eq!(e.raw(), br#"{"imagePostId":42}"#);
    let e = NatsTransport::open_dsn(&format!("{}&form=both", queue.dsn()), "x").unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
}

/// Found by an attack: after today's worker released messages that yesterday's requeued
/// for it, its look at the delayed messages waited for an answer without end, and the
/// worker hung. Today's worker now handles the released messages and the new one.
#[test]
fn a_worker_goes_on_after_releasing_messages_that_waited_for_it() {
    use std::sync::Arc;
    use std::time::Duration;
    use upcaster::Format;
    use upcaster_worker::{Limits, RetryPolicy};

    let queue = TestQueue::new("released");
    let fixture = contract_fixture_on(&queue);
    let today = Arc::new(common::ponka::registry().unwrap());
    let yesterday = Arc::new(common::ponka::registry_v1().unwrap());
    let mut t = NatsTransport::open_dsn(&queue.dsn(), "x").unwrap();
    for id in 1..=5 {
        let v2 = today
            .encode(
                &common::ponka::AddPonkaToImage { image_post: id },
                Format::Json,
            )
            .unwrap();
        t.send(&v2).unwrap();
    }
    let report = common::contract::Run::new(
        &fixture,
        common::contract::Runtime::Blocking,
        &yesterday,
        |_: common::ponka::v1::AddPonkaToImage| Ok(()),
    )
    .retry(RetryPolicy::default().future_version_delay(Duration::from_secs(60)))
    .limits(Limits::default().messages(5))
    .run();
    assert_eq!(report.requeued, 5, "{report}");
    let v1 = yesterday
        .encode(
            &common::ponka::v1::AddPonkaToImage { image_post_id: 77 },
            Format::Json,
        )
        .unwrap();
    t.send(&v1).unwrap();
    for runtime in [
        common::contract::Runtime::Blocking,
        common::contract::Runtime::Tokio,
    ] {
        let report = common::contract::Run::new(
            &fixture,
            runtime,
            &today,
            |_: common::ponka::AddPonkaToImage| Ok(()),
        )
        .poll(Duration::from_millis(50))
        .limits(Limits::default().stop_when_empty())
        .run();
        if runtime == common::contract::Runtime::Blocking {
            assert_eq!(report.handled, 6, "{report}");
        }
    }
    assert_eq!(t.pending().unwrap(), 0);
}

/// Found by an attack: a queue's failure and statistics streams were named after the queue
/// (`x_failed`), so the queue `x_failed` was another's failure stream.
#[test]
fn queues_whose_names_end_like_another_queues_streams_stay_apart() {
    let a = TestQueue::new("c1");
    let b = TestQueue {
        url: a.url.clone(),
        name: format!("{}_failed", a.name),
    };
    let mut first = NatsTransport::open_dsn(&a.dsn(), "x").unwrap();
    let mut second = NatsTransport::open_dsn(&b.dsn(), "x").unwrap();
    first.send(b"a").unwrap();
    second.send(b"b").unwrap();
    let d = second
        .receive(std::time::Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(d.body, b"b");
    let id = second
        .fail(&d, &upcaster_worker::FailureRecord::new("handler", "no"))
        .unwrap();
    assert!(id.is_some());
    assert_eq!(first.pending().unwrap(), 1);
    assert!(first.failed(10).unwrap().is_empty());
    assert_eq!(second.failed(10).unwrap().len(), 1);
}

/// Found by an attack: a producer opening the queue with a plain DSN reset the workers'
/// reclaim timeout to the default. Only a DSN that names one changes it.
#[test]
fn a_plain_dsn_leaves_the_reclaim_timeout_alone() {
    let queue = TestQueue::new("reclaim");
    let _worker =
        NatsTransport::open_dsn(&format!("{}&reclaim_after=120", queue.dsn()), "x").unwrap();
    let _producer = NatsTransport::open_dsn(&queue.dsn(), "x").unwrap();
    let wait = common::contract::tokio().block_on(async {
        let client = async_nats::connect(queue.url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(format!("upcaster_q_{}", queue.name))
            .await
            .unwrap();
        stream.consumer_info("ready").await.unwrap().config.ack_wait
    });
    assert_eq!(wait, std::time::Duration::from_secs(120));
}
