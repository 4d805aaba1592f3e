//! [apalis] 1.0 adapter for [upcaster]: every apalis backend stores jobs as upcaster
//! envelopes, and every stored job goes through the registry's upcaster chain on its way to
//! the handler, so a job written by yesterday's code reaches today's handler as today's struct.
//!
//! The pieces:
//!
//! - [`UpcasterCodec`]: the apalis [`Codec`](apalis_core::backend::codec::Codec), set on any
//!   backend with `.with_codec(…)` (apalis' `BackendExt`). It writes
//!   `{"type":…,"version":…,"payload":…}` (JSON by default, MessagePack with
//!   [`UpcasterCodec::format`]) and reads any version the [`Registry`] has a chain for.
//! - [`Job<T>`]: the job type to give the backend. It holds the decoded message, or the
//!   [`DecodeError`] of a stored job this code cannot read, so that such a job becomes an
//!   outcome of that task instead of an error of the whole worker.
//! - [`upcast`] / [`Upcast`]: wraps a handler of `T` (with any apalis extractors) into the
//!   service of `Job<T>` that the worker runs, and settles the jobs that did not decode as
//!   apalis expects (see below).
//! - [`Arrived`]: an extractor telling a handler which version its message was written in.
//!
//! ```no_run
//! use apalis_core::backend::ext::BackendExt;
//! use apalis_core::backend::TaskSink;
//! use apalis_core::error::BoxDynError;
//! use apalis_core::worker::builder::WorkerBuilder;
//! use apalis_redis::{Config, RedisStorage};
//! use serde::{Deserialize, Serialize};
//! use upcaster::{Message, Registry, Upcaster};
//! use upcaster_apalis::{upcast, Arrived, Job, UpcasterCodec};
//!
//! #[derive(Debug, Serialize, Deserialize, Message)]
//! #[serde(rename_all = "camelCase")]
//! #[message(name = "AddPonkaToImage", version = 2)]
//! struct AddPonkaToImage {
//!     image_post: u64,
//! }
//!
//! async fn add_ponka(job: AddPonkaToImage, arrived: Arrived) -> Result<(), BoxDynError> {
//!     println!("image post {} (written as v{})", job.image_post, arrived.version);
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), BoxDynError> {
//! let registry = Registry::builder()
//!     .register::<AddPonkaToImage>()
//!     .upcaster::<AddPonkaToImage>(Upcaster::new(1, 2, |p| {
//!         let o = p.as_object_mut().ok_or("not an object")?;
//!         let id = o.remove("imagePostId").ok_or("`imagePostId` is missing")?;
//!         o.insert("imagePost".into(), id);
//!         Ok(())
//!     }))
//!     .build()?;
//! let conn = apalis_redis::connect("redis://127.0.0.1:6379").await?;
//! // Name the queue after the message type: apalis' default is the Rust type's path, which
//! // differs between the code that wrote a version and the code that reads it.
//! let mut storage = RedisStorage::<Job<AddPonkaToImage>>::new(conn)
//!     .with_config(Config::default().queue(AddPonkaToImage::NAME))
//!     .with_codec(UpcasterCodec::new(registry));
//!
//! storage.push(Job::new(AddPonkaToImage { image_post: 7 })).await?;
//!
//! WorkerBuilder::new("ponka")
//!     .backend(storage)
//!     .build(upcast(add_ponka))
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Jobs that do not decode
//!
//! apalis decodes a job in the backend's stream, before any handler or middleware sees it: a
//! codec error there is a *backend* error, which ends [`Worker::run`] with
//! `WorkerError::BackendError` and leaves the batch it fetched claimed by the stopped worker
//! (Redis hands it out again only once that worker's heartbeat has expired, to the next worker,
//! which stops in turn). That is what the plain `Codec<T>` of [`UpcasterCodec`] does, as every
//! apalis codec does. So the codec of [`Job<T>`] never fails to decode: it keeps the
//! [`DecodeError`] (with the bytes as stored) in the job, and [`Upcast`] turns it into the
//! task's outcome, chosen from upcaster's [`Disposition`] so that apalis and upcaster's own
//! worker treat every failure alike:
//!
//! | the stored job | upcaster says | [`Upcast`] returns | apalis status | Redis backend | PostgreSQL backend |
//! | --- | --- | --- | --- | --- | --- |
//! | newer than this code ([`upcaster::ErrorKind::FutureVersion`]) | [`Disposition::Requeue`] | [`RetryAfterError`] after holding the job for [`Upcast::requeue_after`] | `Pending` | rescheduled (after its own backoff of one more second per attempt); into the dead set, bytes kept, only after Redis' fixed 25 attempts: about 18 minutes with the default hold | back to `Pending`, fetched again, never dead |
//! | of a type no registered type names ([`upcaster::ErrorKind::UnknownType`]) | [`Disposition::Retry`] | the [`DecodeError`] | `Failed` | retried with backoff, then the dead set | retried up to the job's `max_attempts` |
//! | anything else: not an envelope, no upcaster, an upcaster or the payload refusing | [`Disposition::DeadLetter`] | [`AbortError`] | `Killed` | the dead set, at once | `Killed`, never fetched again |
//!
//! In every case the job's stored bytes stay where the backend keeps them (Redis' job data
//! hash, the `job` column), the task's recorded result is the [`DecodeError`]'s message (type,
//! versions, what is wrong), and the worker goes on with the next job. The error values
//! themselves, which a worker's `on_event` listener sees in `Event::Error`, keep the bytes too
//! ([`DecodeError::raw`]).
//!
//! Why the wait for a newer version: apalis' backends do not yet honour the duration of a
//! [`RetryAfterError`] (Redis reschedules by attempt count, PostgreSQL at once), and a worker
//! that has not been redeployed yet would otherwise fetch the same job again the moment it
//! put it back. Holding it for [`Upcast::requeue_after`] (30 s by default, as upcaster's own
//! worker waits; cut short when the worker shuts down) spaces the attempts out, so a job of a
//! newer version waits for a worker that knows it instead of spinning or running out of
//! attempts during a rolling deploy.
//!
//! [apalis]: https://docs.rs/apalis
//! [`Worker::run`]: apalis_core::worker::Worker::run
//! [`RetryAfterError`]: apalis_core::error::RetryAfterError
//! [`AbortError`]: apalis_core::error::AbortError
//! [`Registry`]: upcaster::Registry
//! [`Disposition`]: upcaster::Disposition
//! [`Disposition::Requeue`]: upcaster::Disposition::Requeue
//! [`Disposition::Retry`]: upcaster::Disposition::Retry
//! [`Disposition::DeadLetter`]: upcaster::Disposition::DeadLetter
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod codec;
mod error;
mod job;
mod service;

pub use codec::UpcasterCodec;
pub use error::{CodecError, DecodeError};
pub use job::{Arrived, Job};
pub use service::{upcast, Upcast, DEFAULT_REQUEUE_AFTER};
