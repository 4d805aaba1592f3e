//! `stop-workers` reaches every worker, whatever its connection or its clock did: a Redis
//! signal that lost its connection or its server, a request made while a worker was still
//! opening its queue, a restart time in the future, and a restart file written where another
//! user can plant a symlink.
//!
//! The Redis tests start private `redis-server` processes on ports of their own (installed by
//! `.ci/redis`), so they can kill and restart them without touching anything else.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::ponka::{self, AddPonkaToImage};
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::cli::{Command, Console, ConsumeArgs};
use upcaster_worker::prelude::*;
use upcaster_worker::{
    FileSignal, Handlers, Limits, RestartSignal, SqliteTransport, StopReason, Worker,
};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "upcaster-restart-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A queue in `dir` holding `n` messages (ids 1..=n).
fn queue_with(dir: &Path, registry: &Registry, n: u64) -> SqliteTransport {
    let mut q = SqliteTransport::open(dir.join("queue.db"), "q").unwrap();
    for id in 1..=n {
        let bytes = registry
            .encode(&AddPonkaToImage { image_post: id }, Format::Json)
            .unwrap();
        q.send(&bytes).unwrap();
    }
    q
}

#[test]
fn a_request_made_while_the_worker_waits_for_its_queue_lock_stops_it() {
    let s = Scratch::new("lock");
    let registry = ponka::registry().unwrap();
    drop(queue_with(&s.0, &registry, 3));
    let db = s.0.join("queue.db");
    let signal = s.0.join("restart-requested-at");

    // Another process holds the file: the worker's open waits on SQLite's busy timeout.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM upcaster_stats;",
        )
        .unwrap();

    let handled = Arc::new(AtomicU64::new(0));
    let worker = {
        let (handled, db, signal) = (Arc::clone(&handled), db.clone(), signal.clone());
        std::thread::spawn(move || {
            let registry = ponka::registry().unwrap();
            let handlers = Handlers::new(&registry)
                .on(|_: Decoded<AddPonkaToImage>| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), std::io::Error>(())
                })
                .unwrap();
            let mut args = consume_args();
            args.stop_when_empty = true;
            Console::new(handlers)
                .transport("q", &format!("sqlite://{}?queue=q", db.display()))
                .restart_signal(signal.to_str().unwrap())
                .run(Command::Consume(args))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !worker.is_finished(),
        "the worker did not wait for the lock"
    );
    // The deploy's `stop-workers`, while the old worker is still opening its queue.
    FileSignal::new(&signal).request().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(holder);
    let code = worker.join().unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        0,
        "a worker whose start came before the request handled messages with yesterday's code"
    );
    assert_eq!(
        SqliteTransport::open(&db, "q").unwrap().pending().unwrap(),
        3
    );
}

fn consume_args() -> ConsumeArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    match Cli::parse_from(["app", "consume"]).command {
        Command::Consume(args) => args,
        _ => unreachable!("parsed `consume`"),
    }
}

#[test]
fn the_file_signal_passes_the_restart_signal_contract() {
    let s = Scratch::new("contract");
    common::contract::restart_signal(&mut FileSignal::new(s.0.join("restart-requested-at")));
}

#[test]
fn a_future_restart_time_is_refused_when_written_and_ignored_with_a_warning_when_read() {
    let s = Scratch::new("future");
    let registry = ponka::registry().unwrap();
    let path = s.0.join("restart-requested-at");
    let hour_ahead = now_ms() + 3_600_000;

    let refused = FileSignal::new(&path).request_at(hour_ahead).unwrap_err();
    assert!(
        refused.to_string().contains("ahead of the store's clock"),
        "{refused}"
    );
    assert!(!path.exists(), "nothing written");

    // Written by hand (or before the clock was stepped back): no restart loop.
    std::fs::write(&path, hour_ahead.to_string()).unwrap();
    let q = queue_with(&s.0, &registry, 3);
    let warnings = std::sync::Mutex::new(Vec::new());
    let handlers = Handlers::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let report = Worker::new(handlers)
        .transport(Box::new(q))
        .restart_signal(Box::new(FileSignal::new(&path)))
        .limits(Limits::default().stop_when_empty())
        .on_event(|e| {
            if let upcaster_worker::Event::Warning { problem } = e {
                warnings.lock().unwrap().push(problem.to_string());
            }
        })
        .run();
    assert_eq!((report.reason, report.handled), (StopReason::Empty, 3));
    let warnings = warnings.into_inner().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("ahead of its clock"),
        "{}",
        warnings[0]
    );
}

