//! The envelope: the header (`type`, `version`, `headers`) around a payload, in JSON,
//! MessagePack, or split form. The README's "Wire format" section specifies it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chain::StepError;
use crate::codec::{shorten, Format, PayloadRef};
use crate::error::{EncodeError, EncodeErrorKind, Malformation, PartialHeader};
use crate::headers::Headers;
use crate::version::from_integer;
pub use crate::version::{parse_version, version_of_dir};

/// The envelope header of a message as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header<'a> {
    /// The codec of the envelope (or of the body, in split form).
    pub format: Format,
    /// The type name as written, which may be an alias or a former name.
    pub type_name: Cow<'a, str>,
    /// The version as written: the version the message *arrived* in.
    pub version: u32,
    /// The envelope's headers.
    pub headers: Headers,
}

impl Header<'_> {
    /// The header of `T`'s current version, without headers.
    #[inline]
    pub(crate) fn current<T: crate::Message>(format: Format) -> Header<'static> {
        Header {
            format,
            type_name: Cow::Borrowed(T::NAME),
            version: T::VERSION,
            headers: Headers::new(),
        }
    }

    /// Copies the borrowed parts, so the header outlives the input bytes.
    pub fn into_owned(self) -> Header<'static> {
        Header {
            format: self.format,
            type_name: Cow::Owned(self.type_name.into_owned()),
            version: self.version,
            headers: self.headers,
        }
    }

    pub(crate) fn to_partial(&self) -> PartialHeader {
        PartialHeader {
            format: Some(self.format),
            type_name: Some(self.type_name.to_string()),
            version: Some(self.version),
            headers: self.headers.clone(),
        }
    }
}

/// A decoded message in its current version, with the header it arrived with.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Decoded<'a, T> {
    /// The message, upcast to the current version.
    pub message: T,
    /// The header as it arrived: [`Header::version`] is the version before upcasting.
    pub header: Header<'a>,
}

impl<T: crate::Message> Decoded<'_, T> {
    /// The version the message was written in.
    pub fn arrived_version(&self) -> u32 {
        self.header.version
    }

    /// True when the message arrived older than `T` and went through the chain.
    pub fn was_upcast(&self) -> bool {
        self.header.version != T::VERSION
    }

    /// The message alone.
    pub fn into_message(self) -> T {
        self.message
    }

    /// The same message, borrowing nothing from the bytes it was read from, for a handler
    /// that outlives them (an async handler, a spawned task). Costs nothing when the type
    /// name arrived as `T`'s current name; a former name or alias is copied.
    pub fn into_owned(self) -> Decoded<'static, T> {
        let type_name = match self.header.type_name {
            name if name == T::NAME => Cow::Borrowed(T::NAME),
            name => Cow::Owned(name.into_owned()),
        };
        Decoded {
            message: self.message,
            header: Header {
                format: self.header.format,
                type_name,
                version: self.header.version,
                headers: self.header.headers,
            },
        }
    }
}

/// A message in split form: type and version beside a bare payload body, for brokers that
/// carry message headers (Kafka, AMQP, Redis stream fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Goes in the broker header `type`.
    pub type_name: Cow<'static, str>,
    /// Goes in the broker header `version`, as decimal ASCII.
    pub version: u32,
    /// The payload alone, in the chosen codec.
    pub body: Vec<u8>,
}

/// Input as the caller gave it; a `&str` keeps serde_json's faster string path.
#[derive(Clone, Copy)]
pub(crate) enum Raw<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Raw<'a> {
    /// JSON bytes as text once their UTF-8 is checked, so later steps need not check again;
    /// anything else unchanged (the full parser reports bad UTF-8 where it is).
    #[inline]
    pub(crate) fn text(self) -> Raw<'a> {
        match self {
            Raw::Bytes(b) if b.first() == Some(&b'{') => match std::str::from_utf8(b) {
                Ok(s) => Raw::Str(s),
                Err(_) => self,
            },
            other => other,
        }
    }

    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            Raw::Str(s) => s.as_bytes(),
            Raw::Bytes(b) => b,
        }
    }

    fn json_payload(self, start: usize, end: usize) -> Option<PayloadRef<'a>> {
        match self {
            Raw::Str(s) => s.get(start..end).map(PayloadRef::JsonStr),
            Raw::Bytes(b) => b.get(start..end).map(PayloadRef::JsonBytes),
        }
    }
}

/// An envelope whose header is read and whose payload is located but not decoded.
pub(crate) struct RawEnvelope<'a> {
    pub(crate) header: Header<'a>,
    pub(crate) payload: PayloadRef<'a>,
}

/// An envelope that could not be read.
pub(crate) struct Malformed {
    pub(crate) format: Format,
    pub(crate) offset: usize,
    pub(crate) problem: Malformation,
    pub(crate) header: PartialHeader,
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_msgpack_map(b: u8) -> bool {
    matches!(b, 0x80..=0x8f | 0xde | 0xdf)
}

/// True when `name` appears in JSON exactly as its bytes, with no escapes.
#[inline]
pub(crate) const fn is_plain_name(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' || b[i] == b'\\' || b[i] < 0x20 {
            return false;
        }
        i += 1;
    }
    !b.is_empty()
}

