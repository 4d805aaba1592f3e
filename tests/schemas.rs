//! `schemas/` matches the code: the repo's own messages, and the helper's failures.

mod common;

use common::ponka::{self, v1, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use upcaster::schema::{Manifest, Schemas, StepKind};
use upcaster::Registry;

fn ponka_schemas(registry: &Registry) -> Schemas<'_> {
    Schemas::new(registry)
        .message::<AddPonkaToImage>()
        .message::<DeleteImagePost>()
        .message::<ImagePostDeletedEvent>()
        .version::<v1::AddPonkaToImage>()
}

/// Regenerate with `UPCASTER_SCHEMAS=write cargo test --test schemas`.
#[test]
fn the_repo_schemas_are_committed() {
    let registry = ponka::registry().unwrap();
    ponka_schemas(&registry).assert_committed(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"));
}

#[test]
fn the_manifest_records_types_aliases_and_what_serves_each_step() {
    let registry = ponka::registry().unwrap();
    let manifest = Manifest::of(&registry);
    let ponka = &manifest.types["AddPonkaToImage"];
    assert_eq!(ponka.current, 2);
    assert_eq!(ponka.steps.len(), 1);
    assert_eq!(ponka.steps[0].by, StepKind::Migration);
    assert_eq!(
        ponka.steps[0].file.as_deref(),
        Some("AddPonkaToImage/v1-to-v2.json")
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("upcaster-schemas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

mod before {
    use super::*;
    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[message(name = "Order", version = 1)]
    pub struct Order {
        pub id: u64,
    }
}

mod after {
    use super::*;
    /// The same name and version, a different shape: the mistake the helper catches.
    #[derive(Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[message(name = "Order", version = 1)]
    pub struct Order {
        pub id: String,
    }
}

#[test]
fn changing_a_struct_without_a_version_bump_fails_with_the_fix() {
    let dir = temp_dir("drift");
    let registry = Registry::builder()
        .register::<before::Order>()
        .build()
        .unwrap();
    let schemas = Schemas::new(&registry).message::<before::Order>();
    assert!(
        !schemas.differences(&dir).is_empty(),
        "nothing is written yet"
    );
    schemas.write(&dir).unwrap();
    assert_eq!(schemas.differences(&dir), Vec::<String>::new());

    let changed = Registry::builder()
        .register::<after::Order>()
        .build()
        .unwrap();
    let found = Schemas::new(&changed)
        .message::<after::Order>()
        .differences(&dir);
    assert_eq!(found.len(), 1, "{found:#?}");
    let message = &found[0];
    assert!(message.starts_with("[schema-drift]"), "{message}");
    assert!(message.contains("Order/v1.json"), "{message}");
    assert!(message.contains("bump the version"), "{message}");
    assert!(
        message.contains("UPCASTER_SCHEMAS=write cargo test"),
        "{message}"
    );
    assert!(message.contains("at /properties/id/type"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_registered_type_without_a_schema_is_named() {
    let dir = temp_dir("missing");
    let registry = Registry::builder()
        .register::<before::Order>()
        .build()
        .unwrap();
    let found = Schemas::new(&registry).differences(&dir);
    assert!(
        found
            .iter()
            .any(|m| m.contains("add `.message::<Order>()`")),
        "{found:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