#[test]
fn the_restart_file_is_written_through_an_unpredictable_exclusive_file_not_a_planted_symlink() {
    let s = Scratch::new("symlink");
    let path = s.0.join("restart-requested-at");
    let victim = s.0.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The temporary names the writer used to take, planted by another user.
    for pid in [std::process::id(), std::process::id() + 1] {
        std::os::unix::fs::symlink(&victim, path.with_extension(format!("tmp{pid}"))).unwrap();
    }
    let at = FileSignal::new(&path).request().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(FileSignal::new(&path).requested_at().unwrap(), Some(at));
    // The signal path itself a symlink another user planted: not followed.
    let planted = s.0.join("planted");
    let other_victim = s.0.join("other-victim");
    std::fs::write(&other_victim, "also precious").unwrap();
    std::os::unix::fs::symlink(&other_victim, &planted).unwrap();
    // Owned by `nobody` (the tests run as root, as CI does).
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534))
        .expect("lchown: these tests run as root");
    let refused = FileSignal::new(&planted).request().unwrap_err();
    assert!(refused.to_string().contains("not followed"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(&other_victim).unwrap(),
        "also precious"
    );
    assert!(std::fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    let left: Vec<String> = std::fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

/// The deploy layout: each release links to one shared signal. `stop-workers` from any
/// release writes the shared file, and workers of every release see it.
#[test]
fn a_restart_path_that_links_to_a_shared_signal_writes_the_shared_signal() {
    let s = Scratch::new("release-links");
    let shared = s.0.join("shared/restart-requested-at");
    std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
    let mut links = Vec::new();
    for release in ["41", "42"] {
        let dir = s.0.join("releases").join(release);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("restart-requested-at");
        // Relative, as deploy tools often make them.
        std::os::unix::fs::symlink("../../shared/restart-requested-at", &link).unwrap();
        links.push(link);
    }
    let at = FileSignal::new(&links[1]).request().unwrap();
    assert!(
        std::fs::symlink_metadata(&links[1])
            .unwrap()
            .file_type()
            .is_symlink(),
        "the release's link was replaced"
    );
    assert_eq!(FileSignal::new(&shared).requested_at().unwrap(), Some(at));
    assert_eq!(FileSignal::new(&links[0]).requested_at().unwrap(), Some(at));
}

/// Run in a child process under `umask 000`, the worst case: the file must still not be
/// writable by others.
#[test]
fn the_restart_file_never_grants_others_write_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    const CHILD: &str = "UPCASTER_RESTART_UMASK_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        let path = Path::new(&dir).join("restart-requested-at");
        FileSignal::new(&path).request().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o002, 0, "others may write: {mode:o}");
        assert_eq!(
            mode & 0o660,
            0o660,
            "the umask (000) was not followed: {mode:o}"
        );
        return;
    }
    let s = Scratch::new("umask");
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" --exact the_restart_file_never_grants_others_write_whatever_the_umask --nocapture")
        .arg(&exe)
        .env(CHILD, &s.0)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the check under umask 000 failed: {}\n{}{}",
        status.status,
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    // Under this process's umask too.
    let path = s.0.join("again");
    FileSignal::new(&path).request().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o002, 0, "{mode:o}");
}

mod redis_signal {
    use super::*;
    use std::process::{Child, Stdio};
    use std::time::Instant;
    use upcaster_worker::RedisSignal;

    /// A `redis-server` of this test's own, on a free port, stopped when dropped.
    struct PrivateRedis {
        port: u16,
        child: Option<Child>,
        password: Option<String>,
    }

    impl PrivateRedis {
        fn start() -> Self {
            PrivateRedis::start_with(None)
        }

