//! The queue a worker reads: one trait, an embedded SQLite queue and Redis Streams.

use std::fmt;
use std::time::Duration;

/// One message taken from a transport, held until it is acked, retried or failed.
///
/// `body` is the envelope exactly as it was sent; nothing a worker does changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The transport's id of this delivery (a Redis stream entry id, an SQLite row id).
    pub id: String,
    /// The message's bytes, as sent.
    pub body: Vec<u8>,
    /// How many earlier deliveries of this message ended in a retry (0 the first time).
    pub attempt: u32,
    /// Whether the message was taken back from a consumer that stopped answering.
    pub reclaimed: bool,
    /// Deliveries since the message was last queued, this one included. Above 1, earlier
    /// consumers took it and stopped without settling it (a crash, a kill): a message that
    /// keeps doing that is failed rather than handed out forever.
    pub deliveries: u32,
    /// Whether the drain statistics already counted this message, on an earlier delivery.
    /// Transports keep it through retries, the failure transport and `failed retry`, so
    /// each message is counted once.
    pub counted: bool,
}

/// Why a message went to the failure transport, stored beside its original bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureRecord {
    /// The message type, where the envelope could be read that far.
    pub type_name: Option<String>,
    /// The version the message arrived in, where the envelope could be read that far.
    pub version: Option<u32>,
    /// A short machine-readable class: `malformed`, `unknown-type`, `upcast-failed`,
    /// `payload-invalid`, `handler`, …
    pub class: String,
    /// The error in full: the failing upcast step, the JSON Pointer, the handler's message.
    pub error: String,
    /// Deliveries made, this last one included.
    pub attempts: u32,
    /// When it failed, in milliseconds since the Unix epoch.
    pub failed_at_ms: u64,
}

impl FailureRecord {
    /// A record of class `class` (`handler`, `malformed`, …) with the full `error`, no known
    /// type or version, no attempts, failed now.
    pub fn new(class: impl Into<String>, error: impl Into<String>) -> Self {
        FailureRecord {
            type_name: None,
            version: None,
            class: class.into(),
            error: error.into(),
            attempts: 0,
            failed_at_ms: crate::clock::now_ms(),
        }
    }

    /// The message type and the version it arrived in.
    pub fn message(mut self, type_name: impl Into<String>, version: u32) -> Self {
        self.type_name = Some(type_name.into());
        self.version = Some(version);
        self
    }

    /// Deliveries made, the last one included.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// When it failed, in milliseconds since the Unix epoch.
    pub fn failed_at_ms(mut self, at: u64) -> Self {
        self.failed_at_ms = at;
        self
    }
}

/// A message in the failure transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedMessage {
    /// Its id in the failure transport, for `failed retry` and `failed remove`.
    pub id: String,
    /// The original bytes.
    pub body: Vec<u8>,
    /// Why it failed.
    pub record: FailureRecord,
}

/// How many messages of one type arrived in one version: the drain tracking that tells
/// when an upcaster has nothing left to read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct StatRow {
    /// The message type (its current name).
    pub type_name: String,
    /// The version the messages arrived in.
    pub version: u32,
    /// Messages decoded.
    pub count: u64,
    /// The last one's decode time, in milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
}

impl StatRow {
    /// `count` messages of `type_name` that arrived in `version`, the last at `last_seen_ms`.
    pub fn new(type_name: impl Into<String>, version: u32, count: u64, last_seen_ms: u64) -> Self {
        StatRow {
            type_name: type_name.into(),
            version,
            count,
            last_seen_ms,
        }
    }
}