/// Splits `rest` after a type name equal to `expected` (a static, plain name), so the
/// common case needs one comparison and no UTF-8 check.
#[inline]
fn known_name<'a>(
    rest: &'a [u8],
    expected: Option<&'static str>,
) -> Option<(&'static str, &'a [u8])> {
    let name = expected?;
    let after = rest.strip_prefix(name.as_bytes())?.strip_prefix(b"\"")?;
    Some((name, after))
}

/// Reads the envelope of the writer's own canonical JSON,
/// `{"type":"…","version":N[,"headers":{…}],"payload":…}`, without parsing the payload.
///
/// Returns `None` for anything else; the general parser then decides. The payload slice is
/// tentative: it is everything up to the last `}`, so reading it must consume all of it
/// (serde_json does), or the general parser must take over. `expected` is a type name to
/// try first (see [`is_plain_name`]).
#[inline]
pub(crate) fn fast_json<'a>(
    raw: Raw<'a>,
    expected: Option<&'static str>,
) -> Option<RawEnvelope<'a>> {
    // JSON is UTF-8. Checking it all here (serde_json checks only the strings it keeps)
    // makes the fast path refuse what the full parser refuses, at the cost serde_json's
    // `from_slice` would pay anyway; the payload is then read as text.
    let raw = match raw {
        Raw::Bytes(b) => Raw::Str(std::str::from_utf8(b).ok()?),
        text => text,
    };
    let b = raw.bytes();
    let rest = b.strip_prefix(b"{\"type\":\"")?;
    let (type_name, rest): (Cow<'_, str>, &[u8]) = match known_name(rest, expected) {
        Some((name, after)) => (Cow::Borrowed(name), after),
        None => {
            let len = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            if rest[len] != b'"' || len == 0 {
                return None;
            }
            let start = b.len() - rest.len();
            let name = match raw {
                Raw::Str(s) => s.get(start..start + len)?,
                Raw::Bytes(_) => return None,
            };
            (Cow::Borrowed(name), &rest[len + 1..])
        }
    };
    let rest = rest.strip_prefix(b",\"version\":")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let text = std::str::from_utf8(rest.get(..digits)?).ok()?;
    let version = parse_version(text).ok()?;
    let mut rest = &rest[digits..];
    let mut headers = Headers::new();
    if let Some(h) = rest.strip_prefix(b",\"headers\":") {
        let mut stream = serde_json::Deserializer::from_slice(h).into_iter::<Headers>();
        headers = stream.next()?.ok()?;
        rest = &h[stream.byte_offset()..];
    }
    let rest = rest.strip_prefix(b",\"payload\":")?;
    let start = b.len() - rest.len();
    let mut end = b.len();
    while end > start && is_json_ws(b[end - 1]) {
        end -= 1;
    }
    if end <= start + 1 || b[end - 1] != b'}' {
        return None;
    }
    Some(RawEnvelope {
        header: Header {
            format: Format::Json,
            type_name,
            version,
            headers,
        },
        payload: raw.json_payload(start, end - 1)?,
    })
}

/// Reads the writer's own MessagePack layout: a map of `type`, `version`, `headers` (only
/// in a map of four) and `payload`, in that order. The payload runs to the end of the input,
/// so, as in [`fast_json`], reading it must consume every byte or the full parser takes over.
#[inline]
pub(crate) fn fast_msgpack<'a>(
    b: &'a [u8],
    expected: Option<&'static str>,
) -> Option<RawEnvelope<'a>> {
    let with_headers = match b.first()? {
        0x83 => false,
        0x84 => true,
        _ => return None,
    };
    let mut pack = Pack { b, pos: 1 };
    pack.key(b"\xa4type")?;
    let type_name = match pack.known_fixstr(expected) {
        Some(name) => name,
        None => pack.type_name(expected).ok()?,
    };
    pack.key(b"\xa7version")?;
    // A version below 128 is one byte, the writer's usual case.
    let version = match b.get(pack.pos) {
        Some(&v @ 1..=0x7f) => {
            pack.pos += 1;
            u32::from(v)
        }
        _ => pack.version().ok()?,
    };
    let headers = if with_headers {
        pack.key(b"\xa7headers")?;
        pack.headers().ok()?
    } else {
        Headers::new()
    };
    pack.key(b"\xa7payload")?;
    let payload = b.get(pack.pos..).filter(|p| !p.is_empty())?;
    Some(RawEnvelope {
        header: Header {
            format: Format::MessagePack,
            type_name: Cow::Borrowed(type_name),
            version,
            headers,
        },
        payload: PayloadRef::MessagePack(payload),
    })
}

/// The fast path for either codec, chosen by the first byte.
#[inline]
pub(crate) fn fast<'a>(raw: Raw<'a>, expected: Option<&'static str>) -> Option<RawEnvelope<'a>> {
    match raw.bytes().first()? {
        b'{' => fast_json(raw, expected),
        _ => fast_msgpack(raw.bytes(), expected),
    }
}

