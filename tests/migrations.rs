//! Declarative migrations: every operation, loading and its checks, mixed chains, downcasts.

mod common;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use upcaster::migration::{MigrationError, MigrationProblem, OpFailure};
use upcaster::{
    Decoded, ErrorKind, Format, Message, Migration, Migrations, Registry, RegistryProblem, Upcaster,
};

fn step(file: &str, ops: Value) -> Migration {
    Migration::parse(file, &json!({ "ops": ops }).to_string()).unwrap()
}

fn apply(ops: Value, mut payload: Value) -> Result<Value, OpFailure> {
    step("T/v1-to-v2.json", ops).apply(&mut payload)?;
    Ok(payload)
}

fn undo(ops: Value, mut payload: Value) -> Result<Value, String> {
    let inverse = step("T/v1-to-v2.json", ops)
        .inverse()
        .map_err(|e| e.to_string())?;
    inverse.apply(&mut payload).map_err(|e| e.to_string())?;
    Ok(payload)
}

#[test]
fn move_copy_add_remove_replace_test_follow_rfc_6902() {
    let doc = json!({"a": 1, "list": [1, 2], "o": {"x": true}});
    assert_eq!(
        apply(
            json!([{"op": "move", "from": "/a", "path": "/o/a"}]),
            doc.clone()
        )
        .unwrap(),
        json!({"list": [1, 2], "o": {"x": true, "a": 1}})
    );
    assert_eq!(
        apply(
            json!([{"op": "copy", "from": "/o", "path": "/p"}]),
            doc.clone()
        )
        .unwrap(),
        json!({"a": 1, "list": [1, 2], "o": {"x": true}, "p": {"x": true}})
    );
    assert_eq!(
        apply(
            json!([{"op": "add", "path": "/list/1", "value": 9}, {"op": "add", "path": "/list/-", "value": 3}]),
            doc.clone()
        )
        .unwrap(),
        json!({"a": 1, "list": [1, 9, 2, 3], "o": {"x": true}})
    );
    assert_eq!(
        apply(json!([{"op": "remove", "path": "/list/0"}]), doc.clone()).unwrap(),
        json!({"a": 1, "list": [2], "o": {"x": true}})
    );
    assert_eq!(
        apply(
            json!([{"op": "replace", "path": "/a", "value": "one"}]),
            doc.clone()
        )
        .unwrap(),
        json!({"a": "one", "list": [1, 2], "o": {"x": true}})
    );
    let e = apply(
        json!([{"op": "replace", "path": "/b", "value": 0}]),
        doc.clone(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "op 0 (replace /b): /b not found");
    assert!(apply(
        json!([{"op": "test", "path": "/o/x", "value": true}]),
        doc.clone()
    )
    .is_ok());
    let e = apply(json!([{"op": "test", "path": "/a", "value": 2}]), doc).unwrap_err();
    assert_eq!(e.to_string(), "op 0 (test /a): /a is 1, not 2");
}

#[test]
fn set_if_absent_map_wrap_unwrap_and_integer_strings() {
    let ops = json!([{"op": "set-if-absent", "path": "/currency", "value": "EUR"}]);
    assert_eq!(
        apply(ops.clone(), json!({})).unwrap(),
        json!({"currency": "EUR"})
    );
    assert_eq!(
        apply(ops, json!({"currency": "USD"})).unwrap(),
        json!({"currency": "USD"})
    );

    let map = json!([{"op": "map", "path": "/status", "values": {"active": "enabled", "inactive": "disabled"}}]);
    assert_eq!(
        apply(map.clone(), json!({"status": "inactive"})).unwrap(),
        json!({"status": "disabled"})
    );
    let e = apply(map, json!({"status": "gone"})).unwrap_err();
    assert_eq!(
        e.message,
        "/status is \"gone\", which the map does not list"
    );

    let wrap = json!([{"op": "wrap", "path": "/imagePost", "key": "id"}]);
    assert_eq!(
        apply(wrap, json!({"imagePost": 7})).unwrap(),
        json!({"imagePost": {"id": 7}})
    );
    let unwrap = json!([{"op": "unwrap", "path": "/imagePost", "key": "id"}]);
    assert_eq!(
        apply(unwrap.clone(), json!({"imagePost": {"id": 7}})).unwrap(),
        json!({"imagePost": 7})
    );
    let e = apply(unwrap, json!({"imagePost": {"id": 7, "url": "x"}})).unwrap_err();
    assert_eq!(
        e.message,
        "/imagePost is an object, not an object with the one key `id`"
    );

    let to_string = json!([{"op": "to-string", "path": "/id"}]);
    assert_eq!(
        apply(to_string.clone(), json!({"id": 18446744073709551615u64})).unwrap(),
        json!({"id": "18446744073709551615"})
    );
    assert!(apply(to_string, json!({"id": 1.5})).is_err());
    let to_int = json!([{"op": "to-integer", "path": "/id"}]);
    assert_eq!(
        apply(to_int.clone(), json!({"id": "-42"})).unwrap(),
        json!({"id": -42})
    );
    for lossy in ["042", "+1", " 1", "1.0", "-0", "", "99999999999999999999"] {
        assert!(
            apply(to_int.clone(), json!({ "id": lossy })).is_err(),
            "{lossy:?} must not convert: it would not convert back to itself"
        );
    }
}

#[test]
fn a_wildcard_applies_to_every_element_and_every_value() {
    let ops = json!([
        {"op": "move", "from": "/items/*/cost", "path": "/items/*/price"},
        {"op": "set-if-absent", "path": "/items/*/qty", "value": 1},
        {"op": "to-string", "path": "/byId/*/sku"},
    ]);
    let payload = json!({
        "items": [{"cost": 5}, {"cost": 7, "qty": 3}],
        "byId": {"a": {"sku": 1}, "b": {"sku": 2}}
    });
    assert_eq!(
        apply(ops, payload).unwrap(),
        json!({
            "items": [{"price": 5, "qty": 1}, {"price": 7, "qty": 3}],
            "byId": {"a": {"sku": "1"}, "b": {"sku": "2"}}
        })
    );
    let e = apply(
        json!([{"op": "remove", "path": "/items/*/cost"}]),
        json!({"items": [{"cost": 1}, {"price": 2}]}),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "op 0 (remove /items/*/cost): /items/1/cost not found"
    );
    assert_eq!(
        apply(
            json!([{"op": "remove", "path": "/items/*/cost"}]),
            json!({"items": []})
        )
        .unwrap(),
        json!({"items": []}),
        "no elements, nothing to do"
    );
}

#[test]
fn escaped_pointer_tokens_address_keys_with_slashes_and_tildes() {
    assert_eq!(
        apply(
            json!([{"op": "move", "from": "/a~1b", "path": "/c~0d"}]),
            json!({"a/b": 1})
        )
        .unwrap(),
        json!({"c~d": 1})
    );
}

fn load_error(file: &str, text: &str) -> MigrationError {
    Migration::parse(file, text).unwrap_err()
}

#[test]
fn a_bad_file_names_the_file_the_operation_and_the_pointer() {
    let e = load_error(
        "AddPonkaToImage/v1-to-v2.json",
        r#"{"ops": [{"op": "move", "from": "/a", "path": "/b"}, {"op": "rename", "from": "/a", "path": "/b"}]}"#,
    );
    assert_eq!(
        (e.file.as_str(), e.op, e.pointer.as_str()),
        ("AddPonkaToImage/v1-to-v2.json", Some(1), "/ops/1/op")
    );
    assert_eq!(
        e.to_string(),
        "AddPonkaToImage/v1-to-v2.json, op 1 at /ops/1/op: unknown operation `rename`; expected one of `move`, `copy`, `add`, `remove`, `replace`, `test`, `set-if-absent`, `map`, `rename-type`, `wrap`, `unwrap`, `to-string`, `to-integer`"
    );

    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "remove", "path": "imagePostId"}]}"#,
    );
    assert_eq!((e.op, e.pointer.as_str()), (Some(0), "/ops/0/path"));
    assert!(
        e.to_string()
            .contains("malformed pointer: `imagePostId` must be empty or start with `/`"),
        "{e}"
    );
    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "remove", "path": "/a~2"}]}"#,
    );
    assert!(
        e.to_string()
            .contains("has a `~` not followed by `0` or `1`"),
        "{e}"
    );

    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "add", "path": "/a", "valeu": 1}]}"#,
    );
    assert_eq!(e.pointer, "/ops/0");
    assert_eq!(
        e.problem,
        MigrationProblem::Invalid("missing `value`".into())
    );
    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "add", "path": "/a", "value": 1, "form": "/x"}]}"#,
    );
    assert_eq!(e.pointer, "/ops/0/form");

    let e = load_error("T/v1-to-v2.json", "{\"ops\": [\n  {\"op\": \"add\",}\n]}");
    assert!(
        matches!(e.problem, MigrationProblem::Syntax { line: 2, .. }),
        "{e}"
    );

    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "move", "from": "/a", "path": "/a/b"}]}"#,
    );
    assert!(e.to_string().contains("cannot move /a into itself"), "{e}");
    let e = load_error(
        "T/v1-to-v2.json",
        r#"{"ops": [{"op": "move", "from": "/x/*/a", "path": "/y/*/a"}]}"#,
    );
    assert!(
        e.to_string()
            .contains("must share the part up to their last `*`"),
        "{e}"
    );

    for (name, why) in [
        ("T/v1-to-v3.json", "not one step up"),
        ("T/v0-to-v1.json", "versions must be"),
        ("T/1-to-2.json", "versions must be"),
        ("T/v1_v2.json", "no `-to-`"),
        ("v1-to-v2.json", "no type directory"),
    ] {
        let e = load_error(name, r#"{"ops": []}"#);
        assert!(
            matches!(&e.problem, MigrationProblem::FileName(m) if m.contains(why)),
            "{name}: {e}"
        );
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[serde(rename_all = "camelCase")]
#[message(version = 2)]
struct AddPonkaToImage {
    image_post: u64,
}

fn ponka_step() -> Migrations {
    let mut m = Migrations::new();
    m.push(step(
        "AddPonkaToImage/v1-to-v2.json",
        json!([{"op": "move", "from": "/imagePostId", "path": "/imagePost"}]),
    ));
    m
}

fn build_problems(builder: upcaster::RegistryBuilder) -> Vec<RegistryProblem> {
    builder.build().unwrap_err().problems
}

#[test]
fn the_registry_checks_migrations_against_its_types() {
    // A step for a version the type doesn't have.
    let mut m = ponka_step();
    m.push(step("AddPonkaToImage/v2-to-v3.json", json!([])));
    assert_eq!(
        build_problems(
            Registry::builder()
                .register::<AddPonkaToImage>()
                .migrations(m)
        ),
        [RegistryProblem::MigrationVersion {
            file: "AddPonkaToImage/v2-to-v3.json".into(),
            type_name: "AddPonkaToImage".into(),
            from: 2,
            to: 3,
            current: 2
        }]
    );
    // A directory that names no type.
    let mut m = Migrations::new();
    m.push(step("AddKitten/v1-to-v2.json", json!([])));
    assert_eq!(
        build_problems(
            Registry::builder()
                .register::<AddPonkaToImage>()
                .migrations(m)
        ),
        [RegistryProblem::MigrationUnknownType {
            file: "AddKitten/v1-to-v2.json".into(),
            type_name: "AddKitten".into()
        }]
    );
    // The same pair by file and by Rust.
    assert_eq!(
        build_problems(
            Registry::builder()
                .register::<AddPonkaToImage>()
                .upcaster::<AddPonkaToImage>(Upcaster::new(1, 2, |_| Ok(())))
                .migrations(ponka_step())
        ),
        [RegistryProblem::MigrationConflict {
            file: "AddPonkaToImage/v1-to-v2.json".into(),
            type_name: "AddPonkaToImage".into(),
            from: 1,
            to: 2,
            other: "a Rust upcaster".into()
        }]
    );
    // Two files for one pair.
    let mut m = ponka_step();
    m.push(step("AddPonkaToImage/v1-to-v2.json", json!([])));
    assert!(matches!(
        &build_problems(Registry::builder().register::<AddPonkaToImage>().migrations(m))[..],
        [RegistryProblem::MigrationConflict { other, .. }] if other == "AddPonkaToImage/v1-to-v2.json"
    ));
}

#[test]
fn a_gap_between_files_is_reported() {
    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "Gappy", version = 4)]
    struct Gappy {}
    let mut m = Migrations::new();
    m.push(step("Gappy/v1-to-v2.json", json!([])));
    m.push(step("Gappy/v3-to-v4.json", json!([])));
    assert_eq!(
        build_problems(Registry::builder().register::<Gappy>().migrations(m)),
        [RegistryProblem::Gap {
            type_name: "Gappy".into(),
            from: 2,
            to: 3,
            current: 4
        }]
    );
}

