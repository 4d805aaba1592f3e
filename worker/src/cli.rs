//! The worker commands a program mounts in its own binary: `consume`, `stop-workers`,
//! `failed show|retry|remove` and `stats`.
//!
//! Handlers are the program's own code, so the program builds the [`Console`] (its handlers,
//! its transports, its restart signal) and hands it the parsed [`Command`]:
//!
//! ```no_run
//! use clap::Parser;
//! use upcaster_worker::cli::{Command, Console};
//! use upcaster_worker::Handlers;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize, upcaster::Message)]
//! # #[message(version = 1)]
//! # struct ResizeImage { id: u64 }
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let registry = upcaster::Registry::builder().register::<ResizeImage>().build().unwrap();
//!     let handlers = Handlers::new(&registry)
//!         .on(|m: upcaster::Decoded<ResizeImage>| Ok::<(), std::io::Error>(()))
//!         .unwrap();
//!     Console::new(handlers)
//!         .transport("async", "sqlite:///var/lib/app/queue.db")
//!         .restart_signal("/var/lib/app/restart-requested-at")
//!         .run(Cli::parse().command)
//! }
//! ```
//!
//! `consume` exits 0 when a stop condition ends it (the supervisor restarts it) and 1 when a
//! transport fails or its restart signal stays unreadable past the outage limit; the other
//! commands exit 1 on an error or a message that still fails.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::clock::{now_ms, process_started, show_time};
use crate::dsn::{open_restart_signal, open_with};
use crate::{
    parse_bytes, resident_set_size, Access, FailedMessage, Handlers, Limits, RetryPolicy,
    StopReason, Transport, TransportError, Worker,
};

/// The worker commands, to mount in a program's own `clap` parser (as a subcommand, or
/// flattened into its own subcommands).
// These docs are the library's: clap must not make them the `about` of a program that
// mounts the commands.
#[derive(Debug, clap::Subcommand)]
#[command(about = None, long_about = None)]
pub enum Command {
    /// Consume messages until a limit, a signal or `stop-workers` ends the worker.
    Consume(ConsumeArgs),
    /// Ask every running worker to exit after its current message.
    StopWorkers,
    /// List, retry or remove messages in the failure transport.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// Messages decoded per type and arrived version: when an old version stops arriving,
    /// its upcaster can go.
    Stats(StatsArgs),
}

/// `consume`'s options. Every limit is checked between messages only.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Transports to consume, by name, in priority order (default: all of them).
    pub transports: Vec<String>,
    /// Stop after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub time_limit: Option<u64>,
    /// Stop once the resident set exceeds this size: 128M, 1G, 512K (powers of 1024), or a
    /// bare number of bytes.
    #[arg(long, value_name = "SIZE", value_parser = memory_limit)]
    pub memory_limit: Option<u64>,
    /// Stop after this many failed attempts in a row.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub failure_limit: Option<u32>,
    /// Stop when every transport is empty. Messages waiting for a retry, or for a newer
    /// worker, count as not empty.
    #[arg(long)]
    pub stop_when_empty: bool,
    /// Print a line for every message.
    #[arg(short, long)]
    pub verbose: bool,
    /// Messages handled at once (async handlers only; default: the program's setting).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..10_000))]
    pub in_flight: Option<u64>,
}

fn memory_limit(text: &str) -> Result<u64, String> {
    match parse_bytes(text) {
        Some(0) | None => Err(format!("`{text}` is not a size such as 128M, 1G or 512K")),
        Some(n) => Ok(n),
    }
}

/// `failed`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FailedCommand {
    /// List failed messages, or show one in full with whether it decodes now.
    Show {
        /// A failed message's id.
        id: Option<String>,
        /// Only this transport's failures.
        #[arg(long)]
        transport: Option<String>,
        /// List at most this many per transport.
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// Decode failed messages with this program's code and send those that now decode back
    /// to their queue.
    Retry {
        /// Failed messages' ids.
        ids: Vec<String>,
        /// Every failed message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Send back even a message that still fails to decode.
        #[arg(long)]
        force: bool,
        /// Only this transport's failures.
        #[arg(long)]
        transport: Option<String>,
    },
    /// Delete failed messages.
    Remove {
        /// Failed messages' ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Only this transport's failures.
        #[arg(long)]
        transport: Option<String>,
    },
}

