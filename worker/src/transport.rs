//! The queue a worker reads: one trait, an embedded SQLite queue and Redis Streams.

use std::fmt;
use std::time::Duration;

/// One message taken from a transport, held until it is acked, retried or failed.
///
/// `body` is the envelope exactly as it was sent; nothing a worker does changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Why a message went to the failure transport, stored beside its original bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A message in the failure transport.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A transport that could not do what was asked. The worker stops on it (a supervisor
/// restarts it) rather than guess; a message it held is delivered again.
#[derive(Debug, thiserror::Error)]
#[error("{transport}: {problem}")]
pub struct TransportError {
    /// The transport, as named in its DSN.
    pub transport: String,
    /// What went wrong.
    pub problem: String,
}

impl TransportError {
    /// A transport error of `transport`.
    pub fn new(transport: impl fmt::Display, problem: impl fmt::Display) -> Self {
        TransportError {
            transport: transport.to_string(),
            problem: problem.to_string(),
        }
    }
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
    /// settles this delivery.
    fn fail(&mut self, delivery: &Delivery, record: &FailureRecord) -> Result<(), TransportError>;

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
