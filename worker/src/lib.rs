//! Workers that drain upcaster's versioned messages from queues across deploys.
//!
//! A [`Worker`] takes one message at a time from its [`Transport`]s, decodes it through the
//! [`Registry`] (old versions are upcast), and calls the handler of its type. It stops only
//! *between* messages, for a reason it logs: a message count, a time limit, a memory limit,
//! consecutive failures, SIGTERM or SIGINT, or a restart requested by `stop-workers`. A
//! supervisor (systemd, supervisord) then starts it again, with the new code after a deploy.
//!
//! Two runtimes make the same decisions ([`decision`], one code for both): `aio` (feature
//! `tokio`) runs async handlers with several messages in flight in a tokio service, and
//! [`Worker`] is one thread running one message at a time, as in Symfony Messenger, with
//! plain `Send + Sync` functions as handlers and no async runtime. Every wait is bounded (one
//! second by default), so a stop condition takes effect while the worker waits for messages.
//!
//! Failures never lose a message:
//! - a handler error (or panic) is retried with exponential backoff and jitter, up to
//!   [`RetryPolicy::max_retries`], then moved to the failure transport;
//! - a message from a newer producer ([`upcaster::ErrorKind::FutureVersion`]) is requeued with a delay,
//!   without counting an attempt, until a worker with the new code takes it: a rolling
//!   deploy heals itself;
//! - a message of a type this code does not know is retried like a handler error (a newer
//!   producer may have introduced it);
//! - a message that cannot be decoded goes straight to the failure transport with its
//!   original bytes, the error (type, version, failing step, JSON Pointer) and its attempts.
//!
//! `cli` has the commands a program mounts: `consume`, `stop-workers`, `failed` and `stats`.
//!
//! # Features
//!
//! | feature | what it brings | pulls in |
//! |---|---|---|
//! | `sqlite` | [`SqliteTransport`], the embedded queue (links the system's SQLite) | rusqlite |
//! | `sqlite-bundled` (default) | `sqlite`, with SQLite compiled in: nothing to install | rusqlite, cc |
//! | `redis` | `RedisTransport` and `RedisSignal` (`redis://`; `rediss://` is refused when the DSN is read) | redis |
//! | `postgres` | `PostgresTransport` and `PostgresSignal` (`postgres://`; no TLS yet) | postgres (tokio-postgres) |
//! | `tokio` | `aio`: the async runtime (`aio::Blocking` adapts any blocking queue), `open_async`; with `redis`, `AsyncRedisTransport` | tokio (rt, time, sync, macros); redis's tokio support |
//! | `signals` (default) | [`Worker::stop_on_signals`]: SIGTERM and SIGINT stop the worker between messages | signal-hook |
//! | `cli` (default) | `cli`: the `consume`, `stop-workers`, `failed` and `stats` commands, and a plain `tracing` subscriber for them | clap, tracing-subscriber, `signals` |
//!
//! A Redis-only worker: `upcaster-worker = { version = "0.1", default-features = false,
//! features = ["redis"] }` builds without SQLite and clap.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use upcaster_worker::prelude::*;
//! use upcaster_worker::{Handlers, Limits, SqliteTransport, StopReason, Worker};
//! use upcaster::{Decoded, Format, Message, Registry};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(version = 1)]
//! struct ResizeImage { id: u64 }
//!
//! let registry = Registry::builder().register::<ResizeImage>().build()?;
//! let dir = std::env::temp_dir().join(format!("upcaster-worker-doc-{}", std::process::id()));
//! let mut queue = SqliteTransport::open(dir.join("queue.db"), "async")?;
//! queue.send(&registry.encode(&ResizeImage { id: 7 }, Format::Json)?)?;
//!
//! let handlers = Handlers::new(&registry).on(|m: Decoded<ResizeImage>| {
//!     println!("resizing {}", m.message.id);
//!     Ok::<(), std::io::Error>(())
//! })?;
//! let report = Worker::new(handlers)
//!     .transport(Box::new(queue))
//!     .limits(Limits::default().stop_when_empty())
//!     .run();
//! assert_eq!(report.reason, StopReason::Empty);
//! assert_eq!(report.handled, 1);
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
pub mod aio;
#[cfg(feature = "cli")]
pub mod cli;
mod clock;
pub mod decision;
mod dsn;
mod flow;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod restart;
#[cfg(feature = "sqlite")]
mod sqlite;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "nats")]
pub use self::nats::{NatsSignal, NatsTransport};
#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresSignal, PostgresTransport};
#[cfg(feature = "redis")]
pub use self::redis::{RedisSignal, RedisTransport};
pub use clock::process_started;
#[cfg(feature = "tokio")]
pub use dsn::open_async;
pub use dsn::{open, open_restart_signal, open_with, Scheme, SCHEMES};
pub use restart::{FileSignal, RestartSignal, CLOCK_TOLERANCE, DEFAULT_OUTAGE_LIMIT};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTransport;
pub use transport::{
    Access, Delivery, DrainStats, FailedMessage, FailureRecord, FailureStore, Queue, StatCount,
    StatRow, Transport, TransportError, TransportErrorKind,
};