/// `stats`'s options.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Transports to show, by name (default: all of them).
    pub transports: Vec<String>,
}

/// The handlers of a console: blocking, or async for the tokio runtime.
enum Kind<'r> {
    Blocking(Handlers<'r>),
    #[cfg(feature = "tokio")]
    Tokio(crate::aio::AsyncHandlers),
}

impl Kind<'_> {
    fn check(&self, bytes: &[u8]) -> Result<(&'static str, u32), upcaster::Error> {
        match self {
            Kind::Blocking(h) => h.check(bytes),
            #[cfg(feature = "tokio")]
            Kind::Tokio(h) => h.check(bytes),
        }
    }

    fn registry(&self) -> &upcaster::Registry {
        match self {
            Kind::Blocking(h) => h.registry(),
            #[cfg(feature = "tokio")]
            Kind::Tokio(h) => h.registry(),
        }
    }
}

/// A program's worker set-up: its handlers, its named transports and its restart signal.
pub struct Console<'r> {
    handlers: Kind<'r>,
    in_flight: usize,
    transports: Vec<(String, String)>,
    restart: Option<String>,
    retry: RetryPolicy,
    poll: Duration,
    created: Instant,
}

impl<'r> Console<'r> {
    /// A console for `handlers`, with no transports yet.
    pub fn new(handlers: Handlers<'r>) -> Self {
        Console::with(Kind::Blocking(handlers))
    }

    fn with(handlers: Kind<'r>) -> Self {
        Console {
            handlers,
            in_flight: 1,
            transports: Vec::new(),
            restart: None,
            retry: RetryPolicy::default(),
            poll: Duration::from_secs(1),
            created: Instant::now(),
        }
    }

