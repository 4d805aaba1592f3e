#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod chain;
pub mod codec;
pub mod dispatch;
pub mod envelope;
pub mod error;
mod headers;
mod message;
pub mod migration;
pub mod registry;
#[cfg(feature = "schema")]
pub mod schema;
pub mod upcast;

pub use chain::StepError;
pub use codec::Format;
pub use dispatch::Dispatcher;
pub use envelope::{Decoded, Header, Split};
pub use error::{EncodeError, Error, ErrorKind, Malformation, RegistryError, RegistryProblem};
pub use headers::Headers;
pub use message::Message;
pub use migration::{Migration, Migrations};
pub use registry::{peek, read_untyped, Registry, RegistryBuilder};
pub use serde_json::Value;
pub use upcast::Upcaster;
pub use upcaster_derive::{embed_migrations, Message};

/// Items the derive macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::chain::{upcast_via, ChainFailure, Input};
    pub use crate::message::TypedVersion;

    /// Whether `bytes` are an envelope in the writer's own layout (for upcaster-testing).
    pub fn writer_layout(bytes: &[u8]) -> bool {
        crate::envelope::fast(crate::envelope::Raw::Bytes(bytes), None).is_some()
    }

    /// A decode error for `bytes` whose current version does not re-encode to itself (for
    /// upcaster-testing).
    pub fn round_trip_failed(
        header: &crate::Header<'_>,
        type_name: &'static str,
        reason: String,
        bytes: &[u8],
    ) -> crate::Error {
        crate::Error::new(
            crate::ErrorKind::UpcastFailed {
                type_name,
                from: header.version,
                to: header.version,
                reason: reason.into(),
            },
            header.to_partial(),
            bytes,
        )
    }
}