/// The transport traits, for calling their methods on a concrete transport:
/// `use upcaster_worker::prelude::*;`.
pub mod prelude {
    pub use crate::{DrainStats, FailureStore, Queue, Transport};
}

use decision::Action;
use upcaster::{Decoded, Dispatcher, Error, Message, Registry, RegistryError};

/// The envelope header that carries a correlation id into each message's `tracing` span.
pub const CORRELATION_ID: &str = "correlation-id";

/// What a handler may return as its error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of one handler call, with what the worker counts.
struct Handled {
    type_name: &'static str,
    version: u32,
    result: Result<(), HandlerError>,
}

/// The handlers of a worker, one per message type, each seeing only the current version.
pub struct Handlers<'r> {
    registry: &'r Registry,
    dispatcher: Dispatcher<'r, Handled>,
}

impl<'r> Handlers<'r> {
    /// No handlers yet.
    pub fn new(registry: &'r Registry) -> Self {
        Handlers {
            registry,
            dispatcher: Dispatcher::new(registry),
        }
    }

    /// Sets the handler of `T`, which must be registered. An `Err` (or a panic) is a failed
    /// attempt: the message is retried, then sent to the failure transport.
    pub fn on<T, F, E>(self, handler: F) -> Result<Self, RegistryError>
    where
        T: Message,
        F: for<'a> Fn(Decoded<'a, T>) -> Result<(), E> + Send + Sync + 'r,
        E: Into<HandlerError>,
    {
        let dispatcher = self.dispatcher.on(move |m: Decoded<'_, T>| {
            let version = m.header.version;
            // What only the envelope knows goes into the message's span, for the handler's
            // own events too.
            flow::record_in_span(T::NAME, &m.header);
            let result = match catch_unwind(AssertUnwindSafe(|| handler(m))) {
                Ok(result) => result.map_err(Into::into),
                Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic)).into()),
            };
            Handled {
                type_name: T::NAME,
                version,
                result,
            }
        })?;
        Ok(Handlers {
            registry: self.registry,
            dispatcher,
        })
    }

    /// The registry the handlers decode with.
    pub fn registry(&self) -> &'r Registry {
        self.registry
    }

    /// Decodes `bytes` as the worker would, without running a handler: the current type's
    /// name and the version the message arrived in.
    pub fn check(&self, bytes: &[u8]) -> Result<(&'static str, u32), Error> {
        self.dispatcher.check(bytes)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// When a worker stops. Each is checked between messages only.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Limits {
    /// Stop after this many messages taken (handled, retried or failed alike).
    pub messages: Option<u64>,
    /// Stop once this much time has passed.
    pub time: Option<Duration>,
    /// Stop once the process's resident set size exceeds this many bytes (Linux).
    pub memory: Option<u64>,
    /// Stop after this many failed attempts in a row (handler errors and undecodable
    /// messages; a requeued newer version does not count).
    pub failures: Option<u32>,
    /// Stop when every transport is empty (for batch jobs and tests).
    pub stop_when_empty: bool,
}