/// Reads any envelope, in either codec, with every check of the format.
pub(crate) fn parse<'a>(
    raw: Raw<'a>,
    expected: Option<&'static str>,
) -> Result<RawEnvelope<'a>, Malformed> {
    let b = raw.bytes();
    match b.iter().position(|&c| !is_json_ws(c)) {
        Some(i) if b[i] == b'{' => match raw {
            Raw::Str(_) => parse_json(raw),
            Raw::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => parse_json(Raw::Str(text)),
                Err(e) => Err(Malformed {
                    format: Format::Json,
                    offset: e.valid_up_to(),
                    problem: Malformation::Syntax("invalid UTF-8".to_owned()),
                    header: PartialHeader {
                        format: Some(Format::Json),
                        ..PartialHeader::default()
                    },
                }),
            },
        },
        Some(0) if is_msgpack_map(b[0]) => parse_msgpack(b, expected),
        first => Err(Malformed {
            format: match first {
                Some(i) if !b[i].is_ascii() => Format::MessagePack,
                _ => Format::Json,
            },
            offset: first.unwrap_or(b.len()),
            problem: Malformation::NotAnEnvelope,
            header: PartialHeader::default(),
        }),
    }
}

/// The four keys, plus anything else (ignored so the envelope can grow).
enum Key {
    Type,
    Version,
    Headers,
    Payload,
    Other,
}

impl Key {
    fn from_name(name: &[u8]) -> Key {
        match name {
            b"type" => Key::Type,
            b"version" => Key::Version,
            b"headers" => Key::Headers,
            b"payload" => Key::Payload,
            _ => Key::Other,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Key::Type => "type",
            Key::Version => "version",
            Key::Headers => "headers",
            Key::Payload => "payload",
            Key::Other => "",
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an envelope key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from_name(v.as_bytes()))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The four fields of an envelope as a reader collects them, in any codec: the one place
/// that knows each may appear once, that a duplicated one has no value, and which are
/// required.
struct Fields<T, V, H, P> {
    type_name: Option<T>,
    version: Option<V>,
    headers: Option<H>,
    payload: Option<P>,
    /// The key that came twice, if one did.
    duplicate: Option<&'static str>,
}

impl<T, V, H, P> Default for Fields<T, V, H, P> {
    fn default() -> Self {
        Fields {
            type_name: None,
            version: None,
            headers: None,
            payload: None,
            duplicate: None,
        }
    }
}

impl<T, V, H, P> Fields<T, V, H, P> {
    /// Whether `key` comes a second time; if so it is recorded as the duplicate, and its
    /// first value is dropped: two readers must never pick different winners, so a
    /// duplicated field has no value at all.
    fn repeated(&mut self, key: &Key) -> bool {
        let seen = match key {
            Key::Type => self.type_name.take().is_some(),
            Key::Version => self.version.take().is_some(),
            Key::Headers => self.headers.take().is_some(),
            Key::Payload => self.payload.take().is_some(),
            Key::Other => false,
        };
        if seen {
            self.duplicate = Some(key.name());
        }
        seen
    }

    /// The first required key that is absent: `type`, `version`, then `payload`.
    fn missing(&self) -> Option<&'static str> {
        if self.type_name.is_none() {
            Some("type")
        } else if self.version.is_none() {
            Some("version")
        } else if self.payload.is_none() {
            Some("payload")
        } else {
            None
        }
    }
}

/// A JSON envelope's fields, captured raw so that each is judged on its own.
type JsonFields<'a> = Fields<&'a RawValue, &'a RawValue, &'a RawValue, &'a RawValue>;

struct FieldsVisitor<'s, 'a>(&'s mut JsonFields<'a>);

impl<'de> Visitor<'de> for FieldsVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.0;
        while let Some(key) = map.next_key::<Key>()? {
            if fields.repeated(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    key.name()
                )));
            }
            match key {
                Key::Type => fields.type_name = Some(map.next_value()?),
                Key::Version => fields.version = Some(map.next_value()?),
                Key::Headers => fields.headers = Some(map.next_value()?),
                Key::Payload => fields.payload = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn parse_json(raw: Raw<'_>) -> Result<RawEnvelope<'_>, Malformed> {
    let b = raw.bytes();
    let mut fields = JsonFields::default();
    // `Err(Ok(e))`: the object is broken; `Err(Err(e))`: something follows a whole object.
    fn read<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        fields: &mut JsonFields<'de>,
    ) -> Result<(), Result<serde_json::Error, serde_json::Error>> {
        de.deserialize_map(FieldsVisitor(fields)).map_err(Ok)?;
        de.end().map_err(Err)
    }
    let parsed = match raw {
        Raw::Str(s) => read(serde_json::Deserializer::from_str(s), &mut fields),
        Raw::Bytes(bytes) => read(serde_json::Deserializer::from_slice(bytes), &mut fields),
    };
    let offset_of = |v: &RawValue| (v.get().as_ptr() as usize).saturating_sub(b.as_ptr() as usize);
    let partial = |type_name: Option<&str>, version, headers: Option<&Headers>| PartialHeader {
        format: Some(Format::Json),
        type_name: type_name.map(str::to_owned),
        version,
        headers: headers.cloned().unwrap_or_default(),
    };
    let fail = |header, offset, problem| {
        Err(Malformed {
            format: Format::Json,
            offset,
            problem,
            header,
        })
    };

    // Judge each field on its own, so an error carries every field that was valid (a
    // dead-letter handler wants the message id even when the version is wrong).
    let type_name = fields.type_name.map(|v| (offset_of(v), json_type_name(v)));
    let version = fields.version.map(|v| (offset_of(v), json_version(v)));
    let headers = fields.headers.map(|v| {
        let parsed = serde_json::from_str::<Headers>(v.get())
            .map_err(|e| Malformation::InvalidHeaders(crate::codec::json_message(&e)));
        (offset_of(v), parsed)
    });
    let header = || {
        partial(
            valid(&type_name).map(|n| &**n),
            valid(&version).copied(),
            valid(&headers),
        )
    };
    let first_invalid = invalid(&type_name)
        .or_else(|| invalid(&version))
        .or_else(|| invalid(&headers));
    if let Some((at, problem)) = first_invalid {
        return fail(header(), at, problem.clone());
    }
    match parsed {
        Ok(()) => {}
        Err(Ok(e)) => {
            let problem = match fields.duplicate {
                Some(key) => Malformation::DuplicateKey(key),
                None => Malformation::Syntax(crate::codec::json_message(&e)),
            };
            return fail(header(), json_offset(b, &e), problem);
        }
        Err(Err(e)) => return fail(header(), json_offset(b, &e), Malformation::TrailingBytes),
    }
    let header_now = header();
    match (type_name, version, headers, fields.payload) {
        (Some((_, Ok(type_name))), Some((_, Ok(version))), headers, Some(payload)) => {
            Ok(RawEnvelope {
                header: Header {
                    format: Format::Json,
                    type_name,
                    version,
                    headers: headers.and_then(|(_, h)| h.ok()).unwrap_or_default(),
                },
                payload: PayloadRef::JsonStr(payload.get()),
            })
        }
        _ => {
            let missing = fields.missing().unwrap_or("payload");
            fail(header_now, b.len(), Malformation::MissingKey(missing))
        }
    }
}

/// A field judged on its own: where it starts, and its value or its problem.
type Judged<T> = Option<(usize, Result<T, Malformation>)>;

fn valid<T>(field: &Judged<T>) -> Option<&T> {
    field.as_ref()?.1.as_ref().ok()
}

fn invalid<T>(field: &Judged<T>) -> Option<(usize, &Malformation)> {
    let (at, judged) = field.as_ref()?;
    judged.as_ref().err().map(|p| (*at, p))
}

/// The byte offset serde_json's line and column point at.
fn json_offset(b: &[u8], e: &serde_json::Error) -> usize {
    let line_start = if e.line() <= 1 {
        0
    } else {
        b.iter()
            .enumerate()
            .filter(|(_, &c)| c == b'\n')
            .nth(e.line() - 2)
            .map_or(b.len(), |(i, _)| i + 1)
    };
    if e.is_eof() {
        return b.len();
    }
    // serde_json counts columns from 1.
    (line_start + e.column().saturating_sub(1)).min(b.len())
}

fn json_type_name(v: &RawValue) -> Result<Cow<'_, str>, Malformation> {
    let text = v.get();
    if !text.starts_with('"') {
        return Err(Malformation::InvalidType(json_kind(text).to_owned()));
    }
    let name: Cow<'_, str> = match serde_json::from_str::<&str>(text) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            serde_json::from_str::<String>(text)
                .map_err(|e| Malformation::InvalidType(crate::codec::json_message(&e)))?,
        ),
    };
    if name.is_empty() {
        return Err(Malformation::InvalidType("an empty string".to_owned()));
    }
    Ok(name)
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn json_version(v: &RawValue) -> Result<u32, Malformation> {
    let text = v.get();
    let shown = shorten(text);
    let invalid = |what: String| Err(Malformation::InvalidVersion(what));
    let is_number = text
        .as_bytes()
        .first()
        .is_some_and(|c| *c == b'-' || c.is_ascii_digit());
    if !is_number {
        return invalid(format!("{} {shown}", json_kind(text)));
    }
    if text.contains(['.', 'e', 'E']) {
        return invalid(format!("the non-integer {shown}"));
    }
    match text.parse::<i128>() {
        Ok(n) => from_integer(n),
        // Past 128 bits: out of range either way.
        Err(_) => invalid(shown),
    }
}

