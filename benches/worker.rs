//! The worker loop over Redis Streams against a bare loop on the `redis` crate.
//!
//! ```text
//! .ci/redis                                                      # a Redis on 127.0.0.1:6379
//! cargo bench --bench worker                    # 5 rounds of 20,000 messages
//! cargo bench --bench worker -- --quick         # 5 rounds of 5,000
//! cargo bench --bench worker -- --only worker   # one loop, for a profiler
//! ```
//!
//! Both drain a stream pre-filled with the same ~200 B JSON messages through a consumer
//! group, one message at a time:
//! - bare: `XREADGROUP COUNT 1 BLOCK`, `serde_json::from_slice` of the payload, then `XACK` +
//!   `XDEL` in one pipeline;
//! - worker: upcaster's [`Worker`] with a [`RedisTransport`], a registry of one type and a
//!   handler that counts, stopped by `Limits { messages: Some(n), .. }`. It also decodes the
//!   envelope, keeps drain statistics and checks for due retries.
//!
//! Each round drains both streams in alternating chunks (1,000 messages; 500 with `--quick`),
//! so that a noisy neighbour slows both alike; each worker chunk is a fresh `Worker::run` on
//! a transport opened beforehand. The final line has the medians of the rounds. The target:
//! the worker keeps at least 0.9 of the bare throughput. `UPCASTER_REDIS_URL` picks another
//! server.

use std::hint::black_box;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::{Handlers, Limits, RedisTransport, StopReason, Worker};

#[path = "common/order.rs"]
mod order;
use order::Order;

/// The 200 B order of the ratio benchmarks.
fn order() -> Order {
    order::order(1)
}

#[path = "common/stream.rs"]
mod stream;
use stream::{first_entry, GROUP};

type Failure = Box<dyn std::error::Error>;

/// Deletes the stream and everything kept beside it, then fills it with `n` copies of `body`
/// in the transport's entry format.
fn prefill(conn: &mut Connection, stream: &str, body: &[u8], n: usize) -> Result<(), Failure> {
    cleanup(conn, stream)?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .exec(conn)?;
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        stream::entries(stream, body, batch).exec(conn)?;
        left -= batch;
    }
    Ok(())
}

fn cleanup(conn: &mut Connection, stream: &str) -> Result<(), Failure> {
    redis::cmd("DEL").arg(stream::keys(stream)).exec(conn)?;
    Ok(())
}

/// The bare loop over `n` messages of a pre-filled stream: the time it took.
fn bare(conn: &mut Connection, stream: &str, n: usize) -> Result<Duration, Failure> {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: Value = stream::read_one(stream).query(conn)?;
        let Some((id, body)) = first_entry(reply) else {
            return Err(format!("the stream ran dry after {done} of {n} messages").into());
        };
        black_box(serde_json::from_slice::<Order>(&body)?);
        stream::settle(stream, &id).exec(conn)?;
        done += 1;
    }
    Ok(started.elapsed())
}

/// A worker run over `n` messages of a pre-filled stream: the time `run` took (connecting
/// is left out).
fn worker(url: &str, stream: &str, registry: &Registry, n: usize) -> Result<Duration, Failure> {
    let transport = RedisTransport::open_dsn(url, stream)?;
    let count = std::sync::atomic::AtomicUsize::new(0);
    let handlers = Handlers::new(registry).on(|m: Decoded<Order>| {
        black_box(&m.message);
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok::<(), std::io::Error>(())
    })?;
    let mut worker = Worker::new(handlers)
        .transport(Box::new(transport))
        .limits(Limits::default().messages(n as u64));
    let started = Instant::now();
    let report = worker.run();
    let took = started.elapsed();
    drop(worker);
    if report.reason != StopReason::MessageLimit(n as u64)
        || count.load(std::sync::atomic::Ordering::Relaxed) != n
    {
        return Err(format!(
            "the worker handled {} of {n}: {report}",
            count.load(std::sync::atomic::Ordering::Relaxed)
        )
        .into());
    }
    Ok(took)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bench settings and the streams both loops read.
struct Bench<'a> {
    url: &'a str,
    registry: &'a Registry,
    payload: &'a [u8],
    envelope: &'a [u8],
    bare_stream: String,
    worker_stream: String,
}

