//! The compatibility engine: hand-written cases, the Confluent conformance corpus, and
//! verdicts checked against what serde really does.

use serde_json::{json, Value};
use upcaster_check::compat::{compatible, diff, Mode};

fn corpus() -> Vec<(String, Value)> {
    // The project keeps the corpus beside the repository, in `../shared`; elsewhere, point
    // UPCASTER_CONFORMANCE_DIR at a copy.
    let dir = std::env::var_os("UPCASTER_CONFORMANCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/confluent")
        });
    let mut cases = Vec::new();
    for file in [
        "diff-schema-examples.json",
        "diff-combined-schema-examples.json",
    ] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the conformance corpus {}: {e}; set UPCASTER_CONFORMANCE_DIR to its folder",
                path.display()
            )
        });
        let list: Vec<Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        for case in list {
            cases.push((file.to_owned(), case));
        }
    }
    cases
}

#[test]
fn confluent_conformance() {
    let cases = corpus();
    assert_eq!(cases.len(), 132, "the corpus README promises 132 cases");
    let mut disagreements = Vec::new();
    for (file, case) in &cases {
        let changes = diff(
            &case["original_schema"],
            &case["update_schema"],
            Mode::Backward,
        );
        let ours = compatible(&changes);
        let theirs = case["compatible"].as_bool().unwrap();
        if ours != theirs {
            disagreements.push(format!(
                "{file}: {} (confluent: {theirs}, ours: {ours}) {:?}",
                case["description"].as_str().unwrap_or(""),
                changes.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
        }
    }
    // Deliberate, each explained in docs/CONFORMANCE.md.
    let documented = [
        "Detect required array to be changed",
        "Detect removed boolean additional items",
        "Detect changes to additional items schema",
    ];
    let undocumented: Vec<&String> = disagreements
        .iter()
        .filter(|d| {
            !documented
                .iter()
                .any(|known| d.contains(&format!(": {known} (")))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "disagreements not in docs/CONFORMANCE.md:\n{undocumented:#?}"
    );
    let agreement = 1.0 - disagreements.len() as f64 / cases.len() as f64;
    println!(
        "agreement {:.1}% ({} of {})",
        agreement * 100.0,
        cases.len() - disagreements.len(),
        cases.len()
    );
    for d in &disagreements {
        println!("  {d}");
    }
    assert!(
        agreement >= 0.95,
        "agreement {agreement}:\n{}",
        disagreements.join("\n")
    );
}

fn verdict(old: Value, new: Value, mode: Mode) -> bool {
    compatible(&diff(&old, &new, mode))
}

fn back(old: Value, new: Value) -> bool {
    verdict(old, new, Mode::Backward)
}

#[test]
fn content_models_open_closed_and_partially_open() {
    let closed = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
    let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    assert!(
        back(closed.clone(), open.clone()),
        "opening is backward compatible"
    );
    assert!(!back(open.clone(), closed.clone()), "closing is not");
    assert!(verdict(open.clone(), closed.clone(), Mode::Forward));
    assert!(!verdict(open.clone(), closed.clone(), Mode::Full));
    let partly = json!({"type": "object", "properties": {"a": {"type": "string"}},
        "additionalProperties": false, "patternProperties": {"^x_": {"type": "integer"}}});
    assert!(back(closed.clone(), partly.clone()));
    assert!(
        !back(partly.clone(), closed.clone()),
        "x_ members are no longer accepted"
    );
    let unevaluated = json!({"type": "object", "properties": {"a": {"type": "string"}}, "unevaluatedProperties": false});
    assert!(!back(open, unevaluated.clone()));
    let changes = diff(
        &closed,
        &json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false}),
        Mode::Backward,
    );
    let breaking: Vec<_> = changes.iter().filter(|c| c.breaking).collect();
    assert_eq!(breaking.len(), 1);
    assert_eq!(
        (breaking[0].rule, breaking[0].pointer.as_str()),
        ("type-narrowed", "/properties/a/type")
    );
}

#[test]
fn required_and_defaults() {
    let base = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]});
    let b_required = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a", "b"]});
    let b_defaulted = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "default": ""}}, "required": ["a", "b"]});
    assert!(!back(base.clone(), b_required.clone()));
    // serde fills a default in; a JSON Schema validator does not.
    assert!(!back(base.clone(), b_defaulted.clone()));
    let mark = |mut v: Value| {
        v["x-upcaster"] = json!({"version": 1});
        v
    };
    let changes = diff(&mark(base.clone()), &mark(b_defaulted), Mode::Backward);
    assert!(
        compatible(&changes),
        "a reader fills the default: {changes:?}"
    );
    assert!(changes.iter().any(|c| c.rule == "required-with-default"));
    assert!(back(b_required, base));
}

