//! The wire codecs: JSON and MessagePack, a located payload, and the exact readers every
//! other layer uses. A leaf: it knows no chain, migration or registry.

use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserializer;

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
pub(crate) fn msgpack_exact<T: DeserializeOwned>(b: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    msgpack_exact_with(b, |de| T::deserialize(de))
}

type MsgpackReader<'a> = rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'a, [u8]>>;

/// Runs `read` on a MessagePack reader over `b`, then checks that it consumed all of `b`.
#[inline]
pub(crate) fn msgpack_exact_with<'a, T>(
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

/// Text quoted in an error, cut so that a huge input cannot make a huge message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
