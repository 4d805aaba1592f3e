//! Errors, one type per layer: reading a message ([`Error`]), writing one ([`EncodeError`])
//! and building a registry ([`RegistryError`]).

use std::fmt;

use crate::chain::StepError;
use crate::codec::Format;
use crate::headers::Headers;

/// A message that could not be decoded.
///
/// It keeps the original bytes ([`Error::raw`], [`Error::into_raw`]), so no message is lost,
/// and the envelope header read before the failure ([`Error::header`]), so the caller can
/// route it (requeue, dead-letter, count) without parsing again.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    header: PartialHeader,
    raw: Vec<u8>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, header: PartialHeader, raw: &[u8]) -> Self {
        Error(Box::new(Inner {
            kind,
            header,
            raw: raw.to_vec(),
        }))
    }

    /// What a consumer does with this message: requeue it, retry it, or dead-letter it.
    ///
    /// ```
    /// use upcaster::{Disposition, Registry};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, upcaster::Message)]
    /// # #[message(version = 1)]
    /// # struct Ping {}
    /// let registry = Registry::builder().register::<Ping>().build()?;
    /// let newer = br#"{"type":"Ping","version":2,"payload":{}}"#;
    /// let e = registry.decode::<Ping>(newer).unwrap_err();
    /// assert_eq!(e.disposition(), Disposition::Requeue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn disposition(&self) -> Disposition {
        self.kind().disposition()
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The envelope header as far as it was read before the failure.
    pub fn header(&self) -> &PartialHeader {
        &self.0.header
    }

    /// The bytes exactly as received (for the split form: the body).
    pub fn raw(&self) -> &[u8] {
        &self.0.raw
    }

    /// Gives the original bytes back, for a failure transport or a retry.
    pub fn into_raw(self) -> Vec<u8> {
        self.0.raw
    }

    /// True for [`ErrorKind::FutureVersion`]: a newer producer is already deployed, so the
    /// message should be requeued rather than failed.
    pub fn is_future_version(&self) -> bool {
        matches!(self.0.kind, ErrorKind::FutureVersion { .. })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("message", &self.to_string())
            .field("kind", &self.0.kind)
            .field("header", &self.0.header)
            .field("raw_len", &self.0.raw.len())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.kind, f)?;
        // A payload that fails a later version than it arrived in came out of the chain.
        match (&self.0.kind, self.0.header.version) {
            (ErrorKind::PayloadInvalid { version, .. }, Some(arrived)) if arrived < *version => {
                write!(
                    f,
                    " (it arrived as v{arrived}; the steps from v{arrived} produced this)"
                )
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

/// The envelope header as far as it was read when decoding failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartialHeader {
    /// The codec the envelope was recognised as, if any.
    pub format: Option<Format>,
    /// The `type` field, if it was read.
    pub type_name: Option<String>,
    /// The `version` field, if it was read and valid.
    pub version: Option<u32>,
    /// The `headers` map, empty if absent or not yet read.
    pub headers: Headers,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bytes are not a valid envelope.
    #[error("malformed {}envelope at byte {offset}: {problem}", format_of(*format, problem))]
    Malformed {
        /// The codec the bytes were read as.
        format: Format,
        /// Byte offset into the message where the problem was found.
        offset: usize,
        /// What is wrong.
        problem: Malformation,
    },
    /// No registered message type has this name or alias.
    #[error("unknown message type `{type_name}`")]
    UnknownType {
        /// The name found in the envelope.
        type_name: String,
    },
    /// A typed decode found a message of another registered type.
    #[error("expected a message of type `{expected}`, found `{found}`")]
    UnexpectedType {
        /// The type the caller asked for.
        expected: &'static str,
        /// The name found in the envelope.
        found: String,
    },
    /// The caller decoded into an older struct of a registered type; handlers get the
    /// current one.
    #[error("`{type_name}` v{version} is not the registry's current version v{current}: decode into the current struct")]
    NotCurrent {
        /// The type name.
        type_name: &'static str,
        /// The version of the struct asked for.
        version: u32,
        /// The registered current version.
        current: u32,
    },
    /// The message is newer than this code: normal during a rolling deploy. Requeue it.
    #[error("`{type_name}` v{version} is newer than this code's v{current}; requeue it until this worker runs the new code")]
    FutureVersion {
        /// The registered type name.
        type_name: &'static str,
        /// The version in the envelope.
        version: u32,
        /// The newest version this code knows.
        current: u32,
    },
    /// No chain of steps leads from the message's version to the current one.
    #[error("`{type_name}` has no upcaster from v{version} toward v{current}: add a migration file or an `Upcaster` for v{version}→v{}", version.saturating_add(1))]
    MissingUpcaster {
        /// The registered type name.
        type_name: &'static str,
        /// The version in the envelope.
        version: u32,
        /// The current version.
        current: u32,
    },
    /// A step of the chain refused the payload.
    #[error("upcasting `{type_name}` v{from}→v{to} failed: {reason}")]
    UpcastFailed {
        /// The registered type name.
        type_name: &'static str,
        /// The version the step reads.
        from: u32,
        /// The version the step writes.
        to: u32,
        /// The step's own error.
        #[source]
        reason: StepError,
    },
    /// The payload does not fit the Rust type of its version.
    #[error(
        "`{type_name}` v{version} payload invalid{}: {message}",
        at_pointer(pointer)
    )]
    PayloadInvalid {
        /// The registered type name.
        type_name: &'static str,
        /// The version whose Rust type or schema the payload failed.
        version: u32,
        /// JSON Pointer (RFC 6901) into the payload; empty for the payload itself.
        pointer: String,
        /// serde's message.
        message: String,
    },
    /// The message type is registered but the dispatcher has no handler for it.
    #[error("no handler for `{type_name}`")]
    Unhandled {
        /// The registered type name.
        type_name: &'static str,
    },
}

