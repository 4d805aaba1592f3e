//! NATS JetStream for the async runtime: a work-queue stream per queue, durable pull consumers with explicit acks,
//! a failure stream with the bytes, drain statistics and the restart signal in key-value
//! buckets. The I/O is async (`async-nats`); the blocking transport runs the same code on a
//! runtime of its own.
//!
//! Layout for queue `q`:
//! - stream `upcaster_q_q` (work-queue retention: an acked message leaves it) with subjects
//!   `upcaster.q.ready` (messages to handle) and `upcaster.q.delayed` (retries and
//!   messages waiting for newer code, each with the time it is due in a header);
//! - durable pull consumers `ready` and `delayed` on it; a receive moves due messages from
//!   `delayed` to `ready`, deduplicated by message id, so a crash between the two steps
//!   neither loses nor doubles one;
//! - stream `upcaster_f_q`: failed messages, their bytes as the body, the record in
//!   headers;
//! - stream `upcaster_s_q`: drain statistics, one subject per type and version, an
//!   event per count (deduplicated by the message it counts), folded into one by reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, message::PublishMessage, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::{AsyncQueue, Readable};
use crate::clock::now_ms;
use crate::transport::{
    seconds, Access, Delivery, Dsn, FailedMessage, FailureRecord, StatRow, TransportError,
    TransportErrorKind,
};

/// How long a holder may stop answering before its message goes to another consumer, unless
/// the DSN says otherwise (JetStream's own default ack wait).
pub const DEFAULT_RECLAIM_AFTER: Duration = Duration::from_secs(30);
/// How long a transport rides out a lost connection (a server restart, a cut link) before a
/// call fails, unless the DSN's `outage` says otherwise.
pub const DEFAULT_OUTAGE_LIMIT: Duration = Duration::from_secs(30);
/// The shortest reclaim timeout a DSN may set: a holder tells the server it is alive three
/// times per timeout, and must get the chance to.
const MIN_RECLAIM_AFTER: Duration = Duration::from_millis(100);
/// A waiting receive looks at the delayed messages this often, so a retry is at most this late.
const DELAYED_EVERY: Duration = Duration::from_millis(250);
/// How long a look at the delayed messages may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many due messages one look moves.
const MOVE_BATCH: usize = 100;
/// The longest delay JetStream keeps (a negative ack's delay is in nanoseconds, an `i64`):
/// `Duration::MAX` means "not for years".
const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the statistics stream remembers which messages it counted.
const STATS_DEDUPLICATION: Duration = Duration::from_secs(3600);
/// How long a reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past its wait a pull request may stay unanswered before the receive gives up
/// on it (a request lost in a reconnect); a late answer is read by the next receive.
const PULL_MARGIN: Duration = Duration::from_secs(2);
/// The shortest wait of a pull request; the server needs some time to answer one.
const MIN_PULL: Duration = Duration::from_millis(10);

/// Headers of a message in the queue.
const ATTEMPT: &str = "Upcaster-Attempt";
const COUNTED: &str = "Upcaster-Counted";
const DUE_AT: &str = "Upcaster-Due-At";
const WAITING: &str = "Upcaster-Waiting";
/// Headers of a failed message: the record.
const F_TYPE: &str = "Upcaster-Type";
const F_VERSION: &str = "Upcaster-Version";
const F_CLASS: &str = "Upcaster-Class";
const F_ERROR: &str = "Upcaster-Error";
const F_ATTEMPTS: &str = "Upcaster-Attempts";
const F_AT: &str = "Upcaster-Failed-At";

/// A header value may hold no line break; the error text keeps its own, encoded.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

/// The names of a queue's streams, subjects, consumers and bucket.
#[derive(Clone, Debug)]
struct Names {
    queue: String,
    stream: String,
    ready: String,
    delayed: String,
    failed_stream: String,
    failed: String,
    stats: String,
    stats_subject: String,
}

