//! The wire format: what the writer emits and what the reader accepts and rejects.

mod common;

use common::ponka::{self, AddPonkaToImage, DeleteImagePost};
use common::{malformation, Pack};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use upcaster::{Decoded, Dispatcher, Format, Headers, Malformation, Registry};

fn registry() -> Registry {
    ponka::registry().unwrap()
}

fn delete() -> DeleteImagePost {
    DeleteImagePost {
        image_post: 10,
        filename: "ponka-10.jpg".into(),
    }
}

fn headers() -> Headers {
    [("message-id", "m-1"), ("correlation-id", "c-9")]
        .into_iter()
        .collect()
}

#[test]
fn json_writer_emits_type_version_headers_payload_without_whitespace() {
    let bytes = registry()
        .encode_with_headers(&delete(), &headers(), Format::Json)
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"DeleteImagePost","version":1,"headers":{"correlation-id":"c-9","message-id":"m-1"},"payload":{"imagePost":10,"filename":"ponka-10.jpg"}}"#
    );
}

#[test]
fn json_writer_omits_empty_headers() {
    let bytes = registry().encode(&delete(), Format::Json).unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"DeleteImagePost","version":1,"payload":{"imagePost":10,"filename":"ponka-10.jpg"}}"#
    );
}

#[test]
fn msgpack_writer_emits_the_same_keys_in_order_with_named_payload_fields() {
    let bytes = registry()
        .encode_with_headers(&delete(), &headers(), Format::MessagePack)
        .unwrap();
    let expected = Pack::map(4)
        .str("type")
        .str("DeleteImagePost")
        .str("version")
        .uint(1)
        .str("headers")
        .raw(&[0x82])
        .str("correlation-id")
        .str("c-9")
        .str("message-id")
        .str("m-1")
        .str("payload")
        .raw(&[0x82])
        .str("imagePost")
        .uint(10)
        .str("filename")
        .str("ponka-10.jpg")
        .done();
    assert_eq!(bytes, expected);
    let no_headers = registry().encode(&delete(), Format::MessagePack).unwrap();
    assert_eq!(no_headers[0], 0x83, "three keys when headers are empty");
}