/// Retries of failed attempts: exponential backoff with jitter, then the failure transport.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt; then the message goes to the failure transport.
    pub max_retries: u32,
    /// The delay before the first retry.
    pub delay: Duration,
    /// Each retry waits this many times longer than the one before.
    pub multiplier: f64,
    /// No retry waits longer than this.
    pub max_delay: Duration,
    /// Spread: each delay is drawn from `delay × (1 ± jitter)`, so retries of a burst of
    /// failures do not arrive together.
    pub jitter: f64,
    /// How long a message of a newer version waits before it is offered again.
    pub future_version_delay: Duration,
}

impl Limits {
    /// Stop after `n` messages taken (handled, retried or failed alike).
    pub fn messages(mut self, n: u64) -> Self {
        self.messages = Some(n);
        self
    }

    /// Stop once `limit` has passed.
    pub fn time(mut self, limit: Duration) -> Self {
        self.time = Some(limit);
        self
    }

    /// Stop once the resident set size exceeds `bytes` (Linux).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Stop after `n` failed attempts in a row.
    pub fn failures(mut self, n: u32) -> Self {
        self.failures = Some(n);
        self
    }

    /// Stop when every transport is empty.
    pub fn stop_when_empty(mut self) -> Self {
        self.stop_when_empty = true;
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.1,
            future_version_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Retries after the first attempt, before the failure transport.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The delay before the first retry.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How many times longer each retry waits than the one before.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest wait before a retry.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The spread of each delay, from 0 (none) to 1.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long a message of a newer version waits before it is offered again.
    pub fn future_version_delay(mut self, delay: Duration) -> Self {
        self.future_version_delay = delay;
        self
    }

    /// The delay before retry number `attempt + 1` (0-based `attempt`), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let secs = (self.delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }

    /// [`RetryPolicy::backoff`] with random jitter applied.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        self.jittered(attempt, fastrand::f64())
    }

    /// [`RetryPolicy::backoff`] with jitter `u` (from 0 to 1, uniform) applied: the delay is
    /// spread over `backoff × (1 ± jitter)`, and never above `max_delay`.
    pub fn jittered(&self, attempt: u32, u: f64) -> Duration {
        let base = self.backoff(attempt).as_secs_f64();
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (u.clamp(0.0, 1.0) * 2.0 - 1.0);
        Duration::try_from_secs_f64(base * factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Why a worker stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// It took its `--limit` of messages.
    MessageLimit(u64),
    /// Its `--time-limit` passed.
    TimeLimit(Duration),
    /// Its resident set size passed `--memory-limit`.
    MemoryLimit {
        /// The resident set size measured, in bytes.
        rss: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// `--failure-limit` failed attempts came in a row.
    FailureLimit(u32),
    /// A signal (SIGTERM, SIGINT) asked it to stop.
    Signal,
    /// `stop-workers` asked, after this worker started.
    RestartRequested {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// The restart signal could not be read for longer than the outage limit: the worker
    /// stops rather than run on without hearing `stop-workers`.
    RestartSignalLost {
        /// The last read's error.
        problem: String,
        /// How long it had been unreadable.
        unreadable_for: Duration,
    },
    /// Every transport was empty (`stop_when_empty`).
    Empty,
    /// A transport failed; the message it held, if any, will be delivered again.
    TransportFailed(String),
    /// The service's shutdown future ended (`AsyncWorker::run_until`, feature `tokio`).
    Shutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::MessageLimit(n) => write!(f, "message limit of {n} reached"),
            StopReason::TimeLimit(t) => write!(f, "time limit of {} s reached", t.as_secs_f64()),
            StopReason::MemoryLimit { rss, limit } => write!(
                f,
                "memory limit reached: resident set {} against a limit of {}",
                show_bytes(*rss),
                show_bytes(*limit)
            ),
            StopReason::FailureLimit(n) => write!(f, "{n} failures in a row"),
            StopReason::Signal => write!(f, "a stop signal was received"),
            StopReason::RestartRequested { at_ms } => write!(
                f,
                "restart requested by stop-workers at {}",
                clock::show_time(*at_ms)
            ),
            StopReason::RestartSignalLost {
                problem,
                unreadable_for,
            } => write!(
                f,
                "the restart signal was unreadable for {:.1} s, so stop-workers could not reach this worker: {problem}",
                unreadable_for.as_secs_f64()
            ),
            StopReason::Empty => write!(f, "the queue is empty"),
            StopReason::Shutdown => write!(f, "the service shut it down"),
            StopReason::TransportFailed(e) => write!(f, "{e}"),
        }
    }
}

/// What a worker did, and why it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Why it stopped.
    pub reason: StopReason,
    /// Messages taken from the transports.
    pub received: u64,
    /// Messages whose handler succeeded (acked).
    pub handled: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Messages of a newer version requeued with a delay.
    pub requeued: u64,
    /// Messages moved to the failure transport.
    pub failed: u64,
    /// Messages decoded, by current type name and arrived version.
    pub decoded: BTreeMap<(String, u32), u64>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker stopped: {}; in {:.1} s took {} message(s): {} handled, {} retried, {} requeued for a newer worker, {} failed",
            self.reason,
            self.elapsed.as_secs_f64(),
            self.received,
            self.handled,
            self.retried,
            self.requeued,
            self.failed
        )?;
        for ((name, version), n) in &self.decoded {
            write!(f, "\n  {name} v{version}: {n} decoded")?;
        }
        Ok(())
    }
}

