//! The async queue trait, and a queue of any kind chosen by DSN at run time.

use std::future::Future;
use std::time::Duration;

use crate::transport::{Delivery, FailureRecord, TransportError};

/// Whether this code reads a message's bytes: what [`AsyncQueue::release_waiting`] asks.
pub type Readable = std::sync::Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A queue of envelopes for the async runtime: [`Queue`](crate::Queue)'s jobs as futures.
///
/// Every method takes `&self`: a worker keeps its queue in an `Arc`, and each message in
/// flight settles its own delivery while the worker receives the next. Only the worker
/// calls [`AsyncQueue::receive`], one call at a time, and it never drops a receive before
/// it finishes, so an implementation need not make receiving cancel-safe.
///
/// The semantics are [`Queue`](crate::Queue)'s, method for method; the transport contract
/// suite runs both.
pub trait AsyncQueue: Send + Sync + 'static {
    /// The transport's DSN without secrets, for logs.
    fn name(&self) -> &str;

    /// Appends a message; returns its id.
    fn send(&self, body: &[u8]) -> impl Future<Output = Result<String, TransportError>> + Send;

    /// The next message, waiting at most `timeout` (and no less, when none comes).
    fn receive(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Delivery>, TransportError>> + Send;

    /// Settles a delivery: the message is done and leaves the queue.
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Puts the message back, to be delivered after `delay` as attempt `attempt`.
    fn retry_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Puts a message of a version this code cannot read back after `delay`, spending no
    /// attempt, marked as waiting for newer code.
    fn requeue_for_newer(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Moves the message, with its original bytes and `record`, to the failure store; its id
    /// there, or `None` when the delivery was no longer this consumer's.
    fn fail(
        &self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> impl Future<Output = Result<Option<String>, TransportError>> + Send;

    /// Messages waiting or being handled (delayed retries included), not failed ones.
    fn pending(&self) -> impl Future<Output = Result<u64, TransportError>> + Send;

    /// Makes messages waiting for newer code available at once when `readable` says this
    /// code reads them; returns how many.
    fn release_waiting(
        &self,
        readable: Readable,
    ) -> impl Future<Output = Result<u64, TransportError>> + Send;

    /// Tidies up once a worker is done with the queue (best effort; the worker calls it after
    /// its last settle). Redis deletes this consumer from its group when it holds nothing,
    /// so restarted workers do not pile up; the default does nothing.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A queue of any kind this crate has, picked by DSN at run time ([`crate::open_async`]).
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // One or two per worker: their size does not matter.
pub enum AnyQueue {
    /// A blocking queue run on tokio's blocking threads (the SQLite queue).
    Blocking(super::Blocking<Box<dyn crate::Transport>>),
    /// Redis Streams on async connections.
    #[cfg(feature = "redis")]
    Redis(super::AsyncRedisTransport),
    /// NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(super::AsyncNatsTransport),
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            AnyQueue::Blocking($q) => $e,
            #[cfg(feature = "redis")]
            AnyQueue::Redis($q) => $e,
            #[cfg(feature = "nats")]
            AnyQueue::Nats($q) => $e,
        }
    };
}

impl AsyncQueue for AnyQueue {
    fn name(&self) -> &str {
        each!(self, q => q.name())
    }

    async fn send(&self, body: &[u8]) -> Result<String, TransportError> {
        each!(self, q => q.send(body).await)
    }

    async fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        each!(self, q => q.receive(timeout).await)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        each!(self, q => q.ack(delivery).await)
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        each!(self, q => q.retry_later(delivery, delay, attempt).await)
    }

    async fn requeue_for_newer(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        each!(self, q => q.requeue_for_newer(delivery, delay).await)
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        each!(self, q => q.fail(delivery, record).await)
    }

    async fn pending(&self) -> Result<u64, TransportError> {
        each!(self, q => q.pending().await)
    }

    async fn release_waiting(&self, readable: Readable) -> Result<u64, TransportError> {
        each!(self, q => q.release_waiting(readable).await)
    }
}