/// What a consumer does with a message that did not decode, so that the worker and a
/// consumer loop of your own treat every error alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// Put it back, after a delay and without counting an attempt, for a consumer with
    /// newer code: a newer producer wrote it ([`ErrorKind::FutureVersion`]).
    Requeue,
    /// Retry it like a failed attempt, then dead-letter it: newer code may yet know it (an
    /// [`ErrorKind::UnknownType`] that a newer producer introduced).
    Retry,
    /// Keep it, with its bytes, in the failure store: no retry of this code reads it.
    DeadLetter,
}

impl ErrorKind {
    /// What a consumer does with a message that failed this way.
    pub fn disposition(&self) -> Disposition {
        match self {
            ErrorKind::FutureVersion { .. } => Disposition::Requeue,
            ErrorKind::UnknownType { .. } => Disposition::Retry,
            _ => Disposition::DeadLetter,
        }
    }
}

fn at_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at `{pointer}`")
    }
}

/// "JSON ", unless the bytes were recognised as neither codec.
fn format_of(format: Format, problem: &Malformation) -> String {
    match problem {
        Malformation::NotAnEnvelope => String::new(),
        _ => format!("{format} "),
    }
}

/// What makes an envelope malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformation {
    /// Input that is neither a JSON object nor a MessagePack map.
    #[error("not an envelope: expected a JSON object or a MessagePack map")]
    NotAnEnvelope,
    /// Invalid syntax of the codec.
    #[error("{0}")]
    Syntax(String),
    /// A required key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    /// A key appears twice; readers must never disagree on which one wins.
    #[error("duplicate key `{0}`")]
    DuplicateKey(&'static str),
    /// `type` is not a non-empty string.
    #[error("`type` must be a non-empty string, found {0}")]
    InvalidType(String),
    /// `version` is not an integer from 1 to 4294967295.
    #[error("`version` must be an integer from 1 to 4294967295, found {0}")]
    InvalidVersion(String),
    /// `headers` is not a map of unique string keys to string values.
    #[error("`headers` must map unique strings to strings: {0}")]
    InvalidHeaders(String),
    /// Bytes after the end of the envelope.
    #[error("trailing bytes after the envelope")]
    TrailingBytes,
}

/// A message that could not be encoded: which, why ([`EncodeErrorKind`]), and serde's (or
/// the failing step's) error as its [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("cannot encode `{type_name}` v{version} as {format}: {kind}{}", show_source(.source.as_deref()))]
#[non_exhaustive]
pub struct EncodeError {
    /// The message type.
    pub type_name: &'static str,
    /// The version being written.
    pub version: u32,
    /// The target codec.
    pub format: Format,
    /// Why.
    pub kind: EncodeErrorKind,
    /// serde's error, or the error of the step that could not take the message back.
    #[source]
    pub source: Option<StepError>,
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// serde could not serialize it (a map with non-string keys in JSON, a failing
    /// `Serialize` impl, …).
    #[error("serialization failed")]
    Serialize,
    /// The struct is an older version of a registered type, whose current version is
    /// `current`: encode the current struct (with `write_version` to write an older one).
    #[error("this struct is an older version: the registry's current version is v{current}; encode the current struct (with `write_version` to write an older one)")]
    NotCurrent {
        /// The registered type's current version.
        current: u32,
    },
    /// Taking the message back to its write version failed at the step `from` → `to`.
    #[error("downcasting v{from}→v{to} failed")]
    Downcast {
        /// The newer version of the step.
        from: u32,
        /// The older version.
        to: u32,
    },
}

