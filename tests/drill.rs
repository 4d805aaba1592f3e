//! The deploy drill, with real worker processes, on the embedded queue, Redis, PostgreSQL and
//! NATS JetStream (on a server of its own, restarted mid-drain).
//!
//! 1. 10,000 v1 messages are queued, with 200 v2 messages from a newer producer (deployed
//!    first, as in a rolling deploy) among the first 2,000.
//! 2. Two worker processes run yesterday's code (AddPonkaToImage v1).
//! 3. Mid-drain, one worker gets SIGTERM, then `stop-workers` runs for the other.
//! 4. Two worker processes run today's code (v2, `imagePostId` renamed to `imagePost`) until
//!    the queue is empty.
//!
//! Every message carries its id twice: in the payload field the migration renames, and in a
//! `message-id` envelope header that no migration touches. Every handler writes
//! `start <message-id>` and `end <message-id> <code> <arrived version> <payload field>` lines
//! to its process's log, so the drill can tell that every message was handled, none twice,
//! that each upcast put the right value in the renamed field, that no id was made up, and
//! that no worker stopped inside a message.
//!
//! This file is its own harness: run as `drill worker …` it is one of the worker processes.
//! It takes libtest's arguments (a name filter, `--exact`, `--skip`, `--list`, and the
//! options that change nothing here, such as `--test-threads N`) and refuses any other.
//! Without a Redis at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`) the Redis drill
//! fails, saying how to start one (`.ci/redis`).

#[path = "common/nats_server.rs"]
mod nats_server;
#[path = "../examples/ponka/messages.rs"]
mod ponka;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use upcaster::{Decoded, Format, Header, Headers, Registry};
use upcaster_worker::aio::AsyncHandlers;
use upcaster_worker::cli::{Command as WorkerCommand, Console};
use upcaster_worker::{Handlers, RetryPolicy, Transport};

const V1_MESSAGES: u64 = 10_000;
const V2_MESSAGES: u64 = 200;
/// Messages handled before the deploy starts.
const DEPLOY_AFTER: usize = 3_000;
/// The envelope header carrying each message's id, beside its payload.
const MESSAGE_ID: &str = "message-id";

type Drill = fn() -> Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2..]);
    }
    let options = match Options::parse(&args[1..]) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("drill: {e}");
            return ExitCode::from(2);
        }
    };
    let mut drills: Vec<(&str, Drill)> = vec![
        (
            "drill_check_catches_wrong_upcasts",
            check_catches_wrong_upcasts,
        ),
        ("drill_embedded", || embedded(Runtime::Blocking)),
        ("drill_embedded_tokio", || embedded(Runtime::Tokio)),
    ];
    drills.push(("drill_redis", || redis(Runtime::Blocking)));
    drills.push(("drill_redis_tokio", || redis(Runtime::Tokio)));
    drills.push(("drill_postgres", || postgres(Runtime::Blocking)));
    drills.push(("drill_postgres_tokio", || postgres(Runtime::Tokio)));
    drills.push(("drill_nats", || nats(Runtime::Blocking)));
    drills.push(("drill_nats_tokio", || nats(Runtime::Tokio)));
    drills.retain(|(name, _)| options.selects(name));
    if options.list {
        for (name, _) in &drills {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", drills.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, drill) in drills {
        let started = Instant::now();
        match drill() {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}");
            }
        }
    }
    let verdict = if failed > 0 { "FAILED" } else { "ok" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured\n");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The libtest arguments this harness understands.
#[derive(Debug, Default, PartialEq)]
struct Options {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    /// `--ignored`: only ignored tests, and no drill is ignored.
    only_ignored: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        /// Options that take a value and change nothing for these drills.
        const WITH_VALUE: [&str; 5] = ["--test-threads", "--format", "--color", "--logfile", "-Z"];
        /// Flags that change nothing for these drills.
        const FLAGS: [&str; 7] = [
            "--nocapture",
            "--no-capture",
            "--show-output",
            "--quiet",
            "-q",
            "--include-ignored",
            "--test",
        ];
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--exact" => options.exact = true,
                "--list" => options.list = true,
                "--ignored" => options.only_ignored = true,
                "--skip" => options.skip.push(value()?),
                f if WITH_VALUE.contains(&f) => {
                    value()?;
                }
                f if FLAGS.contains(&f) && inline.is_none() => {}
                f if f.starts_with('-') => {
                    return Err(format!(
                        "unknown option `{arg}` (this harness takes a name filter, --exact, \
                         --skip NAME, --list, --ignored and libtest's options that change \
                         nothing here: {}, {})",
                        WITH_VALUE.join(" V, "),
                        FLAGS.join(", ")
                    ))
                }
                _ => options.filters.push(arg.clone()),
            }
        }
        Ok(options)
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        !self.only_ignored
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
    }
}