#[test]
fn type_widening_narrowing_and_nullability() {
    assert!(back(json!({"type": "integer"}), json!({"type": "number"})));
    assert!(!back(json!({"type": "number"}), json!({"type": "integer"})));
    let string = json!({"type": "string"});
    let nullable_array = json!({"type": ["string", "null"]});
    let nullable_any_of = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
    assert!(back(string.clone(), nullable_array.clone()));
    assert!(back(string.clone(), nullable_any_of.clone()));
    assert!(!back(nullable_array.clone(), string.clone()));
    assert!(!back(nullable_any_of.clone(), string.clone()));
    assert!(back(nullable_any_of, nullable_array));
    // Integer widths, which schemars writes only as `format`: ranges for serde's types,
    // annotations for JSON Schema validators.
    let serde = json!({"version": 1});
    let u32s = json!({"type": "integer", "format": "uint32", "minimum": 0, "x-upcaster": serde});
    let u64s = json!({"type": "integer", "format": "uint64", "minimum": 0, "x-upcaster": serde});
    let i64s = json!({"type": "integer", "format": "int64", "x-upcaster": serde});
    assert!(
        back(
            json!({"type": "integer", "format": "uint64"}),
            json!({"type": "integer", "format": "uint32"})
        ),
        "without serde, `format` constrains nothing"
    );
    assert!(back(u32s.clone(), u64s.clone()));
    assert!(!back(u64s.clone(), u32s.clone()));
    assert!(back(u32s.clone(), i64s.clone()));
    assert!(!back(u64s, i64s.clone()), "u64 above i64::MAX");
    assert!(!back(i64s, u32s), "negative values");
}

#[test]
fn values_and_bounds() {
    assert!(back(
        json!({"enum": ["a", "b"]}),
        json!({"enum": ["a", "b", "c"]})
    ));
    assert!(!back(json!({"enum": ["a", "b"]}), json!({"enum": ["a"]})));
    assert!(back(json!({"const": "a"}), json!({"enum": ["a", "b"]})));
    assert!(!back(json!({"const": "a"}), json!({"const": "b"})));
    assert!(!back(
        json!({"type": "string"}),
        json!({"type": "string", "enum": ["a"]})
    ));
    assert!(
        !back(json!({"enum": ["a", 1]}), json!({"type": "string"})),
        "1 is not a string"
    );
    assert!(back(
        json!({"type": "number", "minimum": 1}),
        json!({"type": "number", "minimum": 0})
    ));
    assert!(!back(
        json!({"type": "number", "minimum": 0}),
        json!({"type": "number", "exclusiveMinimum": 0})
    ));
    assert!(back(
        json!({"type": "number", "exclusiveMaximum": 5}),
        json!({"type": "number", "maximum": 5})
    ));
    assert!(back(
        json!({"type": "number", "multipleOf": 4}),
        json!({"type": "number", "multipleOf": 2})
    ));
    assert!(!back(
        json!({"type": "number", "multipleOf": 2}),
        json!({"type": "number", "multipleOf": 4})
    ));
    assert!(back(
        json!({"type": "string", "maxLength": 3}),
        json!({"type": "string", "maxLength": 5})
    ));
    assert!(!back(
        json!({"type": "string"}),
        json!({"type": "string", "pattern": "^a"})
    ));
    assert!(back(
        json!({"type": "string", "pattern": "^a"}),
        json!({"type": "string"})
    ));
    assert!(!back(
        json!({"type": "string"}),
        json!({"type": "string", "format": "uuid"})
    ));
}

