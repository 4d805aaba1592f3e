//! The wire test vectors in `tests/vectors/`: every envelope through both parsers (the fast
//! path and the full parser, which must agree), `peek`, and the split form, against the
//! language-neutral outcomes of `tests/vectors/expected.json` (described in its README).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use upcaster::{Error, ErrorKind, Format, Header, Malformation, Message, Registry};

/// `expected.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    format: u32,
    vectors: Vec<Vector>,
    split: Vec<SplitVector>,
}

/// One envelope file and what every reader must make of it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    file: String,
    description: String,
    /// The writer's own layout: the fast path must take it.
    #[serde(default)]
    fast_path: bool,
    outcome: String,
    #[serde(default)]
    header: Option<Value>,
    /// Present when the message is accepted; `null` is a payload like any other.
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// One split-form message: broker headers `type` and `version` (as text), and a body file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitVector {
    file: String,
    description: String,
    #[serde(rename = "type")]
    type_name: String,
    version: String,
    codec: String,
    outcome: String,
    #[serde(default)]
    header: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The error classes of the format, each a `Malformation`.
const CLASSES: [&str; 8] = [
    "not-an-envelope",
    "syntax",
    "missing-key",
    "duplicate-key",
    "invalid-type",
    "invalid-version",
    "invalid-headers",
    "trailing-bytes",
];

/// What a reader made of a message, in the terms of `expected.json`.
#[derive(Debug, PartialEq)]
enum Found {
    Ok { header: Value, payload: Value },
    Error { class: String, key: Option<String> },
}

/// What an entry of `expected.json` says, as a [`Found`], or what is wrong with the entry.
fn entry_outcome(
    description: &str,
    outcome: &str,
    header: &Option<Value>,
    payload: &Option<Value>,
    error: &Option<String>,
    key: &Option<String>,
) -> Result<Found, String> {
    if description.trim().is_empty() {
        return Err("no description".to_owned());
    }
    match (outcome, header, payload, error) {
        ("ok", Some(header), Some(payload), None) if key.is_none() => Ok(Found::Ok {
            header: header.clone(),
            payload: payload.clone(),
        }),
        ("error", None, None, Some(class)) => {
            if !CLASSES.contains(&class.as_str()) {
                return Err(format!("unknown error class {class:?}"));
            }
            let keyed = matches!(class.as_str(), "missing-key" | "duplicate-key");
            match key {
                Some(k) if keyed && ["type", "version", "headers", "payload"].contains(&&**k) => {}
                None if !keyed => {}
                key => return Err(format!("error {class:?} with key {key:?}")),
            }
            Ok(Found::Error {
                class: class.clone(),
                key: key.clone(),
            })
        }
        _ => Err(
            "an entry is either \"outcome\": \"ok\" with header and payload, or \
                  \"outcome\": \"error\" with error (and key)"
                .to_owned(),
        ),
    }
}

fn codec(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::MessagePack => "msgpack",
    }
}

fn header_value(header: &Header<'_>) -> Value {
    let headers: serde_json::Map<String, Value> = header
        .headers
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    json!({
        "codec": codec(header.format),
        "type": &*header.type_name,
        "version": header.version,
        "headers": headers,
    })
}

