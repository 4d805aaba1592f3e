//! JSON Schemas of messages (feature `schema`): the files in `schemas/`, the manifest, and
//! the test helper that keeps them true to the code. The compatibility engine that judges
//! them is `upcaster-check`'s.
//!
//! `schemas/<TypeName>/v<N>.json` holds the JSON Schema (draft 2020-12, by schemars) of every
//! version of every message, and `schemas/manifest.json` the types, versions, aliases and
//! what serves each step. They are written from code by one command,
//!
//! ```text
//! UPCASTER_SCHEMAS=write cargo test
//! ```
//!
//! with a test that calls [`Schemas::assert_committed`]; afterwards the same test fails
//! whenever the code's schema of a current version differs from its committed file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registry::Registry;
use crate::Message;

/// The name of the manifest file in a schemas directory.
pub const MANIFEST: &str = "manifest.json";

/// The environment variable that makes [`Schemas::assert_committed`] write instead of check.
pub const WRITE_VAR: &str = "UPCASTER_SCHEMAS";

/// `schemas/manifest.json`: what `schema-check` knows of the code without compiling it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// Every message type, by name.
    pub types: BTreeMap<String, TypeEntry>,
}

/// One message type in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TypeEntry {
    /// The current version.
    pub current: u32,
    /// Every version the registry reads: the oldest its chain starts from, up to current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<u32>,
    /// Other names that read as this type: aliases and former names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Versions retired on purpose: no message of them may still be queued, so their schema
    /// files may go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<u32>,
    /// What takes each version to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepEntry>,
}

/// One step vN → vN+1 and what serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StepEntry {
    /// The version read.
    pub from: u32,
    /// The version written.
    pub to: u32,
    /// `migration` (a file in `migrations/`), `rust` (an `Upcaster`) or `typed` (a
    /// `previous` link).
    pub by: StepKind,
    /// The migration file, below the migrations directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What serves a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StepKind {
    /// A declarative migration file.
    Migration,
    /// A Rust `Upcaster`.
    Rust,
    /// A typed `previous` link.
    Typed,
}

impl Manifest {
    /// The types, versions, names and steps of `registry`, as `schemas/manifest.json`
    /// records them.
    pub fn of(registry: &Registry) -> Manifest {
        let mut manifest = Manifest::default();
        for e in &registry.entries {
            let mut steps: Vec<StepEntry> = e
                .steps
                .iter()
                .map(|s| StepEntry {
                    from: s.from,
                    to: s.to,
                    by: if s.as_migration().is_some() {
                        StepKind::Migration
                    } else {
                        StepKind::Rust
                    },
                    file: s.file().map(str::to_owned),
                })
                .collect();
            steps.extend((e.typed_floor..e.current).map(|from| StepEntry {
                from,
                to: from + 1,
                by: StepKind::Typed,
                file: None,
            }));
            manifest.types.insert(
                e.name.to_owned(),
                TypeEntry {
                    current: e.current,
                    versions: (e.oldest..=e.current).collect(),
                    aliases: e.aliases.clone(),
                    retired: Vec::new(),
                    steps,
                },
            );
        }
        manifest
    }
}

/// The JSON Pointers where `a` and `b` differ, outermost first (a member present in one only,
/// a different value), for a drift message; `schema-check diff` judges compatibility.
fn differing_pointers(a: &Value, b: &Value, at: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => differing_pointers(v, w, at, out),
                    _ => out.push(at.clone()),
                }
                at.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                let len = at.len();
                let _ = write!(at, "/{i}");
                differing_pointers(v, w, at, out);
                at.truncate(len);
            }
        }
        _ if a == b => {}
        _ => out.push(at.clone()),
    }
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the root"
    } else {
        pointer
    }
}

/// The schema file of a version: `<dir>/<TypeName>/v<N>.json`.
pub fn schema_path(dir: &Path, type_name: &str, version: u32) -> PathBuf {
    dir.join(type_name).join(format!("v{version}.json"))
}

