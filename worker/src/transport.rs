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
    /// Set by the worker on the delivery that first decodes its message: the settle that
    /// follows (ack, retry, requeue or fail) adds one to the drain statistics of this type
    /// and arrived version, with this time, in the same write, so that no crash between a
    /// handled message and its count loses the count.
    pub counts_as: Option<StatCount>,
}

/// What a settle adds to the drain statistics: one message of `type_name` that arrived in
/// `version`, decoded at `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatCount {
    /// The message type (its current name).
    pub type_name: &'static str,
    /// The version it arrived in.
    pub version: u32,
    /// When it was decoded, in milliseconds since the Unix epoch.
    pub at_ms: u64,
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

/// A queue of envelopes: what a worker takes messages from and settles them in.
///
/// Every method may block for I/O but never longer than asked: [`Queue::receive`] returns
/// `Ok(None)` when `timeout` passes, so a worker's stop conditions always get their turn.
pub trait Queue: Send {
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
    /// attempt count, and settles this delivery. The stored copy keeps
    /// [`Delivery::counted`].
    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError>;

    /// Moves the message, with its original bytes and `record`, to the failure store, and
    /// settles this delivery. Returns its id in the failure store (what `failed show`
    /// lists), or `None` when the delivery was no longer this consumer's to settle.
    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError>;

    /// Messages waiting or being handled (delayed retries included), not failed ones.
    fn pending(&mut self) -> Result<u64, TransportError>;

    /// Puts a message of a version this code cannot read back after `delay`, spending no
    /// attempt, marked as waiting for newer code, and settles this delivery. The stored copy
    /// keeps [`Delivery::counted`].
    fn requeue_for_newer(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError>;

    /// Makes messages waiting for newer code available at once when `readable` says this
    /// code reads them; returns how many. A worker calls it when it starts, so that a
    /// deploy's new workers do not sit out the delay with which the old ones requeued them.
    fn release_waiting(
        &mut self,
        readable: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, TransportError>;
}

/// Where failed messages wait, with their bytes, for `failed show`, `retry` and `remove`.
pub trait FailureStore: Send {
    /// Messages in the failure store, oldest first, at most `limit`.
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError>;

    /// Sends a failed message's original bytes back to the queue (attempt 0) and removes it
    /// from the failure store. `false` when no failed message has that id.
    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError>;

    /// Deletes a failed message. `false` when none has that id.
    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError>;
}

/// How many messages of each type arrived in each version: the drain tracking that tells
/// when an old version has nothing left to read.
pub trait DrainStats: Send {
    /// Adds decode counts.
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError>;

    /// The counts, by type and version.
    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError>;
}

// A boxed queue of any kind is a queue, so generic code (the async adapter) takes one.
impl<Q: Queue + ?Sized> Queue for Box<Q> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        (**self).send(body)
    }
    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        (**self).receive(timeout)
    }
    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        (**self).ack(delivery)
    }
    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        (**self).retry_later(delivery, delay, attempt)
    }
    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        (**self).fail(delivery, record)
    }
    fn pending(&mut self) -> Result<u64, TransportError> {
        (**self).pending()
    }
    fn requeue_for_newer(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        (**self).requeue_for_newer(delivery, delay)
    }
    fn release_waiting(
        &mut self,
        readable: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, TransportError> {
        (**self).release_waiting(readable)
    }
}

/// A queue with its failure store and drain statistics: what a worker and its commands use.
/// Implemented for every type that is all three; a transport implements each job's trait.
pub trait Transport: Queue + FailureStore + DrainStats {}

impl<T: Queue + FailureStore + DrainStats + ?Sized> Transport for T {}

/// A DSN, parsed once by the `url` crate: its parts and its query parameters, all
/// percent-decoded (a password holding `#` or `/` is written `%23`, `%2F`). Shown anywhere
/// (errors, logs) only without its password.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) struct Dsn {
    url: url::Url,
    params: Vec<(String, String)>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
impl Dsn {
    /// Parses `text`; the error never repeats the password.
    pub(crate) fn parse(text: &str) -> Result<Dsn, TransportError> {
        let url = url::Url::parse(text)
            .map_err(|e| TransportError::configuration(redact(text), format!("not a DSN: {e}")))?;
        let params = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let dsn = Dsn { url, params };
        // `stream=orders#x` would quietly be the stream `orders`.
        if dsn.url.fragment().is_some() {
            return Err(TransportError::configuration(
                dsn.shown(),
                "a `#` ends the DSN's query; write it as %23",
            ));
        }
        Ok(dsn)
    }

    /// The parsed DSN.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn url(&self) -> &url::Url {
        &self.url
    }

    /// The DSN as logs and errors show it: without its password.
    pub(crate) fn shown(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(None);
        }
        url.to_string()
    }

    /// The value of query parameter `key`, decoded; the first if it is repeated.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses a parameter that is not in `known`, or one given twice: a misspelt
    /// parameter must not be silently ignored.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), TransportError> {
        for (i, (key, _)) in self.params.iter().enumerate() {
            let problem = if !known.contains(&key.as_str()) {
                format!(
                    "unknown parameter `{key}`; expected one of: {}",
                    known.join(", ")
                )
            } else if self.params[..i].iter().any(|(k, _)| k == key) {
                format!("parameter `{key}` given twice")
            } else {
                continue;
            };
            return Err(TransportError::configuration(self.shown(), problem));
        }
        Ok(())
    }

    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    /// The file a `scheme://<path>` DSN names, decoded: `sqlite:///var/q.db` is absolute,
    /// `sqlite://q.db` relative to the working directory.
    pub(crate) fn file_path(&self) -> Result<std::path::PathBuf, TransportError> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|p| p.into_owned())
                .map_err(|_| {
                    TransportError::configuration(
                        self.shown(),
                        "the path is not UTF-8 once decoded",
                    )
                })
        };
        let path = match self.url.host_str() {
            Some(host) if !host.is_empty() => {
                format!("{}{}", decode(host)?, decode(self.url.path())?)
            }
            _ => decode(self.url.path())?,
        };
        if path.is_empty() || path == "/" {
            return Err(TransportError::configuration(
                self.shown(),
                "the DSN names no file",
            ));
        }
        Ok(path.into())
    }
}

/// A number of seconds as a DSN gives it (`reclaim_after=2.5`).
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) fn seconds(text: &str) -> Option<Duration> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// A DSN's text without its password, for a DSN that may not even parse: everything between
/// `scheme://user` and the last `@` goes, whatever it holds (an unencoded `#`, `/` or `@`).
pub(crate) fn redact(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return dsn.to_owned();
    };
    match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        None => dsn.to_owned(),
    }
}

/// A name for this consumer, unique among the workers of a queue.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
pub(crate) fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}
