//! NATS JetStream for the blocking worker and the restart signal: the async transport
//! ([`AsyncNatsTransport`]) on a runtime of its own, and a key-value bucket.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::aio::nats::{bucket, kv_key, nats_error, BoxedError, Server};
use crate::aio::{AsyncNatsTransport, AsyncQueue};
use crate::restart::RestartSignal;
use crate::transport::{
    Access, Delivery, DrainStats, Dsn, FailedMessage, FailureRecord, FailureStore, Queue, StatRow,
    TransportError, TransportErrorKind,
};

/// A runtime of its own for a blocking handle: one worker thread runs the connection and
/// the keep-alives while the caller blocks.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new(name: &str) -> Result<Runtime, TransportError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("upcaster-nats")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
            .map_err(|e| {
                TransportError::new(
                    name,
                    TransportErrorKind::Connection,
                    "starting the NATS client's runtime",
                )
                .caused_by(e)
            })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Some(rt) => rt.block_on(future),
            None => unreachable!("the runtime lives until drop"),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic; this never blocks.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// NATS JetStream for the blocking worker: [`AsyncNatsTransport`] on a runtime of its own
/// (one thread, which also keeps the consumer's holdings alive while a handler runs).
///
/// ```no_run
/// use std::time::Duration;
/// use upcaster_worker::{NatsTransport, Queue};
///
/// let mut queue = NatsTransport::open_dsn("nats://127.0.0.1:4222?reclaim_after=60", "images")?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#)?;
/// if let Some(delivery) = queue.receive(Duration::from_secs(1))? {
///     queue.ack(&delivery)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NatsTransport {
    // Dropped before the runtime it runs on.
    inner: Option<AsyncNatsTransport>,
    runtime: Runtime,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NatsTransport").field(&self.inner).finish()
    }
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _guard = self.runtime.0.as_ref().map(|rt| rt.enter());
            drop(inner);
        }
    }
}

impl NatsTransport {
    /// Opens a DSN as [`AsyncNatsTransport::open_dsn`] does.
    pub fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        Self::open_dsn_with(dsn, queue, Access::Create)
    }

    /// Opens a DSN as [`AsyncNatsTransport::open_dsn_with`] does.
    pub fn open_dsn_with(dsn: &str, queue: &str, access: Access) -> Result<Self, TransportError> {
        let runtime = Runtime::new(&crate::transport::redact(dsn))?;
        let inner = runtime.block_on(AsyncNatsTransport::open_dsn_with(dsn, queue, access))?;
        Ok(NatsTransport {
            inner: Some(inner),
            runtime,
        })
    }

    fn run<'a, F, T>(&'a self, job: impl FnOnce(&'a AsyncNatsTransport) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        match &self.inner {
            Some(inner) => self.runtime.block_on(job(inner)),
            None => unreachable!("the transport lives until drop"),
        }
    }
}

impl Queue for NatsTransport {
    fn name(&self) -> &str {
        match &self.inner {
            Some(inner) => &inner.name,
            None => "nats",
        }
    }
    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        self.run(|q| q.send(body))
    }
    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        self.run(|q| q.receive(timeout))
    }
    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        self.run(|q| q.ack(delivery))
    }
    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        self.run(|q| q.retry_later(delivery, delay, attempt))
    }
    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        self.run(|q| q.fail(delivery, record))
    }
    fn pending(&mut self) -> Result<u64, TransportError> {
        self.run(|q| q.pending())
    }
    fn requeue_for_newer(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.run(|q| q.requeue_for_newer(delivery, delay))
    }
    fn release_waiting(
        &mut self,
        readable: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, TransportError> {
        self.run(|q| q.release_waiting_with(readable))
    }
}

impl FailureStore for NatsTransport {
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        self.run(|q| q.failed(limit))
    }
    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        self.run(|q| q.requeue_failed(id))
    }
    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        self.run(|q| q.remove_failed(id))
    }
}

impl DrainStats for NatsTransport {
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError> {
        self.run(|q| q.record_stats(rows))
    }
    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError> {
        self.run(|q| q.stats())
    }
}