impl Names {
    fn new(shown: &str, queue: &str) -> Result<Names, TransportError> {
        if !valid_name(queue) {
            return Err(TransportError::configuration(
                shown,
                format!(
                    "queue name `{queue}`: NATS names here take letters, digits, `-` and `_` only"
                ),
            ));
        }
        Ok(Names {
            queue: queue.to_owned(),
            stream: format!("upcaster_q_{queue}"),
            ready: format!("upcaster.{queue}.ready"),
            delayed: format!("upcaster.{queue}.delayed"),
            failed_stream: format!("upcaster_f_{queue}"),
            failed: format!("upcaster.{queue}.failed"),
            stats: format!("upcaster_s_{queue}"),
            stats_subject: format!("upcaster.{queue}.stats"),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A key-value key for any text: letters, digits, `-` and `_` as they are, every other byte
/// as `=XX`.
pub(crate) fn kv_key(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

fn kv_unkey(key: &str) -> Option<String> {
    let mut out = Vec::with_capacity(key.len());
    let bytes = key.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = key.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A DSN's server address and credentials.
pub(crate) struct Server {
    shown: String,
    address: String,
    options: async_nats::ConnectOptions,
}

impl Server {
    pub(crate) fn from_dsn(dsn: &Dsn) -> Result<Server, TransportError> {
        let url = dsn.url();
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TransportError::configuration(dsn.shown(), "the DSN names no host"))?;
        let address = format!("nats://{host}:{}", url.port().unwrap_or(4222));
        let mut options = async_nats::ConnectOptions::new()
            // Into the log, not onto standard error as the client's default does.
            .event_callback(|event| async move { tracing::debug!(%event, "NATS connection") })
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REPLY_TIMEOUT))
            .name("upcaster-worker");
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        match (url.username(), url.password()) {
            ("", None) => {}
            (user, Some(password)) => {
                options = options.user_and_password(decode(user), decode(password));
            }
            (token, None) => options = options.token(decode(token)),
        }
        Ok(Server {
            shown: dsn.shown(),
            address,
            options,
        })
    }

    pub(crate) async fn connect(self) -> Result<(String, async_nats::Client), TransportError> {
        let client = async_nats::connect_with_options(&self.address, self.options)
            .await
            .map_err(|e| {
                TransportError::new(
                    &self.shown,
                    TransportErrorKind::Connection,
                    format!("connecting to {}", self.address),
                )
                .caused_by(e)
            })?;
        Ok((self.shown, client))
    }
}

/// An error of `name` while `doing`, of the kind its words tell: the client's errors say
/// "timed out", "broken pipe" or "disconnected" when the connection is what failed.
pub(crate) fn nats_error(
    name: &str,
    doing: impl fmt::Display,
    e: impl std::error::Error + Send + Sync + 'static,
) -> TransportError {
    let text = e.to_string().to_ascii_lowercase();
    // "no stream found": a server that just restarted answers before it recovered its
    // streams (a stream really deleted fails the same, after the outage limit).
    let kind = if [
        "timed out",
        "broken pipe",
        "disconnect",
        "connection",
        "no responders",
        "no stream found",
        "jetstream not enabled",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        TransportErrorKind::Connection
    } else {
        TransportErrorKind::Broker
    };
    TransportError::new(name, kind, doing).caused_by(e)
}

/// The durable pull consumer `durable` on `subject`, and its ack wait: opened (with
/// [`Access::Existing`], or when it exists and `reclaim_after` is `None`), created with
/// `reclaim_after` (or the default) when missing, or updated to `reclaim_after` when given.
async fn consumer(
    stream: &stream::Stream,
    access: Access,
    durable: &str,
    subject: &str,
    reclaim_after: Option<Duration>,
    name: &str,
) -> Result<(consumer::PullConsumer, Duration), TransportError> {
    let existing = stream.get_consumer::<consumer::pull::Config>(durable).await;
    let keep = matches!(access, Access::Existing) || reclaim_after.is_none();
    let mut found = match existing {
        Ok(c) if keep => c,
        Err(e) if matches!(access, Access::Existing) => {
            return Err(nats_error(
                name,
                format!("opening the consumer `{durable}`"),
                BoxedError(e),
            ))
        }
        _ => stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: subject.to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: reclaim_after.unwrap_or(DEFAULT_RECLAIM_AFTER),
                max_deliver: -1,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .map_err(on_err(name, format!("creating the consumer `{durable}`")))?,
    };
    let wait = match found.info().await {
        Ok(info) => info.config.ack_wait,
        Err(_) => reclaim_after.unwrap_or(DEFAULT_RECLAIM_AFTER),
    };
    Ok((found, wait.max(MIN_RECLAIM_AFTER)))
}

/// [`nats_error`] of `name` while `doing`, for `map_err`.
fn on_err<E: std::error::Error + Send + Sync + 'static>(
    name: &str,
    doing: impl Into<String>,
) -> impl FnOnce(E) -> TransportError + '_ {
    let doing = doing.into();
    move |e| nats_error(name, doing, e)
}

/// What a consumer holds, by stream sequence: each delivery it handed out and has not yet
/// settled, kept alive until the server confirms its settle.
type Held = Arc<Mutex<HashMap<u64, Hold>>>;

/// A delivery this consumer holds.
struct Hold {
    /// The subject that settles it (and keeps it alive).
    reply: String,
    /// A settle of it is under way: no other may start.
    settling: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a map of reply subjects half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// NATS JetStream for the async runtime. [`NatsTransport`](crate::NatsTransport) is the same queue for the
/// blocking worker; the two work on one queue at once.
///
/// - **Reclaim**: a consumer holding a message tells the server so three times per
///   `reclaim_after`, so a slow handler keeps its message for as long as it runs; when a
///   consumer dies (killed, cut off), the server delivers its messages again once
///   `reclaim_after` passes, with their delivery count.
/// - **Retries** and messages for newer code are published again on the delayed subject
///   with their due time, and the delivery is acked; receives move them back when due.
/// - **Acks** wait for the server's confirmation, and every publish for the stream's: a
///   settle that returns has landed.
/// - **Statistics** are written before the ack they belong to, as an event named after the
///   message: a crash between the two redelivers the message, whose second count the
///   stream drops (within an hour), so no count is lost or doubled. Workers append and
///   never contend; `stats` folds each type's events into one.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use upcaster_worker::aio::{AsyncNatsTransport, AsyncQueue};
///
/// let queue = AsyncNatsTransport::open_dsn("nats://127.0.0.1:4222", "images").await?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#).await?;
/// if let Some(delivery) = queue.receive(Duration::from_secs(1)).await? {
///     queue.ack(&delivery).await?;
/// }
/// # Ok(()) }
/// ```
pub struct AsyncNatsTransport {
    pub(crate) name: String,
    names: Names,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    failed: stream::Stream,
    delayed: consumer::PullConsumer,
    stats: stream::Stream,
    held: Held,
    /// Where pull requests are answered: this transport's own inbox, opened by the first
    /// receive.
    inbox: tokio::sync::Mutex<Option<(String, async_nats::Subscriber)>>,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.ready`.
    pull_subject: String,
    /// When a receive last looked at the delayed messages.
    looked: Mutex<Option<Instant>>,
    keepalive: tokio::task::JoinHandle<()>,
    /// How long it rides out a lost connection before a call fails.
    outage_limit: Duration,
    /// Whether it sends the split form (type and version in headers, the bare payload as
    /// the body) rather than the envelope. It reads both either way.
    split: bool,
    /// The runtime it was opened on.
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for AsyncNatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNatsTransport")
            .field("name", &self.name)
            .field("stream", &self.names.stream)
            .finish_non_exhaustive()
    }
}

impl Drop for AsyncNatsTransport {
    fn drop(&mut self) {
        self.keepalive.abort();
        // The client's subscriber unsubscribes in a task of the runtime it ran on, which the
        // caller dropping this may be outside of.
        let inbox = self.inbox.get_mut().take();
        let _inside = self.runtime.enter();
        drop(inbox);
    }
}

impl AsyncNatsTransport {
    /// Opens `nats://[user:password@]host[:port][?queue=<name>&reclaim_after=<seconds>&outage=<seconds>&form=split]`,
    /// creating the queue's streams and consumers if needed. The queue defaults to `queue`,
    /// the reclaim timeout to 30 s, the outage it rides out to 30 s. `form=split` sends the
    /// split form (headers `type`, `version`, `content-type` and the envelope's headers, the
    /// bare payload as the body) for consumers in other languages; both forms are read
    /// either way. Must be called on a tokio runtime.
    pub async fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        Self::open_dsn_with(dsn, queue, Access::Create).await
    }