// ---------------------------------------------------------------------------------------
// The worker processes.

#[derive(Parser)]
struct WorkerCli {
    /// `blocking` or `tokio`: which runtime the worker runs in.
    #[arg(long, default_value = "blocking")]
    runtime: String,
    /// `v1` or `v2`: which release's code.
    code: String,
    /// The queue's DSN.
    queue: String,
    /// The restart signal's DSN.
    restart: String,
    /// This process's handler log.
    log: PathBuf,
    #[command(subcommand)]
    command: WorkerCommand,
}

fn worker(args: &[String]) -> ExitCode {
    let cli = WorkerCli::parse_from(
        std::iter::once("drill-worker".to_owned()).chain(args.iter().cloned()),
    );
    let log = match OpenOptions::new().create(true).append(true).open(&cli.log) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("cannot open {}: {e}", cli.log.display());
            return ExitCode::FAILURE;
        }
    };
    let registry = match cli.code.as_str() {
        "v1" => ponka::registry_v1().map_err(|e| e.to_string()),
        _ => ponka::registry().map_err(|e| e.to_string()),
    };
    let registry = match registry {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let code = cli.code.clone();
    // `id` from the envelope header, `field` from the payload field the migration renames:
    // the checker compares the two. Each line is written whole, as messages in flight
    // interleave.
    let line = move |words: String| -> std::io::Result<()> {
        let mut f = log.lock().map_err(|_| std::io::Error::other("log lock"))?;
        f.write_all(words.as_bytes())
    };
    let start = {
        let line = line.clone();
        move |header: &Header<'_>| line(format!("start {}\n", id_of(header)))
    };
    let end = move |header: &Header<'_>, field: u64| {
        let arrived = header.version;
        line(format!("end {} {code} v{arrived} {field}\n", id_of(header)))
    };
    let retry = RetryPolicy::default()
        .future_version_delay(Duration::from_millis(300))
        .delay(Duration::from_millis(50));
    if cli.runtime == "tokio" {
        return tokio_worker(cli, registry, start, end, retry);
    }
    let handle = |header: &Header<'_>, field: u64| -> std::io::Result<()> {
        start(header)?;
        // Some work, so that signals and stop requests arrive while a handler runs.
        std::thread::sleep(Duration::from_micros(300));
        end(header, field)
    };
    let handlers = Handlers::new(&registry);
    let handlers = match cli.code.as_str() {
        "v1" => handlers.on(|m: Decoded<ponka::v1::AddPonkaToImage>| {
            handle(&m.header, m.message.image_post_id)
        }),
        _ => handlers
            .on(|m: Decoded<ponka::AddPonkaToImage>| handle(&m.header, m.message.image_post)),
    };
    let handlers = match handlers {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    Console::new(handlers)
        .transport("drill", &cli.queue)
        .restart_signal(&cli.restart)
        .poll_interval(Duration::from_millis(100))
        .retry_policy(retry)
        .run(cli.command)
}

fn id_of(header: &Header<'_>) -> String {
    header.headers.get(MESSAGE_ID).unwrap_or("none").to_owned()
}