#[test]
fn migrations_load_from_a_directory_and_embed_alike() {
    let dir = std::env::temp_dir().join(format!("upcaster-migrations-{}", std::process::id()));
    let ponka = dir.join("AddPonkaToImage");
    std::fs::create_dir_all(&ponka).unwrap();
    std::fs::write(
        ponka.join("v1-to-v2.json"),
        r#"{"ops": [{"op": "move", "from": "/imagePostId", "path": "/imagePost"}]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not a step").unwrap();
    let loaded = Migrations::load(&dir).unwrap();
    let embedded = upcaster::embed_migrations!("migrations").unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded.iter().next().unwrap().ops(),
        embedded.iter().next().unwrap().ops()
    );

    // Every broken file is reported, each by name.
    std::fs::write(ponka.join("v2-to-v3.json"), r#"{"ops": [{"op": "nope"}]}"#).unwrap();
    std::fs::write(ponka.join("v3-to-v4.json"), r#"{"ops": 1}"#).unwrap();
    let errors = Migrations::load(&dir).unwrap_err().errors;
    let files: Vec<&str> = errors.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "AddPonkaToImage/v2-to-v3.json",
            "AddPonkaToImage/v3-to-v4.json"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = Migrations::load(dir.join("nowhere")).unwrap_err();
    assert!(matches!(missing.errors[0].problem, MigrationProblem::Io(_)));
}

#[test]
fn the_repo_migrations_upcast_ponka_v1() {
    let registry = Registry::builder()
        .register::<AddPonkaToImage>()
        .migrations(Migrations::load("migrations").unwrap())
        .build()
        .unwrap();
    let old = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":5}}"#;
    let d: Decoded<AddPonkaToImage> = registry.decode(old).unwrap();
    assert_eq!(d.message, AddPonkaToImage { image_post: 5 });
}

// The mixed chain: v1 → v2 by file, v2 → v3 by code, v3 → v4 by file.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Order", version = 4)]
struct Order {
    id: String,
    total: Money,
    status: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Money {
    cents: u64,
    currency: String,
}

fn order_registry() -> Registry {
    let mut m = Migrations::new();
    m.push(step(
        "Order/v1-to-v2.json",
        json!([
            {"op": "move", "from": "/orderId", "path": "/id"},
            {"op": "to-string", "path": "/id"},
        ]),
    ));
    m.push(step(
        "Order/v3-to-v4.json",
        json!([
            {"op": "wrap", "path": "/total", "key": "cents"},
            {"op": "set-if-absent", "path": "/total/currency", "value": "EUR"},
            {"op": "map", "path": "/status", "values": {"new": "open", "done": "closed"}},
        ]),
    ));
    Registry::builder()
        .register::<Order>()
        .migrations(m)
        .upcaster::<Order>(Upcaster::new(2, 3, |p| {
            // Code-heavy: euros with a fraction become whole cents.
            let o = p.as_object_mut().ok_or("not an object")?;
            let euros = o
                .remove("euros")
                .and_then(|v| v.as_f64())
                .ok_or("`euros` is missing")?;
            o.insert("total".into(), json!((euros * 100.0).round() as u64));
            Ok(())
        }))
        .build()
        .unwrap()
}

#[test]
fn a_mixed_chain_runs_file_code_file() {
    let registry = order_registry();
    let expected = Order {
        id: "17".into(),
        total: Money {
            cents: 1250,
            currency: "EUR".into(),
        },
        status: "closed".into(),
    };
    let v1 = json!({"type": "Order", "version": 1, "payload": {"orderId": 17, "euros": 12.5, "status": "done"}});
    let v2 = json!({"type": "Order", "version": 2, "payload": {"id": "17", "euros": 12.5, "status": "done"}});
    let v3 = json!({"type": "Order", "version": 3, "payload": {"id": "17", "total": 1250, "status": "done"}});
    for envelope in [v1, v2, v3] {
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(registry.decode::<Order>(&bytes).unwrap().message, expected);
        let packed = rmp_serde::to_vec_named(&envelope).unwrap();
        assert_eq!(registry.decode::<Order>(&packed).unwrap().message, expected);
    }
    let bad = br#"{"type":"Order","version":3,"payload":{"id":"17","total":1,"status":"lost"}}"#;
    assert_eq!(
        registry.decode::<Order>(bad).unwrap_err().to_string(),
        "upcasting `Order` v3→v4 failed: op 2 (map /status): /status is \"lost\", which the map does not list"
    );
}

// Downcasts: writing an older version for consumers not yet upgraded.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "Ponka", version = 3)]
struct Ponka {
    image_post: ImagePost,
    mood: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ImagePost {
    id: u64,
}

fn ponka_migrations() -> Migrations {
    let mut m = Migrations::new();
    m.push(step(
        "Ponka/v1-to-v2.json",
        json!([
            {"op": "rename-type", "from": "AddPonkaToImage"},
            {"op": "move", "from": "/imagePostId", "path": "/imagePost"},
        ]),
    ));
    m.push(step(
        "Ponka/v2-to-v3.json",
        json!([
            {"op": "wrap", "path": "/imagePost", "key": "id"},
            {"op": "add", "path": "/mood", "value": "happy"},
            {"op": "map", "path": "/mood", "values": {"happy": "joyful", "sad": "gloomy"}},
        ]),
    ));
    m
}

#[test]
fn write_version_encodes_an_older_version_by_running_the_chain_backwards() {
    let registry = Registry::builder()
        .register::<Ponka>()
        .migrations(ponka_migrations())
        .write_version::<Ponka>(1)
        .build()
        .unwrap();
    assert_eq!(registry.write_version::<Ponka>(), 1);
    let message = Ponka {
        image_post: ImagePost { id: 9 },
        mood: "joyful".into(),
    };
    let bytes = registry.encode(&message, Format::Json).unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":9}}"#,
        "the old name, the old version, the old shape"
    );
    let packed = registry.encode(&message, Format::MessagePack).unwrap();
    let split = registry.encode_split(&message, Format::Json).unwrap();
    assert_eq!((&*split.type_name, split.version), ("AddPonkaToImage", 1));
    // And the same registry reads them back up.
    for bytes in [bytes, packed] {
        let d: Decoded<Ponka> = registry.decode(&bytes).unwrap();
        assert_eq!(d.arrived_version(), 1);
        assert_eq!(d.message.image_post, ImagePost { id: 9 });
    }
    // Writing v2 keeps the new name.
    let v2 = Registry::builder()
        .register::<Ponka>()
        .migrations(ponka_migrations())
        .write_version::<Ponka>(2)
        .build()
        .unwrap();
    let bytes = v2.encode(&message, Format::Json).unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"Ponka","version":2,"payload":{"imagePost":9}}"#
    );
}

#[test]
fn a_step_without_inverse_fails_the_build_for_a_lower_write_version() {
    let mut m = Migrations::new();
    m.push(step(
        "Ponka/v1-to-v2.json",
        json!([{"op": "remove", "path": "/legacy"}, {"op": "move", "from": "/imagePostId", "path": "/imagePost"}]),
    ));
    m.push(step(
        "Ponka/v2-to-v3.json",
        json!([{"op": "wrap", "path": "/imagePost", "key": "id"}, {"op": "set-if-absent", "path": "/mood", "value": "happy"}]),
    ));
    let problems = build_problems(
        Registry::builder()
            .register::<Ponka>()
            .migrations(m)
            .write_version::<Ponka>(1),
    );
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "`Ponka` cannot be downcast from v2 to v1: Ponka/v1-to-v2.json: op 0 (remove /legacy) cannot be undone: it drops the value; give it a `value` to restore",
            "`Ponka` cannot be downcast from v3 to v2: Ponka/v2-to-v3.json: op 1 (set-if-absent /mood) cannot be undone: a downcast cannot tell whether the value was absent",
        ]
    );
    // A Rust step needs an explicit inverse, and versions must be in the chain.
    let problems = build_problems(
        Registry::builder()
            .register::<Ponka>()
            .upcaster::<Ponka>(Upcaster::new(2, 3, |_| Ok(())))
            .write_version::<Ponka>(2)
            .write_version::<Ponka>(7),
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        matches!(&problems[0], RegistryProblem::NotReversible { from: 2, to: 3, reason, .. } if reason.contains("with_inverse"))
    );
    assert!(matches!(
        problems[1],
        RegistryProblem::WriteVersionOutOfRange {
            version: 7,
            oldest: 2,
            current: 3,
            ..
        }
    ));
    // With one, it works.
    let registry = Registry::builder()
        .register::<Ponka>()
        .upcaster::<Ponka>(
            Upcaster::new(2, 3, |p| {
                p["mood"] = json!("calm");
                Ok(())
            })
            .with_inverse(|p| {
                p.as_object_mut().ok_or("not an object")?.remove("mood");
                Ok(())
            }),
        )
        .write_version::<Ponka>(2)
        .build()
        .unwrap();
    let bytes = registry
        .encode(
            &Ponka {
                image_post: ImagePost { id: 1 },
                mood: "calm".into(),
            },
            Format::Json,
        )
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"Ponka","version":2,"payload":{"imagePost":{"id":1}}}"#
    );
}