/// The restart signal in a JetStream key-value bucket (`upcaster_restart`, one key per
/// `?key=`), for services whose only infrastructure is NATS. Times are the server's: a
/// request's is the time the server stored it.
///
/// ```no_run
/// use upcaster_worker::{NatsSignal, RestartSignal};
///
/// let mut signal = NatsSignal::open_dsn("nats://127.0.0.1:4222?key=shop")?;
/// let at = signal.request()?;
/// assert_eq!(signal.requested_at()?, Some(at));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NatsSignal {
    name: String,
    key: String,
    bucket: Option<kv::Store>,
    runtime: Runtime,
}

impl fmt::Debug for NatsSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSignal")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsSignal {
    fn drop(&mut self) {
        if let Some(bucket) = self.bucket.take() {
            let _guard = self.runtime.0.as_ref().map(|rt| rt.enter());
            drop(bucket);
        }
    }
}

/// The bucket of restart signals.
const RESTART_BUCKET: &str = "upcaster_restart";

impl NatsSignal {
    /// Opens `nats://[user:password@]host[:port]?key=<key>`, creating the bucket if needed.
    pub fn open_dsn(dsn: &str) -> Result<Self, TransportError> {
        let parsed = Dsn::parse(dsn)?;
        parsed.only(&["key"])?;
        let shown = format!("restart signal {}", parsed.shown());
        let key = parsed
            .param("key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                TransportError::configuration(&shown, "give the signal's name: ?key=<key>")
            })?
            .to_owned();
        let runtime = Runtime::new(&shown)?;
        let server = Server::from_dsn(&parsed)?;
        let bucket = runtime.block_on(async {
            let (_, client) = server.connect().await?;
            let js = jetstream::new(client);
            bucket(&js, RESTART_BUCKET)
                .await
                .map_err(|e| nats_error(&shown, "creating the restart bucket", BoxedError(e)))
        })?;
        Ok(NatsSignal {
            name: shown,
            key: kv_key(&key),
            bucket: Some(bucket),
            runtime,
        })
    }

    fn bucket(&self) -> &kv::Store {
        match &self.bucket {
            Some(b) => b,
            None => unreachable!("the bucket lives until drop"),
        }
    }

    /// Writes `value` under `key` and returns the server's time of the write.
    fn put(&self, key: &str, value: String) -> Result<u64, TransportError> {
        self.runtime.block_on(async {
            let bucket = self.bucket();
            bucket
                .put(key, value.into_bytes().into())
                .await
                .map_err(|e| nats_error(&self.name, "writing the restart signal", e))?;
            let entry = bucket
                .entry(key)
                .await
                .map_err(|e| nats_error(&self.name, "reading the restart signal", e))?;
            entry.as_ref().map(stored_ms).ok_or_else(|| {
                TransportError::new(
                    &self.name,
                    TransportErrorKind::Broker,
                    "a key written a moment ago is gone",
                )
            })
        })
    }
}

/// When the server stored an entry, in milliseconds since the Unix epoch.
fn stored_ms(entry: &kv::Entry) -> u64 {
    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl RestartSignal for NatsSignal {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn now(&mut self) -> Result<u64, TransportError> {
        let clock = format!("{}.clock", self.key);
        self.put(&clock, String::new())
    }

    fn store(&mut self, at_ms: u64) -> Result<(), TransportError> {
        let key = self.key.clone();
        self.put(&key, at_ms.to_string()).map(|_| ())
    }

    fn requested_at(&mut self) -> Result<Option<u64>, TransportError> {
        let value = self.runtime.block_on(async {
            self.bucket()
                .get(self.key.as_str())
                .await
                .map_err(|e| nats_error(&self.name, "reading the restart signal", e))
        })?;
        match value {
            None => Ok(None),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    TransportError::new(
                        &self.name,
                        TransportErrorKind::Broker,
                        "the restart signal holds no time in milliseconds",
                    )
                }),
        }
    }

    fn check_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}