/// A cursor over MessagePack bytes, enough to read the envelope and skip any value.
struct Pack<'a> {
    b: &'a [u8],
    pos: usize,
}

type PackResult<T> = Result<T, (usize, Malformation)>;

impl<'a> Pack<'a> {
    fn syntax<T>(&self, at: usize, what: &str) -> PackResult<T> {
        Err((at, Malformation::Syntax(what.to_owned())))
    }

    /// Steps over `expected` written as a fixstr (the writer's form of a short name), if it
    /// comes next.
    #[inline]
    fn known_fixstr(&mut self, expected: Option<&'static str>) -> Option<&'static str> {
        let name = expected?;
        let len = u8::try_from(name.len()).ok().filter(|n| *n < 32)?;
        let rest = self.b.get(self.pos..)?;
        let (&marker, rest) = rest.split_first()?;
        if marker != 0xa0 | len || !rest.starts_with(name.as_bytes()) {
            return None;
        }
        self.pos += 1 + name.len();
        Some(name)
    }

    /// Steps over `key` (marker and bytes) if it comes next.
    #[inline]
    fn key(&mut self, key: &[u8]) -> Option<()> {
        let rest = self.b.get(self.pos..)?;
        rest.starts_with(key).then(|| self.pos += key.len())
    }

    fn byte(&mut self) -> PackResult<u8> {
        match self.b.get(self.pos) {
            Some(&c) => {
                self.pos += 1;
                Ok(c)
            }
            None => self.syntax(self.pos, "unexpected end of input"),
        }
    }

    fn take(&mut self, n: usize) -> PackResult<&'a [u8]> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => self.syntax(self.b.len(), "unexpected end of input"),
        }
    }

    fn uint(&mut self, width: usize) -> PackResult<u64> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |n, &c| (n << 8) | u64::from(c)))
    }

    /// The length of a str, if the next value is one.
    fn str_len(&mut self, marker: u8) -> PackResult<Option<usize>> {
        Ok(Some(match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.uint(1)? as usize,
            0xda => self.uint(2)? as usize,
            0xdb => self.uint(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn map_len(&mut self, marker: u8) -> PackResult<Option<usize>> {
        Ok(Some(match marker {
            0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.uint(2)? as usize,
            0xdf => self.uint(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn text(&mut self, len: usize) -> PackResult<&'a str> {
        let at = self.pos;
        std::str::from_utf8(self.take(len)?)
            .or_else(|_| self.syntax(at, "string is not valid UTF-8"))
    }

    /// Skips one value of any kind, iteratively so that deep nesting cannot overflow.
    fn skip(&mut self) -> PackResult<()> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let at = self.pos;
            let marker = self.byte()?;
            let items: u64 = match marker {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => 0,
                0x80..=0x8f => 2 * u64::from(marker & 0x0f),
                0x90..=0x9f => u64::from(marker & 0x0f),
                0xa0..=0xbf => {
                    self.take(usize::from(marker & 0x1f))?;
                    0
                }
                0xc4 | 0xd9 => self.skip_sized(1, 0)?,
                0xc5 | 0xda => self.skip_sized(2, 0)?,
                0xc6 | 0xdb => self.skip_sized(4, 0)?,
                0xc7 => self.skip_sized(1, 1)?,
                0xc8 => self.skip_sized(2, 1)?,
                0xc9 => self.skip_sized(4, 1)?,
                0xca => self.skip_fixed(4)?,
                0xcb => self.skip_fixed(8)?,
                0xcc | 0xd0 => self.skip_fixed(1)?,
                0xcd | 0xd1 => self.skip_fixed(2)?,
                0xce | 0xd2 => self.skip_fixed(4)?,
                0xcf | 0xd3 => self.skip_fixed(8)?,
                0xd4 => self.skip_fixed(2)?,
                0xd5 => self.skip_fixed(3)?,
                0xd6 => self.skip_fixed(5)?,
                0xd7 => self.skip_fixed(9)?,
                0xd8 => self.skip_fixed(17)?,
                0xdc => self.uint(2)?,
                0xdd => self.uint(4)?,
                0xde => 2 * self.uint(2)?,
                0xdf => 2 * self.uint(4)?,
                0xc1 => return self.syntax(at, "reserved marker 0xc1"),
            };
            pending += items;
            // Every value takes at least one byte, so this bounds the work by the input.
            if pending > (self.b.len() - self.pos) as u64 {
                return self.syntax(at, "container longer than the input");
            }
        }
        Ok(())
    }

    fn skip_sized(&mut self, len_width: usize, extra: usize) -> PackResult<u64> {
        let len = self.uint(len_width)? as usize;
        self.take(len.saturating_add(extra))?;
        Ok(0)
    }

    fn skip_fixed(&mut self, n: usize) -> PackResult<u64> {
        self.take(n)?;
        Ok(0)
    }

    fn type_name(&mut self, expected: Option<&'static str>) -> PackResult<&'a str> {
        let at = self.pos;
        let marker = self.byte()?;
        match self.str_len(marker)? {
            Some(0) => Err((at, Malformation::InvalidType("an empty string".to_owned()))),
            Some(len) if expected.is_some_and(|e| e.len() == len) => {
                let start = self.pos;
                let bytes = self.take(len)?;
                match expected {
                    Some(name) if name.as_bytes() == bytes => Ok(name),
                    _ => {
                        self.pos = start;
                        self.text(len)
                    }
                }
            }
            Some(len) => self.text(len),
            None => Err((at, Malformation::InvalidType(pack_kind(marker).to_owned()))),
        }
    }

    fn version(&mut self) -> PackResult<u32> {
        let at = self.pos;
        let marker = self.byte()?;
        let value: i128 = match marker {
            0x00..=0x7f => i128::from(marker),
            0xcc => i128::from(self.uint(1)?),
            0xcd => i128::from(self.uint(2)?),
            0xce => i128::from(self.uint(4)?),
            0xcf => i128::from(self.uint(8)?),
            0xd0 => i128::from(self.uint(1)? as u8 as i8),
            0xd1 => i128::from(self.uint(2)? as u16 as i16),
            0xd2 => i128::from(self.uint(4)? as u32 as i32),
            0xd3 => i128::from(self.uint(8)? as i64),
            0xe0..=0xff => i128::from(marker as i8),
            _ => {
                let kind = pack_kind(marker).to_owned();
                return Err((at, Malformation::InvalidVersion(kind)));
            }
        };
        from_integer(value).map_err(|problem| (at, problem))
    }

    fn headers(&mut self) -> PackResult<Headers> {
        let at = self.pos;
        let marker = self.byte()?;
        let invalid = |at: usize, what: String| Err((at, Malformation::InvalidHeaders(what)));
        let Some(len) = self.map_len(marker)? else {
            return invalid(at, format!("found {}", pack_kind(marker)));
        };
        // Each pair takes at least two bytes, which bounds the capacity by the input.
        let mut pairs = Vec::with_capacity(len.min((self.b.len() - self.pos) / 2));
        for _ in 0..len {
            let key = self.header_text(|kind| format!("a key is {kind}"))?;
            let value =
                self.header_text(|kind| format!("the value of `{}` is {kind}", shorten(key)))?;
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Headers::from_unique(pairs).or_else(|e| invalid(at, e))
    }

    fn header_text(&mut self, what: impl FnOnce(&str) -> String) -> PackResult<&'a str> {
        let at = self.pos;
        let marker = self.byte()?;
        match self.str_len(marker)? {
            Some(len) => self.text(len),
            None => Err((at, Malformation::InvalidHeaders(what(pack_kind(marker))))),
        }
    }
}

fn pack_kind(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "binary data",
        0xca | 0xcb => "a float",
        _ => "an extension value",
    }
}

/// The envelope fields of a MessagePack map, as far as they were read.
type PackFields<'a> = Fields<&'a str, u32, Headers, &'a [u8]>;

impl PackFields<'_> {
    fn partial(&self) -> PartialHeader {
        PartialHeader {
            format: Some(Format::MessagePack),
            type_name: self.type_name.map(str::to_owned),
            version: self.version,
            headers: self.headers.clone().unwrap_or_default(),
        }
    }
}

fn parse_msgpack<'a>(
    b: &'a [u8],
    expected: Option<&'static str>,
) -> Result<RawEnvelope<'a>, Malformed> {
    let mut fields = PackFields::default();
    let mut pack = Pack { b, pos: 0 };
    if let Err((offset, problem)) = read_pack_fields(&mut pack, &mut fields, expected) {
        return Err(Malformed {
            format: Format::MessagePack,
            offset,
            problem,
            header: fields.partial(),
        });
    }
    let (Some(type_name), Some(version), Some(payload)) =
        (fields.type_name, fields.version, fields.payload)
    else {
        let missing = fields.missing().unwrap_or("payload");
        return Err(Malformed {
            format: Format::MessagePack,
            offset: b.len(),
            problem: Malformation::MissingKey(missing),
            header: fields.partial(),
        });
    };
    Ok(RawEnvelope {
        header: Header {
            format: Format::MessagePack,
            type_name: Cow::Borrowed(type_name),
            version,
            headers: fields.headers.unwrap_or_default(),
        },
        payload: PayloadRef::MessagePack(payload),
    })
}

fn read_pack_fields<'a>(
    pack: &mut Pack<'a>,
    fields: &mut PackFields<'a>,
    expected: Option<&'static str>,
) -> PackResult<()> {
    let marker = pack.byte()?;
    let Some(len) = pack.map_len(marker)? else {
        return Err((0, Malformation::NotAnEnvelope));
    };
    for _ in 0..len {
        let key_at = pack.pos;
        let marker = pack.byte()?;
        let key = match pack.str_len(marker)? {
            Some(n) => Key::from_name(pack.take(n)?),
            None => {
                // A non-string key is no field of ours: skip it and its value.
                pack.pos = key_at;
                pack.skip()?;
                pack.skip()?;
                continue;
            }
        };
        if fields.repeated(&key) {
            return Err((key_at, Malformation::DuplicateKey(key.name())));
        }
        match key {
            Key::Type => fields.type_name = Some(pack.type_name(expected)?),
            Key::Version => fields.version = Some(pack.version()?),
            Key::Headers => fields.headers = Some(pack.headers()?),
            Key::Payload => {
                let start = pack.pos;
                pack.skip()?;
                fields.payload = pack.b.get(start..pack.pos);
            }
            Key::Other => pack.skip()?,
        }
    }
    if pack.pos != pack.b.len() {
        return Err((pack.pos, Malformation::TrailingBytes));
    }
    Ok(())
}

/// Writes a JSON envelope: keys in the order `type`, `version`, `headers` (only when not
/// empty), `payload`, with no whitespace.
pub(crate) fn write_json<P: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    type_name: &str,
    version: u32,
    headers: &Headers,
    payload: &P,
) -> Result<(), serde_json::Error> {
    write_json_head(out, type_name, version, headers)?;
    serde_json::to_writer(&mut *out, payload)?;
    out.push(b'}');
    Ok(())
}