/// A worker process of the async runtime: the same handler log, written from async
/// handlers, four messages in flight.
fn tokio_worker(
    cli: WorkerCli,
    registry: Arc<Registry>,
    start: impl Fn(&Header<'_>) -> std::io::Result<()> + Send + Sync + 'static,
    end: impl Fn(&Header<'_>, u64) -> std::io::Result<()> + Send + Sync + 'static,
    retry: RetryPolicy,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hooks = Arc::new((start, end));
    let handlers = AsyncHandlers::new(registry);
    let handlers = match cli.code.as_str() {
        "v1" => handlers.on(move |m: Decoded<ponka::v1::AddPonkaToImage>| {
            let hooks = Arc::clone(&hooks);
            async move {
                hooks.0(&m.header)?;
                tokio::time::sleep(Duration::from_micros(300)).await;
                hooks.1(&m.header, m.message.image_post_id)
            }
        }),
        _ => handlers.on(move |m: Decoded<ponka::AddPonkaToImage>| {
            let hooks = Arc::clone(&hooks);
            async move {
                hooks.0(&m.header)?;
                tokio::time::sleep(Duration::from_micros(300)).await;
                hooks.1(&m.header, m.message.image_post)
            }
        }),
    };
    let handlers = match handlers {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(
        Console::new_async(handlers)
            .in_flight(4)
            .transport("drill", &cli.queue)
            .restart_signal(&cli.restart)
            .poll_interval(Duration::from_millis(100))
            .retry_policy(retry)
            .run_async(cli.command),
    )
}

// ---------------------------------------------------------------------------------------
// The drills.

/// The runtime of the worker processes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Blocking,
    /// Async handlers, four messages in flight per worker.
    Tokio,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Blocking => "blocking",
            Runtime::Tokio => "tokio",
        }
    }
}