    /// Opens a DSN as [`AsyncNatsTransport::open_dsn`]; with [`Access::Existing`] the queue
    /// must exist, and nothing is created.
    pub async fn open_dsn_with(
        dsn: &str,
        queue: &str,
        access: Access,
    ) -> Result<Self, TransportError> {
        let parsed = Dsn::parse(dsn)?;
        parsed.only(&["queue", "reclaim_after", "outage", "form"])?;
        let split = match parsed.param("form") {
            None | Some("envelope") => false,
            Some("split") => true,
            Some(other) => {
                return Err(TransportError::configuration(
                    parsed.shown(),
                    format!("form `{other}`: expected `envelope` or `split`"),
                ))
            }
        };
        let names = Names::new(&parsed.shown(), parsed.param("queue").unwrap_or(queue))?;
        let reclaim_after = match parsed.param("reclaim_after") {
            None => None,
            Some(text) => seconds(text)
                .map(Some)
                .filter(|d| d.is_some_and(|d| d >= MIN_RECLAIM_AFTER && d <= MAX_DELAY))
                .ok_or_else(|| {
                    TransportError::configuration(
                        parsed.shown(),
                        format!("reclaim_after `{text}`: expected seconds, from 0.1 to ten years"),
                    )
                })?,
        };
        let outage_limit = match parsed.param("outage") {
            None => DEFAULT_OUTAGE_LIMIT,
            Some(text) => seconds(text).filter(|d| *d <= MAX_DELAY).ok_or_else(|| {
                TransportError::configuration(
                    parsed.shown(),
                    format!("outage `{text}`: expected seconds"),
                )
            })?,
        };
        let (name, client) = Server::from_dsn(&parsed)?.connect().await?;
        let js = jetstream::new(client.clone());
        let (stream, failed, stats) = match access {
            Access::Existing => {
                let missing = |_: Box<dyn std::error::Error + Send + Sync>| {
                    TransportError::configuration(
                        &name,
                        format!(
                            "no queue `{}` on this server (stream `{}`); a worker creates it",
                            names.queue, names.stream
                        ),
                    )
                };
                (
                    js.get_stream(&names.stream)
                        .await
                        .map_err(|e| missing(e.into()))?,
                    js.get_stream(&names.failed_stream)
                        .await
                        .map_err(|e| missing(e.into()))?,
                    js.get_stream(&names.stats)
                        .await
                        .map_err(|e| missing(e.into()))?,
                )
            }
            Access::Create => (
                js.get_or_create_stream(stream::Config {
                    name: names.stream.clone(),
                    subjects: vec![names.ready.clone(), names.delayed.clone()],
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
                .map_err(on_err(&name, "creating the queue's stream"))?,
                js.get_or_create_stream(stream::Config {
                    name: names.failed_stream.clone(),
                    subjects: vec![names.failed.clone()],
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
                .map_err(on_err(&name, "creating the failure stream"))?,
                js.get_or_create_stream(stream::Config {
                    name: names.stats.clone(),
                    subjects: vec![format!("{}.>", names.stats_subject)],
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    allow_rollup: true,
                    // Longer than a redelivery after a crash takes, so that a message
                    // counted before its ack was lost is not counted twice.
                    duplicate_window: STATS_DEDUPLICATION,
                    ..Default::default()
                })
                .await
                .map_err(on_err(&name, "creating the statistics stream"))?,
            ),
        };
        // Created with this DSN's reclaim timeout (30 s without one) when missing; an
        // existing consumer is changed only by a DSN that names a reclaim timeout, so that a
        // producer or a command with a plain DSN leaves the workers' setting alone.
        let (ready, ready_wait) =
            consumer(&stream, access, "ready", &names.ready, reclaim_after, &name).await?;
        let (delayed, _) = consumer(
            &stream,
            access,
            "delayed",
            &names.delayed,
            reclaim_after,
            &name,
        )
        .await?;
        let _: consumer::PullConsumer = ready;
        // Keep-alives at a third of the server's ack wait, whoever set it.
        let reclaim_after = ready_wait;
        let held = Held::default();
        let keepalive = tokio::spawn(keep_alive(
            Arc::downgrade(&held),
            client.clone(),
            reclaim_after / 3,
        ));
        let pull_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.ready", names.stream);
        Ok(AsyncNatsTransport {
            name,
            names,
            client,
            js,
            stream,
            failed,
            delayed,
            stats,
            held,
            inbox: tokio::sync::Mutex::new(None),
            pull_subject,
            outage_limit,
            split,
            runtime: tokio::runtime::Handle::current(),
            looked: Mutex::new(None),
            keepalive,
        })
    }

    fn err(
        &self,
        doing: impl Into<String>,
    ) -> impl FnOnce(async_nats::Error) -> TransportError + '_ {
        let doing = doing.into();
        move |e| nats_error(&self.name, doing, BoxedError(e))
    }

    fn fail_with<E: std::error::Error + Send + Sync + 'static>(
        &self,
        doing: impl Into<String>,
    ) -> impl FnOnce(E) -> TransportError + '_ {
        on_err(&self.name, doing)
    }

    /// Publishes `body` on `subject` with `headers`, deduplicated by `id` when given, and
    /// waits for the stream to store it; its stream sequence.
    async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: &[u8],
        id: Option<String>,
    ) -> Result<u64, TransportError> {
        // Named, so that the stream drops a copy sent again after a lost confirmation.
        let id = id.unwrap_or_else(|| self.client.new_inbox());
        self.patient(|| {
            let publish = PublishMessage::build()
                .payload(body.to_vec().into())
                .headers(headers.clone())
                .message_id(id.as_str());
            async move {
                let ack = self
                    .js
                    .send_publish(subject.to_owned(), publish)
                    .await
                    .map_err(self.fail_with(format!("publishing to {subject}")))?
                    .await
                    .map_err(self.fail_with(format!("publishing to {subject}")))?;
                Ok(ack.sequence)
            }
        })
        .await
    }