#[test]
fn arrays_items_prefix_items_and_contains() {
    assert!(back(
        json!({"type": "array", "items": {"type": "integer"}}),
        json!({"type": "array", "items": {"type": "number"}})
    ));
    assert!(!back(
        json!({"type": "array", "items": {"type": "number"}}),
        json!({"type": "array", "items": {"type": "integer"}})
    ));
    let pair = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false});
    let triple = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}], "items": false});
    assert!(
        back(pair.clone(), triple.clone()),
        "a closed tuple never had a third item"
    );
    assert!(back(
        triple.clone(),
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": true})
    ));
    assert!(!back(
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": true}),
        pair
    ));
    assert!(!back(
        json!({"type": "array"}),
        json!({"type": "array", "contains": {"type": "string"}})
    ));
    assert!(!back(
        json!({"type": "array", "contains": {"type": "string"}, "minContains": 1}),
        json!({"type": "array", "contains": {"type": "string"}, "minContains": 2})
    ));
    assert!(back(
        json!({"type": "array", "contains": {"type": "string"}, "minContains": 2}),
        json!({"type": "array", "contains": {"type": "string"}, "minContains": 1})
    ));
}

#[test]
fn references_resolve_even_when_recursive() {
    let tree = |leaf: &str| {
        json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {
                "value": {"type": leaf},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
            }}}
        })
    };
    assert!(back(tree("integer"), tree("number")));
    let changes = diff(&tree("number"), &tree("integer"), Mode::Backward);
    assert!(!compatible(&changes));
    assert!(
        changes
            .iter()
            .any(|c| c.pointer == "/properties/value/type"),
        "{changes:?}"
    );
    let old_defs = json!({"definitions": {"S": {"type": "string"}}, "properties": {"a": {"$ref": "#/definitions/S"}}});
    assert!(back(
        old_defs,
        json!({"properties": {"a": {"type": "string"}}})
    ));
    let dangling = diff(
        &json!({"$ref": "#/$defs/Missing"}),
        &json!({"type": "string"}),
        Mode::Backward,
    );
    assert!(dangling.iter().any(|c| c.rule == "ref-unresolved"));
}

#[test]
fn combinators_pair_branches_by_best_match() {
    let old = json!({"anyOf": [{"type": "string"}, {"type": "object", "properties": {"a": {"type": "integer"}}}]});
    let widened = json!({"oneOf": [{"type": "object", "properties": {"a": {"type": "number"}}}, {"type": "string"}, {"type": "null"}]});
    assert!(back(old.clone(), widened));
    let narrowed = json!({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "string"}]});
    let changes = diff(&old, &narrowed, Mode::Backward);
    assert!(!compatible(&changes));
    // The object branch is explained against its best match, the object alternative.
    assert!(
        changes
            .iter()
            .any(|c| c.pointer == "/anyOf/0/properties/a/type"),
        "{changes:?}"
    );
    assert!(back(
        json!({"allOf": [{"type": "string"}, {"maxLength": 3}]}),
        json!({"type": "string", "maxLength": 5})
    ));
    assert!(!back(
        json!({"type": "string"}),
        json!({"allOf": [{"type": "string"}, {"maxLength": 3}]})
    ));
}

#[test]
fn serde_schemas_are_closed_for_writers() {
    let mark = |mut v: Value| {
        v["x-upcaster"] = json!({"version": 1});
        v
    };
    let old = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let new = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": ["integer", "null"]}}, "required": ["a"]});
    // Plain JSON Schema: an old document could carry any `b`.
    assert!(!back(old.clone(), new.clone()));
    // From serde types: the old writer never wrote `b`.
    assert!(back(mark(old), mark(new)));
}

/// Verdicts on real serde types must match what serde does: a compatible pair reads every
/// sample, an incompatible pair fails on at least one.
mod serde_pairs {
    use super::*;
    use schemars::JsonSchema;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    fn schema<T: JsonSchema>() -> Value {
        let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap();
        v["x-upcaster"] = json!({"version": 1});
        v
    }

