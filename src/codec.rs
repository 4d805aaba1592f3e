//! Payload codecs: how a payload's bytes (or its object tree) become a Rust value.

use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserializer;
use serde_json::Value;

use crate::migration::Plan;
use crate::upcast::ChainFailure;

/// The wire codec of an envelope or a split-form body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON (RFC 8259).
    Json,
    /// MessagePack, with structs written as maps of named fields.
    MessagePack,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::MessagePack => "MessagePack",
        })
    }
}

/// A payload as found in an envelope, not yet decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PayloadRef<'a> {
    JsonStr(&'a str),
    JsonBytes(&'a [u8]),
    MessagePack(&'a [u8]),
}

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

/// serde_json's message without its " at line L column C" suffix: the JSON Pointer says where.
pub(crate) fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    if e.line() == 0 {
        return full;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(m) => m.to_owned(),
        None => full,
    }
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

/// Appends one escaped reference token to a JSON Pointer.
pub(crate) fn push_token(out: &mut String, token: &str) {
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// Deserializes the current version straight from the payload bytes: the fast path, where
/// a failure is settled again by the full parser.
#[inline]
pub(crate) fn read_current<T: DeserializeOwned>(payload: PayloadRef<'_>) -> Option<T> {
    match payload {
        PayloadRef::JsonStr(s) => serde_json::from_str(s).ok(),
        PayloadRef::JsonBytes(b) => serde_json::from_slice(b).ok(),
        PayloadRef::MessagePack(b) => msgpack_exact(b).ok(),
    }
}

/// Reads one MessagePack value that must fill `b`: rmp-serde alone ignores trailing bytes.
#[inline]
fn msgpack_exact<T: DeserializeOwned>(b: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    msgpack_exact_with(b, |de| T::deserialize(de))
}

type MsgpackReader<'a> = rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'a, [u8]>>;

/// Runs `read` on a MessagePack reader over `b`, then checks that it consumed all of `b`.
#[inline]
fn msgpack_exact_with<'a, T>(
    b: &'a [u8],
    read: impl FnOnce(&mut MsgpackReader<'a>) -> Result<T, rmp_serde::decode::Error>,
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = msgpack_reader(b);
    let value = read(&mut de)?;
    // rmp-serde does not tell its position, so ask for one more value: only a failure to read
    // its first marker proves the input ended. `NoValue` accepts nothing, so a trailing value
    // is refused at its marker rather than read into.
    match de.deserialize_any(NoValue) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => Err(de::Error::custom("trailing bytes after the payload")),
    }
}

/// The nesting limit for MessagePack, as serde_json's for JSON: deeper input is refused
/// before it can exhaust a thread's stack.
const MAX_DEPTH: usize = 128;

pub(crate) fn msgpack_reader(b: &[u8]) -> MsgpackReader<'_> {
    let mut de = rmp_serde::Deserializer::from_read_ref(b);
    de.set_max_depth(MAX_DEPTH);
    de
}

/// A visitor that accepts no value at all.
struct NoValue;

impl Visitor<'_> for NoValue {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the end of the payload")
    }
}
