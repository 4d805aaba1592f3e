//! Every error kind, produced by a crafted input, keeps the original bytes and the header
//! read so far.

mod common;

use common::ponka::{self, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use common::{malformation, Pack};
use serde::{Deserialize, Serialize};
use upcaster::{Decoded, Dispatcher, ErrorKind, Format, Malformation, Message, Registry};

fn registry() -> Registry {
    ponka::registry().unwrap()
}

#[test]
fn truncated_json_is_malformed_at_its_end() {
    let input = br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    match e.kind() {
        ErrorKind::Malformed {
            format: Format::Json,
            offset,
            problem: Malformation::Syntax(message),
        } => {
            assert_eq!(*offset, input.len());
            assert!(message.contains("EOF"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.raw(), input);
    assert_eq!(e.header().type_name.as_deref(), Some("AddPonkaToImage"));
    assert_eq!(e.header().version, Some(2));
    assert!(
        e.to_string()
            .starts_with("malformed JSON envelope at byte 61"),
        "{e}"
    );
}

#[test]
fn msgpack_string_where_the_version_should_be() {
    let input = Pack::map(3)
        .str("type")
        .str("AddPonkaToImage")
        .str("version")
        .str("2")
        .str("payload")
        .raw(&[0x80])
        .done();
    let e = registry().decode::<AddPonkaToImage>(&input).unwrap_err();
    match e.kind() {
        ErrorKind::Malformed {
            format: Format::MessagePack,
            offset,
            problem: Malformation::InvalidVersion(found),
        } => {
            assert_eq!(*offset, 1 + 5 + 16 + 8, "offset of the version value");
            assert_eq!(found, "a string");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.header().type_name.as_deref(), Some("AddPonkaToImage"));
    assert_eq!(e.into_raw(), input);
}

#[test]
fn duplicate_version_keys() {
    let input =
        br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":1},"version":2}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert_eq!(malformation(&e), &Malformation::DuplicateKey("version"));
    assert_eq!(
        e.to_string(),
        "malformed JSON envelope at byte 74: duplicate key `version`"
    );
    assert_eq!(input[74], b'"', "at the end of the second key");
    assert_eq!(e.header().version, None, "no value wins");
    assert_eq!(e.header().type_name.as_deref(), Some("AddPonkaToImage"));
    assert_eq!(e.raw(), input);
}

#[test]
fn version_zero_and_version_above_u32_max() {
    for (version, shown) in [("0", "0"), ("4294967296", "4294967296")] {
        let input = format!(r#"{{"type":"AddPonkaToImage","version":{version},"payload":{{}}}}"#);
        let e = registry()
            .decode::<AddPonkaToImage>(input.as_bytes())
            .unwrap_err();
        assert_eq!(
            malformation(&e),
            &Malformation::InvalidVersion(shown.to_owned())
        );
        assert_eq!(
            e.to_string(),
            format!("malformed JSON envelope at byte 36: `version` must be an integer from 1 to 4294967295, found {shown}")
        );
    }
}

#[test]
fn unknown_type() {
    let input = br#"{"type":"AddKittenToImage","version":1,"payload":{}}"#;
    let registry = registry();
    let e = registry.decode::<AddPonkaToImage>(input).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::UnknownType { type_name } if type_name == "AddKittenToImage")
    );
    assert_eq!(e.to_string(), "unknown message type `AddKittenToImage`");
    let dispatcher = Dispatcher::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| ())
        .unwrap();
    let e = dispatcher.dispatch(input).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::UnknownType { .. }));
    assert_eq!(e.raw(), input);
}

#[test]
fn another_registered_type_than_asked_for() {
    let input =
        br#"{"type":"DeleteImagePost","version":1,"payload":{"imagePost":1,"filename":"f"}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::UnexpectedType { expected: "AddPonkaToImage", found } if found == "DeleteImagePost"
    ));
}

#[test]
fn future_version_is_distinguishable_for_requeueing() {
    let input = br#"{"type":"AddPonkaToImage","version":3,"headers":{"message-id":"m-7"},"payload":{"imagePost":{"id":1}}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert!(e.is_future_version());
    assert!(matches!(
        e.kind(),
        ErrorKind::FutureVersion {
            type_name: "AddPonkaToImage",
            version: 3,
            current: 2
        }
    ));
    assert_eq!(e.header().headers.get("message-id"), Some("m-7"));
    assert_eq!(e.into_raw(), input);
}