#[test]
fn a_downcast_that_fails_at_send_time_is_an_encode_error() {
    let registry = Registry::builder()
        .register::<Ponka>()
        .migrations(ponka_migrations())
        .write_version::<Ponka>(2)
        .build()
        .unwrap();
    let e = registry
        .encode(
            &Ponka {
                image_post: ImagePost { id: 1 },
                mood: "angry".into(),
            },
            Format::Json,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot encode `Ponka` v2 as JSON: downcasting v3→v2 failed: undoing op 2 (map /mood): /mood is \"angry\", which the map does not list"
    );
    assert_eq!(
        e.kind,
        upcaster::EncodeErrorKind::Downcast { from: 3, to: 2 }
    );
    let source = std::error::Error::source(&e).expect("the step's error is the source");
    assert!(source.to_string().starts_with("undoing op 2"), "{source}");
}

#[test]
fn a_failed_step_keeps_the_message_bytes() {
    let registry = Registry::builder()
        .register::<Ponka>()
        .migrations(ponka_migrations())
        .build()
        .unwrap();
    let input = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostID":3}}"#;
    let e = registry.decode::<Ponka>(input).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::UpcastFailed { from: 1, to: 2, .. }
    ));
    assert_eq!(
        e.to_string(),
        "upcasting `Ponka` v1→v2 failed: op 1 (move /imagePostId → /imagePost): /imagePostId not found"
    );
    assert_eq!(e.into_raw(), input);
}