    /// Runs `op` again while it fails for want of a connection, pausing 50 ms, then twice as
    /// long each time up to 2 s, until the transport's outage limit: the client reconnects
    /// meanwhile. Every step it runs is safe to repeat (publishes are deduplicated by id,
    /// acks and reads change nothing the second time).
    async fn patient<T, F, Fut>(&self, mut op: F) -> Result<T, TransportError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, TransportError>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut warned = false;
        loop {
            match op().await {
                Err(e)
                    if e.kind == TransportErrorKind::Connection
                        && started.elapsed() + pause < self.outage_limit =>
                {
                    if !warned {
                        tracing::warn!(transport = %self.name, error = %e, "NATS unreachable; retrying for up to {:?}", self.outage_limit);
                        warned = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Takes a delivery out of this consumer's holdings: its reply subject, or `None` when
    /// it is not this consumer's to settle.
    fn take(&self, delivery: &Delivery) -> Option<(u64, String)> {
        let seq = delivery.id.parse::<u64>().ok()?;
        let mut held = lock(&self.held);
        let hold = held.get_mut(&seq).filter(|h| !h.settling)?;
        hold.settling = true;
        Some((seq, hold.reply.clone()))
    }

    /// Ends a settle that [`Self::take`] began: the delivery is no longer held once the
    /// settle landed; after a failure it is held as before, and may be settled again.
    fn settled<T>(&self, seq: u64, result: Result<T, TransportError>) -> Result<T, TransportError> {
        let mut held = lock(&self.held);
        match &result {
            Ok(_) => {
                held.remove(&seq);
            }
            Err(_) => {
                if let Some(hold) = held.get_mut(&seq) {
                    hold.settling = false;
                }
            }
        }
        result
    }

    /// Sends `kind` on `reply` and waits for the server's confirmation.
    async fn settle(&self, reply: String, kind: &'static [u8]) -> Result<(), TransportError> {
        self.patient(|| self.settle_once(reply.clone(), kind)).await
    }

    async fn settle_once(&self, reply: String, kind: &'static [u8]) -> Result<(), TransportError> {
        let answer = tokio::time::timeout(
            REPLY_TIMEOUT,
            self.client.request(reply, kind.to_vec().into()),
        )
        .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.fail_with("acknowledging a delivery")(e)),
            Err(_) => Err(TransportError::new(
                &self.name,
                TransportErrorKind::Connection,
                format!("no confirmation of an ack within {REPLY_TIMEOUT:?}"),
            )),
        }
    }

    /// Counts the delivery (if the worker set a count), then acks it.
    async fn count_and_ack(
        &self,
        delivery: &Delivery,
        reply: String,
    ) -> Result<(), TransportError> {
        let Some(c) = &delivery.counts_as else {
            return self.settle(reply, b"+ACK").await;
        };
        let row = StatRow::new(c.type_name, c.version, 1, c.at_ms);
        let seq = delivery.id.parse().ok();
        // The count goes on the wire before the ack, on the same connection, and both are
        // confirmed in one round trip: the server reads the count first. A count whose
        // confirmation did not come is sent again, deduplicated by the message it counts.
        let (subject, event) = self.stat_event(&row, seq);
        let count = self.js.send_publish(subject, event).await;
        let acked = self.settle(reply, b"+ACK").await;
        let counted = match count {
            Ok(confirmation) => confirmation.await.is_ok(),
            Err(_) => false,
        };
        if !counted {
            self.add_stats(&[row], seq).await?;
        }
        acked
    }

    /// The statistics event of `row` and its subject; `once` names the message it counts.
    fn stat_event(&self, row: &StatRow, once: Option<u64>) -> (String, PublishMessage) {
        let subject = format!(
            "{}.v{}.{}",
            self.names.stats_subject,
            row.version,
            kv_key(&row.type_name)
        );
        let mut event = PublishMessage::build().payload(
            format!("{} {}", row.count, row.last_seen_ms)
                .into_bytes()
                .into(),
        );
        if let Some(seq) = once {
            event = event.message_id(format!("count-{seq}"));
        }
        (subject, event)
    }

    /// Puts a held delivery back on the delayed subject (or at once on the ready one), due
    /// after `delay`, then settles it.
    async fn put_back(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
        waiting: bool,
    ) -> Result<(), TransportError> {
        let Some((seq, reply)) = self.take(delivery) else {
            return Ok(());
        };
        let mut headers = carried(attempt, delivery);
        let subject = if delay.is_zero() && !waiting {
            &self.names.ready
        } else {
            let due = now_ms().saturating_add(delay.min(MAX_DELAY).as_millis() as u64);
            headers.insert(DUE_AT, due.to_string().as_str());
            if waiting {
                headers.insert(WAITING, "newer");
            }
            &self.names.delayed
        };
        let copy = self
            .publish(
                subject,
                headers,
                &delivery.body,
                Some(format!("back-{seq}")),
            )
            .await;
        let result = match copy {
            Ok(_) => self.count_and_ack(delivery, reply).await,
            Err(e) => Err(e),
        };
        self.settled(seq, result)
    }

    /// Moves due messages from the delayed subject to the ready one, at most every
    /// [`DELAYED_EVERY`] (always when `now` is set).
    async fn move_due(&self, now: bool) -> Result<(), TransportError> {
        // Bounded: the client waits for a fetch's answer without end, and a server that
        // gives none (seen after messages it had pending were deleted) must not stall every
        // receive. A move cut short is finished by a later one: its copies are named.
        match tokio::time::timeout(MOVE_TIMEOUT, self.move_due_now(now)).await {
            Ok(moved) => moved,
            Err(_) => {
                tracing::debug!(transport = %self.name, "no answer to a look at the delayed messages within {MOVE_TIMEOUT:?}");
                Ok(())
            }
        }
    }

    async fn move_due_now(&self, now: bool) -> Result<(), TransportError> {
        {
            let mut looked = lock(&self.looked);
            if !now && looked.is_some_and(|at| at.elapsed() < DELAYED_EVERY) {
                return Ok(());
            }
            *looked = Some(Instant::now());
        }
        let mut batch = self
            .patient(|| async {
                self.delayed
                    .fetch()
                    .max_messages(MOVE_BATCH)
                    .messages()
                    .await
                    .map_err(self.fail_with("reading delayed messages"))
            })
            .await?;
        while let Some(message) = batch.next().await {
            let message = message
                .map_err(|e| nats_error(&self.name, "reading delayed messages", BoxedError(e)))?;
            let info = message
                .info()
                .map_err(self.err("reading a delayed message's sequence"))?;
            let seq = info.stream_sequence;
            let headers = message.headers.clone().unwrap_or_default();
            let due = header_u64(&headers, DUE_AT).unwrap_or(0);
            let now = now_ms();
            if due > now {
                let left = Duration::from_millis(due - now).min(MAX_DELAY);
                message
                    .ack_with(jetstream::AckKind::Nak(Some(left)))
                    .await
                    .map_err(self.err("putting back a delayed message"))?;
                continue;
            }
            let ready = back_on_ready(&headers);
            self.publish(
                &self.names.ready,
                ready,
                &message.payload,
                Some(format!("due-{seq}")),
            )
            .await?;
            message
                .double_ack()
                .await
                .map_err(self.err("acking a moved message"))?;
        }
        Ok(())
    }

    /// Asks the consumer `ready` for one message, waiting at most `wait`, on this
    /// transport's own inbox. Every pull request ends with a message or a status, and the
    /// inbox lives as long as the transport: a message that answers a request after its
    /// receive gave up is read by the next receive, never lost to a closed inbox (it would
    /// come back only after the reclaim timeout).
    async fn pull(&self, wait: Duration) -> Result<Option<async_nats::Message>, TransportError> {
        self.patient(|| self.pull_once(wait)).await
    }

    async fn pull_once(
        &self,
        wait: Duration,
    ) -> Result<Option<async_nats::Message>, TransportError> {
        let mut inbox = self.inbox.lock().await;
        let (subject, reply) = match &mut *inbox {
            Some(open) => (open.0.clone(), &mut open.1),
            None => {
                let subject = self.client.new_inbox();
                let sub = self
                    .client
                    .subscribe(subject.clone())
                    .await
                    .map_err(self.fail_with("subscribing to this consumer's inbox"))?;
                let open = inbox.insert((subject, sub));
                (open.0.clone(), &mut open.1)
            }
        };
        let request = if wait.is_zero() {
            r#"{"batch":1,"no_wait":true}"#.to_owned()
        } else {
            format!(
                r#"{{"batch":1,"expires":{}}}"#,
                wait.max(MIN_PULL).as_nanos()
            )
        };
        self.client
            .publish_with_reply(self.pull_subject.clone(), subject, request.into())
            .await
            .map_err(self.fail_with("asking for a message"))?;
        let deadline = tokio::time::Instant::now() + wait + PULL_MARGIN;
        loop {
            let answer = match tokio::time::timeout_at(deadline, reply.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    *inbox = None;
                    return Err(TransportError::new(
                        &self.name,
                        TransportErrorKind::Connection,
                        "the connection closed this consumer's inbox",
                    ));
                }
                // The server never answered: whatever it sends later, the next pull reads.
                Err(_) => return Ok(None),
            };
            match answer.status {
                None => return Ok(Some(answer)),
                Some(async_nats::StatusCode::IDLE_HEARTBEAT) => continue,
                // No message (no wait), the wait expired, or the server ended the request:
                // this request is answered.
                Some(_) => return Ok(None),
            }
        }
    }

    async fn receive_now(&self, wait: Duration) -> Result<Option<Delivery>, TransportError> {
        let Some(message) = self.pull(wait).await? else {
            return Ok(None);
        };
        let message = jetstream::Message {
            message,
            context: self.js.clone(),
        };
        let info = message
            .info()
            .map_err(self.err("reading a delivery's sequence"))?;
        let (seq, delivered) = (info.stream_sequence, info.delivered);
        let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
            return Ok(None);
        };
        // Ours already: the server gave it again after a lapse of this consumer's
        // keep-alives; the task that holds it settles it.
        {
            let mut held = lock(&self.held);
            if held.contains_key(&seq) {
                return Ok(None);
            }
            held.insert(
                seq,
                Hold {
                    reply,
                    settling: false,
                },
            );
        }
        let headers = message.message.headers.unwrap_or_default();
        let deliveries = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        let body = match envelope_of(&headers, &message.message.payload) {
            Some(envelope) => envelope,
            None => message.message.payload.to_vec(),
        };
        Ok(Some(Delivery {
            id: seq.to_string(),
            body,
            attempt: header_u64(&headers, ATTEMPT)
                .map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX)),
            reclaimed: deliveries > 1,
            deliveries,
            counted: headers.get(COUNTED).is_some_and(|v| v.as_str() == "1"),
            counts_as: None,
        }))
    }

    /// Adds drain statistics: one event per row on the statistics stream, under the
    /// subject of its type and version. `once` names the message a count belongs to: the
    /// stream drops a second event of that name (within its duplicate window), so a message
    /// handled again after a crash between its count and its ack is counted once.
    async fn add_stats(&self, rows: &[StatRow], once: Option<u64>) -> Result<(), TransportError> {
        for row in rows {
            let subject = format!(
                "{}.v{}.{}",
                self.names.stats_subject,
                row.version,
                kv_key(&row.type_name)
            );
            let event = format!("{} {}", row.count, row.last_seen_ms);
            self.publish(
                &subject,
                HeaderMap::new(),
                event.as_bytes(),
                once.map(|seq| format!("count-{seq}")),
            )
            .await?;
        }
        Ok(())
    }

    /// The drain statistics, sorted by type and version. Reading them folds each subject's
    /// events into one, so the next read starts from the sum.
    pub async fn stats(&self) -> Result<Vec<StatRow>, TransportError> {
        let mut subjects = self
            .stats
            .clone()
            .info_with_subjects(format!("{}.>", self.names.stats_subject))
            .await
            .map_err(self.fail_with("listing the drain statistics"))?;
        let mut found = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(self.fail_with("listing the drain statistics"))?;
            found.push(subject);
        }
        let mut rows = Vec::new();
        for subject in found {
            let Some((version, type_name)) = subject
                .strip_prefix(self.names.stats_subject.as_str())
                .and_then(|rest| rest.strip_prefix(".v"))
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(v, t)| Some((v.parse::<u32>().ok()?, kv_unkey(t)?)))
            else {
                continue;
            };
            let (mut count, mut last, mut events, mut next) = (0u64, 0u64, 0u64, 1u64);
            loop {
                let Some(event) = self
                    .next_on(&self.stats, &subject, next, "reading the drain statistics")
                    .await?
                else {
                    break;
                };
                next = event.sequence + 1;
                events += 1;
                if let Some((c, at)) = parse_stat(&event.payload) {
                    count = count.saturating_add(c);
                    last = last.max(at);
                }
            }
            if events > 1 {
                // Replaces the subject's events by their sum, unless one came meanwhile.
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Rollup", "sub");
                let fold = PublishMessage::build()
                    .payload(format!("{count} {last}").into_bytes().into())
                    .headers(headers)
                    .expected_last_subject_sequence(next - 1);
                if let Ok(ack) = self.js.send_publish(subject.clone(), fold).await {
                    let _ = ack.await;
                }
            }
            rows.push(StatRow::new(type_name, version, count, last));
        }
        rows.sort();
        Ok(rows)
    }

    /// The first message on `subject` of `stream` from sequence `from` on, if any.
    async fn next_on(
        &self,
        stream: &stream::Stream,
        subject: &str,
        from: u64,
        doing: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, TransportError> {
        match stream
            .direct_get_next_for_subject(subject, Some(from))
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail_with(doing)(e)),
        }
    }

    /// Messages in the failure stream, oldest first, at most `limit`.
    pub async fn failed(&self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        let mut out = Vec::new();
        let mut next = 1;
        while out.len() < limit {
            let Some(message) = self
                .next_on(
                    &self.failed,
                    self.names.failed.as_str(),
                    next,
                    "reading the failure stream",
                )
                .await?
            else {
                break;
            };
            next = message.sequence + 1;
            out.push(failed_message(&message));
        }
        Ok(out)
    }

    /// Sends a failed message back to the queue (attempt 0); `false` when none has that id.
    pub async fn requeue_failed(&self, id: &str) -> Result<bool, TransportError> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        let message = match self.failed.direct_get(seq).await {
            Ok(m) if m.subject.as_str() == self.names.failed => m,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.fail_with("reading the failure stream")(e)),
        };
        let mut headers = HeaderMap::new();
        if message
            .headers
            .get(COUNTED)
            .is_some_and(|v| v.as_str() == "1")
        {
            headers.insert(COUNTED, "1");
        }
        // Deduplicated by id: two `failed retry` of one message queue it once.
        self.publish(
            &self.names.ready,
            headers,
            &message.payload,
            Some(format!("requeued-{seq}")),
        )
        .await?;
        self.remove_failed(id).await
    }

    /// Deletes a failed message; `false` when none has that id.
    pub async fn remove_failed(&self, id: &str) -> Result<bool, TransportError> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        match self.failed.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => match e.kind() {
                stream::DeleteMessageErrorKind::JetStream(js) if is_gone(&js) => Ok(false),
                _ => Err(self.fail_with("deleting a failed message")(e)),
            },
        }
    }

    /// Adds decode counts to the drain statistics.
    pub async fn record_stats(&self, rows: &[StatRow]) -> Result<(), TransportError> {
        self.add_stats(rows, None).await
    }
}

