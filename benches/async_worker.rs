//! The async worker over Redis Streams against a bare async loop on the `redis` crate, its
//! throughput with messages in flight, its allocations per message and its memory over
//! 100,000 messages.
//!
//! ```text
//! .ci/redis                                          # a Redis on 127.0.0.1:6379
//! cargo bench --bench async_worker                   # the full run
//! cargo bench --bench async_worker -- --quick        # fewer messages
//! cargo bench --bench async_worker -- --ratio        # the ratio alone
//! cargo bench --bench async_worker -- --multi-thread # on tokio's multi-thread runtime
//! ```
//!
//! 1. **Ratio at one in flight.** Both drain a stream pre-filled with the same ~200 B JSON
//!    messages through a consumer group, one message at a time, on one tokio runtime:
//!    - bare: `XREADGROUP COUNT 1 BLOCK` on a multiplexed connection, `serde_json::from_slice`
//!      of the payload, then `XACK` + `XDEL` in one pipeline;
//!    - worker: an [`AsyncWorker`] with an [`AsyncRedisTransport`] and `in_flight(1)`, a
//!      registry of one type and a handler that counts, stopped by a message limit. It also
//!      decodes the envelope, counts drain statistics in its ack script and checks for due
//!      retries.
//!
//!    - bare overlapped: the bare loop, with each ack sent beside the next read, as the
//!      worker sends a settle beside its next receive (handlers still run one at a time).
//!
//!    Each round drains all three in turns of chunks, so that a noisy neighbour slows all
//!    alike; the final line has the medians of the rounds' ratios. Target: at least 0.95 of
//!    the bare loop.
//! 2. **Messages in flight.** A handler that awaits 1 ms (a database call, say), at 1, 8 and
//!    64 in flight: messages per second.
//! 3. **Allocations per message**, counted by a global allocator over a whole drain, for the
//!    bare loop and for the worker.
//! 4. **Memory**: the resident set size before and after draining 100,000 messages.
//!
//! `UPCASTER_REDIS_URL` picks another server.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::aio::{AsyncHandlers, AsyncRedisTransport, AsyncWorker};
use upcaster_worker::{resident_set_size, Limits, StopReason};

#[path = "common/order.rs"]
mod order;
use order::Order;

#[path = "common/alloc.rs"]
mod alloc;
#[path = "common/stream.rs"]
mod stream;
use stream::{first_entry, GROUP};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

type Failure = Box<dyn std::error::Error>;

/// Deletes the stream and everything kept beside it, then fills it with `n` copies of `body`
/// in the transport's entry format.
async fn prefill(
    conn: &mut MultiplexedConnection,
    stream: &str,
    body: &[u8],
    n: usize,
) -> Result<(), Failure> {
    cleanup(conn, stream).await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .exec_async(conn)
        .await?;
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        stream::entries(stream, body, batch)
            .exec_async(conn)
            .await?;
        left -= batch;
    }
    Ok(())
}

async fn cleanup(conn: &mut MultiplexedConnection, stream: &str) -> Result<(), Failure> {
    redis::cmd("DEL")
        .arg(stream::keys(stream))
        .exec_async(conn)
        .await?;
    Ok(())
}

/// The bare async loop over `n` messages of a pre-filled stream: the time it took.
async fn bare(
    conn: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: Value = stream::read_one(stream).query_async(conn).await?;
        let Some((id, body)) = first_entry(reply) else {
            return Err(format!("the stream ran dry after {done} of {n} messages").into());
        };
        black_box(serde_json::from_slice::<Order>(&body)?);
        stream::settle(stream, &id).exec_async(conn).await?;
        done += 1;
    }
    Ok(started.elapsed())
}

/// The bare loop with its ack overlapped with the next read, as the worker overlaps a
/// settle with the next receive: the time it took.
async fn bare_overlapped(
    conn: &MultiplexedConnection,
    stream: &str,
    n: usize,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let mut unacked: Option<Vec<u8>> = None;
    for done in 0..n {
        let mut reader = conn.clone();
        let read_cmd = stream::read_one(stream);
        let read = read_cmd.query_async::<Value>(&mut reader);
        let reply = match unacked.take() {
            Some(id) => {
                let mut acker = conn.clone();
                let ack = stream::settle(stream, &id);
                let (reply, acked) = tokio::join!(read, ack.exec_async(&mut acker));
                acked?;
                reply?
            }
            None => read.await?,
        };
        let Some((id, body)) = first_entry(reply) else {
            return Err(format!("the stream ran dry after {done} of {n} messages").into());
        };
        black_box(serde_json::from_slice::<Order>(&body)?);
        unacked = Some(id);
    }
    if let Some(id) = unacked {
        stream::settle(stream, &id)
            .exec_async(&mut conn.clone())
            .await?;
    }
    Ok(started.elapsed())
}

/// An async worker run over `n` messages of a pre-filled stream, with `in_flight` messages
/// at once and a handler that awaits `work`: the time `run` took (connecting is left out).
async fn worker(
    url: &str,
    stream: &str,
    registry: &Arc<Registry>,
    n: usize,
    in_flight: usize,
    work: Duration,
) -> Result<Duration, Failure> {
    let transport = AsyncRedisTransport::open_dsn(url, stream).await?;
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
    let worker = AsyncWorker::new(handlers, transport)
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
    // `--multi-thread`: tokio's multi-thread runtime on two threads, as `#[tokio::main]` has
    // on this machine; otherwise one thread.
    let runtime = if std::env::args().any(|a| a == "--multi-thread") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(bench())
}