/// A JSON envelope up to its payload's value.
fn write_json_head(
    out: &mut Vec<u8>,
    type_name: &str,
    version: u32,
    headers: &Headers,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"type\":");
    if is_plain_name(type_name) {
        // Nothing to escape: the usual case, written as is.
        out.push(b'"');
        out.extend_from_slice(type_name.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, type_name)?;
    }
    out.extend_from_slice(b",\"version\":");
    push_decimal(out, version);
    if !headers.is_empty() {
        out.extend_from_slice(b",\"headers\":");
        serde_json::to_writer(&mut *out, headers)?;
    }
    out.extend_from_slice(b",\"payload\":");
    Ok(())
}

fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a MessagePack envelope: a map with the same keys in the same order as JSON; the
/// payload's structs are maps of named fields.
pub(crate) fn write_msgpack<P: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    type_name: &str,
    version: u32,
    headers: &Headers,
    payload: &P,
) -> Result<(), rmp_serde::encode::Error> {
    write_msgpack_head(out, type_name, version, headers)?;
    rmp_serde::encode::write_named(out, payload)
}

/// A MessagePack envelope up to its payload's value.
fn write_msgpack_head(
    out: &mut Vec<u8>,
    type_name: &str,
    version: u32,
    headers: &Headers,
) -> Result<(), rmp_serde::encode::Error> {
    use rmp::encode;
    let io = rmp_serde::encode::Error::from;
    encode::write_map_len(out, if headers.is_empty() { 3 } else { 4 }).map_err(io)?;
    encode::write_str(out, "type").map_err(io)?;
    encode::write_str(out, type_name).map_err(io)?;
    encode::write_str(out, "version").map_err(io)?;
    encode::write_uint(out, u64::from(version)).map_err(io)?;
    if !headers.is_empty() {
        encode::write_str(out, "headers").map_err(io)?;
        let len = u32::try_from(headers.len()).map_err(|_| {
            <rmp_serde::encode::Error as serde::ser::Error>::custom("too many headers")
        })?;
        encode::write_map_len(out, len).map_err(io)?;
        for (k, v) in headers.iter() {
            encode::write_str(out, k).map_err(io)?;
            encode::write_str(out, v).map_err(io)?;
        }
    }
    encode::write_str(out, "payload").map_err(io)?;
    Ok(())
}

