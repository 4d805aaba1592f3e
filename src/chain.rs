//! The compiled chain's plumbing: a payload on its way into a Rust type (bytes, bytes read
//! through renames, or an object tree), why a chain stops, and the typed `previous` links.
//! Between the wire (`codec`) and the steps (`upcast`): data flows bytes → envelope → chain →
//! typed payload.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::codec::{
    json_message, msgpack_exact, msgpack_exact_with, msgpack_reader, push_token, PayloadRef,
};
use crate::migration::Plan;
use crate::Message;

/// The reason a step gives when it refuses a payload. Anything that converts into a boxed
/// error works: `Err("imagePostId missing".into())`, or `?` on any error type.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// A payload on its way into a Rust type: bytes from an envelope, or an object tree that
/// untyped steps produced. Used by the derive's generated code.
pub struct Input<'a> {
    source: Source<'a>,
    /// Re-reading after a failure, to find the JSON Pointer of the error.
    locate: bool,
}

enum Source<'a> {
    Payload(PayloadRef<'a>),
    Tree(Value),
    /// Bytes read through a chain of renames, without a tree.
    Renamed(PayloadRef<'a>, &'a Plan),
}

impl<'a> Input<'a> {
    pub(crate) fn payload(payload: PayloadRef<'a>, locate: bool) -> Self {
        Input {
            source: Source::Payload(payload),
            locate,
        }
    }

    /// Bytes read through `plan`'s renames. Never used to locate errors: a failure here
    /// sends the message down the tree path, which reports it.
    pub(crate) fn renamed(payload: PayloadRef<'a>, plan: &'a Plan) -> Self {
        Input {
            source: Source::Renamed(payload, plan),
            locate: false,
        }
    }

    pub(crate) fn tree(tree: Value, locate: bool) -> Self {
        Input {
            source: Source::Tree(tree),
            locate,
        }
    }

    /// Deserializes the payload as the Rust type of `version`.
    pub fn read<T: DeserializeOwned>(self, version: u32) -> Result<T, ChainFailure> {
        let failed = |pointer: Option<String>, message: String| ChainFailure::Payload {
            version,
            pointer,
            message,
        };
        if self.locate {
            return match self.source {
                Source::Payload(PayloadRef::JsonStr(s)) => {
                    locate_json(&mut serde_json::Deserializer::from_str(s))
                }
                Source::Payload(PayloadRef::JsonBytes(b)) => {
                    locate_json(&mut serde_json::Deserializer::from_slice(b))
                }
                Source::Payload(PayloadRef::MessagePack(b)) => {
                    let mut de = msgpack_reader(b);
                    serde_path_to_error::deserialize(&mut de)
                        .map_err(|e| failed(Some(pointer(e.path())), e.into_inner().to_string()))
                }
                Source::Tree(v) => serde_path_to_error::deserialize(&v)
                    .map_err(|e| failed(Some(pointer(e.path())), json_message(e.inner()))),
                Source::Renamed(..) => Err(failed(None, "renamed input is not located".into())),
            }
            .map_err(|f| f.at_version(version));
        }
        match self.source {
            Source::Payload(PayloadRef::JsonStr(s)) => {
                serde_json::from_str(s).map_err(|e| failed(None, json_message(&e)))
            }
            Source::Payload(PayloadRef::JsonBytes(b)) => {
                serde_json::from_slice(b).map_err(|e| failed(None, json_message(&e)))
            }
            Source::Payload(PayloadRef::MessagePack(b)) => {
                msgpack_exact(b).map_err(|e| failed(None, e.to_string()))
            }
            Source::Tree(v) => T::deserialize(v).map_err(|e| failed(None, json_message(&e))),
            Source::Renamed(payload, plan) => {
                read_renamed(payload, plan).map_err(|message| failed(None, message))
            }
        }
    }

    /// Builds the payload's object tree, for untyped steps.
    pub(crate) fn into_tree(self, version: u32) -> Result<Value, ChainFailure> {
        match self.source {
            Source::Tree(v) => Ok(v),
            source => Input {
                source,
                locate: self.locate,
            }
            .read::<Value>(version),
        }
    }
}

fn read_renamed<T: DeserializeOwned>(payload: PayloadRef<'_>, plan: &Plan) -> Result<T, String> {
    fn json<'de, R: serde_json::de::Read<'de>, T: DeserializeOwned>(
        mut de: serde_json::Deserializer<R>,
        plan: &Plan,
    ) -> Result<T, String> {
        let value = T::deserialize(plan.wrap(&mut de)).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(value)
    }
    match payload {
        PayloadRef::JsonStr(s) => json(serde_json::Deserializer::from_str(s), plan),
        PayloadRef::JsonBytes(b) => json(serde_json::Deserializer::from_slice(b), plan),
        PayloadRef::MessagePack(b) => {
            msgpack_exact_with(b, |de| T::deserialize(plan.wrap(de))).map_err(|e| e.to_string())
        }
    }
}

fn locate_json<'de, R, T>(de: &mut serde_json::Deserializer<R>) -> Result<T, ChainFailure>
where
    R: serde_json::de::Read<'de>,
    T: DeserializeOwned,
{
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| ChainFailure::Payload {
        version: 0,
        pointer: Some(pointer(e.path())),
        message: json_message(e.inner()),
    })?;
    de.end().map_err(|e| ChainFailure::Payload {
        version: 0,
        pointer: Some(String::new()),
        message: json_message(&e),
    })?;
    Ok(value)
}

/// Renders a serde path as a JSON Pointer (RFC 6901).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => push_token(&mut out, key),
            Segment::Unknown => out.push_str("/?"),
        }
    }
    out
}

/// Why a chain stopped. Used by the derive's generated code; the registry turns it into an
/// [`crate::Error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ChainFailure {
    /// The payload does not fit the Rust type (or tree) of `version`.
    Payload {
        /// The version being read.
        version: u32,
        /// JSON Pointer of the failure, when it was located.
        pointer: Option<String>,
        /// serde's message.
        message: String,
    },
    /// No step leads on from `version`.
    Missing {
        /// The version the chain could not leave.
        version: u32,
    },
    /// A step refused the payload.
    Step {
        /// The step's source version.
        from: u32,
        /// The step's target version.
        to: u32,
        /// The step's reason.
        reason: StepError,
    },
}

impl ChainFailure {
    pub(crate) fn at_version(self, version: u32) -> Self {
        match self {
            ChainFailure::Payload {
                pointer, message, ..
            } => ChainFailure::Payload {
                version,
                pointer,
                message,
            },
            step => step,
        }
    }
}

/// The typed link `previous = P` of `S`: reads `input` written as `version` through `P`'s own
/// chain, then converts. `None` when no typed link reaches `version`.
pub fn upcast_via<P, S>(version: u32, input: Input<'_>) -> Option<Result<S, ChainFailure>>
where
    P: Message,
    S: Message + TryFrom<P>,
    <S as TryFrom<P>>::Error: Into<StepError>,
{
    if version == S::VERSION {
        return Some(input.read::<S>(version));
    }
    let previous = match (P::__META.upcast_from)(version, input)? {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    Some(S::try_from(previous).map_err(|e| ChainFailure::Step {
        from: P::VERSION,
        to: S::VERSION,
        reason: e.into(),
    }))
}