    /// A console for async `handlers`: run its commands with [`Console::run_async`] inside
    /// a tokio runtime. `consume` runs an [`AsyncWorker`](crate::aio::AsyncWorker) with up
    /// to [`Console::in_flight`] messages at once (`--in-flight` overrides it).
    #[cfg(feature = "tokio")]
    pub fn new_async(handlers: crate::aio::AsyncHandlers) -> Console<'static> {
        Console::<'static>::with(Kind::Tokio(handlers))
    }

    /// How many messages `consume` handles at once with async handlers (1 by default).
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Names a transport by its DSN (see [`crate::open`]); the name is what `consume`,
    /// `failed` and `stats` take, and the queue's name unless the DSN gives one.
    pub fn transport(mut self, name: &str, dsn: &str) -> Self {
        self.transports.push((name.to_owned(), dsn.to_owned()));
        self
    }

    /// Where `stop-workers` records its request: a file path, the default for one host, or
    /// `redis://host:port?key=<key>` for many. Give every release the same absolute path or
    /// key: a place that moves with a deploy would lose the request.
    pub fn restart_signal(mut self, dsn: &str) -> Self {
        self.restart = Some(dsn.to_owned());
        self
    }

    /// The retry policy of `consume`.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The longest wait for a message between checks of the stop conditions.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Runs `command`, printing to stdout (results) and stderr (logs). With async handlers,
    /// `consume` needs [`Console::run_async`].
    pub fn run(self, command: Command) -> ExitCode {
        let result = match command {
            Command::Consume(args) => self.consume(args),
            command => self.look(command),
        };
        exit(result)
    }

    /// Runs `command` as [`Console::run`] does, in the tokio runtime: `consume` runs the
    /// async worker, and the other commands, which block, run on a blocking thread. SIGTERM
    /// and SIGINT stop `consume` between messages, as with blocking handlers.
    #[cfg(feature = "tokio")]
    pub async fn run_async(self, command: Command) -> ExitCode
    where
        'r: 'static,
    {
        let result = match command {
            Command::Consume(args) => self.consume_async(args).await,
            command => tokio::task::spawn_blocking(move || self.look(command))
                .await
                .unwrap_or_else(|e| Err(format!("the command failed: {e}"))),
        };
        exit(result)
    }

    /// The commands that look at or repair the transports, not `consume`.
    fn look(self, command: Command) -> Result<ExitCode, String> {
        match command {
            Command::Consume(_) => Err("consume runs through Console::run".to_owned()),
            Command::StopWorkers => self.stop_workers(),
            Command::Failed(FailedCommand::Show { id, transport, max }) => {
                self.failed_show(id.as_deref(), transport.as_deref(), max)
            }
            Command::Failed(FailedCommand::Retry {
                ids,
                all,
                force,
                transport,
            }) => self.failed_retry(&ids, all, force, transport.as_deref()),
            Command::Failed(FailedCommand::Remove { ids, transport }) => {
                self.failed_remove(&ids, transport.as_deref())
            }
            Command::Stats(args) => self.stats(&args.transports),
        }
    }

    /// The named transports (all when `names` is empty), opened; with [`Access::Existing`]
    /// (the commands that only look) a queue that is not there is an error, not created.
    fn open(&self, names: &[String], access: Access) -> Result<Vec<Named>, String> {
        self.chosen(names)?
            .into_iter()
            .map(|(name, dsn)| {
                let transport = open_with(dsn, name, access).map_err(|e| e.to_string())?;
                Ok((name.clone(), transport))
            })
            .collect()
    }

    /// The named transports' names and DSNs (all when `names` is empty).
    fn chosen(&self, names: &[String]) -> Result<Vec<&(String, String)>, String> {
        if self.transports.is_empty() {
            return Err("no transport is configured".to_owned());
        }
        let chosen: Vec<&(String, String)> = if names.is_empty() {
            self.transports.iter().collect()
        } else {
            names
                .iter()
                .map(|n| {
                    self.transports
                        .iter()
                        .find(|(name, _)| name == n)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                self.transports.iter().map(|(n, _)| n.as_str()).collect();
                            format!("no transport `{n}`; configured: {}", known.join(", "))
                        })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(chosen)
    }

    fn only(&self, transport: Option<&str>) -> Vec<String> {
        transport.map(|t| vec![t.to_owned()]).unwrap_or_default()
    }

    /// Ids are per transport (SQLite numbers each file's from 1), so acting on ids needs
    /// the transport named when there are several.
    fn one_for_ids(&self, transport: Option<&str>) -> Result<Vec<String>, String> {
        match (transport, self.transports.as_slice()) {
            (Some(t), _) => Ok(vec![t.to_owned()]),
            (None, [_] | []) => Ok(Vec::new()),
            (None, _) => {
                Err("several transports are configured: name one with --transport".to_owned())
            }
        }
    }

    /// What `consume` does before its worker runs, in either runtime: the checks, the
    /// start time, the limits, the restart signal, the log.
    fn before_consume(
        &self,
        args: &ConsumeArgs,
        names: &[String],
        restart: Option<Box<dyn crate::RestartSignal>>,
    ) -> Result<Consuming, String> {
        if args.memory_limit.is_some() && resident_set_size().is_none() {
            return Err("--memory-limit needs /proc/self/status, which only Linux has".to_owned());
        }
        // Before anything that can wait: a restart requested while the transports open (an
        // SQLite lock, a Redis connect) is later than this, and stops the worker.
        let started = process_started().map_or(self.created, |p| p.min(self.created));
        let limits = Limits {
            messages: args.limit,
            time: args.time_limit.map(Duration::from_secs),
            memory: args.memory_limit,
            failures: args.failure_limit,
            stop_when_empty: args.stop_when_empty,
        };
        let listening = match &restart {
            Some(signal) => format!("listening for stop-workers at {}", signal.name()),
            None => "no restart signal configured: stop-workers cannot reach it".to_owned(),
        };
        eprintln!(
            "worker {} consuming {} ({listening})",
            std::process::id(),
            names.join(", ")
        );
        // The worker reports through `tracing`: a plain subscriber on stderr, unless the
        // program installed its own.
        let level = if args.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .event_format(Plain)
            .try_init();
        Ok(Consuming {
            started,
            limits,
            restart,
        })
    }

    fn consume(self, args: ConsumeArgs) -> Result<ExitCode, String> {
        if !matches!(self.handlers, Kind::Blocking(_)) {
            return Err("async handlers consume through Console::run_async".to_owned());
        }
        if args.in_flight.is_some_and(|n| n > 1) {
            return Err(
                "--in-flight above 1 needs async handlers (Console::new_async); \
                 run more worker processes instead"
                    .to_owned(),
            );
        }
        let transports = self.open(&args.transports, Access::Create)?;
        let names: Vec<String> = transports.iter().map(|(n, _)| n.clone()).collect();
        let restart = self.restart.as_deref().map(open_restart_signal).transpose();
        let restart = restart.map_err(|e| e.to_string())?;
        let Consuming {
            started,
            limits,
            restart,
        } = self.before_consume(&args, &names, restart)?;
        #[allow(clippy::infallible_destructuring_match)] // Not without `tokio`.
        let handlers = match self.handlers {
            Kind::Blocking(handlers) => handlers,
            #[cfg(feature = "tokio")]
            Kind::Tokio(_) => {
                return Err("async handlers consume through Console::run_async".to_owned())
            }
        };
        let mut worker = Worker::new(handlers)
            .started_at(started)
            .limits(limits)
            .retry(self.retry)
            .poll_interval(self.poll)
            .stop_on_signals()
            .map_err(|e| format!("cannot listen to signals: {e}"))?;
        for (_, t) in transports {
            worker = worker.transport(t);
        }
        if let Some(signal) = restart {
            worker = worker.restart_signal(signal);
        }
        let report = worker.run();
        Ok(ended(&report))
    }

    #[cfg(feature = "tokio")]
    async fn consume_async(self, args: ConsumeArgs) -> Result<ExitCode, String>
    where
        'r: 'static,
    {
        if matches!(self.handlers, Kind::Blocking(_)) {
            return tokio::task::spawn_blocking(move || self.consume(args))
                .await
                .unwrap_or_else(|e| Err(format!("the worker failed: {e}")));
        }
        let chosen: Vec<(String, String)> = self
            .chosen(&args.transports)?
            .into_iter()
            .cloned()
            .collect();
        let mut queues = Vec::new();
        for (name, dsn) in &chosen {
            queues.push(
                crate::open_async(dsn, name)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let names: Vec<String> = chosen.iter().map(|(n, _)| n.clone()).collect();
        // A blocking client (PostgreSQL's) must not connect on the executor.
        let dsn = self.restart.clone();
        let restart = tokio::task::spawn_blocking(move || {
            dsn.as_deref().map(open_restart_signal).transpose()
        })
        .await
        .map_err(|e| format!("opening the restart signal failed: {e}"))?
        .map_err(|e| e.to_string())?;
        let Consuming {
            started,
            limits,
            restart,
        } = self.before_consume(&args, &names, restart)?;
        let Kind::Tokio(handlers) = self.handlers else {
            return Err("consume_async needs async handlers".to_owned());
        };
        let mut queues = queues.into_iter();
        let Some(first) = queues.next() else {
            return Err("no transport is configured".to_owned());
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        crate::stop_on_signals(&stop).map_err(|e| format!("cannot listen to signals: {e}"))?;
        let mut worker = crate::aio::AsyncWorker::new(handlers, first)
            .started_at(started)
            .limits(limits)
            .retry(self.retry)
            .poll_interval(self.poll)
            .in_flight(args.in_flight.map_or(self.in_flight, |n| n as usize))
            .stop_flag(stop);
        for q in queues {
            worker = worker.queue(q);
        }
        if let Some(signal) = restart {
            worker = worker.restart_signal(signal);
        }
        let report = worker.run().await;
        Ok(ended(&report))
    }
}

/// What `consume` set up before its worker runs.
struct Consuming {
    started: Instant,
    limits: Limits,
    restart: Option<Box<dyn crate::RestartSignal>>,
}

/// Prints the report; the exit code a supervisor acts on.
fn ended(report: &crate::Report) -> ExitCode {
    eprintln!("{report}");
    match report.reason {
        StopReason::TransportFailed(_) | StopReason::RestartSignalLost { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn exit(result: Result<ExitCode, String>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Console<'_> {
    fn stop_workers(self) -> Result<ExitCode, String> {
        let dsn = self.restart.as_deref().ok_or(
            "no restart signal is configured, so no worker listens for one; \
             set it with Console::restart_signal",
        )?;
        let mut signal = open_restart_signal(dsn).map_err(|e| e.to_string())?;
        let at = signal.request().map_err(|e| e.to_string())?;
        println!(
            "Restart requested at {} in {}: every worker running now exits after its current message.",
            show_time(at),
            signal.name()
        );
        Ok(ExitCode::SUCCESS)
    }

    fn failed_show(
        self,
        id: Option<&str>,
        transport: Option<&str>,
        max: usize,
    ) -> Result<ExitCode, String> {
        let mut out = std::io::stdout().lock();
        let mut found = false;
        for (name, mut t) in self.open(&self.only(transport), Access::Existing)? {
            let failed = list(&mut *t, id.map_or(max, |_| usize::MAX))?;
            if let Some(id) = id {
                for m in failed.iter().filter(|m| m.id == id) {
                    found = true;
                    self.describe(&mut out, &name, m);
                }
                continue;
            }
            if failed.len() >= max {
                let _ = writeln!(
                    out,
                    "{name}: the first {max} failed messages (--max shows more)"
                );
            } else {
                let _ = writeln!(out, "{name}: {} failed message(s)", failed.len());
            }
            for m in &failed {
                let r = &m.record;
                let _ = writeln!(
                    out,
                    "  {:<20} {:<24} {:<18} {} attempt(s), {}: {}",
                    m.id,
                    type_and_version(r.type_name.as_deref(), r.version),
                    r.class,
                    r.attempts,
                    show_time(r.failed_at_ms),
                    first_line(&r.error, 100)
                );
            }
        }
        match id {
            Some(id) if !found => Err(format!("no failed message `{id}`")),
            _ => Ok(ExitCode::SUCCESS),
        }
    }

    fn describe(&self, out: &mut impl Write, transport: &str, m: &FailedMessage) {
        let r = &m.record;
        let decodes = match self.handlers.check(&m.body) {
            Ok((name, version)) => format!("yes, as {name} (arrived as v{version})"),
            Err(e) => format!("no: {e}"),
        };
        let _ = writeln!(
            out,
            "id:         {}\ntransport:  {transport}\ntype:       {}\nclass:      {}\nattempts:   {}\nfailed at:  {}\nerror:      {}\ndecodes now: {decodes}\nbody ({} bytes):\n{}",
            m.id,
            type_and_version(r.type_name.as_deref(), r.version),
            r.class,
            r.attempts,
            show_time(r.failed_at_ms),
            r.error,
            m.body.len(),
            show_body(&m.body)
        );
    }

    fn failed_retry(
        self,
        ids: &[String],
        all: bool,
        force: bool,
        transport: Option<&str>,
    ) -> Result<ExitCode, String> {
        if ids.is_empty() && !all {
            return Err("name the failed messages to retry, or pass --all".to_owned());
        }
        let (mut sent, mut kept) = (0, 0);
        let mut missing: Vec<&String> = ids.iter().collect();
        let chosen = if all {
            self.only(transport)
        } else {
            self.one_for_ids(transport)?
        };
        for (name, mut t) in self.open(&chosen, Access::Existing)? {
            for m in list(&mut *t, usize::MAX)? {
                if !all && !ids.contains(&m.id) {
                    continue;
                }
                missing.retain(|id| **id != m.id);
                match self.handlers.check(&m.body) {
                    Err(e) if !force => {
                        kept += 1;
                        println!("{name} {}: still fails, kept: {e}", m.id);
                        continue;
                    }
                    _ => {}
                }
                if t.requeue_failed(&m.id).map_err(|e| e.to_string())? {
                    sent += 1;
                    println!("{name} {}: sent back to the queue", m.id);
                }
            }
        }
        println!("{sent} sent back, {kept} kept");
        if let Some(id) = missing.first() {
            return Err(format!("no failed message `{id}`"));
        }
        Ok(if kept > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    fn failed_remove(self, ids: &[String], transport: Option<&str>) -> Result<ExitCode, String> {
        let mut missing: Vec<&String> = ids.iter().collect();
        for (name, mut t) in self.open(&self.one_for_ids(transport)?, Access::Existing)? {
            for id in ids {
                if t.remove_failed(id).map_err(|e| e.to_string())? {
                    missing.retain(|m| *m != id);
                    println!("{name} {id}: removed");
                }
            }
        }
        match missing.first() {
            Some(id) => Err(format!("no failed message `{id}`")),
            None => Ok(ExitCode::SUCCESS),
        }
    }

    fn stats(self, names: &[String]) -> Result<ExitCode, String> {
        let registry = self.handlers.registry();
        let now = now_ms();
        for (name, mut t) in self.open(names, Access::Existing)? {
            let rows = t.stats().map_err(|e| e.to_string())?;
            let pending = t.pending().map_err(|e| e.to_string())?;
            println!("{name}: {pending} message(s) waiting");
            println!(
                "  {:<28} {:>8} {:>10}  last seen",
                "type", "arrived", "decoded"
            );
            for row in rows {
                let current = registry.current_version(&row.type_name);
                let note = match current {
                    Some(c) if c == row.version => "current".to_owned(),
                    Some(c) if c > row.version => format!("upcast to v{c}"),
                    Some(c) => format!("newer than v{c}"),
                    None => "unknown type".to_owned(),
                };
                println!(
                    "  {:<28} {:>8} {:>10}  {:<22} {note}, {}",
                    row.type_name,
                    format!("v{}", row.version),
                    row.count,
                    show_time(row.last_seen_ms),
                    show_age(now.saturating_sub(row.last_seen_ms))
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A transport opened under its configured name.
type Named = (String, Box<dyn Transport>);

fn list(t: &mut dyn Transport, max: usize) -> Result<Vec<FailedMessage>, String> {
    t.failed(max).map_err(|e: TransportError| e.to_string())
}

fn type_and_version(name: Option<&str>, version: Option<u32>) -> String {
    match (name, version) {
        (Some(n), Some(v)) => format!("{n} v{v}"),
        (Some(n), None) => n.to_owned(),
        (None, _) => "(unreadable)".to_owned(),
    }
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// The body as text when it is UTF-8 (JSON), else as hex (MessagePack).
fn show_body(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => body
            .chunks(32)
            .map(|c| {
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn show_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// The CLI's log lines as before `tracing`: the message alone, `warning: ` or `error: `
/// before the ones an operator must see, and no span prefix (the message names its
/// transport and id already).
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            tracing::Level::ERROR => write!(writer, "error: ")?,
            tracing::Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    // A program's parser as the README shows it: no doc comment of its own.
    #[derive(Parser)]
    #[command(name = "app")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn the_library_s_docs_do_not_become_the_program_s_help() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("to mount in a program"), "{help}");
        assert!(help.starts_with("Usage: app"), "{help}");
        // The subcommands keep their own help, not the docs of the types behind them.
        assert!(help.contains("Consume messages until a limit"), "{help}");
        for path in [
            &["consume"][..],
            &["failed"],
            &["stats"],
            &["failed", "show"],
        ] {
            let mut command = Cli::command();
            let mut sub = &mut command;
            for name in path {
                sub = sub.find_subcommand_mut(name).expect("a subcommand");
            }
            let help = sub.render_long_help().to_string();
            for library in ["'s options", "'s subcommands", "to mount"] {
                assert!(!help.contains(library), "{path:?}: {help}");
            }
        }
    }
}