impl Split {
    /// The envelope of this split-form message, in `format` (the body's codec), with
    /// `headers`: for a transport that read a message in split form and hands the worker an
    /// envelope. The body goes in as it is; a body that is not a value of `format` makes an
    /// envelope that fails to decode, with the body inside it.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use upcaster::{Format, Headers, Split};
    ///
    /// let split = Split { type_name: Cow::Borrowed("Ping"), version: 3, body: br#"{"n":1}"#.to_vec() };
    /// let bytes = split.to_envelope(Format::Json, &Headers::new());
    /// assert_eq!(bytes, br#"{"type":"Ping","version":3,"payload":{"n":1}}"#);
    /// let (back, format, _) = Split::from_envelope(&bytes)?;
    /// assert_eq!((back, format), (split, Format::Json));
    /// # Ok::<(), upcaster::Error>(())
    /// ```
    pub fn to_envelope(&self, format: Format, headers: &Headers) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + self.type_name.len() + 48);
        // Writing into a Vec fails only on a type name or headers no codec can hold, which
        // a Split read from a broker's headers cannot have.
        let head = match format {
            Format::Json => write_json_head(&mut out, &self.type_name, self.version, headers)
                .map_err(|e| e.to_string()),
            Format::MessagePack => {
                write_msgpack_head(&mut out, &self.type_name, self.version, headers)
                    .map_err(|e| e.to_string())
            }
        };
        debug_assert!(head.is_ok(), "{head:?}");
        out.extend_from_slice(&self.body);
        if format == Format::Json {
            out.push(b'}');
        }
        out
    }
}