        fn start_with(password: Option<&str>) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut r = PrivateRedis {
                port,
                child: None,
                password: password.map(str::to_owned),
            };
            r.run();
            r
        }

        fn run(&mut self) {
            let mut command = std::process::Command::new("redis-server");
            if let Some(password) = &self.password {
                command.args(["--requirepass", password]);
            }
            let child = command
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--enable-debug-command", "yes"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}): run .ci/redis, which installs it")
                });
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.ping().is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {} did not answer",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn ping(&self) -> redis::RedisResult<String> {
            let client = redis::Client::open(self.url())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
            if let Some(password) = &self.password {
                redis::cmd("AUTH").arg(password).exec(&mut conn)?;
            }
            redis::cmd("PING").query(&mut conn)
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn signal_dsn(&self) -> String {
            format!("{}?key=app:restart-requested-at", self.url())
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Kills every client connection but the caller's, as a proxy or failover would.
        fn kill_clients(&self) -> u64 {
            let client = redis::Client::open(self.url()).unwrap();
            let mut conn = client.get_connection().unwrap();
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query(&mut conn)
                .unwrap()
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Runs a worker on an SQLite queue of 50 messages with the Redis signal; `at_fifth`
    /// runs inside the fifth handler, then the handler outlasts the signal's check interval.
    fn worker_with_redis_signal(
        redis: &mut PrivateRedis,
        outage: Duration,
        per_message: Duration,
        at_fifth: impl Fn(&mut PrivateRedis) + Send + Sync,
    ) -> (upcaster_worker::Report, Vec<String>) {
        let s = Scratch::new("redis-signal");
        let registry = ponka::registry().unwrap();
        let q = queue_with(&s.0, &registry, 50);
        let signal = RedisSignal::open_dsn(&redis.signal_dsn()).unwrap();
        let redis = std::sync::Mutex::new(redis);
        let warnings = std::sync::Mutex::new(Vec::new());
        let handlers = Handlers::new(&registry)
            .on(|m: Decoded<AddPonkaToImage>| {
                if m.message.image_post == 5 {
                    at_fifth(&mut redis.lock().unwrap());
                    std::thread::sleep(Duration::from_millis(150));
                }
                std::thread::sleep(per_message);
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        let report = Worker::new(handlers)
            .transport(Box::new(q))
            .restart_signal(Box::new(signal))
            .restart_signal_outage(outage)
            .on_event(|e| {
                if let upcaster_worker::Event::Warning { problem } = e {
                    warnings.lock().unwrap().push(problem.to_string());
                }
            })
            .limits(Limits::default().stop_when_empty())
            .run();
        (report, warnings.into_inner().unwrap())
    }

    #[test]
    fn stop_workers_reaches_a_worker_whose_signal_connection_was_killed() {
        let mut redis = PrivateRedis::start();
        let (report, _) =
            worker_with_redis_signal(&mut redis, Duration::from_secs(30), Duration::ZERO, |r| {
                assert!(
                    r.kill_clients() >= 1,
                    "the worker's signal connection was open"
                );
                RedisSignal::open_dsn(&r.signal_dsn())
                    .unwrap()
                    .request()
                    .unwrap();
            });
        assert!(
            matches!(report.reason, StopReason::RestartRequested { .. }),
            "{}",
            report.reason
        );
        assert_eq!(
            report.handled, 5,
            "it stopped right after the message during the request"
        );
    }

    #[test]
    fn stop_workers_reaches_a_worker_whose_redis_restarted() {
        let mut redis = PrivateRedis::start();
        let (report, _) =
            worker_with_redis_signal(&mut redis, Duration::from_secs(30), Duration::ZERO, |r| {
                r.stop();
                std::thread::sleep(Duration::from_millis(200));
                r.run();
                RedisSignal::open_dsn(&r.signal_dsn())
                    .unwrap()
                    .request()
                    .unwrap();
            });
        assert!(
            matches!(report.reason, StopReason::RestartRequested { .. }),
            "{}",
            report.reason
        );
        assert_eq!(report.handled, 5);
    }

    #[test]
    fn a_worker_whose_signal_stays_unreadable_past_the_outage_limit_stops() {
        let mut redis = PrivateRedis::start();
        let (report, warnings) = worker_with_redis_signal(
            &mut redis,
            Duration::from_millis(500),
            // 50 messages of 60 ms: longer than the outage limit and the re-read after a failure.
            Duration::from_millis(60),
            PrivateRedis::stop,
        );
        match &report.reason {
            StopReason::RestartSignalLost {
                problem,
                unreadable_for,
            } => {
                assert!(*unreadable_for > Duration::from_millis(500));
                assert!(
                    problem.contains("GET") || problem.contains("TIME"),
                    "{problem}"
                );
            }
            other => panic!("{other}"),
        }
        assert!(report.handled < 50, "it ran on blind: {}", report.handled);
        assert_eq!(
            warnings.len(),
            1,
            "one warning for the outage: {warnings:?}"
        );
        assert!(
            warnings[0].contains("stops if it stays unreadable"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_password_with_reserved_characters_works_percent_encoded_and_is_never_shown() {
        let password = "p#ss/w@rd";
        let redis = PrivateRedis::start_with(Some(password));
        let encoded = "p%23ss%2Fw%40rd";
        let dsn = format!("redis://:{encoded}@127.0.0.1:{}?stream=orders", redis.port);
        let mut queue = upcaster_worker::open(&dsn, "unused").unwrap();
        assert!(!queue.name().contains("ss"), "{}", queue.name());
        queue.send(b"x").unwrap();
        let d = queue
            .receive(Duration::from_secs(2))
            .unwrap()
            .expect("a message");
        queue.ack(&d).unwrap();
        let signal = format!(
            "redis://:{encoded}@127.0.0.1:{}?key=app:restart",
            redis.port
        );
        let mut signal = upcaster_worker::open_restart_signal(&signal).unwrap();
        let at = signal.request().unwrap();
        assert_eq!(signal.requested_at().unwrap(), Some(at));
        // Wrong, unparseable or misspelt: the error never repeats the password.
        for bad in [
            format!("redis://:wr%23ong@127.0.0.1:{}?stream=orders", redis.port),
            format!("redis://:{password}@127.0.0.1:{}?stream=orders", redis.port),
            format!("redis://:{encoded}@127.0.0.1:{}?strem=orders", redis.port),
        ] {
            let e = upcaster_worker::open(&bad, "unused")
                .err()
                .expect("refused");
            let text = format!(
                "{e} {:?}",
                std::error::Error::source(&e).map(|s| s.to_string())
            );
            for secret in ["p#ss", "p%23ss", "wr%23ong", "wr#ong", "rd@"] {
                assert!(!text.contains(secret), "{bad}: {text}");
            }
        }
        let e = upcaster_worker::open(
            &format!("redis://127.0.0.1:{}?strem=orders", redis.port),
            "unused",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("unknown parameter `strem`"), "{e}");
    }

    #[test]
    fn the_redis_signal_passes_the_restart_signal_contract() {
        let redis = PrivateRedis::start();
        let mut signal = RedisSignal::open_dsn(&redis.signal_dsn()).unwrap();
        common::contract::restart_signal(&mut signal);
    }

    #[test]
    fn a_signal_read_from_a_server_that_hangs_gives_up_after_one_reply_timeout() {
        let redis = PrivateRedis::start();
        let mut signal = RedisSignal::open_dsn(&redis.signal_dsn()).unwrap();
        assert_eq!(signal.requested_at().unwrap(), None);
        let url = redis.url();
        let sleeper = std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let slept: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg(4).query(&mut conn);
            slept.expect("DEBUG SLEEP");
        });
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let e = signal.requested_at().unwrap_err();
        let took = started.elapsed();
        // One reply timeout (1 s), not a retry after it, nor the whole 4 s sleep.
        assert!(
            took < Duration::from_millis(2500),
            "gave up after {took:?}: {e}"
        );
        sleeper.join().unwrap();
        // Answering again: read on a fresh connection.
        assert_eq!(signal.requested_at().unwrap(), None);
    }
}