/// The key-value bucket `name`, created if missing. Its stream is the one the client's
/// `create_key_value` makes, created directly: that call first reads the account's limits
/// in a form 2.9 servers do not answer.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// Tells the server, every `every`, that this consumer still works on what it holds, until
/// the transport is dropped.
async fn keep_alive(
    held: Weak<Mutex<HashMap<u64, Hold>>>,
    client: async_nats::Client,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(held) = held.upgrade() else { return };
        let replies: Vec<String> = lock(&held).values().map(|h| h.reply.clone()).collect();
        drop(held);
        for reply in replies {
            // A lost one is made up by the next tick; the server's ack wait is three ticks.
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}

/// Whether a delete failed because the message is not there (2.9 servers say so with the
/// "delete failed" code and these words).
fn is_gone(e: &jetstream::Error) -> bool {
    let code = e.error_code();
    code == jetstream::ErrorCode::NO_MESSAGE_FOUND
        || code == jetstream::ErrorCode::SEQUENCE_NOT_FOUND
        || (code == jetstream::ErrorCode::STREAM_MESSAGE_DELETE_FAILED && {
            let text = e.to_string();
            text.contains("no message found") || text.contains("EOF")
        })
}

/// A boxed error as an error type.
#[derive(Debug)]
pub(crate) struct BoxedError(pub(crate) async_nats::Error);

impl fmt::Display for BoxedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Headers of the split form: the type, the version, the body's codec.
const S_TYPE: &str = "type";
const S_VERSION: &str = "version";
const S_CONTENT_TYPE: &str = "content-type";
const JSON: &str = "application/json";
const MSGPACK: &str = "application/msgpack";

/// An envelope in split form: type, version, codec and the envelope's headers as message
/// headers, the bare payload as the body. `None` when `body` is not an envelope, or one
/// whose headers a NATS header cannot hold (a line break in a value): it goes as it is.
fn split_form(body: &[u8]) -> Option<(HeaderMap, Vec<u8>)> {
    let (split, format, envelope_headers) = upcaster::Split::from_envelope(body).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(S_TYPE, split.type_name.as_ref());
    headers.insert(S_VERSION, split.version.to_string().as_str());
    headers.insert(
        S_CONTENT_TYPE,
        match format {
            upcaster::Format::Json => JSON,
            upcaster::Format::MessagePack => MSGPACK,
        },
    );
    for (key, value) in envelope_headers.iter() {
        let plain = |t: &str| !t.is_empty() && t.bytes().all(|b| (0x20..0x7f).contains(&b));
        let ours = [S_TYPE, S_VERSION, S_CONTENT_TYPE].contains(&key)
            || key.starts_with("Upcaster-")
            || key.starts_with("Nats-");
        if ours || !plain(key) || !key.bytes().all(|b| b != b':' && b != b' ') || !plain(value) {
            return None;
        }
        headers.insert(key, value);
    }
    if !split.type_name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    Some((headers, split.body))
}

/// The envelope of a message that arrived in split form (a `type` and a `version` header),
/// for the worker, which reads envelopes; `None` for a message that is not in split form.
/// The codec is the `content-type`'s, or, without one, JSON for a body that starts like a
/// JSON object and MessagePack otherwise. Other headers become the envelope's, except this
/// transport's own (`Upcaster-…`) and the server's (`Nats-…`).
fn envelope_of(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let type_name = headers.get(S_TYPE)?.as_str();
    let version = headers.get(S_VERSION)?.as_str();
    let format = match headers.get(S_CONTENT_TYPE).map(|v| v.as_str()) {
        Some(JSON) => upcaster::Format::Json,
        Some(MSGPACK) => upcaster::Format::MessagePack,
        _ if body.trim_ascii_start().first() == Some(&b'{') => upcaster::Format::Json,
        _ => upcaster::Format::MessagePack,
    };
    // A version that is no version: the body goes to the worker as it is, and fails there
    // as malformed, kept whole in the failure store.
    let version = upcaster::envelope::parse_version(version).ok()?;
    let mut envelope_headers = upcaster::Headers::new();
    for (name, values) in headers.iter() {
        let name = name.to_string();
        let ours = [S_TYPE, S_VERSION, S_CONTENT_TYPE].contains(&name.as_str())
            || name.starts_with("Upcaster-")
            || name.starts_with("Nats-");
        if let (false, Some(value)) = (ours, values.first()) {
            envelope_headers.insert(name, value.as_str());
        }
    }
    let split = upcaster::Split {
        type_name: std::borrow::Cow::Owned(type_name.to_owned()),
        version,
        body: body.to_vec(),
    };
    Some(split.to_envelope(format, &envelope_headers))
}

/// The headers a message keeps when it is put back: its attempt, and whether it was counted.
fn carried(attempt: u32, delivery: &Delivery) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ATTEMPT, attempt.to_string().as_str());
    if delivery.counted || delivery.counts_as.is_some() {
        headers.insert(COUNTED, "1");
    }
    headers
}