/// A transport that could not do what was asked. The worker stops on it (a supervisor
/// restarts it) rather than guess; a message it held is delivered again.
///
/// It has a [`TransportErrorKind`] to act on, what was being done, and the underlying error
/// (rusqlite's, redis's, the file system's) as its [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("{transport}: {problem}")]
#[non_exhaustive]
pub struct TransportError {
    /// The transport, as named in its DSN (never with a password).
    pub transport: String,
    /// What kind of failure: what to fix, or whether waiting helps.
    pub kind: TransportErrorKind,
    /// What went wrong, in words, with the underlying error's message.
    pub problem: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of failure a [`TransportError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The DSN, an option or an argument is wrong (an unknown scheme or parameter, a missing
    /// key, an id of no message): fix the
    /// configuration; retrying cannot help.
    Configuration,
    /// The broker could not be reached, or the connection was lost: it may come back.
    Connection,
    /// The broker answered with an error or a reply it should not give (a wrong key type,
    /// a script error, an unexpected shape).
    Broker,
    /// The local store failed: the SQLite file, or the restart signal's file.
    Storage,
}

impl TransportError {
    /// A transport error of `transport`, of `kind`, described by `problem`.
    pub fn new(
        transport: impl fmt::Display,
        kind: TransportErrorKind,
        problem: impl fmt::Display,
    ) -> Self {
        TransportError {
            transport: transport.to_string(),
            kind,
            problem: problem.to_string(),
            source: None,
        }
    }

    /// The same error with `source` as its cause; its message joins the problem.
    pub fn caused_by(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        self.problem = format!("{}: {source}", self.problem);
        self.source = Some(source);
        self
    }

    /// A configuration mistake of `transport`.
    pub(crate) fn configuration(transport: impl fmt::Display, problem: impl fmt::Display) -> Self {
        TransportError::new(transport, TransportErrorKind::Configuration, problem)
    }

    /// A failure of `transport`'s local store, caused by `source`.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn storage(
        transport: impl fmt::Display,
        doing: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        TransportError::new(transport, TransportErrorKind::Storage, doing).caused_by(source)
    }
}

/// Whether opening a transport may create its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Create the queue if it is not there (consuming, producing).
    Create,
    /// The queue must exist: commands that only look (`stats`, `failed`) refuse a mistyped
    /// DSN rather than create an empty queue and report it empty.
    Existing,
}

/// A queue of envelopes with a failure transport beside it.
///
/// Every method may block for I/O but never longer than asked: [`Transport::receive`] returns
/// `Ok(None)` when `timeout` passes, so a worker's stop conditions always get their turn.
pub trait Transport: Send {
    /// The transport's DSN without secrets, for logs.
    fn name(&self) -> &str;

    /// Appends a message; returns its id.
    fn send(&mut self, body: &[u8]) -> Result<String, TransportError>;

    /// The next message, waiting at most `timeout`. A message that another consumer took
    /// and has not settled within the transport's reclaim timeout is delivered again.
    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;

    /// Settles a delivery: the message is done and leaves the queue.
    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError>;

    /// Puts the message back, to be delivered again after `delay` with `attempt` as its new
    /// attempt count, and settles this delivery.
    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError>;

    /// Moves the message, with its original bytes and `record`, to the failure transport, and
    /// settles this delivery. Returns its id in the failure transport (what `failed show`
    /// lists), or `None` when the delivery was no longer this consumer's to settle.
    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError>;

    /// Messages in the failure transport, oldest first, at most `limit`.
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError>;

    /// Sends a failed message's original bytes back to the queue (attempt 0) and removes it
    /// from the failure transport. `false` when no failed message has that id.
    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError>;

    /// Deletes a failed message. `false` when none has that id.
    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError>;

    /// Adds decode counts to the transport's drain statistics.
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError>;

    /// The drain statistics, by type and version.
    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError>;

    /// Messages waiting or being handled (delayed retries included), not failed ones.
    fn pending(&mut self) -> Result<u64, TransportError>;
}

/// Splits `scheme://rest?key=value&…` into `rest` and the value of `key`.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) fn dsn_parts<'a>(dsn: &'a str, key: &str) -> (&'a str, Option<&'a str>) {
    let rest = dsn.split_once("://").map_or(dsn, |(_, r)| r);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let value = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v);
    (path, value)
}

/// The first query parameter of `dsn` not in `known`, so a misspelt one is refused rather
/// than ignored.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) fn unknown_parameter<'a>(dsn: &'a str, known: &[&str]) -> Option<&'a str> {
    let query = dsn.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
        .find(|k| !known.contains(k))
}

/// A name for this consumer, unique among the workers of a queue.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}