/// The JSON Schema of `T`, marked as written by upcaster from a serde type.
pub fn schema_of<T: Message + JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut schema {
        let mut marker = serde_json::Map::new();
        marker.insert("type".into(), T::NAME.into());
        marker.insert("version".into(), T::VERSION.into());
        let facts = T::__META.serde;
        if !facts.aliases.is_empty() {
            let aliases = facts.aliases.iter();
            let aliases = aliases.map(|(wire, names)| ((*wire).to_owned(), (*names).into()));
            marker.insert("aliases".into(), Value::Object(aliases.collect()));
        }
        if let Some(other) = facts.other {
            marker.insert("other".into(), other.into());
        }
        if !facts.required.is_empty() {
            marker.insert("required".into(), facts.required.into());
        }
        o.insert("x-upcaster".into(), Value::Object(marker));
    }
    schema
}

/// Pretty JSON with a final newline, as committed.
pub fn to_file_text(v: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    text
}

/// The schemas of a registry's current types, to compare with or write to `schemas/`.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, schemars::JsonSchema, upcaster::Message)]
/// # #[message(version = 1)]
/// # struct DeleteImagePost { id: u64 }
/// #[test]
/// fn schemas_are_committed() {
///     let registry = upcaster::Registry::builder().register::<DeleteImagePost>().build().unwrap();
///     upcaster::schema::Schemas::new(&registry)
///         .message::<DeleteImagePost>()
///         .assert_committed("schemas");
/// }
/// ```
pub struct Schemas<'r> {
    registry: &'r Registry,
    current: BTreeMap<&'static str, (u32, Value)>,
    /// Older versions whose structs the code keeps: their files are history, checked but
    /// never overwritten.
    older: Vec<(&'static str, u32, Value)>,
}

impl<'r> Schemas<'r> {
    /// Schemas for the types of `registry`; add each with [`Schemas::message`].
    pub fn new(registry: &'r Registry) -> Self {
        Schemas {
            registry,
            current: BTreeMap::new(),
            older: Vec::new(),
        }
    }

    /// Adds the current version of `T`.
    pub fn message<T: Message + JsonSchema>(mut self) -> Self {
        self.current.insert(T::NAME, (T::VERSION, schema_of::<T>()));
        self
    }

    /// Adds an older version whose struct the code keeps (a `previous` link, or the struct
    /// yesterday's producer used). Its committed file must match; `write` adds it only when
    /// missing, since a released schema is never rewritten.
    pub fn version<T: Message + JsonSchema>(mut self) -> Self {
        self.older.push((T::NAME, T::VERSION, schema_of::<T>()));
        self
    }

    /// The manifest of the registry, keeping the `retired` lists of `previous`.
    pub fn manifest(&self, previous: Option<&Manifest>) -> Manifest {
        let mut manifest = Manifest::of(self.registry);
        if let Some(previous) = previous {
            for (name, entry) in &mut manifest.types {
                if let Some(old) = previous.types.get(name) {
                    entry.retired = old.retired.clone();
                }
            }
        }
        manifest
    }

