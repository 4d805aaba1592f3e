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
mod version;

pub use chain::StepError;
pub use codec::Format;
pub use dispatch::Dispatcher;
pub use envelope::{Decoded, Header, Split};
pub use error::{
    Disposition, EncodeError, EncodeErrorKind, Error, ErrorKind, Malformation, RegistryError,
    RegistryProblem,
};
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
    pub use crate::envelope::Prefixes;
    pub use crate::message::{read_own, typed_versions, Meta, SerdeFacts, TypedVersion};

    /// The fast path's reading of `bytes` (the writer's own layout only), its payload read
    /// as a JSON value: `None` where the fast path declines and the full parser decides.
    /// For the wire vectors, which require both paths to agree.
    pub fn fast_path(bytes: &[u8]) -> Option<(crate::Header<'_>, serde_json::Value)> {
        let env = crate::envelope::fast(crate::envelope::Raw::Bytes(bytes), None)?;
        let payload = crate::chain::Input::payload(env.payload, false)
            .read::<serde_json::Value>(env.header.version)
            .ok()?;
        Some((env.header, payload))
    }

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