impl Bench<'_> {
    /// One round: both streams filled with `n` messages, drained in alternating chunks of
    /// `chunk` (bare first in even chunks, the worker first in odd ones). Messages per second,
    /// bare and worker.
    fn round(
        &self,
        conn: &mut Connection,
        n: usize,
        chunk: usize,
        which: (bool, bool),
    ) -> Result<(f64, f64), Failure> {
        let (with_bare, with_worker) = which;
        if with_bare {
            prefill(conn, &self.bare_stream, self.payload, n)?;
        }
        if with_worker {
            prefill(conn, &self.worker_stream, self.envelope, n)?;
        }
        let (mut bare_time, mut worker_time) = (Duration::ZERO, Duration::ZERO);
        let (mut done, mut k) = (0, 0);
        while done < n {
            let c = chunk.min(n - done);
            let mut run_bare = |conn: &mut Connection| -> Result<(), Failure> {
                if with_bare {
                    bare_time += bare(conn, &self.bare_stream, c)?;
                }
                Ok(())
            };
            if k % 2 == 0 {
                run_bare(conn)?;
                if with_worker {
                    worker_time += worker(self.url, &self.worker_stream, self.registry, c)?;
                }
            } else {
                if with_worker {
                    worker_time += worker(self.url, &self.worker_stream, self.registry, c)?;
                }
                run_bare(conn)?;
            }
            done += c;
            k += 1;
        }
        cleanup(conn, &self.bare_stream)?;
        cleanup(conn, &self.worker_stream)?;
        let rate = |t: Duration| n as f64 / t.as_secs_f64();
        Ok((rate(bare_time), rate(worker_time)))
    }
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (n, chunk, rounds) = if quick {
        (5_000, 500, 5)
    } else {
        (20_000, 1_000, 5)
    };
    // `--only bare` or `--only worker`: that loop alone, one round, for perf or strace.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut conn = match redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
    {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("cannot reach Redis at {url} ({e}): run .ci/redis to start one");
            std::process::exit(1);
        }
    };

    let registry = Registry::builder().register::<Order>().build()?;
    let o = order();
    let payload = serde_json::to_vec(&o)?;
    let envelope = registry.encode(&o, Format::Json)?;
    let pid = std::process::id();
    let bench = Bench {
        url: &url,
        registry: &registry,
        payload: &payload,
        envelope: &envelope,
        bare_stream: format!("upcaster-bench:{pid}:bare"),
        worker_stream: format!("upcaster-bench:{pid}:worker"),
    };
    println!(
        "{n} messages per round in chunks of {chunk}, {rounds} rounds; payload {} B, envelope {} B; {url}",
        payload.len(),
        envelope.len()
    );

    match only.as_deref() {
        Some("bare") => {
            let (b, _) = bench.round(&mut conn, n, n, (true, false))?;
            println!("bare {b:.0} msgs/s");
            return Ok(());
        }
        Some("worker") => {
            let (_, w) = bench.round(&mut conn, n, n, (false, true))?;
            println!("worker {w:.0} msgs/s");
            return Ok(());
        }
        Some(other) => return Err(format!("--only takes bare or worker, not {other}").into()),
        None => {}
    }

    let (mut bares, mut workers, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (b, w) = bench.round(&mut conn, n, chunk, (true, true))?;
        println!(
            "round {round}: bare {b:>8.0} msgs/s, worker {w:>8.0} msgs/s, ratio {:.3}",
            w / b
        );
        bares.push(b);
        workers.push(w);
        ratios.push(w / b);
    }
    let ratio = median(ratios);
    println!(
        "median: bare {:.0} msgs/s, worker {:.0} msgs/s, ratio worker/bare {ratio:.3}, target >= 0.9, within {}",
        median(bares),
        median(workers),
        if ratio >= 0.9 { "yes" } else { "NO" }
    );
    Ok(())
}