#[test]
fn missing_upcaster() {
    // Today's type, registered without the v1 → v2 step.
    let registry = Registry::builder()
        .register::<AddPonkaToImage>()
        .build()
        .unwrap();
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":4}}"#;
    let e = registry.decode::<AddPonkaToImage>(input).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::MissingUpcaster {
            type_name: "AddPonkaToImage",
            version: 1,
            current: 2
        }
    ));
    assert_eq!(
        e.to_string(),
        "`AddPonkaToImage` has no upcaster from v1 toward v2: add a migration file or an `Upcaster` for v1→v2"
    );
    assert!(!e.is_future_version());
}

#[test]
fn upcast_failed_names_the_step_the_operation_and_the_pointer() {
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePost":4}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    match e.kind() {
        ErrorKind::UpcastFailed {
            type_name,
            from,
            to,
            reason,
        } => {
            assert_eq!((*type_name, *from, *to), ("AddPonkaToImage", 1, 2));
            let failure = reason
                .downcast_ref::<upcaster::migration::OpFailure>()
                .expect("a migration step fails with an OpFailure");
            assert_eq!(failure.file, "AddPonkaToImage/v1-to-v2.json");
            assert_eq!(failure.index, 0);
            assert_eq!(failure.message, "/imagePostId not found");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "upcasting `AddPonkaToImage` v1→v2 failed: op 0 (move /imagePostId → /imagePost): /imagePostId not found"
    );
    assert!(
        std::error::Error::source(&e).is_some(),
        "the reason is the source"
    );
    assert_eq!(e.raw(), input);
}

#[test]
fn a_rust_step_failure_carries_its_own_reason() {
    let registry = Registry::builder()
        .register::<AddPonkaToImage>()
        .upcaster::<AddPonkaToImage>(upcaster::Upcaster::new(1, 2, |_| {
            Err("v1 payloads are no longer accepted".into())
        }))
        .build()
        .unwrap();
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":4}}"#;
    let e = registry.decode::<AddPonkaToImage>(input).unwrap_err();
    assert_eq!(
        e.to_string(),
        "upcasting `AddPonkaToImage` v1→v2 failed: v1 payloads are no longer accepted"
    );
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(version = 1)]
struct Order {
    lines: Vec<Line>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    sku: String,
    price: u32,
}

#[test]
fn payload_invalid_carries_a_json_pointer() {
    let registry = Registry::builder().register::<Order>().build().unwrap();
    let input = br#"{"type":"Order","version":1,"payload":{"lines":[{"sku":"a","price":1},{"sku":"b","price":"two"}]}}"#;
    let e = registry.decode::<Order>(input).unwrap_err();
    match e.kind() {
        ErrorKind::PayloadInvalid {
            type_name,
            version,
            pointer,
            message,
        } => {
            assert_eq!((*type_name, *version), ("Order", 1));
            assert_eq!(pointer, "/lines/1/price");
            assert!(
                message.starts_with("invalid type: string \"two\""),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The same in MessagePack, and through the split form.
    let payload = serde_json::json!({"lines": [{"sku": "a"}]});
    let packed = Pack::map(3)
        .str("type")
        .str("Order")
        .str("version")
        .uint(1)
        .str("payload")
        .value(&payload)
        .done();
    let e = registry.decode::<Order>(&packed).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::PayloadInvalid { pointer, message, .. }
            if pointer == "/lines/0" && message == "missing field `price`"),
        "{e}"
    );
    let body = serde_json::to_vec(&payload).unwrap();
    let e = registry
        .decode_split::<Order>("Order", "1", &body, Format::Json)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`Order` v1 payload invalid at `/lines/0`: missing field `price`"
    );
}

#[test]
fn payload_invalid_after_an_upcast_points_into_the_upcast_payload() {
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":"seven"}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    match e.kind() {
        ErrorKind::PayloadInvalid {
            version, pointer, ..
        } => {
            assert_eq!(*version, 2, "it failed as v2, after the rename");
            assert_eq!(pointer, "/imagePost");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.header().version,
        Some(1),
        "the header says how it arrived"
    );
}

#[test]
fn payload_that_is_not_an_object_fails_the_step() {
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":7}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::UpcastFailed { reason, .. }
            if reason.to_string() == "op 0 (move /imagePostId → /imagePost): /imagePostId not found: its parent is a number"),
        "{e}"
    );
}

#[test]
fn unhandled_type_in_a_dispatcher() {
    let registry = registry();
    let dispatcher = Dispatcher::new(&registry)
        .on(|_: Decoded<AddPonkaToImage>| ())
        .unwrap();
    let input = registry
        .encode(
            &ImagePostDeletedEvent {
                filename: "f".into(),
            },
            Format::Json,
        )
        .unwrap();
    let e = dispatcher.dispatch(&input).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::Unhandled {
            type_name: "ImagePostDeletedEvent"
        }
    ));
    assert_eq!(e.into_raw(), input);
}

