//! The worker over NATS JetStream against a bare loop on the same client (`async-nats`)
//! doing the same acknowledgements, side by side in one run; and messages per second at 1
//! and 32 in flight.
//!
//! ```text
//! .ci/nats                                        # a NATS server with JetStream on 127.0.0.1:4222
//! cargo bench --bench nats_worker                 # the full run
//! cargo bench --bench nats_worker -- --quick      # fewer messages
//! ```
//!
//! 1. **Ratio at one in flight.** Both drain a work-queue stream pre-filled with the same
//!    ~200 B JSON messages through a durable pull consumer, one message at a time:
//!    - bare: a pull request for one message on a subscribed inbox, `serde_json::from_slice`
//!      of the payload, and an ack the server confirms (`+ACK` as a request);
//!    - worker: an [`AsyncWorker`] with an [`AsyncNatsTransport`] and `in_flight(1)`, a
//!      registry of one type and a handler that counts, stopped by a message limit. It also
//!      decodes the envelope, writes a drain-statistics event with each ack, keeps held
//!      messages alive and looks for due retries.
//!
//!    Each round drains both in turns of chunks, so that a noisy neighbour slows both alike;
//!    the final line has the median of the rounds' ratios. Target: at least 0.9.
//! 2. **In flight**: the worker at 1 and 32 in flight, a handler that awaits 1 ms and one
//!    that does not: messages per second.
//!
//! `UPCASTER_NATS_URL` picks another server.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::aio::{AnyQueue, AsyncHandlers, AsyncNatsTransport, AsyncQueue, AsyncWorker};
use upcaster_worker::{Limits, StopReason};

#[path = "common/order.rs"]
mod order;
use order::Order;

type Failure = Box<dyn std::error::Error>;

/// Sends `n` copies of `body` through the transport (the bare loop reads the same stream
/// layout: the transport made it).
async fn prefill(queue: &AsyncNatsTransport, body: &[u8], n: usize) -> Result<(), Failure> {
    for _ in 0..n {
        queue.send(body).await?;
    }
    Ok(())
}

/// The bare loop: `n` messages, one pull, one decode and one confirmed ack each.
async fn bare(
    client: &async_nats::Client,
    inbox: &mut async_nats::Subscriber,
    inbox_subject: &str,
    stream: &str,
    n: usize,
) -> Result<Duration, Failure> {
    let pull = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.ready");
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        client
            .publish_with_reply(
                pull.clone(),
                inbox_subject.to_owned(),
                r#"{"batch":1,"expires":1000000000}"#.into(),
            )
            .await?;
        let message = inbox.next().await.ok_or("the inbox closed")?;
        if message.status.is_some() {
            continue;
        }
        let order: Order = serde_json::from_slice(&message.payload)?;
        black_box(&order);
        let reply = message.reply.ok_or("no reply subject")?;
        client.request(reply, "+ACK".into()).await?;
        done += 1;
    }
    Ok(started.elapsed())
}

/// The worker over `n` messages, `in_flight` at once, a handler that awaits `work`.
async fn worker(
    dsn: &str,
    registry: &Arc<Registry>,
    n: usize,
    in_flight: usize,
    work: Duration,
) -> Result<Duration, Failure> {
    let transport = AsyncNatsTransport::open_dsn(dsn, "unused").await?;
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    let handlers = AsyncHandlers::new(Arc::clone(registry)).on(move |m: Decoded<Order>| {
        black_box(&m.message);
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            Ok::<(), std::io::Error>(())
        }
    })?;
    let worker = AsyncWorker::new(handlers, AnyQueue::Nats(transport))
        .in_flight(in_flight)
        .limits(Limits::default().messages(n as u64));
    let started = Instant::now();
    let report = worker.run().await;
    let took = started.elapsed();
    if report.reason != StopReason::MessageLimit(n as u64) || count.load(Ordering::Relaxed) != n {
        return Err(format!(
            "the worker handled {} of {n}: {report}",
            count.load(Ordering::Relaxed)
        )
        .into());
    }
    Ok(took)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<(), Failure> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, chunk, rounds) = if quick {
        (2_000, 250, 5)
    } else {
        (10_000, 1_000, 7)
    };
    let url =
        std::env::var("UPCASTER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let client = match async_nats::connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach NATS at {url} ({e}): run .ci/nats to start one");
            std::process::exit(1);
        }
    };
    let js = jetstream::new(client.clone());
    let registry = Arc::new(Registry::builder().register::<Order>().build()?);
    let o = order::order(1);
    let payload = serde_json::to_vec(&o)?;
    let envelope = registry.encode(&o, Format::Json)?;
    let pid = std::process::id();
    let (bare_queue, worker_queue) = (format!("bench_bare_{pid}"), format!("bench_worker_{pid}"));
    let bare_dsn = format!("{url}?queue={bare_queue}");
    let worker_dsn = format!("{url}?queue={worker_queue}");
    let bare_filler = AsyncNatsTransport::open_dsn(&bare_dsn, "unused").await?;
    let worker_filler = AsyncNatsTransport::open_dsn(&worker_dsn, "unused").await?;
    let inbox_subject = client.new_inbox();
    let mut inbox = client.subscribe(inbox_subject.clone()).await?;
    println!(
        "{n} messages per round in chunks of {chunk}, {rounds} rounds; payload {} B, envelope {} B; {url}",
        payload.len(),
        envelope.len()
    );

    let mut ratios = Vec::new();
    for round in 1..=rounds {
        prefill(&bare_filler, &payload, n).await?;
        prefill(&worker_filler, &envelope, n).await?;
        let (mut bare_time, mut worker_time) = (Duration::ZERO, Duration::ZERO);
        let mut done = 0;
        for k in 0.. {
            if done >= n {
                break;
            }
            let c = chunk.min(n - done);
            for step in 0..2 {
                if (k + step) % 2 == 0 {
                    let stream = format!("upcaster_q_{bare_queue}");
                    bare_time += bare(&client, &mut inbox, &inbox_subject, &stream, c).await?;
                } else {
                    worker_time += worker(&worker_dsn, &registry, c, 1, Duration::ZERO).await?;
                }
            }
            done += c;
        }
        let rate = |t: Duration| n as f64 / t.as_secs_f64();
        let (b, w) = (rate(bare_time), rate(worker_time));
        println!(
            "round {round}: bare {b:>7.0} msgs/s, worker {w:>7.0} msgs/s, ratio {:.3}",
            w / b
        );
        ratios.push(w / b);
    }
    let ratio = median(ratios);
    println!(
        "median ratio worker/bare loop over NATS at 1 in flight: {ratio:.3}, target >= 0.9, within {}",
        if ratio >= 0.9 { "yes" } else { "NO" }
    );

    for work in [Duration::ZERO, Duration::from_millis(1)] {
        for in_flight in [1, 32] {
            let m = if quick { 1_000 } else { 5_000 };
            prefill(&worker_filler, &envelope, m).await?;
            let took = worker(&worker_dsn, &registry, m, in_flight, work).await?;
            println!(
                "worker, handler awaiting {work:?}, {in_flight:>2} in flight: {:>7.0} msgs/s ({m} messages)",
                m as f64 / took.as_secs_f64()
            );
        }
    }
    for queue in [&bare_queue, &worker_queue] {
        for stream in [
            format!("upcaster_q_{queue}"),
            format!("upcaster_f_{queue}"),
            format!("upcaster_s_{queue}"),
        ] {
            let _ = js.delete_stream(stream).await;
        }
    }
    Ok(())
}