fn embedded(runtime: Runtime) -> Result<(), String> {
    let dir = scratch(&format!("embedded-{}", runtime.name()))?;
    let queue = format!("sqlite://{}/queue.db?queue=drill", dir.display());
    let restart = format!("{}/restart-requested-at", dir.display());
    let result = drill(&dir, &queue, &restart, runtime);
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn redis(runtime: Runtime) -> Result<(), String> {
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = ::redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
    let mut conn = client.get_connection().map_err(|e| {
        format!(
            "no Redis at {url} ({e}). The Redis drill needs a real server: run `.ci/redis` \
             (installs and starts redis-server on 127.0.0.1:6379), or set UPCASTER_REDIS_URL."
        )
    })?;
    let dir = scratch(&format!("redis-{}", runtime.name()))?;
    let stream = format!("upcaster-drill-{}-{}", runtime.name(), std::process::id());
    let queue = format!("{url}?stream={stream}");
    let restart = format!("{url}?key={stream}:restart-requested-at");
    let result = drill(&dir, &queue, &restart, runtime);
    // The stream, and its derived keys `{<stream>}:…`.
    let mut keys: Vec<String> = Vec::new();
    for pattern in [format!("{stream}*"), format!("{{{stream}}}*")] {
        let found: Vec<String> = ::redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn)
            .unwrap_or_default();
        keys.extend(found);
    }
    if !keys.is_empty() {
        let _: Result<(), _> = ::redis::cmd("DEL").arg(&keys).query(&mut conn);
    }
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn postgres(runtime: Runtime) -> Result<(), String> {
    let url = std::env::var("UPCASTER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).map_err(|e| {
        format!(
            "no PostgreSQL at {url} ({e}). The PostgreSQL drill needs a real server: run \
             `.ci/postgres` (installs and starts PostgreSQL on 127.0.0.1:5432), or set \
             UPCASTER_POSTGRES_URL."
        )
    })?;
    let dir = scratch(&format!("postgres-{}", runtime.name()))?;
    let queue_name = format!("drill-{}-{}", runtime.name(), std::process::id());
    let queue = format!("{url}?queue={queue_name}");
    let restart = format!("{url}?key={queue_name}");
    let result = drill(&dir, &queue, &restart, runtime);
    for table in ["upcaster_messages", "upcaster_failed", "upcaster_stats"] {
        let _ = client.execute(
            &format!("DELETE FROM {table} WHERE queue = $1"),
            &[&queue_name],
        );
    }
    let _ = client.execute(
        "DELETE FROM upcaster_restart WHERE key = $1",
        &[&queue_name],
    );
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

/// The NATS drill runs on a server of its own (a free port, its store in the drill's
/// directory), which it restarts while today's workers drain: the broker connection is cut
/// mid-drain, and nothing may be lost.
fn nats(runtime: Runtime) -> Result<(), String> {
    let dir = scratch(&format!("nats-{}", runtime.name()))?;
    let mut server = nats_server::NatsServer::start(&dir.join("store"))?;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let queue = format!("{url}?queue=drill");
    let restart = format!("{url}?key=drill");
    let result = drill_with(&dir, &queue, &restart, runtime, &mut || {
        println!("  restarting nats-server mid-drain");
        server.restart(Duration::from_millis(500))
    });
    drop(server);
    if result.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("upcaster-drill-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

struct Worker {
    name: String,
    child: Child,
    log: PathBuf,
    stderr: PathBuf,
}

fn spawn(
    dir: &Path,
    name: &str,
    code: &str,
    queue: &str,
    restart: &str,
    runtime: Runtime,
    command: &[&str],
) -> Result<Worker, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let stderr = dir.join(format!("{name}.stderr"));
    let err_file = File::create(&stderr).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("worker")
        .args(["--runtime", runtime.name()])
        .args([code, queue, restart])
        .arg(&log)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .map_err(|e| format!("cannot start worker {name}: {e}"))?;
    Ok(Worker {
        name: name.to_owned(),
        child,
        log,
        stderr,
    })
}

/// Sends SIGTERM, as a supervisor stopping the worker would.
fn sigterm(w: &Worker) -> Result<(), String> {
    let kill = Command::new("kill")
        .args(["-TERM", &w.child.id().to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if kill.success() {
        Ok(())
    } else {
        Err(format!("kill -TERM failed: {kill}"))
    }
}

/// Waits for a worker to exit; its stderr (with its stop report) on success.
fn finish(mut w: Worker, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = w.child.try_wait().map_err(|e| e.to_string())? {
            let stderr = fs::read_to_string(&w.stderr).unwrap_or_default();
            if !status.success() {
                return Err(format!("worker {} exited with {status}:\n{stderr}", w.name));
            }
            return Ok(stderr);
        }
        if Instant::now() > deadline {
            let _ = w.child.kill();
            let stderr = fs::read_to_string(&w.stderr).unwrap_or_default();
            return Err(format!(
                "worker {} did not stop within {within:?}:\n{stderr}",
                w.name
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn handled_so_far(logs: &[&Path]) -> usize {
    logs.iter()
        .map(|p| {
            fs::read_to_string(p).map_or(0, |t| t.lines().filter(|l| l.starts_with("end ")).count())
        })
        .sum()
}

fn drill(dir: &Path, queue: &str, restart: &str, runtime: Runtime) -> Result<(), String> {
    drill_with(dir, queue, restart, runtime, &mut || Ok(()))
}

/// The drill, with `fault` done to the broker once today's workers have handled 1,000
/// messages.
fn drill_with(
    dir: &Path,
    queue: &str,
    restart: &str,
    runtime: Runtime,
    fault: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let spawn =
        |dir: &Path, name: &str, code: &str, queue: &str, restart: &str, command: &[&str]| {
            spawn(dir, name, code, queue, restart, runtime, command)
        };
    let v1 = ponka::registry_v1().map_err(|e| e.to_string())?;
    let v2 = ponka::registry().map_err(|e| e.to_string())?;
    let mut transport = upcaster_worker::open(queue, "drill").map_err(|e| e.to_string())?;
    fill(&mut *transport, &v1, &v2)?;

    // Yesterday's workers.
    let consume = ["consume"];
    let a = spawn(dir, "v1-a", "v1", queue, restart, &consume)?;
    let b = spawn(dir, "v1-b", "v1", queue, restart, &consume)?;
    let v1_logs = [a.log.clone(), b.log.clone()];
    let deadline = Instant::now() + Duration::from_secs(300);
    while handled_so_far(&[&v1_logs[0], &v1_logs[1]]) < DEPLOY_AFTER {
        if Instant::now() > deadline {
            return Err("the v1 workers did not handle 3,000 messages within 300 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The deploy: the supervisor stops one worker with SIGTERM, then `stop-workers` asks
    // every worker started before it to exit.
    sigterm(&a)?;
    let a_report = finish(a, Duration::from_secs(60))?;
    if !a_report.contains("worker stopped: a stop signal was received") {
        return Err(format!("v1-a did not stop on SIGTERM:\n{a_report}"));
    }
    let stop = spawn(dir, "stop-workers", "v1", queue, restart, &["stop-workers"])?;
    finish(stop, Duration::from_secs(60))?;
    let b_report = finish(b, Duration::from_secs(60))?;
    if !b_report.contains("worker stopped: restart requested by stop-workers") {
        return Err(format!("v1-b did not stop on stop-workers:\n{b_report}"));
    }
    let left = transport.pending().map_err(|e| e.to_string())?;
    if left == 0 {
        return Err("the queue was drained before the deploy: the drill proved nothing".to_owned());
    }

    // Today's workers, started after the request, drain the rest.
    let drain = ["consume", "--stop-when-empty"];
    let c = spawn(dir, "v2-c", "v2", queue, restart, &drain)?;
    let d = spawn(dir, "v2-d", "v2", queue, restart, &drain)?;
    let v2_logs = [c.log.clone(), d.log.clone()];
    let deadline = Instant::now() + Duration::from_secs(300);
    while handled_so_far(&[&v2_logs[0], &v2_logs[1]]) < 1_000 {
        if Instant::now() > deadline {
            return Err("today's workers did not handle 1,000 messages within 300 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fault()?;
    let c_report = finish(c, Duration::from_secs(300))?;
    let d_report = finish(d, Duration::from_secs(300))?;
    for (name, report) in [("v2-c", &c_report), ("v2-d", &d_report)] {
        if !report.contains("worker stopped: the queue is empty") {
            return Err(format!("{name} stopped for another reason:\n{report}"));
        }
    }

    // A worker waiting on an empty queue stops on SIGTERM too, as a clean stop (exit 0).
    let idle = spawn(dir, "v2-idle", "v2", queue, restart, &consume)?;
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&idle)?;
    let idle_report = finish(idle, Duration::from_secs(60))?;
    if !idle_report.contains("worker stopped: a stop signal was received") {
        return Err(format!(
            "an idle worker did not stop cleanly on SIGTERM:\n{idle_report}"
        ));
    }

    let logs: Vec<(&str, &Path)> = vec![
        ("v1-a", &v1_logs[0]),
        ("v1-b", &v1_logs[1]),
        ("v2-c", &v2_logs[0]),
        ("v2-d", &v2_logs[1]),
    ];
    check(&logs, &mut *transport, &[&a_report, &b_report])
}

/// The queue: v1 messages 1..=10,000 in both codecs, and v2 messages 10,001..=10,200 from
/// a newer producer among the first 2,000.
fn fill(t: &mut dyn Transport, v1: &Registry, v2: &Registry) -> Result<(), String> {
    let mut v2_id = V1_MESSAGES;
    for id in 1..=V1_MESSAGES {
        let format = if id % 2 == 0 {
            Format::MessagePack
        } else {
            Format::Json
        };
        let bytes = v1
            .encode_with_headers(
                &ponka::v1::AddPonkaToImage { image_post_id: id },
                &id_header(id),
                format,
            )
            .map_err(|e| e.to_string())?;
        t.send(&bytes).map_err(|e| e.to_string())?;
        if id % 10 == 0 && v2_id < V1_MESSAGES + V2_MESSAGES {
            v2_id += 1;
            let bytes = v2
                .encode_with_headers(
                    &ponka::AddPonkaToImage { image_post: v2_id },
                    &id_header(v2_id),
                    Format::Json,
                )
                .map_err(|e| e.to_string())?;
            t.send(&bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn id_header(id: u64) -> Headers {
    let mut headers = Headers::new();
    headers.insert(MESSAGE_ID, id.to_string());
    headers
}

struct Handling {
    code: String,
    arrived: String,
    field: u64,
}

fn check(logs: &[(&str, &Path)], t: &mut dyn Transport, v1_reports: &[&str]) -> Result<(), String> {
    let mut texts = Vec::new();
    for (name, path) in logs {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        texts.push((*name, text));
    }
    let (handled, upcast, mut problems) = analyse(&texts);
    let requeued: u64 = v1_reports.iter().map(|r| requeued_in(r)).sum();
    if requeued == 0 {
        problems
            .push("yesterday's workers never met a v2 message, so none was requeued".to_owned());
    }
    let pending = t.pending().map_err(|e| e.to_string())?;
    if pending != 0 {
        problems.push(format!("{pending} message(s) still queued"));
    }
    let failed = t.failed(10).map_err(|e| e.to_string())?;
    if !failed.is_empty() {
        problems.push(format!(
            "{} message(s) failed: {:?}",
            failed.len(),
            failed[0].record
        ));
    }
    let stats: BTreeMap<u32, u64> = t
        .stats()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|r| r.type_name == "AddPonkaToImage")
        .map(|r| (r.version, r.count))
        .collect();
    let expected = BTreeMap::from([(1, V1_MESSAGES), (2, V2_MESSAGES)]);
    if stats != expected {
        problems.push(format!("drain stats {stats:?}, expected {expected:?}"));
    }
    if problems.is_empty() {
        println!(
            "  {handled} messages handled once each; {upcast} v1 messages upcast by today's code; {requeued} v2 message(s) requeued by yesterday's"
        );
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Reads the workers' handler logs: how many ids were handled, how many v1 messages today's
/// code handled, and every problem found.
fn analyse(logs: &[(&str, String)]) -> (usize, u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut handled: BTreeMap<u64, Vec<Handling>> = BTreeMap::new();
    let produced = 1..=V1_MESSAGES + V2_MESSAGES;
    for (name, text) in logs {
        // Messages in flight: an async worker has several at once.
        let mut open: BTreeSet<&str> = BTreeSet::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["start", id] => {
                    if !open.insert(id) {
                        problems.push(format!("{name}: message {id} started twice at once"));
                    }
                }
                ["end", id, code, arrived, field] => {
                    if !open.remove(id) {
                        problems.push(format!("{name}: end of {id} without its start"));
                    }
                    let Ok(id) = id.parse::<u64>() else {
                        problems.push(format!(
                            "{name}: a message without a `{MESSAGE_ID}` header: {line:?}"
                        ));
                        continue;
                    };
                    if !produced.contains(&id) {
                        problems.push(format!("{name}: message {id} was never produced: {line:?}"));
                        continue;
                    }
                    let Ok(field) = field.parse() else {
                        problems.push(format!("{name}: bad line {line:?}"));
                        continue;
                    };
                    handled.entry(id).or_default().push(Handling {
                        code: (*code).to_owned(),
                        arrived: (*arrived).to_owned(),
                        field,
                    });
                }
                _ => problems.push(format!("{name}: unexpected line {line:?}")),
            }
        }
        if let Some(id) = open.first() {
            problems.push(format!("{name} exited inside message {id}"));
        }
    }
    let seen: BTreeSet<u64> = handled.keys().copied().collect();
    let lost: Vec<u64> = produced.filter(|id| !seen.contains(id)).collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} message(s) never handled, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    let twice: Vec<u64> = handled
        .iter()
        .filter(|(_, h)| h.len() > 1)
        .map(|(id, _)| *id)
        .collect();
    if !twice.is_empty() {
        // No worker crashed, so nothing was reclaimed: a second handling is a bug.
        problems.push(format!(
            "{} message(s) handled twice, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(10)]
        ));
    }
    let mut upcast = 0;
    let mut wrong = Vec::new();
    for (id, hs) in &handled {
        for h in hs {
            let newer = *id > V1_MESSAGES;
            match (h.code.as_str(), h.arrived.as_str(), newer) {
                ("v1", "v1", false) => {}
                ("v2", "v1", false) => upcast += 1,
                ("v2", "v2", true) => {}
                ("v1", _, true) => {
                    problems.push(format!("v2 message {id} reached yesterday's code"))
                }
                (code, arrived, _) => {
                    problems.push(format!("message {id} handled by {code} code as {arrived}"))
                }
            }
            // The header is the independent witness of what the renamed field must hold.
            if h.field != *id {
                wrong.push(format!(
                    "message {id} ({} code, arrived {}) reached its handler with {} in its id field",
                    h.code, h.arrived, h.field
                ));
            }
        }
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "{} message(s) carried the wrong id in the upcast field, e.g.:\n  {}",
            wrong.len(),
            wrong[..wrong.len().min(5)].join("\n  ")
        ));
    }
    if upcast == 0 {
        problems.push("no v1 message reached today's code: nothing was upcast".to_owned());
    }
    (handled.len(), upcast, problems)
}

/// The checker itself must fail on what it is there to catch: a migration that puts the
/// wrong value in the renamed field, an id nobody produced, a message handled twice, a
/// missing header, a worker that exited inside a message.
fn check_catches_wrong_upcasts() -> Result<(), String> {
    let all = |field: &dyn Fn(u64) -> u64| -> String {
        (1..=V1_MESSAGES + V2_MESSAGES)
            .map(|id| {
                let (code, arrived) = if id > V1_MESSAGES {
                    ("v2", "v2")
                } else {
                    ("v2", "v1")
                };
                format!("start {id}\nend {id} {code} {arrived} {}\n", field(id))
            })
            .collect()
    };
    let verdict = |text: String| analyse(&[("v2-c", text)]).2;
    let right = verdict(all(&|id| id));
    if !right.is_empty() {
        return Err(format!("a correct drain was flagged: {right:?}"));
    }
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a constant in the renamed field",
            all(&|_| 7),
            "wrong id in the upcast field",
        ),
        (
            "another message's id",
            all(&|id| if id == 42 { 43 } else { id }),
            "message 42 (v2 code, arrived v1) reached its handler with 43",
        ),
        (
            "an id never produced",
            all(&|id| id) + "start 99999\nend 99999 v2 v1 99999\n",
            "never produced",
        ),
        (
            "a message handled twice",
            all(&|id| id) + "start 5\nend 5 v2 v1 5\n",
            "handled twice",
        ),
        (
            "no header",
            all(&|id| id) + "start none\nend none v2 v1 5\n",
            "without a `message-id` header",
        ),
        (
            "an exit inside a message",
            all(&|id| id) + "start 6\n",
            "exited inside message 6",
        ),
    ];
    for (what, text, expected) in cases {
        let problems = verdict(text);
        if !problems.iter().any(|p| p.contains(expected)) {
            return Err(format!(
                "{what} was not flagged as `{expected}`: {problems:?}"
            ));
        }
    }
    let refused = Options::parse(&["--frobnicate".to_owned()]);
    if refused.is_ok() {
        return Err("an unknown option was accepted".to_owned());
    }
    let threads = Options::parse(&["--test-threads".to_owned(), "2".to_owned()])?;
    if !threads.selects("drill_embedded") {
        return Err("`--test-threads 2` was taken as a name filter".to_owned());
    }
    Ok(())
}

/// The requeue count in a worker's stop report.
fn requeued_in(report: &str) -> u64 {
    report
        .split(", ")
        .find_map(|part| part.strip_suffix(" requeued for a newer worker"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