/// Writes a bare payload body for the split form.
pub(crate) fn write_body<P: Serialize + ?Sized>(
    format: Format,
    payload: &P,
) -> Result<Vec<u8>, StepError> {
    match format {
        Format::Json => serde_json::to_vec(payload).map_err(Into::into),
        Format::MessagePack => rmp_serde::to_vec_named(payload).map_err(Into::into),
    }
}

/// The error of a serializer that refused a message.
pub(crate) fn encode_error<E: Into<StepError>>(
    type_name: &'static str,
    version: u32,
    format: Format,
) -> impl FnOnce(E) -> EncodeError {
    move |e| {
        EncodeError::new(
            type_name,
            version,
            format,
            EncodeErrorKind::Serialize,
            Some(e.into()),
        )
    }
}

/// Room for a precomputed envelope prefix. A longer type name just skips the shortcut.
const PREFIX_CAP: usize = 192;

/// The writer's exact bytes before the payload of one message type's current version
/// without headers, in both codecs, computed at compile time for each [`Message`].
///
/// The hottest decode is then one comparison of the input's start with these bytes.
///
/// [`Message`]: crate::Message
#[doc(hidden)]
pub struct Prefixes {
    json: [u8; PREFIX_CAP],
    json_len: usize,
    msgpack: [u8; PREFIX_CAP],
    msgpack_len: usize,
}