/// One thing a worker did, for logs.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A handler succeeded.
    Handled {
        /// The transport.
        transport: &'a str,
        /// The delivery.
        delivery: &'a Delivery,
        /// The message type.
        type_name: &'a str,
        /// The version it arrived in.
        version: u32,
    },
    /// A failed attempt was scheduled for a retry.
    Retrying {
        /// The transport.
        transport: &'a str,
        /// The delivery.
        delivery: &'a Delivery,
        /// Why the attempt failed.
        error: &'a str,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// A message of a newer version went back to the queue.
    Requeued {
        /// The transport.
        transport: &'a str,
        /// The delivery.
        delivery: &'a Delivery,
        /// The error that names the versions.
        error: &'a str,
    },
    /// Messages that older workers requeued for newer code, and that this worker reads,
    /// were made available at once when it started.
    Released {
        /// The transport.
        transport: &'a str,
        /// How many.
        count: u64,
    },
    /// Something the worker works around but an operator should see, such as an
    /// unreadable restart signal.
    Warning {
        /// What is wrong.
        problem: &'a str,
    },
    /// A message went to the failure transport.
    Failed {
        /// The transport.
        transport: &'a str,
        /// The delivery.
        delivery: &'a Delivery,
        /// What was stored with it.
        record: &'a FailureRecord,
        /// Its id in the failure transport, for `failed show`, `retry` and `remove`.
        failed_id: &'a str,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Handled {
                transport,
                delivery,
                type_name,
                version,
            } => write!(
                f,
                "handled {type_name} (arrived as v{version}), message {} on {transport}",
                delivery.id
            ),
            Event::Retrying {
                transport,
                delivery,
                error,
                delay,
            } => write!(
                f,
                "retrying message {} on {transport} in {:.2} s (attempt {}): {error}",
                delivery.id,
                delay.as_secs_f64(),
                delivery.attempt + 2
            ),
            Event::Requeued {
                transport,
                delivery,
                error,
            } => write!(
                f,
                "requeued message {} on {transport} for a newer worker: {error}",
                delivery.id
            ),
            Event::Warning { problem } => write!(f, "warning: {problem}"),
            Event::Released { transport, count } => write!(
                f,
                "took {count} message(s) on {transport} that older workers had requeued for newer code"
            ),
            Event::Failed {
                transport,
                delivery,
                record,
                failed_id,
            } => write!(
                f,
                "message {} on {transport} failed after {} attempt(s) and moved to the failure transport as {failed_id} (see `failed show {failed_id}`): {}",
                delivery.id, record.attempts, record.error
            ),
        }
    }
}

