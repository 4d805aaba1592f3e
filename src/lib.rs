// The README is the crate documentation, and its worker examples need the `worker` feature.
#![cfg_attr(feature = "worker", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "worker"),
    doc = "Schema-versioned messages: see the README."
)]
#![deny(missing_docs)]

#[cfg(feature = "check")]
pub mod check;
pub mod codec;
pub mod dispatch;
pub mod envelope;
pub mod error;
mod message;
pub mod migration;
pub mod registry;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upcast;
#[cfg(feature = "worker")]
pub mod worker;

pub use codec::Format;
pub use dispatch::Dispatcher;
pub use envelope::{Decoded, Header, Headers, Split};
pub use error::{EncodeError, Error, ErrorKind, Malformation, RegistryError, RegistryProblem};
pub use message::Message;
pub use migration::{Migration, Migrations};
pub use registry::{Registry, RegistryBuilder};
pub use serde_json::Value;
pub use upcast::{StepError, Upcaster};
pub use upcaster_derive::{embed_migrations, Message};

/// Items the derive macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::Input;
    pub use crate::message::TypedVersion;
    pub use crate::upcast::{upcast_via, ChainFailure};
    #[cfg(feature = "testing")]
    pub use insta;
}
