//! The tokio runtime: async handlers, several messages in flight, the same decisions, limits
//! and stop conditions as the blocking [`Worker`](crate::Worker).
//!
//! - [`AsyncQueue`]: a queue whose every call is a future; settling takes `&self`, so the
//!   tasks of messages in flight settle their own deliveries side by side.
//! - [`Blocking`]: any blocking [`Queue`](crate::Queue) (the SQLite queue, a user's own) as
//!   an [`AsyncQueue`], its calls run on tokio's blocking threads, never on the executor.
//! - `AsyncRedisTransport` (feature `redis`): Redis Streams on `redis`'s async connections.
//! - [`AsyncHandlers`] and [`AsyncWorker`]: the handlers (`|m: Decoded<T>| async { … }`) and
//!   the worker, both `Send + Sync + 'static`, so they can be spawned or kept in an `Arc`.

mod blocking;
#[cfg(feature = "nats")]
pub(crate) mod nats;
mod queue;
#[cfg(feature = "redis")]
mod redis;
mod worker;

pub use blocking::Blocking;
#[cfg(feature = "nats")]
pub use nats::AsyncNatsTransport;
pub use queue::{AnyQueue, AsyncQueue, Readable};
#[cfg(feature = "redis")]
pub use redis::AsyncRedisTransport;
pub use worker::{AsyncHandlers, AsyncWorker};