/// The class (and key) of a decode error; anything but a malformed envelope is named as is.
fn error_found(e: &Error) -> Found {
    let (class, key) = match e.kind() {
        ErrorKind::Malformed { problem, .. } => match problem {
            Malformation::NotAnEnvelope => ("not-an-envelope", None),
            Malformation::Syntax(_) => ("syntax", None),
            Malformation::MissingKey(k) => ("missing-key", Some(*k)),
            Malformation::DuplicateKey(k) => ("duplicate-key", Some(*k)),
            Malformation::InvalidType(_) => ("invalid-type", None),
            Malformation::InvalidVersion(_) => ("invalid-version", None),
            Malformation::InvalidHeaders(_) => ("invalid-headers", None),
            Malformation::TrailingBytes => ("trailing-bytes", None),
            other => {
                return Found::Error {
                    class: format!("unclassified {other:?}"),
                    key: None,
                }
            }
        },
        other => {
            return Found::Error {
                class: format!("not a malformed envelope: {other:?}"),
                key: None,
            }
        }
    };
    Found::Error {
        class: class.to_owned(),
        key: key.map(str::to_owned),
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn load() -> Expected {
    let path = dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Runs one envelope through the full parser, the fast path and `peek`.
fn check_envelope(v: &Vector, bytes: &[u8], fast_taken: &mut usize, problems: &mut Vec<String>) {
    let mut fail = |what: String| problems.push(format!("{}: {what}", v.file));
    let expected = match entry_outcome(
        &v.description,
        &v.outcome,
        &v.header,
        &v.payload,
        &v.error,
        &v.key,
    ) {
        Ok(expected) => expected,
        Err(e) => return fail(format!("bad entry in expected.json: {e}")),
    };
    if v.fast_path && !matches!(expected, Found::Ok { .. }) {
        fail("bad entry in expected.json: fast_path on a vector that is not ok".into());
    }

    // The full parser: the outcome the format specifies.
    let full = upcaster::read_untyped(bytes);
    let found = match &full {
        Ok((header, payload)) => Found::Ok {
            header: header_value(header),
            payload: payload.clone(),
        },
        Err(e) => error_found(e),
    };
    if found != expected {
        let message = full
            .as_ref()
            .err()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        fail(format!(
            "full parser: expected {expected:?}, found {found:?}{message}"
        ));
    }

    // The fast path: where it accepts, exactly what the full parser reads.
    match (upcaster::__private::fast_path(bytes), &full) {
        (Some((fh, fp)), Ok((h, p))) => {
            *fast_taken += 1;
            if fh != *h || fp != *p {
                fail(format!(
                    "the fast path read {} {fp}, the full parser {} {p}",
                    header_value(&fh),
                    header_value(h)
                ));
            }
        }
        (Some((fh, fp)), Err(e)) => fail(format!(
            "the fast path accepted {} {fp}, the full parser refused it: {e}",
            header_value(&fh)
        )),
        (None, _) if v.fast_path => fail(
            "the fast path declined a vector marked fast_path (the writer's own layout)".into(),
        ),
        (None, _) => {}
    }

    // `peek` reads the header by the same rules: the same header, or the same error.
    match (upcaster::peek(bytes), &full) {
        (Ok(ph), Ok((h, _))) if ph == *h => {}
        (Err(pe), Err(e)) if format!("{:?}", pe.kind()) == format!("{:?}", e.kind()) => {}
        (peeked, _) => fail(format!(
            "peek disagrees with read_untyped: peek {:?}, read_untyped {:?}",
            peeked.map(|h| header_value(&h)).map_err(|e| e.to_string()),
            full.as_ref()
                .map(|(h, _)| header_value(h))
                .map_err(|e| e.to_string())
        )),
    }
}

/// A probe for split-form bodies: any payload, as a JSON value.
#[derive(Serialize, Deserialize, Message)]
#[serde(transparent)]
#[message(name = "Ping", version = 1)]
struct PingV1(Value);

/// The same probe at the largest version.
#[derive(Serialize, Deserialize, Message)]
#[serde(transparent)]
#[message(name = "Ping", version = 4294967295)]
struct PingMax(Value);

/// Runs one split-form message through `Registry::decode_split`.
///
/// Only a registered type's payload is read, so the valid split vectors use the probe type
/// `Ping` at version 1 or 4294967295. The probe accepts any value, so a payload error from
/// it means the body is not exactly one value of its codec: `syntax` or `trailing-bytes`,
/// which Rust's payload error does not tell apart.
fn check_split(
    v: &SplitVector,
    body: &[u8],
    (v1, max): &(Registry, Registry),
    problems: &mut Vec<String>,
) {
    let mut fail = |what: String| problems.push(format!("{}: {what}", v.file));
    let expected = match entry_outcome(
        &v.description,
        &v.outcome,
        &v.header,
        &v.payload,
        &v.error,
        &None,
    ) {
        Ok(expected) => expected,
        Err(e) => return fail(format!("bad entry in expected.json: {e}")),
    };
    let format = match v.codec.as_str() {
        "json" => Format::Json,
        "msgpack" => Format::MessagePack,
        other => return fail(format!("bad entry in expected.json: codec {other:?}")),
    };
    let ok = |header: &Header<'_>, payload: &Value| Found::Ok {
        header: json!({"type": &*header.type_name, "version": header.version}),
        payload: payload.clone(),
    };
    let (name, version) = (v.type_name.as_str(), v.version.as_str());
    let decoded = match v1.decode_split::<PingV1>(name, version, body, format) {
        Err(e) if e.is_future_version() => max
            .decode_split::<PingMax>(name, version, body, format)
            .map(|d| ok(&d.header, &d.message.0)),
        other => other.map(|d| ok(&d.header, &d.message.0)),
    };
    let (agrees, found) = match decoded {
        Ok(found) => (found == expected, found),
        Err(e) if matches!(e.kind(), ErrorKind::PayloadInvalid { .. }) => {
            let agrees = matches!(&expected, Found::Error { class, .. }
                if class == "syntax" || class == "trailing-bytes");
            let class = format!("payload unreadable ({e})");
            (agrees, Found::Error { class, key: None })
        }
        Err(e) => {
            let found = error_found(&e);
            (found == expected, found)
        }
    };
    if !agrees {
        fail(format!(
            "decode_split: expected {expected:?}, found {found:?}"
        ));
    }
}

#[test]
fn wire_vectors() {
    let expected = load();
    let mut problems = Vec::new();
    if expected.format != 1 {
        problems.push(format!("expected.json: unknown format {}", expected.format));
    }

    // Every file is a vector and every vector a file, each once: nothing is skipped.
    let mut listed = BTreeSet::new();
    let files = expected.vectors.iter().map(|v| &v.file);
    for file in files.chain(expected.split.iter().map(|v| &v.file)) {
        if !listed.insert(file.clone()) {
            problems.push(format!("{file}: listed twice in expected.json"));
        }
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "expected.json" && name != "README.md")
        .collect();
    for file in on_disk.difference(&listed) {
        problems.push(format!("{file}: not listed in expected.json"));
    }
    for file in listed.difference(&on_disk) {
        problems.push(format!(
            "{file}: listed in expected.json, missing from tests/vectors/"
        ));
    }

    let read = |file: &str| std::fs::read(dir().join(file)).ok();
    let mut fast_taken = 0;
    for v in &expected.vectors {
        if let Some(bytes) = read(&v.file) {
            check_envelope(v, &bytes, &mut fast_taken, &mut problems);
        }
    }
    let registries = (
        Registry::builder().register::<PingV1>().build().unwrap(),
        Registry::builder().register::<PingMax>().build().unwrap(),
    );
    for v in &expected.split {
        if let Some(body) = read(&v.file) {
            check_split(v, &body, &registries, &mut problems);
        }
    }

    // Both paths agreeing means nothing if the fast path never took a vector.
    let marked = expected.vectors.iter().filter(|v| v.fast_path).count();
    if marked == 0 || fast_taken < marked {
        problems.push(format!(
            "the fast path took {fast_taken} vectors; {marked} are marked fast_path"
        ));
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) with the {} wire vectors:\n{}",
        problems.len(),
        expected.vectors.len() + expected.split.len(),
        problems.join("\n")
    );
}