async fn bench() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (n, chunk, rounds) = if quick {
        (5_000, 500, 5)
    } else {
        (20_000, 1_000, 7)
    };
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str())?;
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("cannot reach Redis at {url} ({e}): run .ci/redis to start one");
            std::process::exit(1);
        }
    };
    let registry = Arc::new(Registry::builder().register::<Order>().build()?);
    let o = order::order(1);
    let payload = serde_json::to_vec(&o)?;
    let envelope = registry.encode(&o, Format::Json)?;
    let pid = std::process::id();
    let (bare_stream, worker_stream) = (
        format!("upcaster-bench:{pid}:async-bare"),
        format!("upcaster-bench:{pid}:async-worker"),
    );
    println!(
        "{n} messages per round in chunks of {chunk}, {rounds} rounds; payload {} B, envelope {} B; {url}",
        payload.len(),
        envelope.len()
    );

    // 1. The ratio at one in flight, against the bare loop and against the bare loop that
    // overlaps its ack with the next read (as the worker overlaps a settle).
    let overlapped_stream = format!("upcaster-bench:{pid}:async-overlapped");
    let (mut ratios, mut overlapped_ratios) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        prefill(&mut conn, &bare_stream, &payload, n).await?;
        prefill(&mut conn, &overlapped_stream, &payload, n).await?;
        prefill(&mut conn, &worker_stream, &envelope, n).await?;
        let (mut bare_time, mut overlapped_time, mut worker_time) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut done = 0;
        for k in 0.. {
            if done >= n {
                break;
            }
            let c = chunk.min(n - done);
            // The three in turn, each first in every third chunk.
            for step in 0..3 {
                match (k + step) % 3 {
                    0 => bare_time += bare(&mut conn, &bare_stream, c).await?,
                    1 => overlapped_time += bare_overlapped(&conn, &overlapped_stream, c).await?,
                    _ => {
                        worker_time +=
                            worker(&url, &worker_stream, &registry, c, 1, Duration::ZERO).await?
                    }
                }
            }
            done += c;
        }
        let rate = |t: Duration| n as f64 / t.as_secs_f64();
        let (b, o, w) = (rate(bare_time), rate(overlapped_time), rate(worker_time));
        println!(
            "round {round}: bare {b:>8.0} msgs/s, bare overlapped {o:>8.0} msgs/s, worker {w:>8.0} msgs/s, ratios {:.3} and {:.3}",
            w / b,
            w / o
        );
        ratios.push(w / b);
        overlapped_ratios.push(w / o);
    }
    cleanup(&mut conn, &overlapped_stream).await?;
    let ratio = median(ratios);
    println!(
        "median ratio async worker/bare async loop at 1 in flight: {ratio:.3}, target >= 0.95, within {}; against the bare loop overlapping its acks: {:.3}",
        if ratio >= 0.95 { "yes" } else { "NO" },
        median(overlapped_ratios)
    );

    if args.iter().any(|a| a == "--ratio") {
        return Ok(());
    }

    // 2. Messages in flight, with a handler that awaits 1 ms.
    for in_flight in [1, 8, 64] {
        let m = if quick {
            500 * in_flight.min(8)
        } else {
            1_000 * in_flight.min(16)
        };
        prefill(&mut conn, &worker_stream, &envelope, m).await?;
        let took = worker(
            &url,
            &worker_stream,
            &registry,
            m,
            in_flight,
            Duration::from_millis(1),
        )
        .await?;
        println!(
            "handler awaiting 1 ms, {in_flight:>2} in flight: {:>7.0} msgs/s ({m} messages)",
            m as f64 / took.as_secs_f64()
        );
    }

    // 3. Allocations per message, over a whole drain of each.
    let m = if quick { 2_000 } else { 10_000 };
    prefill(&mut conn, &bare_stream, &payload, m).await?;
    let before = alloc::count();
    bare(&mut conn, &bare_stream, m).await?;
    let bare_allocs = (alloc::count() - before) as f64 / m as f64;
    prefill(&mut conn, &worker_stream, &envelope, m).await?;
    let before = alloc::count();
    worker(&url, &worker_stream, &registry, m, 1, Duration::ZERO).await?;
    let worker_allocs = (alloc::count() - before) as f64 / m as f64;
    println!(
        "allocations per message: bare async loop {bare_allocs:.1}, async worker {worker_allocs:.1} (a worker's set-up included, spread over {m})"
    );

    // 4. Memory over 100,000 messages, after a first 1,000 to warm up.
    let total = if quick { 20_000 } else { 100_000 };
    prefill(&mut conn, &worker_stream, &envelope, total + 1_000).await?;
    worker(&url, &worker_stream, &registry, 1_000, 8, Duration::ZERO).await?;
    let rss_before = resident_set_size().unwrap_or(0);
    worker(&url, &worker_stream, &registry, total, 8, Duration::ZERO).await?;
    let rss_after = resident_set_size().unwrap_or(0);
    println!(
        "resident set: {:.1} MiB before and {:.1} MiB after {total} messages (8 in flight)",
        rss_before as f64 / f64::from(1 << 20),
        rss_after as f64 / f64::from(1 << 20)
    );
    cleanup(&mut conn, &bare_stream).await?;
    cleanup(&mut conn, &worker_stream).await?;
    Ok(())
}