/// The headers a delayed message keeps when it goes back to the ready subject: its attempt
/// and whether it was counted, not its due time.
fn back_on_ready(delayed: &HeaderMap) -> HeaderMap {
    let mut ready = HeaderMap::new();
    for name in [ATTEMPT, COUNTED] {
        if let Some(v) = delayed.get(name) {
            ready.insert(name, v.as_str());
        }
    }
    ready
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.as_str().parse().ok())
}

fn parse_stat(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (count, last) = text.split_once(' ')?;
    Some((count.parse().ok()?, last.parse().ok()?))
}

fn failed_message(message: &jetstream::message::StreamMessage) -> FailedMessage {
    let h = &message.headers;
    let text = |name: &str| {
        h.get(name).map(|v| {
            percent_decode_str(v.as_str())
                .decode_utf8_lossy()
                .into_owned()
        })
    };
    let mut record = FailureRecord::new(
        text(F_CLASS).unwrap_or_else(|| "unknown".to_owned()),
        text(F_ERROR).unwrap_or_default(),
    )
    .attempts(header_u64(h, F_ATTEMPTS).map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX)))
    .failed_at_ms(header_u64(h, F_AT).unwrap_or(0));
    if let Some(version) = header_u64(h, F_VERSION).and_then(|v| u32::try_from(v).ok()) {
        if let Some(type_name) = text(F_TYPE) {
            record = record.message(type_name, version);
        }
    }
    FailedMessage {
        id: message.sequence.to_string(),
        body: message.payload.to_vec(),
        record,
    }
}