impl Prefixes {
    /// Both prefixes of `name` at `version`; empty where the name needs escaping or is too
    /// long to hold.
    pub const fn of(name: &str, version: u32) -> Prefixes {
        let mut p = Prefixes {
            json: [0; PREFIX_CAP],
            json_len: 0,
            msgpack: [0; PREFIX_CAP],
            msgpack_len: 0,
        };
        let n = name.as_bytes();
        // Name, the longest version (10 digits or 5 bytes) and the keys must all fit.
        if !is_plain_name(name) || n.len() + 40 > PREFIX_CAP {
            return p;
        }
        let mut j = Buf { b: p.json, len: 0 };
        j = j.push(b"{\"type\":\"").push(n).push(b"\",\"version\":");
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = version;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        j = j.push(digits.split_at(i).1).push(b",\"payload\":");
        p.json = j.b;
        p.json_len = j.len;

        let mut m = Buf {
            b: p.msgpack,
            len: 0,
        };
        m = m.push(b"\x83\xa4type");
        m = match n.len() {
            0..32 => m.push(&[0xa0 | n.len() as u8]),
            _ => m.push(&[0xd9, n.len() as u8]),
        };
        m = m.push(n).push(b"\xa7version");
        let be = version.to_be_bytes();
        m = match version {
            0..128 => m.push(&[version as u8]),
            128..256 => m.push(&[0xcc, version as u8]),
            256..65536 => m.push(&[0xcd, be[2], be[3]]),
            _ => m.push(&[0xce, be[0], be[1], be[2], be[3]]),
        };
        m = m.push(b"\xa7payload");
        p.msgpack = m.b;
        p.msgpack_len = m.len;
        p
    }

    /// `{"type":"<name>","version":<version>,"payload":`, or empty.
    #[inline]
    pub(crate) fn json(&'static self) -> &'static [u8] {
        self.json.get(..self.json_len).unwrap_or_default()
    }

    /// The MessagePack equivalent of [`Prefixes::json`], or empty.
    #[inline]
    pub(crate) fn msgpack(&'static self) -> &'static [u8] {
        self.msgpack.get(..self.msgpack_len).unwrap_or_default()
    }
}

/// A fixed buffer filled in const context.
struct Buf {
    b: [u8; PREFIX_CAP],
    len: usize,
}

impl Buf {
    const fn push(mut self, bytes: &[u8]) -> Buf {
        let mut i = 0;
        while i < bytes.len() {
            self.b[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }
}

/// The type name at the start of the writer's own layout, borrowed, if it needs no
/// unescaping: enough to pick a handler before anything else is read.
#[inline]
pub(crate) fn peek_name(raw: Raw<'_>) -> Option<&str> {
    match raw {
        Raw::Str(s) => {
            let rest = s.strip_prefix("{\"type\":\"")?;
            let end = rest.bytes().position(|c| c == b'"' || c == b'\\')?;
            (rest.as_bytes()[end] == b'"').then(|| rest.get(..end))?
        }
        Raw::Bytes(b) => {
            let rest = b
                .strip_prefix(b"\x83\xa4type")
                .or_else(|| b.strip_prefix(b"\x84\xa4type"))?;
            let (&marker, rest) = rest.split_first()?;
            let (len, rest) = match marker {
                0xa0..=0xbf => (usize::from(marker & 0x1f), rest),
                0xd9 => (usize::from(*rest.first()?), rest.get(1..)?),
                _ => return None,
            };
            std::str::from_utf8(rest.get(..len)?).ok()
        }
    }
}

/// The payload of the writer's own form of `T`'s current version, recognised by its exact
/// prefix (the envelope's closing brace must follow it in JSON). JSON must come as text (see
/// [`Raw::text`]).
#[inline]
pub(crate) fn exact<'a, T: crate::Message>(raw: Raw<'a>) -> Option<(Format, PayloadRef<'a>)> {
    match raw {
        Raw::Str(s) => {
            let prefix = T::__META.prefixes.json();
            let b = s.as_bytes();
            if prefix.is_empty() || !b.starts_with(prefix) {
                return None;
            }
            let mut end = b.len();
            while end > prefix.len() && is_json_ws(b[end - 1]) {
                end -= 1;
            }
            if end <= prefix.len() + 1 || b[end - 1] != b'}' {
                return None;
            }
            Some((
                Format::Json,
                PayloadRef::JsonStr(s.get(prefix.len()..end - 1)?),
            ))
        }
        Raw::Bytes(b) => {
            let prefix = T::__META.prefixes.msgpack();
            let payload = b.strip_prefix(prefix)?;
            if prefix.is_empty() || payload.is_empty() {
                return None;
            }
            Some((Format::MessagePack, PayloadRef::MessagePack(payload)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each precomputed prefix must be exactly what the writers emit before the payload.
    #[test]
    fn prefixes_match_the_writers() {
        let long = "N".repeat(PREFIX_CAP);
        let names = [
            "A",
            "AddPonkaToImage",
            &"x".repeat(31),
            &"y".repeat(32),
            &"z".repeat(150),
        ];
        let versions = [1, 9, 10, 127, 128, 255, 256, 65_535, 65_536, u32::MAX];
        for name in names {
            for version in versions {
                let p: &'static Prefixes = Box::leak(Box::new(Prefixes::of(name, version)));
                let mut json = Vec::new();
                write_json(&mut json, name, version, &Headers::new(), &0u8).unwrap();
                assert_eq!(p.json(), &json[..json.len() - 2], "{name} v{version}");
                let mut pack = Vec::new();
                write_msgpack(&mut pack, name, version, &Headers::new(), &0u8).unwrap();
                assert_eq!(p.msgpack(), &pack[..pack.len() - 1], "{name} v{version}");
            }
        }
        for name in ["a\"b", "a\\b", "", &long] {
            let p: &'static Prefixes = Box::leak(Box::new(Prefixes::of(name, 1)));
            assert!(p.json().is_empty() && p.msgpack().is_empty(), "{name:?}");
        }
    }
}