/// Payloads that fit the old version of a reversible step, with extra fields around.
fn old_payload() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
    ];
    (
        any::<u64>(),
        prop::sample::select(vec!["new", "done"]),
        proptest::collection::vec((any::<i64>(), scalar.clone()), 0..4),
        proptest::collection::btree_map("x[a-z]{0,5}", scalar, 0..4),
    )
        .prop_map(|(id, status, items, extra)| {
            let mut o = serde_json::Map::new();
            o.insert("orderId".into(), json!(id));
            o.insert("status".into(), json!(status));
            o.insert(
                "items".into(),
                Value::Array(
                    items
                        .into_iter()
                        .map(|(cost, note)| json!({"cost": cost, "note": note}))
                        .collect(),
                ),
            );
            for (k, v) in extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

fn reversible_ops() -> Value {
    json!([
        {"op": "move", "from": "/orderId", "path": "/id"},
        {"op": "to-string", "path": "/id"},
        {"op": "wrap", "path": "/id", "key": "value"},
        {"op": "map", "path": "/status", "values": {"new": "open", "done": "closed"}},
        {"op": "move", "from": "/items/*/cost", "path": "/items/*/price"},
        {"op": "to-string", "path": "/items/*/price"},
        {"op": "copy", "from": "/status", "path": "/state"},
        {"op": "add", "path": "/version2", "value": true},
        {"op": "remove", "path": "/items/*/note", "value": null},
        {"op": "test", "path": "/version2", "value": true},
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn downcast_after_upcast_is_identity(payload in old_payload()) {
        let ops = reversible_ops();
        let up = apply(ops.clone(), payload.clone()).unwrap();
        prop_assert_ne!(&up, &payload);
        // Notes are dropped with a `null` to restore, so only payloads whose notes were null
        // come back exactly; the rest must differ only there.
        let down = undo(ops, up).unwrap();
        let mut expected = payload;
        for item in expected["items"].as_array_mut().unwrap() {
            item["note"] = Value::Null;
        }
        prop_assert_eq!(down, expected);
    }
}

// Rename-only chains are read while streaming, without a tree. They must give exactly what
// the tree gives: the same message, or a failure.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Renamed", version = 3)]
struct RenamedAll {
    #[serde(flatten)]
    all: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Renamed", version = 3)]
struct RenamedFields {
    c: Option<Value>,
    items: Option<Vec<Item>>,
    d: Option<D>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    price: Option<i64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct D {
    y: Option<Value>,
}

fn rename_steps() -> Vec<Migration> {
    vec![
        step(
            "Renamed/v1-to-v2.json",
            json!([
                {"op": "move", "from": "/a", "path": "/b"},
                {"op": "move", "from": "/items/*/cost", "path": "/items/*/price"},
            ]),
        ),
        step(
            "Renamed/v2-to-v3.json",
            json!([
                {"op": "move", "from": "/b", "path": "/c"},
                {"op": "move", "from": "/d/x", "path": "/d/y"},
            ]),
        ),
    ]
}

/// The same chain, applied by Rust steps over the tree.
fn tree_registry<T: Message>() -> Registry {
    let mut builder = Registry::builder().register::<T>();
    for m in rename_steps() {
        let (from, to) = (m.from_version(), m.to_version());
        builder = builder.upcaster::<T>(Upcaster::new(from, to, move |p| {
            m.apply(p).map_err(Into::into)
        }));
    }
    builder.build().unwrap()
}

fn stream_registry<T: Message>() -> Registry {
    let mut m = Migrations::new();
    for s in rename_steps() {
        m.push(s);
    }
    Registry::builder()
        .register::<T>()
        .migrations(m)
        .build()
        .unwrap()
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// Payloads near the shape the renames expect: keys present or missing, both old and new
/// names at once, wrong types where objects are expected.
fn near_payload() -> impl Strategy<Value = Value> {
    let item = proptest::collection::btree_map(
        prop::sample::select(vec!["cost", "price", "x"]),
        any::<i64>().prop_map(Value::from),
        0..3,
    )
    .prop_map(|m| json!(m));
    let items = prop_oneof![
        4 => proptest::collection::vec(prop_oneof![5 => item, 1 => scalar()], 0..4).prop_map(Value::Array),
        1 => scalar(),
    ];
    let d = prop_oneof![
        3 => proptest::collection::btree_map(prop::sample::select(vec!["x", "y", "z"]), scalar(), 0..3).prop_map(|m| json!(m)),
        1 => scalar(),
    ];
    (
        proptest::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "e"]),
            scalar(),
            0..4,
        ),
        proptest::option::weighted(0.8, items),
        proptest::option::weighted(0.8, d),
    )
        .prop_map(|(top, items, d)| {
            let mut o: serde_json::Map<String, Value> =
                top.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(items) = items {
                o.insert("items".into(), items);
            }
            if let Some(d) = d {
                o.insert("d".into(), d);
            }
            Value::Object(o)
        })
}

fn same_outcome<T: Message + PartialEq + std::fmt::Debug>(
    payload: &Value,
) -> Result<(), TestCaseError> {
    let (stream, tree) = (stream_registry::<T>(), tree_registry::<T>());
    let envelope = json!({"type": "Renamed", "version": 1, "payload": payload});
    for bytes in [
        serde_json::to_vec(&envelope).unwrap(),
        rmp_serde::to_vec_named(&envelope).unwrap(),
    ] {
        let a = stream.decode::<T>(&bytes).map(|d| d.message);
        let b = tree.decode::<T>(&bytes).map(|d| d.message);
        match (&a, &b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "stream {a:?} but tree {b:?} for {payload}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn streaming_renames_match_the_tree(payload in near_payload()) {
        same_outcome::<RenamedAll>(&payload)?;
        same_outcome::<RenamedFields>(&payload)?;
    }
}

#[test]
fn a_rename_chain_reads_without_a_tree_and_agrees_on_a_fitting_payload() {
    let payload = json!({"a": 1, "items": [{"cost": 5}, {"cost": 6, "x": 1}], "d": {"x": "v"}});
    same_outcome::<RenamedFields>(&payload).unwrap();
    let bytes =
        serde_json::to_vec(&json!({"type": "Renamed", "version": 1, "payload": payload})).unwrap();
    let d: Decoded<RenamedFields> = stream_registry::<RenamedFields>().decode(&bytes).unwrap();
    assert_eq!(d.message.c, Some(json!(1)));
    assert_eq!(d.message.items.unwrap()[1].price, Some(6));
    assert_eq!(d.message.d.unwrap().y, Some(json!("v")));
}