fn encoded(text: &str) -> String {
    utf8_percent_encode(text, HEADER_UNSAFE).to_string()
}

impl AsyncQueue for AsyncNatsTransport {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &[u8]) -> Result<String, TransportError> {
        let seq = match self.split.then(|| split_form(body)).flatten() {
            Some((headers, payload)) => {
                self.publish(&self.names.ready, headers, &payload, None)
                    .await?
            }
            None => {
                self.publish(&self.names.ready, HeaderMap::new(), body, None)
                    .await?
            }
        };
        Ok(seq.to_string())
    }

    async fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now() + timeout;
        let mut first = true;
        loop {
            self.move_due(false).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && !first {
                return Ok(None);
            }
            first = false;
            if let Some(d) = self.receive_now(left.min(DELAYED_EVERY)).await? {
                return Ok(Some(d));
            }
            if deadline <= Instant::now() {
                return Ok(None);
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        match self.take(delivery) {
            Some((seq, reply)) => {
                let result = self.count_and_ack(delivery, reply).await;
                self.settled(seq, result)
            }
            None => Ok(()),
        }
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, attempt, false).await
    }

    async fn requeue_for_newer(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, delivery.attempt, true).await
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let Some((seq, reply)) = self.take(delivery) else {
            return Ok(None);
        };
        let mut headers = carried(delivery.attempt, delivery);
        if let (Some(t), Some(v)) = (&record.type_name, record.version) {
            headers.insert(F_TYPE, encoded(t).as_str());
            headers.insert(F_VERSION, v.to_string().as_str());
        }
        headers.insert(F_CLASS, encoded(&record.class).as_str());
        headers.insert(F_ERROR, encoded(&record.error).as_str());
        headers.insert(F_ATTEMPTS, record.attempts.to_string().as_str());
        headers.insert(F_AT, record.failed_at_ms.to_string().as_str());
        let copy = self
            .publish(
                &self.names.failed,
                headers,
                &delivery.body,
                Some(format!("failed-{seq}")),
            )
            .await;
        let result = match copy {
            Ok(id) => self
                .count_and_ack(delivery, reply)
                .await
                .map(|()| Some(id.to_string())),
            Err(e) => Err(e),
        };
        self.settled(seq, result)
    }

    async fn pending(&self) -> Result<u64, TransportError> {
        // From the consumers, not the stream's count: after a server crash a work-queue
        // stream can keep messages its consumer already acked, which nobody will receive.
        self.patient(|| async {
            let mut pending = 0;
            for durable in ["ready", "delayed"] {
                let info = self
                    .stream
                    .consumer_info(durable)
                    .await
                    .map_err(self.fail_with("reading the queue's size"))?;
                pending += info.num_pending + info.num_ack_pending as u64;
            }
            Ok(pending)
        })
        .await
    }

    async fn release_waiting(&self, readable: Readable) -> Result<u64, TransportError> {
        self.release_waiting_with(move |body: &[u8]| readable(body))
            .await
    }
}