type Logger<'r> = Box<dyn FnMut(&Event<'_>) + Send + 'r>;

/// Drains transports through handlers until a stop condition holds.
pub struct Worker<'r> {
    handlers: Handlers<'r>,
    transports: Vec<Box<dyn Transport>>,
    limits: Limits,
    retry: RetryPolicy,
    restart: Option<Box<dyn RestartSignal>>,
    /// When this worker's code started running, for the restart signal.
    started: Instant,
    outage_limit: Duration,
    stop: Arc<AtomicBool>,
    poll: Duration,
    log: Option<Logger<'r>>,
}

impl<'r> Worker<'r> {
    /// A worker with `handlers`, no transports yet, no limits and the default retries.
    pub fn new(handlers: Handlers<'r>) -> Self {
        Worker {
            handlers,
            transports: Vec::new(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            restart: None,
            started: Instant::now(),
            outage_limit: DEFAULT_OUTAGE_LIMIT,
            stop: Arc::new(AtomicBool::new(false)),
            poll: Duration::from_secs(1),
            log: None,
        }
    }

    /// Adds a transport. With several, the first with a message wins, in the order added.
    pub fn transport(mut self, transport: Box<dyn Transport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// Sets the stop conditions.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Listens to `stop-workers` through `signal`: the worker exits after its current
    /// message once a restart is requested after it started (see the clock rules in
    /// [`RestartSignal`]'s module docs, repeated in the README).
    pub fn restart_signal(mut self, signal: Box<dyn RestartSignal>) -> Self {
        self.restart = Some(signal);
        self
    }

    /// When this worker's code started: a restart requested after `at` stops it, even one
    /// made before [`Worker::run`] (while transports were opening). Defaults to when
    /// [`Worker::new`] was called; take an `Instant` before opening anything that can wait
    /// and pass it here. The commands in [`cli`] pass the process's start.
    pub fn started_at(mut self, at: Instant) -> Self {
        self.started = at;
        self
    }

    /// How long the worker goes on while its restart signal cannot be read (30 s by
    /// default): longer, and it stops with [`StopReason::RestartSignalLost`] rather than run
    /// yesterday's code without hearing `stop-workers`.
    pub fn restart_signal_outage(mut self, limit: Duration) -> Self {
        self.outage_limit = limit;
        self
    }

    /// A flag that stops the worker between messages when set, as SIGTERM does after
    /// [`Worker::stop_on_signals`].
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = flag;
        self
    }

    /// Makes SIGTERM and SIGINT stop the worker after its current message. A SIGINT after a
    /// first stop signal (Ctrl-C twice) ends the process at once. Call it after
    /// [`Worker::stop_flag`], which would replace the flag the signals set.
    #[cfg(feature = "signals")]
    pub fn stop_on_signals(self) -> std::io::Result<Self> {
        stop_on_signals(&self.stop)?;
        Ok(self)
    }

    /// The longest single wait for a message (one second by default). Stop conditions are
    /// checked at least this often while the queue is empty.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// Calls `log` for every message settled (handled, retried, requeued, failed) and every
    /// warning.
    pub fn on_event(mut self, log: impl FnMut(&Event<'_>) + Send + 'r) -> Self {
        self.log = Some(Box::new(log));
        self
    }

    /// Runs until a stop condition holds, then returns what it did and why it stopped.
    pub fn run(&mut self) -> Report {
        let mut run = flow::Run::new(self.limits.clone(), self.started, self.outage_limit);
        let reason = self.drain(&mut run);
        run.finish(reason)
    }

    fn drain(&mut self, run: &mut flow::Run) -> StopReason {
        if self.transports.is_empty() {
            return StopReason::TransportFailed("no transport to consume".to_owned());
        }
        // What older workers put back for newer code, this code may read: at once, not
        // after the delay they gave it.
        for t in &mut self.transports {
            let dispatcher = &self.handlers.dispatcher;
            let mut readable = |body: &[u8]| {
                catch_unwind(AssertUnwindSafe(|| dispatcher.check(body).is_ok())).unwrap_or(false)
            };
            match t.release_waiting(&mut readable) {
                Ok(0) => {}
                Ok(count) => emit(
                    &mut self.log,
                    &Event::Released {
                        transport: t.name(),
                        count,
                    },
                ),
                Err(e) => return StopReason::TransportFailed(e.to_string()),
            }
        }
        loop {
            if let Some(reason) = self.should_stop(run) {
                return reason;
            }
            let received = match self.receive(run.wait(self.poll)) {
                Ok(received) => received,
                Err(e) => return StopReason::TransportFailed(e.to_string()),
            };
            let outcome = match received {
                Some((i, mut delivery)) => self.process(run, i, &mut delivery),
                None if run.stop_when_empty() => match self.all_empty() {
                    Ok(true) => return StopReason::Empty,
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Ok(()),
            };
            if let Err(e) = outcome {
                return StopReason::TransportFailed(e.to_string());
            }
        }
    }

    fn should_stop(&mut self, run: &mut flow::Run) -> Option<StopReason> {
        if let Some(reason) = run.limit_reached(self.stop.load(Ordering::SeqCst)) {
            return Some(reason);
        }
        let signal = self.restart.as_mut()?;
        let with_clock = run.signal_due(signal.check_interval())?;
        match run.signal_read(flow::read_signal(&mut **signal, with_clock)) {
            Ok(None) => None,
            Ok(Some(problem)) => {
                emit(&mut self.log, &Event::Warning { problem: &problem });
                None
            }
            Err(reason) => Some(reason),
        }
    }

    fn receive(&mut self, wait: Duration) -> Result<Option<(usize, Delivery)>, TransportError> {
        if let [only] = self.transports.as_mut_slice() {
            return Ok(only.receive(wait)?.map(|d| (0, d)));
        }
        for (i, t) in self.transports.iter_mut().enumerate() {
            if let Some(d) = t.receive(Duration::ZERO)? {
                return Ok(Some((i, d)));
            }
        }
        let each = wait / self.transports.len() as u32;
        for (i, t) in self.transports.iter_mut().enumerate() {
            if let Some(d) = t.receive(each)? {
                return Ok(Some((i, d)));
            }
        }
        Ok(None)
    }

    fn all_empty(&mut self) -> Result<bool, TransportError> {
        for t in &mut self.transports {
            if t.pending()? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn process(
        &mut self,
        run: &mut flow::Run,
        i: usize,
        delivery: &mut Delivery,
    ) -> Result<(), TransportError> {
        let span = flow::span(self.transports[i].name(), delivery);
        let _in_span = span.enter();
        let dispatcher = &self.handlers.dispatcher;
        let started = flow::start(delivery, &self.retry, |body| {
            dispatcher
                .dispatch(body)
                .map(|h| (h.type_name, h.version, h.result))
        });
        run.received(delivery.counts_as.as_ref());
        let (action, handled) = match started {
            flow::Started::Settle(action) => (action, None),
            flow::Started::Run {
                type_name,
                version,
                handler: result,
            } => (
                flow::finish(delivery, type_name, version, &result, &self.retry),
                Some((type_name, version)),
            ),
        };
        let failure = action.is_failure();
        let transport = &mut self.transports[i];
        let settled = perform(&mut **transport, delivery, &action)?;
        run.settled(failure, &settled);
        let log = &mut self.log;
        report(transport.name(), delivery, action, handled, &settled, |e| {
            emit(log, e)
        });
        Ok(())
    }
}

/// Does what the decision core asked for a delivery.
fn perform(
    transport: &mut dyn Transport,
    delivery: &Delivery,
    action: &Action,
) -> Result<flow::Settled, TransportError> {
    Ok(match action {
        Action::Ack => {
            transport.ack(delivery)?;
            flow::Settled::Handled
        }
        Action::Retry { delay, attempt, .. } => {
            transport.retry_later(delivery, *delay, *attempt)?;
            flow::Settled::Retried
        }
        Action::Requeue { delay, .. } => {
            transport.requeue_for_newer(delivery, *delay)?;
            flow::Settled::Requeued
        }
        // `None`: another consumer took it over, and settles it.
        Action::Fail(record) => match transport.fail(delivery, record)? {
            Some(id) => flow::Settled::Failed(id),
            None => flow::Settled::TakenOver,
        },
    })
}

/// Logs what became of a settled delivery: `handled` is its type and arrived version, if
/// it decoded.
fn report(
    transport: &str,
    delivery: &Delivery,
    action: Action,
    handled: Option<(&'static str, u32)>,
    settled: &flow::Settled,
    emit: impl FnOnce(&Event<'_>),
) {
    match (action, settled) {
        (_, flow::Settled::TakenOver) => {}
        (Action::Ack, _) => {
            if let Some((type_name, version)) = handled {
                emit(&Event::Handled {
                    transport,
                    delivery,
                    type_name,
                    version,
                })
            }
        }
        (Action::Retry { delay, error, .. }, _) => emit(&Event::Retrying {
            transport,
            delivery,
            error: &error,
            delay,
        }),
        (Action::Requeue { error, .. }, _) => emit(&Event::Requeued {
            transport,
            delivery,
            error: &error,
        }),
        (Action::Fail(record), flow::Settled::Failed(failed_id)) => emit(&Event::Failed {
            transport,
            delivery,
            record: &record,
            failed_id,
        }),
        (Action::Fail(_), _) => {}
    }
}

/// Makes SIGTERM and SIGINT set `flag`; a SIGINT after a first stop signal (Ctrl-C twice)
/// ends the process at once.
#[cfg(feature = "signals")]
pub(crate) fn stop_on_signals(flag: &Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    // Registered first, so it sees the flag before the second registration sets it.
    flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(flag))?;
    flag::register(SIGTERM, Arc::clone(flag))?;
    flag::register(SIGINT, Arc::clone(flag))?;
    Ok(())
}

/// Reports `event` to `tracing` (inside the message's span, so a service's own subscriber
/// sees it with the message's fields) and to the `on_event` callback, if any.
fn emit(log: &mut Option<Logger<'_>>, event: &Event<'_>) {
    trace(event);
    if let Some(log) = log {
        log(event);
    }
}

/// Reports `event` to `tracing`, at its level.
fn trace(event: &Event<'_>) {
    match event {
        Event::Handled { .. } => tracing::debug!("{event}"),
        Event::Requeued { .. } | Event::Released { .. } => tracing::info!("{event}"),
        Event::Retrying { .. } => tracing::warn!("{event}"),
        Event::Warning { problem } => tracing::warn!("{problem}"),
        Event::Failed { .. } => tracing::error!("{event}"),
    }
}

/// The process's resident set size in bytes, from `/proc/self/status` (Linux only).
pub fn resident_set_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Reads a size such as `128M`, `1G`, `512K` or `1048576` (bytes; K, M, G are powers of
/// 1024, an optional trailing `B` or `iB` is allowed).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn show_bytes(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_symfonys_memory_limit() {
        assert_eq!(parse_bytes("128M"), Some(128 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512K"), Some(512 << 10));
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("12X"), None);
        assert_eq!(parse_bytes("M"), None);
        assert_eq!(parse_bytes("99999999999999999999G"), None);
    }

    #[test]
    fn backoff_grows_exponentially_up_to_its_cap_and_jitter_stays_in_its_band() {
        let p = RetryPolicy {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let ms: Vec<u128> = (0..6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.delay_for(1).as_secs_f64();
            assert!((0.18..=0.22).contains(&d), "{d}");
            seen.insert((d * 1e6) as u64);
        }
        assert!(seen.len() > 100, "jitter spreads the delays");
    }

    #[test]
    fn resident_set_size_is_read_on_linux() {
        let rss = resident_set_size().expect("/proc/self/status");
        assert!(rss > 1 << 20, "{rss}");
    }
}