fn show_source(source: Option<&(dyn std::error::Error + Send + Sync)>) -> String {
    source.map_or_else(String::new, |e| format!(": {e}"))
}

impl EncodeError {
    pub(crate) fn new(
        type_name: &'static str,
        version: u32,
        format: Format,
        kind: EncodeErrorKind,
        source: Option<StepError>,
    ) -> Self {
        EncodeError {
            type_name,
            version,
            format,
            kind,
            source,
        }
    }
}

/// Every problem found while building a [`crate::Registry`], reported together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub struct RegistryError {
    /// The problems, in the order they were found.
    pub problems: Vec<RegistryProblem>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid registry:")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// One problem in a registry's types or chains.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryProblem {
    /// Two registrations share a type name.
    #[error("message type `{name}` is registered twice")]
    DuplicateName {
        /// The shared name.
        name: String,
    },
    /// Two structs of one message type are both registered.
    #[error("`{name}` is registered as v{older} and as v{newer}: register only the current version (older structs link to it with `previous`)")]
    SeveralVersions {
        /// The type name.
        name: String,
        /// The lower version.
        older: u32,
        /// The higher version, which the registry keeps.
        newer: u32,
    },
    /// A step or handler names an older struct of a registered type.
    #[error("`{type_name}` v{version} is not the registered current version v{current}: use the current struct")]
    NotCurrent {
        /// The type name.
        type_name: String,
        /// The version of the struct named.
        version: u32,
        /// The registered current version.
        current: u32,
    },
    /// An alias or former name of one type is the name, alias or former name of another.
    #[error("name `{alias}` of `{owner}` is already taken by `{other}`")]
    AliasCollision {
        /// The colliding name.
        alias: String,
        /// The type declaring it.
        owner: String,
        /// The type that already has it.
        other: String,
    },
    /// Two steps for the same version pair.
    #[error("`{type_name}` has two steps v{from}→v{to}")]
    DuplicateStep {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
    },
    /// Older versions exist but no step leads from `from` to `to`.
    #[error("`{type_name}` has no step v{from}→v{to}, so older versions cannot reach v{current}")]
    Gap {
        /// The registered type.
        type_name: String,
        /// The version with no way up.
        from: u32,
        /// The missing step's target.
        to: u32,
        /// The current version.
        current: u32,
    },
    /// A step that does not go up, which would let a chain loop.
    #[error("`{type_name}` step v{from}→v{to} does not go up: chains would cycle")]
    Cycle {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
    },
    /// A step that skips versions.
    #[error("`{type_name}` step v{from}→v{to} skips versions: a step goes from vN to vN+1")]
    NotAdjacent {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
    },
    /// A step whose target is above the current version, so the chain overshoots it.
    #[error("`{type_name}` step v{from}→v{to} goes beyond the current v{current}")]
    BeyondCurrent {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
        /// The current version.
        current: u32,
    },
    /// A step names version 0, which no message has.
    #[error("`{type_name}` step v{from}→v{to}: versions start at 1")]
    VersionZero {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
    },
    /// A migration file's directory names no registered type, alias or former name.
    #[error("{file}: no registered message type is called `{type_name}`")]
    MigrationUnknownType {
        /// The step file.
        file: String,
        /// The directory's name.
        type_name: String,
    },
    /// A migration file names a version the type does not have.
    #[error("{file}: `{type_name}` has no v{to}; its current version is v{current}")]
    MigrationVersion {
        /// The step file.
        file: String,
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
        /// The current version.
        current: u32,
    },
    /// A migration file's step is also served by something else.
    #[error("{file}: `{type_name}` v{from}→v{to} is also served by {other}")]
    MigrationConflict {
        /// The step file.
        file: String,
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
        /// What else serves it: another file, a Rust upcaster, or a typed link.
        other: String,
    },
    /// A configured write version needs a step that cannot be undone.
    #[error("`{type_name}` cannot be downcast from v{to} to v{from}: {reason}")]
    NotReversible {
        /// The registered type.
        type_name: String,
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
        /// Why it cannot be undone.
        reason: String,
    },
    /// A configured write version that the chain does not reach.
    #[error(
        "`{type_name}` cannot be written as v{version}: its chain spans v{oldest} to v{current}"
    )]
    WriteVersionOutOfRange {
        /// The registered type.
        type_name: String,
        /// The configured version.
        version: u32,
        /// The oldest version of the chain.
        oldest: u32,
        /// The current version.
        current: u32,
    },
    /// A step or handler names a type that is not registered.
    #[error("`{type_name}` is not registered")]
    NotRegistered {
        /// The type name.
        type_name: String,
    },
}