    /// Every difference between the code and `dir`, as messages that say what to do.
    pub fn differences(&self, dir: impl AsRef<Path>) -> Vec<String> {
        let dir = dir.as_ref();
        let mut found = Vec::new();
        for name in self.registry.type_names() {
            if !self.current.contains_key(name) {
                found.push(format!(
                    "`{name}` is registered but has no schema here: add `.message::<{name}>()`"
                ));
            }
        }
        for (name, version, schema) in &self.older {
            let path = schema_path(dir, name, *version);
            match std::fs::read_to_string(&path) {
                Ok(have) if have == to_file_text(schema) => {}
                Ok(_) => found.push(format!(
                    "[released-modified] {}: the struct of `{name}` v{version}, a released \
                     version, no longer matches its schema. Restore the struct: released \
                     messages keep their shape",
                    path.display()
                )),
                Err(_) => found.push(format!(
                    "[schema-drift] {}: `{name}` v{version} has no committed schema. Write it: \
                     {WRITE_VAR}=write cargo test",
                    path.display()
                )),
            }
        }
        for (name, (version, schema)) in &self.current {
            let path = schema_path(dir, name, *version);
            let want = to_file_text(schema);
            match std::fs::read_to_string(&path) {
                Err(_) => found.push(format!(
                    "[schema-drift] {}: `{name}` v{version} has no committed schema. New \
                     version? Write it: {WRITE_VAR}=write cargo test",
                    path.display()
                )),
                Ok(have) if have != want => {
                    let committed: Value = serde_json::from_str(&have).unwrap_or(Value::Null);
                    let mut message = format!(
                        "[schema-drift] {}: the code's schema of `{name}` v{version} differs \
                         from the committed file.\n  If v{version} was released, bump the \
                         version (and add a migration for the step).\n  If not, regenerate: \
                         {WRITE_VAR}=write cargo test\n  Differences (`schema-check` judges \
                         whether they are compatible):",
                        path.display()
                    );
                    let mut at = Vec::new();
                    differing_pointers(&committed, schema, &mut String::new(), &mut at);
                    for pointer in at.iter().take(20) {
                        let _ = write!(message, "\n    at {}", display_pointer(pointer));
                    }
                    if at.is_empty() {
                        let _ = write!(message, "\n    {}", first_difference(&have, &want));
                    }
                    found.push(message);
                }
                Ok(_) => {}
            }
        }
        let path = dir.join(MANIFEST);
        let previous = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Manifest>(&t).ok());
        let want = to_file_text(&self.manifest(previous.as_ref()));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            found.push(format!(
                "[schema-drift] {}: the manifest differs from the registry's types and steps. \
                 Regenerate: {WRITE_VAR}=write cargo test",
                path.display()
            ));
        }
        found
    }

    /// Writes the current versions' schemas and the manifest into `dir`.
    pub fn write(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        let dir = dir.as_ref();
        let older = self.older.iter().map(|(n, v, s)| (n, v, s, false));
        let current = self.current.iter().map(|(n, (v, s))| (n, v, s, true));
        for (name, version, schema, overwrite) in older.chain(current) {
            let path = schema_path(dir, name, *version);
            if !overwrite && path.exists() {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, to_file_text(schema))?;
        }
        let path = dir.join(MANIFEST);
        let previous = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Manifest>(&t).ok());
        std::fs::write(&path, to_file_text(&self.manifest(previous.as_ref())))
    }

    /// Fails (panics, for tests) when `dir` does not match the code, saying what to do; with
    /// `UPCASTER_SCHEMAS=write` set, writes the files instead. A relative `dir` is taken from
    /// the crate's root, as `cargo test` runs there.
    #[track_caller]
    pub fn assert_committed(&self, dir: impl AsRef<Path>) {
        let dir = dir.as_ref();
        if std::env::var(WRITE_VAR).is_ok_and(|v| v == "write") {
            if let Err(e) = self.write(dir) {
                panic!("cannot write schemas to {}: {e}", dir.display());
            }
            return;
        }
        let found = self.differences(dir);
        assert!(
            found.is_empty(),
            "schemas out of date:\n{}",
            found.join("\n")
        );
    }
}

/// The first line where two texts differ, for a message.
fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!(
                "line {}: committed `{}`, code `{}`",
                i + 1,
                x.trim(),
                y.trim()
            );
        }
    }
    "the files differ in length".to_owned()
}

/// Stores a message as a sample: `<dir>/<TypeName>/v<N>/<name>.json` (or `.msgpack`), by
/// the type and version its envelope names. An existing sample is never overwritten:
/// samples are kept as they were written.
pub fn store_sample(
    registry: &Registry,
    dir: impl AsRef<Path>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let header = crate::peek(bytes).map_err(|e| invalid(e.to_string()))?;
    let type_name = registry
        .canonical_name(&header.type_name)
        .map_or_else(|| header.type_name.to_string(), str::to_owned);
    store_sample_as(
        dir.as_ref(),
        &type_name,
        header.version,
        header.format,
        name,
        bytes,
    )
}

/// Stores `bytes` as `<dir>/<type_name>/v<version>/<name>.<json|msgpack>`, never over an
/// existing file.
pub fn store_sample_as(
    dir: &Path,
    type_name: &str,
    version: u32,
    format: crate::Format,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(invalid(format!("`{name}` is not a plain file name")));
    }
    let ext = match format {
        crate::Format::Json => "json",
        crate::Format::MessagePack => "msgpack",
    };
    let folder = dir.join(type_name).join(format!("v{version}"));
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{name}.{ext}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::io::Write::write_all(&mut file, bytes)?;
    Ok(path)
}
