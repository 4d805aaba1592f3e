//! The job type a backend holds: a message, or the failure of reading one.

use std::fmt;

use apalis_core::task::data::MissingDataError;
use apalis_core::task::from_request::FromRequest;
use apalis_core::task::Task;
use upcaster::Message;

use crate::DecodeError;

/// An apalis job carrying a versioned message `T`: the type to give a backend whose codec is
/// [`crate::UpcasterCodec`], as in `RedisStorage<Job<AddPonkaToImage>>`.
///
/// Pushed, it holds the message ([`Job::new`], or `message.into()`). Fetched, it holds the
/// message upcast to the current version, or the [`DecodeError`] of a stored job this code
/// cannot read: decoding a `Job` never fails, so that such a job reaches [`crate::Upcast`],
/// which settles it as one task, instead of stopping the worker. A `Job` that failed to decode
/// encodes back to the bytes it was read from.
pub struct Job<T> {
    state: State<T>,
}

enum State<T> {
    Message { message: T, arrived: u32 },
    Failed(DecodeError),
}

impl<T: Message> Job<T> {
    /// A job of `message`, written as the registry writes `T`.
    pub fn new(message: T) -> Self {
        Job {
            state: State::Message {
                message,
                arrived: T::VERSION,
            },
        }
    }

    /// A decoded job that arrived written as `arrived`.
    pub(crate) fn arrived(message: T, arrived: u32) -> Self {
        Job {
            state: State::Message { message, arrived },
        }
    }

    /// A stored job that did not decode.
    pub(crate) fn failed(error: DecodeError) -> Self {
        Job {
            state: State::Failed(error),
        }
    }

    /// The message, unless the job did not decode.
    pub fn message(&self) -> Option<&T> {
        match &self.state {
            State::Message { message, .. } => Some(message),
            State::Failed(_) => None,
        }
    }

    /// The version the message was written in (`T::VERSION` for a job made here), unless the
    /// job did not decode.
    pub fn arrived_version(&self) -> Option<u32> {
        match &self.state {
            State::Message { arrived, .. } => Some(*arrived),
            State::Failed(_) => None,
        }
    }

    /// Why the stored job did not decode, if it did not.
    pub fn error(&self) -> Option<&DecodeError> {
        match &self.state {
            State::Message { .. } => None,
            State::Failed(e) => Some(e),
        }
    }

    /// The message, or why the stored job did not decode.
    pub fn into_result(self) -> Result<T, DecodeError> {
        match self.state {
            State::Message { message, .. } => Ok(message),
            State::Failed(e) => Err(e),
        }
    }

    /// The message with the version it arrived in, or why the job did not decode.
    pub(crate) fn into_parts(self) -> Result<(T, Arrived), DecodeError> {
        match self.state {
            State::Message { message, arrived } => Ok((
                message,
                Arrived {
                    version: arrived,
                    current: T::VERSION,
                },
            )),
            State::Failed(e) => Err(e),
        }
    }

    /// What the codec writes: the message, or the bytes a failed job was read from.
    pub(crate) fn as_state(&self) -> Result<&T, &DecodeError> {
        match &self.state {
            State::Message { message, .. } => Ok(message),
            State::Failed(e) => Err(e),
        }
    }
}

impl<T: Message> From<T> for Job<T> {
    fn from(message: T) -> Self {
        Job::new(message)
    }
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Message { message, arrived } => f
                .debug_struct("Job")
                .field("message", message)
                .field("arrived", arrived)
                .finish(),
            State::Failed(e) => f.debug_struct("Job").field("error", e).finish(),
        }
    }
}

/// The version a handler's message was written in, for a handler run through
/// [`crate::Upcast`]: take it as an argument, like any apalis extractor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Arrived {
    /// The version in the stored envelope.
    pub version: u32,
    /// The version the handler receives (`T::VERSION`).
    pub current: u32,
}

impl Arrived {
    /// True when the message was written in an older version and went through the chain.
    pub fn was_upcast(&self) -> bool {
        self.version != self.current
    }
}

impl<Args: Sync> FromRequest<Task<Args>> for Arrived {
    type Error = MissingDataError;

    async fn from_request(task: &Task<Args>) -> Result<Self, Self::Error> {
        task.data().get_checked::<Arrived>().copied()
    }
}