    fn check<Old, New>(samples: &[Old], expect_compatible: bool)
    where
        Old: JsonSchema + Serialize,
        New: JsonSchema + DeserializeOwned,
    {
        let verdict = compatible(&diff(&schema::<Old>(), &schema::<New>(), Mode::Backward));
        let read: Vec<bool> = samples
            .iter()
            .map(|s| serde_json::from_value::<New>(serde_json::to_value(s).unwrap()).is_ok())
            .collect();
        let serde_agrees = read.iter().all(|ok| *ok);
        assert_eq!(
            verdict,
            expect_compatible,
            "engine verdict for {} → {}",
            std::any::type_name::<Old>(),
            std::any::type_name::<New>()
        );
        assert_eq!(
            serde_agrees,
            expect_compatible,
            "serde read the samples as {read:?} for {} → {}",
            std::any::type_name::<Old>(),
            std::any::type_name::<New>()
        );
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct V1 {
        id: u32,
        name: String,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct AddOptional {
        id: u32,
        name: String,
        nick: Option<String>,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct AddRequired {
        id: u32,
        name: String,
        nick: String,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct AddDefault {
        id: u32,
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct RemoveName {
        id: u32,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct RemoveNameStrict {
        id: u32,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct WiderId {
        id: u64,
        name: String,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct FloatId {
        id: f64,
        name: String,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct NullableName {
        id: u32,
        name: Option<String>,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Renamed {
        id: u32,
        title: String,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct StringId {
        id: String,
        name: String,
    }

    fn v1s() -> Vec<V1> {
        vec![
            V1 {
                id: 0,
                name: "".into(),
            },
            V1 {
                id: u32::MAX,
                name: "ponka".into(),
            },
        ]
    }

    #[test]
    fn adding_and_removing_fields() {
        check::<V1, AddOptional>(&v1s(), true);
        check::<V1, AddRequired>(&v1s(), false);
        check::<V1, AddDefault>(&v1s(), true);
        check::<V1, RemoveName>(&v1s(), true);
        check::<V1, RemoveNameStrict>(&v1s(), false);
        check::<V1, Renamed>(&v1s(), false);
    }

    #[test]
    fn changing_field_types() {
        check::<V1, WiderId>(&v1s(), true);
        check::<V1, FloatId>(&v1s(), true);
        check::<V1, NullableName>(&v1s(), true);
        check::<V1, StringId>(&v1s(), false);
        let wide = vec![WiderId {
            id: u64::MAX,
            name: "x".into(),
        }];
        check::<WiderId, V1>(&wide, false);
        let nulls = vec![NullableName { id: 1, name: None }];
        check::<NullableName, V1>(&nulls, false);
        let fractions = vec![FloatId {
            id: 1.5,
            name: "x".into(),
        }];
        check::<FloatId, V1>(&fractions, false);
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    enum Colour2 {
        Red,
        Blue,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    enum Colour3 {
        Red,
        Blue,
        Green,
    }

    #[test]
    fn enum_variants() {
        check::<Colour2, Colour3>(&[Colour2::Red, Colour2::Blue], true);
        check::<Colour3, Colour2>(&[Colour3::Green], false);
    }
}

/// What schemars does not show, the derive records: serde aliases and catch-all variants.
mod serde_facts {
    use super::*;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use upcaster::schema::schema_of;

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "Post", version = 1)]
    struct PostV1 {
        image_post_id: u64,
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "Post", version = 2)]
    struct PostAliased {
        #[serde(alias = "imagePostId")]
        image_post: u64,
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "Post", version = 2)]
    struct PostRenamed {
        image_post: u64,
    }

    #[test]
    fn a_renamed_field_that_keeps_an_alias_is_compatible() {
        let recorded = schema_of::<PostAliased>();
        assert_eq!(
            recorded["x-upcaster"]["aliases"],
            json!({"imagePost": ["imagePostId"]})
        );
        let old = schema_of::<PostV1>();
        assert!(compatible(&diff(&old, &recorded, Mode::Backward)));
        assert!(!compatible(&diff(
            &old,
            &schema_of::<PostRenamed>(),
            Mode::Backward
        )));
        // And serde agrees.
        let v1 = serde_json::to_value(PostV1 { image_post_id: 3 }).unwrap();
        assert!(serde_json::from_value::<PostAliased>(v1.clone()).is_ok());
        assert!(serde_json::from_value::<PostRenamed>(v1).is_err());
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "snake_case")]
    #[message(name = "Mood", version = 1)]
    enum MoodV1 {
        Happy,
        #[serde(other)]
        SomethingElse,
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "snake_case")]
    #[message(name = "Mood", version = 2)]
    enum MoodV2 {
        Happy,
        SomethingElse,
        Sleepy,
    }

    #[test]
    fn a_catch_all_variant_lets_old_readers_accept_new_variants() {
        let old = schema_of::<MoodV1>();
        assert_eq!(old["x-upcaster"]["other"], "something_else");
        let new = schema_of::<MoodV2>();
        assert!(compatible(&diff(&old, &new, Mode::Forward)));
        assert!(compatible(&diff(&old, &new, Mode::Backward)));
        // Without the catch-all, old readers refuse `sleepy`.
        let mut plain = old.clone();
        plain["x-upcaster"].as_object_mut().unwrap().remove("other");
        assert!(!compatible(&diff(&plain, &new, Mode::Forward)));
        let sleepy = serde_json::to_value(MoodV2::Sleepy).unwrap();
        assert!(matches!(
            serde_json::from_value::<MoodV1>(sleepy),
            Ok(MoodV1::SomethingElse)
        ));
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[message(name = "Tagged", version = 1)]
    struct TaggedV1 {
        id: u32,
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[message(name = "Tagged", version = 2)]
    struct TaggedSkipped {
        id: u32,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[message(name = "Tagged", version = 2)]
    struct TaggedDefaulted {
        id: u32,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        tags: Vec<String>,
    }

    #[test]
    fn a_field_the_writer_may_skip_is_still_required_to_read_without_a_default() {
        let skipped = schema_of::<TaggedSkipped>();
        assert_eq!(skipped["x-upcaster"]["required"], json!(["tags"]));
        let old = schema_of::<TaggedV1>();
        assert!(!compatible(&diff(&old, &skipped, Mode::Backward)));
        assert!(compatible(&diff(
            &old,
            &schema_of::<TaggedDefaulted>(),
            Mode::Backward
        )));
        let v1 = serde_json::to_value(TaggedV1 { id: 1 }).unwrap();
        assert!(serde_json::from_value::<TaggedSkipped>(v1.clone()).is_err());
        assert!(serde_json::from_value::<TaggedDefaulted>(v1).is_ok());
    }
}

/// Pairs where a document valid under the old schema is refused by the new one: each must
/// be reported breaking (found by a review; every document was checked with a validator).
#[test]
fn no_false_compatible_verdicts() {
    let cases = [
        (
            json!({"type": "object"}),
            json!({"type": "object", "if": {"properties": {"a": {"const": 1}}, "required": ["a"]}, "then": {"required": ["b"]}}),
        ),
        (
            json!({"type": "array"}),
            json!({"type": "array", "unevaluatedItems": false}),
        ),
        (
            json!({}),
            json!({"$dynamicAnchor": "m", "$dynamicRef": "#/$defs/s", "$defs": {"s": {"type": "string"}}}),
        ),
        (
            json!({"type": "integer"}),
            json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
        ),
        (
            json!({}),
            json!({"anyOf": [{}], "oneOf": [{"type": "string"}]}),
        ),
        (
            json!({"not": {"$ref": "#/$defs/x"}, "$defs": {"x": {"type": "integer"}}}),
            json!({"not": {"$ref": "#/$defs/x"}, "$defs": {"x": {"type": "number"}}}),
        ),
        (
            json!({"type": "object"}),
            json!({"$ref": "#/$defs/o", "required": ["x"], "$defs": {"o": {"type": "object"}}}),
        ),
        (
            json!({"type": "array", "contains": {"type": "string"}, "minContains": 0}),
            json!({"type": "array", "contains": {"type": "string"}}),
        ),
        (
            json!({"properties": {"abd": {"type": "string"}}, "additionalProperties": false}),
            json!({"patternProperties": {"^ab+c$": {"type": "string"}}, "additionalProperties": false}),
        ),
        (
            json!({"patternProperties": {"^ab+c$": {"type": "string"}}}),
            json!({"properties": {"abd": {"type": "string"}}}),
        ),
        (
            json!({"properties": {"a1": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"a1": {"type": "string"}}, "additionalProperties": false, "patternProperties": {"^a": {"minLength": 5}}}),
        ),
        (
            json!({"properties": {"ab": {"type": "string"}}, "additionalProperties": false}),
            json!({"patternProperties": {"^a": {"type": "string"}, "b$": {"maxLength": 0}}, "additionalProperties": false}),
        ),
        (
            json!({"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": false}),
            json!({"patternProperties": {"y$": {"type": "string"}}}),
        ),
        (
            json!({"properties": {"a": {}}, "dependentSchemas": {"a": {"properties": {"b": {}}}}, "unevaluatedProperties": false}),
            json!({"properties": {"a": {}}, "additionalProperties": false}),
        ),
        (
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "minimum": 5}),
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "minimum": 5, "exclusiveMinimum": true}),
        ),
        (
            json!({"type": "integer", "maximum": 9007199254740993u64}),
            json!({"type": "integer", "maximum": 9007199254740992u64}),
        ),
        (json!({"multipleOf": 1e-13}), json!({"multipleOf": 1})),
        (
            json!({"type": "object"}),
            json!({"properties": {"a": {"default": 1}}, "required": ["a"]}),
        ),
        (
            json!({"type": "integer", "format": "uint8"}),
            json!({"type": "integer", "maximum": 255}),
        ),
        (json!({"type": "string"}), json!(3)),
    ];
    for (old, new) in cases {
        let changes = diff(&old, &new, Mode::Backward);
        assert!(
            !compatible(&changes),
            "{old} → {new} was called compatible: {changes:?}"
        );
    }
    // Serde specifics: a flattened map is written, and a field and its alias cannot both be.
    let serde = json!({"version": 1});
    let flattened = json!({"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}, "x-upcaster": serde});
    let strict = json!({"properties": {"a": {"type": "string"}}, "additionalProperties": false, "x-upcaster": serde});
    assert!(!back(flattened, strict));
    let both = json!({"type": "object", "properties": {"name": {"type": "string"}, "title": {"type": "string"}}, "x-upcaster": serde});
    let aliased = json!({"type": "object", "properties": {"title": {"type": "string"}}, "x-upcaster": {"version": 2, "aliases": {"title": ["name"]}}});
    let changes = diff(&both, &aliased, Mode::Backward);
    assert!(
        changes
            .iter()
            .any(|c| c.rule == "alias-clash" && c.breaking),
        "{changes:?}"
    );
}

/// Schemas that once overflowed the stack or ran for minutes now end, and say so.
#[test]
fn pathological_schemas_end() {
    let cyclic = json!({"anyOf": [{"$ref": "#"}]});
    let _ = diff(&cyclic, &cyclic, Mode::Full);
    let _ = diff(
        &json!({"allOf": [{"$ref": "#"}]}),
        &json!({"type": "object"}),
        Mode::Full,
    );
    // A long acyclic chain of definitions.
    let mut defs = serde_json::Map::new();
    for i in 0..3000 {
        defs.insert(
            format!("d{i}"),
            json!({"type": "object", "properties": {"x": {"$ref": format!("#/$defs/d{}", i + 1)}}}),
        );
    }
    defs.insert("d3000".into(), json!({"type": "string"}));
    let chain = json!({"$ref": "#/$defs/d0", "$defs": defs});
    let changes = diff(&chain, &chain, Mode::Backward);
    assert!(
        changes.iter().any(|c| c.rule == "schema-too-complex"),
        "deep chains are cut off"
    );
    // Two references per level: 2^40 paths without memoisation.
    let mut defs = serde_json::Map::new();
    for i in 0..40 {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(
            format!("d{i}"),
            json!({"type": "object", "properties": {"a": {"$ref": next}, "b": {"$ref": next}}}),
        );
    }
    defs.insert("d40".into(), json!({"type": "string"}));
    let wide = json!({"$ref": "#/$defs/d0", "$defs": defs});
    assert!(compatible(&diff(&wide, &wide, Mode::Full)));
    // Big enums.
    let old: Vec<u32> = (0..100_000).collect();
    let new: Vec<u32> = (1..100_000).collect();
    let changes = diff(&json!({"enum": old}), &json!({"enum": new}), Mode::Backward);
    assert!(changes.iter().any(|c| c.rule == "enum-narrowed"));
}