/// Every order of the four keys, in JSON.
fn json_permutations() -> Vec<String> {
    let parts = [
        r#""type":"DeleteImagePost""#,
        r#""version":1"#,
        r#""headers":{"message-id":"m-1","correlation-id":"c-9"}"#,
        r#""payload":{"filename":"ponka-10.jpg","imagePost":10}"#,
    ];
    let mut out = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let idx = [a, b, c, d];
                    let mut sorted = idx;
                    sorted.sort();
                    if sorted == [0, 1, 2, 3] {
                        let body: Vec<&str> = idx.iter().map(|&i| parts[i]).collect();
                        out.push(format!("{{{}}}", body.join(",")));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn reader_accepts_any_key_order_json() {
    let registry = registry();
    let all = json_permutations();
    assert_eq!(all.len(), 24);
    for text in all {
        let d: Decoded<DeleteImagePost> = registry
            .decode(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(d.message, delete(), "{text}");
        assert_eq!(d.header.headers, headers(), "{text}");
        assert_eq!(d.header.version, 1);
        assert_eq!(d.header.format, Format::Json);
    }
}

#[test]
fn reader_accepts_any_key_order_msgpack() {
    let registry = registry();
    let fields: [(&str, Vec<u8>); 4] = [
        ("type", Pack(vec![]).str("DeleteImagePost").done()),
        ("version", Pack(vec![]).uint(1).done()),
        (
            "headers",
            Pack::map(2)
                .str("message-id")
                .str("m-1")
                .str("correlation-id")
                .str("c-9")
                .done(),
        ),
        ("payload", Pack(vec![]).value(&delete()).done()),
    ];
    let mut count = 0;
    for order in permutations4() {
        let mut p = Pack::map(4);
        for i in order {
            p = p.str(fields[i].0).raw(&fields[i].1);
        }
        let bytes = p.done();
        let d: Decoded<DeleteImagePost> = registry.decode(&bytes).unwrap();
        assert_eq!(d.message, delete());
        assert_eq!(d.header.headers, headers());
        assert_eq!(d.header.format, Format::MessagePack);
        count += 1;
    }
    assert_eq!(count, 24);
}

fn permutations4() -> Vec<[usize; 4]> {
    let mut out = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let mut s = [a, b, c, d];
                    s.sort();
                    if s == [0, 1, 2, 3] {
                        out.push([a, b, c, d]);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn reader_ignores_unknown_top_level_keys() {
    let registry = registry();
    let text = r#"{"trace":{"spans":[1,2,{"x":null}]},"type":"AddPonkaToImage","version":2,"payload":{"imagePost":5},"zz":"later"}"#;
    let d: Decoded<AddPonkaToImage> = registry.decode(text.as_bytes()).unwrap();
    assert_eq!(d.message.image_post, 5);

    let bytes = Pack::map(5)
        .str("trace")
        .raw(&[0x92, 0x01, 0xc0])
        .raw(&[0x07]) // a non-string key …
        .raw(&[0xc4, 0x02, 0xff, 0xff]) // … with a binary value
        .str("type")
        .str("AddPonkaToImage")
        .str("version")
        .uint(2)
        .str("payload")
        .value(&json!({"imagePost": 5}))
        .done();
    let d: Decoded<AddPonkaToImage> = registry.decode(&bytes).unwrap();
    assert_eq!(d.message.image_post, 5);
}

#[test]
fn reader_rejects_each_duplicated_key_json() {
    let registry = registry();
    let cases = [
        (
            "type",
            r#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":1},"type":"DeleteImagePost"}"#,
        ),
        (
            "version",
            r#"{"type":"AddPonkaToImage","version":2,"version":1,"payload":{"imagePost":1}}"#,
        ),
        (
            "version",
            r#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":1},"version":1}"#,
        ),
        (
            "headers",
            r#"{"type":"AddPonkaToImage","version":2,"headers":{},"payload":{"imagePost":1},"headers":{"a":"b"}}"#,
        ),
        (
            "payload",
            r#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":1},"payload":{"imagePost":2}}"#,
        ),
        (
            "type",
            r#"{"typ\u0065":"AddPonkaToImage","version":2,"payload":{"imagePost":1},"type":"AddPonkaToImage"}"#,
        ),
    ];
    for (key, text) in cases {
        let e = registry
            .decode::<AddPonkaToImage>(text.as_bytes())
            .unwrap_err();
        assert_eq!(malformation(&e), &Malformation::DuplicateKey(key), "{text}");
        assert_eq!(e.raw(), text.as_bytes());
    }
}

#[test]
fn reader_rejects_each_duplicated_key_msgpack() {
    let registry = registry();
    let base = |extra: &str| {
        let mut p = Pack::map(4)
            .str("type")
            .str("AddPonkaToImage")
            .str("version")
            .uint(2)
            .str("payload")
            .value(&json!({"imagePost": 1}))
            .str(extra);
        p = match extra {
            "type" => p.str("AddPonkaToImage"),
            "version" => p.uint(2),
            _ => p.value(&json!({"imagePost": 2})),
        };
        p.done()
    };
    for key in ["type", "version", "payload"] {
        let e = registry.decode::<AddPonkaToImage>(&base(key)).unwrap_err();
        assert_eq!(malformation(&e), &Malformation::DuplicateKey(key));
    }
    let headers_twice = Pack::map(5)
        .str("headers")
        .raw(&[0x80])
        .str("type")
        .str("AddPonkaToImage")
        .str("version")
        .uint(2)
        .str("headers")
        .raw(&[0x80])
        .str("payload")
        .value(&json!({"imagePost": 1}))
        .done();
    let e = registry
        .decode::<AddPonkaToImage>(&headers_twice)
        .unwrap_err();
    assert_eq!(malformation(&e), &Malformation::DuplicateKey("headers"));
}

#[test]
fn reader_rejects_versions_outside_1_to_u32_max_json() {
    let registry = registry();
    for bad in [
        "0",
        "-1",
        "1.0",
        "2.5",
        "1e0",
        "\"2\"",
        "4294967296",
        "99999999999999999999",
        "null",
        "true",
        "[2]",
    ] {
        for text in [
            format!(r#"{{"type":"AddPonkaToImage","version":{bad},"payload":{{"imagePost":1}}}}"#),
            format!(r#"{{"payload":{{"imagePost":1}},"version":{bad},"type":"AddPonkaToImage"}}"#),
        ] {
            let e = registry
                .decode::<AddPonkaToImage>(text.as_bytes())
                .unwrap_err();
            assert!(
                matches!(malformation(&e), Malformation::InvalidVersion(_)),
                "{text}: {e}"
            );
            assert_eq!(e.header().type_name.as_deref(), Some("AddPonkaToImage"));
            assert_eq!(e.header().version, None);
        }
    }
    // The top of the range is fine: it is merely newer than this code.
    let text = r#"{"type":"AddPonkaToImage","version":4294967295,"payload":{}}"#;
    let e = registry
        .decode::<AddPonkaToImage>(text.as_bytes())
        .unwrap_err();
    assert!(e.is_future_version());
    assert_eq!(e.header().version, Some(u32::MAX));
}

#[test]
fn reader_rejects_versions_outside_1_to_u32_max_msgpack() {
    let registry = registry();
    let bad: [&[u8]; 9] = [
        &[0x00],                               // 0
        &[0xff],                               // -1, negative fixint
        &[0xd0, 0xfe],                         // -2 as int8
        &[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0], // 1.0 as float64
        &[0xa1, b'2'],                         // "2"
        &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0],       // 4294967296
        &[0xc0],                               // nil
        &[0xc3],                               // true
        &[0x91, 0x02],                         // [2]
    ];
    for version in bad {
        let bytes = Pack::map(3)
            .str("type")
            .str("AddPonkaToImage")
            .str("version")
            .raw(version)
            .str("payload")
            .value(&json!({"imagePost": 1}))
            .done();
        let e = registry.decode::<AddPonkaToImage>(&bytes).unwrap_err();
        assert!(
            matches!(malformation(&e), Malformation::InvalidVersion(_)),
            "{version:02x?}: {e}"
        );
    }
    // Any integer encoding of a valid version is accepted.
    for version in [
        &[0xd2, 0, 0, 0, 2][..],
        &[0xcd, 0, 2],
        &[0xcf, 0, 0, 0, 0, 0, 0, 0, 2],
    ] {
        let bytes = Pack::map(3)
            .str("type")
            .str("AddPonkaToImage")
            .str("version")
            .raw(version)
            .str("payload")
            .value(&json!({"imagePost": 1}))
            .done();
        let d: Decoded<AddPonkaToImage> = registry.decode(&bytes).unwrap();
        assert_eq!(d.header.version, 2);
    }
}

#[test]
fn reader_rejects_every_truncation() {
    let registry = registry();
    for format in [Format::Json, Format::MessagePack] {
        let bytes = registry
            .encode_with_headers(&delete(), &headers(), format)
            .unwrap();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            let e = registry
                .decode::<DeleteImagePost>(cut)
                .expect_err(&format!("{format} cut at {len} decoded"));
            assert!(
                matches!(e.kind(), upcaster::ErrorKind::Malformed { .. }),
                "{format} cut at {len}: {e}"
            );
            assert_eq!(e.raw(), cut);
        }
    }
}

#[test]
fn reader_rejects_trailing_bytes() {
    let registry = registry();
    let mut bytes = registry.encode(&delete(), Format::MessagePack).unwrap();
    bytes.push(0xc0);
    let e = registry.decode::<DeleteImagePost>(&bytes).unwrap_err();
    assert_eq!(malformation(&e), &Malformation::TrailingBytes);

    let text =
        r#"{"type":"DeleteImagePost","version":1,"payload":{"imagePost":1,"filename":"f"}} x"#;
    let e = registry
        .decode::<DeleteImagePost>(text.as_bytes())
        .unwrap_err();
    assert_eq!(malformation(&e), &Malformation::TrailingBytes, "{e}");
}

/// Input that starts exactly like the writer's current version but goes on differently
/// must be judged by the full parser, through `decode` and `dispatch` alike.
#[test]
fn the_writers_prefix_alone_proves_nothing() {
    let registry = registry();
    let dispatcher = Dispatcher::new(&registry)
        .on(|m: Decoded<DeleteImagePost>| m.message.image_post)
        .unwrap();
    let prefix =
        r#"{"type":"DeleteImagePost","version":1,"payload":{"imagePost":1,"filename":"f"}"#;
    let refused = [
        format!(r#"{prefix},"payload":{{"imagePost":2,"filename":"g"}}}}"#),
        format!(r#"{prefix},"type":"DeleteImagePost"}}"#),
        format!("{prefix}}}}}"),
        prefix.to_string(),
    ];
    for text in &refused {
        let e = registry.decode_str::<DeleteImagePost>(text).unwrap_err();
        malformation(&e);
        assert_eq!(e.raw(), text.as_bytes());
        let e = dispatcher.dispatch(text.as_bytes()).unwrap_err();
        malformation(&e);
    }
    // An unknown key after the payload is allowed, and the full parser reads past it.
    let extra = format!(r#"{prefix},"producer":"v1-worker"}} "#);
    let d = registry.decode_str::<DeleteImagePost>(&extra).unwrap();
    assert_eq!(d.message.image_post, 1);
    assert_eq!(dispatcher.dispatch_str(&extra).unwrap(), 1);

    let mut pack = registry.encode(&delete(), Format::MessagePack).unwrap();
    assert_eq!(dispatcher.dispatch(&pack).unwrap(), 10);
    pack.push(0x01);
    let e = dispatcher.dispatch(&pack).unwrap_err();
    assert_eq!(malformation(&e), &Malformation::TrailingBytes);
    assert_eq!(e.raw(), &pack[..]);
}

#[test]
fn headers_must_be_unique_strings() {
    let registry = registry();
    for headers in [r#"{"a":"1","a":"2"}"#, r#"{"a":1}"#, r#"["a"]"#, r#""a""#] {
        let text = format!(
            r#"{{"type":"AddPonkaToImage","version":2,"headers":{headers},"payload":{{"imagePost":1}}}}"#
        );
        let e = registry
            .decode::<AddPonkaToImage>(text.as_bytes())
            .unwrap_err();
        assert!(
            matches!(malformation(&e), Malformation::InvalidHeaders(_)),
            "{text}: {e}"
        );
    }
    let bytes = Pack::map(4)
        .str("type")
        .str("AddPonkaToImage")
        .str("version")
        .uint(2)
        .str("headers")
        .raw(&[0x82])
        .str("a")
        .str("1")
        .str("a")
        .str("2")
        .str("payload")
        .value(&json!({"imagePost": 1}))
        .done();
    let e = registry.decode::<AddPonkaToImage>(&bytes).unwrap_err();
    assert_eq!(
        malformation(&e),
        &Malformation::InvalidHeaders("duplicate header `a`".into())
    );
}

#[test]
fn pretty_printed_and_escaped_json_reads_like_the_canonical_form() {
    let registry = registry();
    let pretty = "{\n  \"type\": \"Add\\u0050onkaToImage\",\n  \"version\": 2,\n  \"payload\": { \"imagePost\": 3 }\n}\n";
    let d: Decoded<AddPonkaToImage> = registry.decode_str(pretty).unwrap();
    assert_eq!(d.message.image_post, 3);
    assert_eq!(d.header.type_name, "AddPonkaToImage");
}

#[test]
fn peek_reads_the_header_only() {
    let registry = registry();
    let bytes = registry
        .encode_with_headers(&delete(), &headers(), Format::MessagePack)
        .unwrap();
    let header = upcaster::peek(&bytes).unwrap();
    assert_eq!(header.type_name, "DeleteImagePost");
    assert_eq!(header.version, 1);
    assert_eq!(header.headers, headers());
}

#[test]
fn split_form_round_trips_in_both_codecs() {
    let registry = registry();
    for format in [Format::Json, Format::MessagePack] {
        let split = registry.encode_split(&delete(), format).unwrap();
        assert_eq!((&*split.type_name, split.version), ("DeleteImagePost", 1));
        let body_alone = match format {
            Format::Json => serde_json::to_vec(&delete()).unwrap(),
            Format::MessagePack => rmp_serde::to_vec_named(&delete()).unwrap(),
        };
        assert_eq!(split.body, body_alone, "the body is the bare payload");
        let d: Decoded<DeleteImagePost> = registry
            .decode_split(&split.type_name, "1", &split.body, format)
            .unwrap();
        assert_eq!(d.message, delete());
        assert_eq!(d.header.format, format);
    }
}

#[test]
fn split_form_checks_version_and_body_like_the_envelope() {
    let registry = registry();
    let body = serde_json::to_vec(&json!({"imagePost": 1})).unwrap();
    for bad in ["0", "-1", "1.5", "", "4294967296", "two", " 2"] {
        let e = registry
            .decode_split::<AddPonkaToImage>("AddPonkaToImage", bad, &body, Format::Json)
            .unwrap_err();
        assert!(
            matches!(malformation(&e), Malformation::InvalidVersion(_)),
            "{bad:?}: {e}"
        );
        assert_eq!(e.raw(), &body[..]);
    }
    let mut packed = rmp_serde::to_vec_named(&json!({"imagePost": 1})).unwrap();
    packed.push(0x01);
    let e = registry
        .decode_split::<AddPonkaToImage>("AddPonkaToImage", "2", &packed, Format::MessagePack)
        .unwrap_err();
    assert!(
        matches!(e.kind(), upcaster::ErrorKind::PayloadInvalid { message, .. } if message == "trailing bytes after the payload"),
        "{e}"
    );
    let e = registry
        .decode_split::<AddPonkaToImage>(
            "AddPonkaToImage",
            "2",
            b"{\"imagePost\":1} {}",
            Format::Json,
        )
        .unwrap_err();
    assert!(
        matches!(e.kind(), upcaster::ErrorKind::PayloadInvalid { .. }),
        "{e}"
    );
}

fn arb_delete() -> impl Strategy<Value = DeleteImagePost> {
    (any::<u64>(), ".{0,40}").prop_map(|(image_post, filename)| DeleteImagePost {
        image_post,
        filename,
    })
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    proptest::collection::btree_map(".{0,8}", ".{0,12}", 0..4).prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let registry = registry();
        if let Err(e) = registry.decode::<AddPonkaToImage>(&bytes) {
            prop_assert_eq!(e.raw(), &bytes[..]);
        }
        let _ = upcaster::peek(&bytes);
        let _ = registry.decode_split::<AddPonkaToImage>("AddPonkaToImage", "1", &bytes, Format::MessagePack);
        let _ = registry.decode_split::<AddPonkaToImage>("AddPonkaToImage", "2", &bytes, Format::Json);
    }

    #[test]
    fn damaged_envelopes_never_panic_and_keep_their_bytes(
        message in arb_delete(),
        headers in arb_headers(),
        msgpack in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let registry = registry();
        let format = if msgpack { Format::MessagePack } else { Format::Json };
        let mut bytes = registry.encode_with_headers(&message, &headers, format).unwrap();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Err(e) = registry.decode::<DeleteImagePost>(&bytes) {
            prop_assert_eq!(e.raw(), &bytes[..]);
        }
    }

    #[test]
    fn encode_then_decode_is_identity(message in arb_delete(), headers in arb_headers(), msgpack in any::<bool>()) {
        let registry = registry();
        let format = if msgpack { Format::MessagePack } else { Format::Json };
        let bytes = registry.encode_with_headers(&message, &headers, format).unwrap();
        let d: Decoded<DeleteImagePost> = registry.decode(&bytes).unwrap();
        prop_assert_eq!(d.message, message);
        prop_assert_eq!(d.header.headers, headers);
        prop_assert_eq!(d.header.format, format);
    }

    /// The fast path (canonical JSON) and the full parser (same message, other layout) agree.
    #[test]
    fn fast_and_full_parsers_agree(message in arb_delete(), headers in arb_headers()) {
        let registry = registry();
        let canonical = registry.encode_with_headers(&message, &headers, Format::Json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let a: Decoded<DeleteImagePost> = registry.decode(&canonical).unwrap();
        let b: Decoded<DeleteImagePost> = registry.decode(&pretty).unwrap();
        prop_assert_eq!(&a.message, &b.message);
        prop_assert_eq!(&a.header, &b.header);
        let c: Decoded<DeleteImagePost> = registry.decode_str(std::str::from_utf8(&canonical).unwrap()).unwrap();
        prop_assert_eq!(&a.message, &c.message);
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
struct A {
    a: u32,
}

fn registry_a() -> Registry {
    Registry::builder().register::<A>().build().unwrap()
}

#[test]
fn deep_msgpack_nesting_is_refused_not_a_stack_overflow() {
    let mut bytes = b"\x83\xa4type\xa1A\xa7version\x01\xa7payload\x82\xa1a\x01\xa1x".to_vec();
    bytes.extend(std::iter::repeat_n(0x91, 100_000));
    bytes.push(0x01);
    // Half the 2 MiB a spawned thread gets, in a debug build: the depth limit (128, as
    // serde_json's) must stop the reader long before the stack ends.
    let result = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            let registry = registry_a();
            let e = registry.decode::<A>(&bytes).unwrap_err();
            (
                e.to_string(),
                registry
                    .decode_split::<A>("A", "1", &bytes[30..], Format::MessagePack)
                    .is_err(),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(result.0.contains("payload invalid"), "{}", result.0);
    assert!(result.1);
}

#[test]
fn many_headers_are_read_and_a_repeat_among_them_is_found() {
    let count = 50_000;
    let mut text = String::from(r#"{"type":"A","version":1,"headers":{"#);
    for i in (0..count).rev() {
        text.push_str(&format!(r#""h{i:06}":"","#));
    }
    text.push_str(r#""h000007":""},"payload":{"a":1}}"#);
    let e = registry_a().decode::<A>(text.as_bytes()).unwrap_err();
    assert_eq!(
        malformation(&e),
        &Malformation::InvalidHeaders("duplicate header `h000007`".into())
    );
    let fine = text.replace(r#""h000007":""},"#, r#""x":""},"#);
    let d: Decoded<A> = registry_a().decode(fine.as_bytes()).unwrap();
    assert_eq!(d.header.headers.len(), count + 1);
}

#[test]
fn invalid_utf8_in_json_is_refused_by_every_path() {
    let registry = registry_a();
    let canonical = b"{\"type\":\"A\",\"version\":1,\"payload\":{\"a\":1,\"x\":\"\xff\"}}";
    let spaced = b" {\"type\":\"A\",\"version\":1,\"payload\":{\"a\":1,\"x\":\"\xff\"}}";
    for bytes in [&canonical[..], &spaced[..]] {
        let e = registry.decode::<A>(bytes).unwrap_err();
        assert_eq!(
            malformation(&e),
            &Malformation::Syntax("invalid UTF-8".into())
        );
        assert!(
            matches!(e.kind(), upcaster::ErrorKind::Malformed { offset, .. } if bytes[*offset] == 0xff)
        );
    }
    let e = registry
        .decode_split::<A>("A", "1", b"{\"a\":1,\"x\":\"\xff\"}", Format::Json)
        .unwrap_err();
    assert_eq!(
        malformation(&e),
        &Malformation::Syntax("invalid UTF-8".into())
    );
}

#[test]
fn an_unfinished_container_after_a_msgpack_payload_is_trailing_bytes() {
    let registry = registry_a();
    for tail in [
        &b"\x91"[..],
        b"\x81",
        b"\x92\x01",
        b"\xdc\x00\x05",
        b"\x81\xa1a",
        b"\xc0",
    ] {
        let mut bytes = b"\x83\xa4type\xa1A\xa7version\x01\xa7payload\x81\xa1a\x07".to_vec();
        bytes.extend_from_slice(tail);
        let e = registry.decode::<A>(&bytes).unwrap_err();
        assert_eq!(
            malformation(&e),
            &Malformation::TrailingBytes,
            "{tail:02x?}"
        );
        let mut body = b"\x81\xa1a\x07".to_vec();
        body.extend_from_slice(tail);
        assert!(
            registry
                .decode_split::<A>("A", "1", &body, Format::MessagePack)
                .is_err(),
            "{tail:02x?}"
        );
    }
}

#[test]
fn a_syntax_error_points_at_its_byte() {
    let e = upcaster::peek(b"{\"type\":\"A\"}x").unwrap_err();
    assert!(
        matches!(e.kind(), upcaster::ErrorKind::Malformed { offset: 12, .. }),
        "{e}"
    );
}

#[test]
fn the_split_version_has_the_envelopes_rules() {
    for bad in ["01", "007"] {
        let e = registry_a()
            .decode_split::<A>("A", bad, b"{\"a\":1}", Format::Json)
            .unwrap_err();
        assert!(
            matches!(malformation(&e), Malformation::InvalidVersion(_)),
            "{bad}"
        );
    }
}