#[test]
fn not_an_envelope() {
    let registry = registry();
    for input in [&b""[..], b"[1,2]", b"\x93\x01\x02\x03", b"   ", b"\xff\xfe"] {
        let e = registry.decode::<DeleteImagePost>(input).unwrap_err();
        assert_eq!(malformation(&e), &Malformation::NotAnEnvelope, "{input:?}");
        assert_eq!(e.raw(), input);
    }
}

#[test]
fn missing_keys_are_named() {
    let registry = registry();
    for (key, input) in [
        ("type", r#"{"version":1,"payload":{}}"#),
        ("version", r#"{"type":"DeleteImagePost","payload":{}}"#),
        ("payload", r#"{"type":"DeleteImagePost","version":1}"#),
    ] {
        let e = registry
            .decode::<DeleteImagePost>(input.as_bytes())
            .unwrap_err();
        assert_eq!(malformation(&e), &Malformation::MissingKey(key), "{input}");
    }
}

#[test]
fn type_must_be_a_non_empty_string() {
    let registry = registry();
    for (input, found) in [
        (r#"{"type":7,"version":1,"payload":{}}"#, "a number"),
        (r#"{"type":"","version":1,"payload":{}}"#, "an empty string"),
        (r#"{"type":null,"version":1,"payload":{}}"#, "null"),
    ] {
        let e = registry
            .decode::<DeleteImagePost>(input.as_bytes())
            .unwrap_err();
        assert_eq!(
            malformation(&e),
            &Malformation::InvalidType(found.to_owned()),
            "{input}"
        );
    }
}

#[test]
fn decoding_into_an_older_struct_says_so() {
    let input = br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":1}}"#;
    let e = registry()
        .decode::<ponka::v1::AddPonkaToImage>(input)
        .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::NotCurrent {
            type_name: "AddPonkaToImage",
            version: 1,
            current: 2
        }
    ));
    assert_eq!(
        e.to_string(),
        "`AddPonkaToImage` v1 is not the registry's current version v2: decode into the current struct"
    );
}

#[test]
fn encoding_an_older_struct_is_refused() {
    let e = registry()
        .encode(
            &ponka::v1::AddPonkaToImage { image_post_id: 1 },
            Format::Json,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot encode `AddPonkaToImage` v1 as JSON: this struct is an older version: the registry's current version is v2; encode the current struct (with `write_version` to write an older one)"
    );
    assert_eq!(e.kind, upcaster::EncodeErrorKind::NotCurrent { current: 2 });
    assert!(std::error::Error::source(&e).is_none());
}

#[test]
fn a_payload_the_chain_left_incomplete_says_where_it_came_from() {
    let registry = Registry::builder()
        .register::<AddPonkaToImage>()
        .upcaster::<AddPonkaToImage>(upcaster::Upcaster::new(1, 2, |p| {
            p.as_object_mut().ok_or("not an object")?.clear();
            Ok(())
        }))
        .build()
        .unwrap();
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":4}}"#;
    let e = registry.decode::<AddPonkaToImage>(input).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`AddPonkaToImage` v2 payload invalid: missing field `imagePost` (it arrived as v1; the steps from v1 produced this)"
    );
}

#[test]
fn bytes_of_neither_codec_are_named_as_such() {
    let e = registry().decode::<AddPonkaToImage>(b"hello").unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed envelope at byte 0: not an envelope: expected a JSON object or a MessagePack map"
    );
    assert!(format!("{e:?}").starts_with("Error { message: \"malformed envelope"));
}

#[test]
fn a_bad_field_does_not_hide_the_valid_ones() {
    let input = br#"{"headers":{"message-id":"m1"},"version":1,"type":5,"payload":{"a":1}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert_eq!(
        malformation(&e),
        &Malformation::InvalidType("a number".into())
    );
    assert_eq!(e.header().version, Some(1));
    assert_eq!(e.header().headers.get("message-id"), Some("m1"));
    let input =
        br#"{"headers":{"message-id":"m1"},"type":"AddPonkaToImage","version":0,"payload":{}}"#;
    let e = registry().decode::<AddPonkaToImage>(input).unwrap_err();
    assert_eq!(e.header().headers.get("message-id"), Some("m1"));
    assert_eq!(e.header().type_name.as_deref(), Some("AddPonkaToImage"));
}

#[test]
fn an_older_struct_is_refused_even_for_a_message_of_its_own_version() {
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":1}}"#;
    let spaced = br#" {"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":1}}"#;
    for bytes in [&input[..], &spaced[..]] {
        let e = registry()
            .decode::<ponka::v1::AddPonkaToImage>(bytes)
            .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::NotCurrent {
                    version: 1,
                    current: 2,
                    ..
                }
            ),
            "{e}"
        );
    }
}