impl AsyncNatsTransport {
    /// Releases the waiting messages `readable` reads: republished on the ready subject and
    /// deleted from the delayed one.
    pub(crate) async fn release_waiting_with(
        &self,
        mut readable: impl FnMut(&[u8]) -> bool,
    ) -> Result<u64, TransportError> {
        let mut released = 0;
        let mut next = 1;
        loop {
            let Some(message) = self
                .next_on(
                    &self.stream,
                    self.names.delayed.as_str(),
                    next,
                    "reading delayed messages",
                )
                .await?
            else {
                break;
            };
            next = message.sequence + 1;
            let waiting = message
                .headers
                .get(WAITING)
                .is_some_and(|v| v.as_str() == "newer");
            if !waiting || !readable(&message.payload) {
                continue;
            }
            let ready = back_on_ready(&message.headers);
            // The same id as the move when due: whichever comes second is dropped.
            self.publish(
                &self.names.ready,
                ready,
                &message.payload,
                Some(format!("due-{}", message.sequence)),
            )
            .await?;
            match self.stream.delete_message(message.sequence).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => match e.kind() {
                    // Moved meanwhile, when it fell due.
                    stream::DeleteMessageErrorKind::JetStream(js) if is_gone(&js) => {}
                    _ => return Err(self.fail_with("releasing a waiting message")(e)),
                },
            }
        }
        Ok(released)
    }
}
