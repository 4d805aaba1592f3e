//! The errors of the codec: a stored job this code cannot read, and a job it cannot write.

use upcaster::{Disposition, EncodeError, Message};

/// A stored job that this code cannot hand to its handler as the current `T`: newer than this
/// code, of an unknown type, not an envelope, or refused by the chain.
///
/// It keeps upcaster's [`upcaster::Error`] whole: what went wrong, the envelope header as far
/// as it was read, and the bytes exactly as the backend stored them ([`DecodeError::raw`]), so
/// no job is lost.
///
/// Its message names the type and versions on its own, since that text is all that apalis
/// records as the task's result; for the same reason the upcaster error is not repeated as
/// [`std::error::Error::source`], but is at hand through [`DecodeError::error`].
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the apalis job as `{expected}` v{current}: {error}")]
pub struct DecodeError {
    expected: &'static str,
    current: u32,
    error: upcaster::Error,
}

impl DecodeError {
    /// The failure of decoding a job as `T`.
    pub fn new<T: Message>(error: upcaster::Error) -> Self {
        DecodeError {
            expected: T::NAME,
            current: T::VERSION,
            error,
        }
    }

    /// The message type the job was decoded as (the handler's `T`).
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The version of `T` this code knows: the newest it reads.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The type name written in the job's envelope, if it could be read.
    pub fn found_type(&self) -> Option<&str> {
        self.error.header().type_name.as_deref()
    }

    /// The version written in the job's envelope, if it could be read: for a job of a newer
    /// version, that version.
    pub fn found_version(&self) -> Option<u32> {
        self.error.header().version
    }

    /// True when a newer producer wrote the job ([`upcaster::ErrorKind::FutureVersion`]): a
    /// worker running newer code will read it.
    pub fn is_future_version(&self) -> bool {
        self.error.is_future_version()
    }

    /// What a consumer does with the job, as upcaster decides it; [`crate::Upcast`] maps it to
    /// apalis' task outcomes.
    pub fn disposition(&self) -> Disposition {
        self.error.disposition()
    }

    /// The bytes exactly as the backend stored them.
    pub fn raw(&self) -> &[u8] {
        self.error.raw()
    }

    /// Gives the stored bytes back.
    pub fn into_raw(self) -> Vec<u8> {
        self.error.into_raw()
    }

    /// upcaster's error: the kind, the header as far as it was read, the bytes.
    pub fn error(&self) -> &upcaster::Error {
        &self.error
    }

    /// Gives upcaster's error back.
    pub fn into_error(self) -> upcaster::Error {
        self.error
    }
}

/// The error type of [`crate::UpcasterCodec`] as an apalis codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The message could not be written as an envelope: when pushing a job.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stored job could not be read as the current `T` (only the codec of a bare `T`
    /// reports this; that of [`crate::Job`] keeps the failure in the job).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
