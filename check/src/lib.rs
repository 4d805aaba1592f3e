//! `schema-check`: the rules that keep message changes safe, run over a repository's
//! `schemas/`, `migrations/` and samples without compiling its code, and the compatibility
//! engine they use. Install the `schema-check` binary; services never depend on this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compat;
pub mod output;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use serde_json::Value;

use upcaster::migration::Migration;
use upcaster::schema::{Manifest, StepKind, MANIFEST};

use crate::compat::Mode;
pub use rules::{Rule, Severity};

/// Where the repository's files are.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// `schemas/`.
    pub schemas: PathBuf,
    /// `migrations/`.
    pub migrations: PathBuf,
    /// `tests/samples/`.
    pub samples: PathBuf,
    /// A git ref to compare with, like `buf breaking --against`.
    pub against: Option<String>,
}

impl Config {
    /// The repository's directories; no `--against`.
    pub fn new(
        schemas: impl Into<PathBuf>,
        migrations: impl Into<PathBuf>,
        samples: impl Into<PathBuf>,
    ) -> Self {
        Config {
            schemas: schemas.into(),
            migrations: migrations.into(),
            samples: samples.into(),
            against: None,
        }
    }

    /// Compares with the schemas at git ref `against` too.
    pub fn against(mut self, against: Option<String>) -> Self {
        self.against = against;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schemas: "schemas".into(),
            migrations: "migrations".into(),
            samples: "tests/samples".into(),
            against: None,
        }
    }
}

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule's id.
    pub rule: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The file it is about.
    pub file: String,
    /// JSON Pointer into the file, empty for the file itself.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: &'static str,
}

/// A problem with the setup rather than the repository's contents (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Every finding for the repository at `config`, errors first within each file.
pub fn check(config: &Config) -> Result<Vec<Finding>, ConfigError> {
    let repo = Repo::load(config)?;
    let mut found = Found::default();
    repo.manifest_rules(&mut found);
    repo.version_rules(&mut found);
    repo.step_rules(&mut found);
    repo.sample_rules(&mut found);
    if let Some(base) = &config.against {
        repo.against(base, &mut found)?;
    }
    let mut findings = found.0;
    findings.sort_by(|a, b| (&a.file, a.severity, a.rule).cmp(&(&b.file, b.severity, b.rule)));
    Ok(findings)
}

/// True when some finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[derive(Default)]
struct Found(Vec<Finding>);

impl Found {
    fn add(&mut self, rule: &Rule, file: impl Into<String>, pointer: &str, message: String) {
        self.0.push(Finding {
            rule: rule.id,
            severity: rule.severity,
            file: file.into(),
            pointer: pointer.to_owned(),
            message,
            fix: rule.fix,
        });
    }
}

/// A schema file: its path for messages, and its contents if they parsed.
struct SchemaFile {
    path: String,
    schema: Option<Value>,
}

/// A stored sample: its file, and its payload if the envelope read.
struct Sample {
    path: String,
    payload: Value,
}

struct Repo {
    config: Config,
    manifest: Manifest,
    /// Type → version → schema file.
    schemas: BTreeMap<String, BTreeMap<u32, SchemaFile>>,
    migrations: BTreeMap<String, Migration>,
    /// Type → version → samples.
    samples: BTreeMap<String, BTreeMap<u32, Vec<Sample>>>,
    /// Findings made while loading, reported with the rest.
    early: Vec<Finding>,
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

impl Repo {
    fn load(config: &Config) -> Result<Repo, ConfigError> {
        let mut found = Found::default();
        let manifest_path = config.schemas.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            ConfigError(format!(
                "cannot read {}: {e}; generate it with UPCASTER_SCHEMAS=write cargo test",
                manifest_path.display()
            ))
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "{} is not a manifest: {e}",
                manifest_path.display()
            ))
        })?;

        let mut schemas: BTreeMap<String, BTreeMap<u32, SchemaFile>> = BTreeMap::new();
        for dir in read_dir_sorted(&config.schemas) {
            if !dir.is_dir() {
                continue;
            }
            let type_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let versions = schemas.entry(type_name.clone()).or_default();
            for file in read_dir_sorted(&dir) {
                let path = display(&file);
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
                let is_json = file.extension().is_some_and(|e| e == "json");
                let Some(version) = stem
                    .as_deref()
                    .filter(|_| is_json)
                    .and_then(upcaster::envelope::version_of_dir)
                else {
                    found.add(
                        &rules::SCHEMA_INVALID,
                        path,
                        "",
                        "schema files are named v<N>.json, N from 1".into(),
                    );
                    continue;
                };
                let schema = match std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
                {
                    Ok(v) => {
                        if let Err(e) = jsonschema::validator_for(&v) {
                            found.add(
                                &rules::SCHEMA_INVALID,
                                path.clone(),
                                "",
                                format!("not a usable JSON Schema: {e}"),
                            );
                        }
                        Some(v)
                    }
                    Err(e) => {
                        found.add(
                            &rules::SCHEMA_INVALID,
                            path.clone(),
                            "",
                            format!("not JSON: {e}"),
                        );
                        None
                    }
                };
                // One name per version (`v2`, never `v02`): no two files can name the same.
                versions.insert(version, SchemaFile { path, schema });
            }
        }

        // Each file on its own, so that one broken file hides no other.
        let mut migrations = BTreeMap::new();
        for type_dir in read_dir_sorted(&config.migrations) {
            let type_name = type_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for file in read_dir_sorted(&type_dir) {
                if file.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rel = format!("{type_name}/{name}");
                let text = match std::fs::read_to_string(&file) {
                    Ok(text) => text,
                    Err(e) => {
                        found.add(
                            &rules::MIGRATION_INVALID,
                            display(&file),
                            "",
                            format!("cannot read: {e}"),
                        );
                        continue;
                    }
                };
                match Migration::parse(&rel, &text) {
                    Ok(m) => {
                        migrations.insert(rel, m);
                    }
                    Err(e) => found.add(
                        &rules::MIGRATION_INVALID,
                        display(&file),
                        &e.pointer,
                        e.to_string(),
                    ),
                }
            }
        }

        let mut samples: BTreeMap<String, BTreeMap<u32, Vec<Sample>>> = BTreeMap::new();
        for type_dir in read_dir_sorted(&config.samples) {
            let type_name = type_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for version_dir in read_dir_sorted(&type_dir) {
                let Some(version) = version_dir
                    .file_name()
                    .and_then(|n| upcaster::envelope::version_of_dir(&n.to_string_lossy()))
                else {
                    continue;
                };
                for file in read_dir_sorted(&version_dir) {
                    let path = display(&file);
                    let names: Vec<&str> = std::iter::once(type_name.as_str())
                        .chain(
                            manifest
                                .types
                                .get(&type_name)
                                .into_iter()
                                .flat_map(|t| t.aliases.iter().map(String::as_str)),
                        )
                        .collect();
                    match read_sample(&file, &names, version) {
                        Ok(payload) => samples
                            .entry(type_name.clone())
                            .or_default()
                            .entry(version)
                            .or_default()
                            .push(Sample { path, payload }),
                        Err(why) => found.add(&rules::SAMPLE_INVALID, path, "", why),
                    }
                }
            }
        }

        Ok(Repo {
            config: config.clone(),
            manifest,
            schemas,
            migrations,
            samples,
            early: found.0,
        })
    }

    fn schema(&self, type_name: &str, version: u32) -> Option<&SchemaFile> {
        self.schemas.get(type_name)?.get(&version)
    }

    /// The versions of a type whose messages may still be queued: those with a schema
    /// file that are not retired.
    fn kept(&self, type_name: &str) -> Vec<u32> {
        let retired = self
            .manifest
            .types
            .get(type_name)
            .map(|t| t.retired.clone())
            .unwrap_or_default();
        self.schemas
            .get(type_name)
            .map(|v| v.keys().copied().filter(|v| !retired.contains(v)).collect())
            .unwrap_or_default()
    }

    fn manifest_rules(&self, found: &mut Found) {
        found.0.extend(self.early.iter().cloned());
        let manifest_file = display(&self.config.schemas.join(MANIFEST));
        for (name, entry) in &self.manifest.types {
            if self.schema(name, entry.current).is_none() {
                let path = display(&upcaster::schema::schema_path(
                    &self.config.schemas,
                    name,
                    entry.current,
                ));
                found.add(
                    &rules::SCHEMA_MISSING,
                    path,
                    "",
                    format!(
                        "the manifest says `{name}` is at v{}, but it has no schema",
                        entry.current
                    ),
                );
            }
            for &v in &entry.versions {
                if v != entry.current
                    && self.schema(name, v).is_none()
                    && !entry.retired.contains(&v)
                {
                    let path = display(&upcaster::schema::schema_path(
                        &self.config.schemas,
                        name,
                        v,
                    ));
                    found.add(
                        &rules::SCHEMA_MISSING,
                        path,
                        "",
                        format!("the registry reads `{name}` v{v}, which has no schema"),
                    );
                }
            }
            for (i, step) in entry.steps.iter().enumerate() {
                let at = format!("/types/{}/steps/{i}", escape(name));
                let mut stale = |message: String| {
                    found.add(&rules::MANIFEST_STALE, manifest_file.clone(), &at, message);
                };
                if step.from.checked_add(1) != Some(step.to) || step.to > entry.current {
                    stale(format!(
                        "`{name}` step v{}→v{} is not one step up to at most v{}",
                        step.from, step.to, entry.current
                    ));
                }
                if entry.steps[..i].iter().any(|s| s.from == step.from) {
                    stale(format!("`{name}` has two steps from v{}", step.from));
                }
                match (step.by, &step.file) {
                    (StepKind::Migration, None) => {
                        stale(format!(
                            "`{name}` step v{}→v{} is a migration with no file",
                            step.from, step.to
                        ));
                    }
                    (StepKind::Migration, Some(file)) => {
                        let expected = format!("{name}/v{}-to-v{}.json", step.from, step.to);
                        let renamed_dir = entry
                            .aliases
                            .iter()
                            .any(|a| *file == format!("{a}/v{}-to-v{}.json", step.from, step.to));
                        if *file != expected && !renamed_dir {
                            stale(format!(
                                "`{name}` step v{}→v{} names {file}, not {expected}",
                                step.from, step.to
                            ));
                        }
                    }
                    _ => {}
                }
                if let (StepKind::Migration, Some(file)) = (step.by, &step.file) {
                    let broken = self.early.iter().any(|f| {
                        f.rule == rules::MIGRATION_INVALID.id && f.file.ends_with(file.as_str())
                    });
                    if !self.migrations.contains_key(file) && !broken {
                        found.add(
                            &rules::MANIFEST_STALE,
                            manifest_file.clone(),
                            &format!("/types/{}/steps/{i}", escape(name)),
                            format!(
                                "`{name}` v{}→v{} names {file}, which is not in {}",
                                step.from,
                                step.to,
                                display(&self.config.migrations)
                            ),
                        );
                    }
                }
            }
        }
        for name in self.schemas.keys() {
            if !self.manifest.types.contains_key(name) {
                found.add(
                    &rules::MANIFEST_STALE,
                    display(&self.config.schemas.join(name)),
                    "",
                    format!("schemas of `{name}`, a type the manifest does not list"),
                );
            }
        }
        let listed: BTreeSet<&str> = self
            .manifest
            .types
            .values()
            .flat_map(|t| t.steps.iter().filter_map(|s| s.file.as_deref()))
            .collect();
        for file in self.migrations.keys() {
            if !listed.contains(file.as_str()) {
                found.add(
                    &rules::MANIFEST_STALE,
                    display(&self.config.migrations.join(file)),
                    "",
                    "a migration the manifest does not list: the registry does not load it".into(),
                );
            }
        }
    }

    fn version_rules(&self, found: &mut Found) {
        for (name, entry) in &self.manifest.types {
            let kept = self.kept(name);
            let Some(&oldest) = kept.first() else {
                continue;
            };
            // Walk the versions that exist, not the numbers between: a manifest may say
            // anything, and each run of missing versions is one finding.
            let mut present: Vec<u32> = self
                .schemas
                .get(name)
                .map(|v| v.keys().copied().filter(|v| *v >= oldest).collect())
                .unwrap_or_default();
            present.extend(entry.retired.iter().copied().filter(|v| *v >= oldest));
            present.push(entry.current);
            present.sort_unstable();
            present.dedup();
            for pair in present.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if b > a + 1 && a < entry.current {
                    let path = display(&upcaster::schema::schema_path(
                        &self.config.schemas,
                        name,
                        a + 1,
                    ));
                    let missing = if b == a + 2 {
                        format!("v{}", a + 1)
                    } else {
                        format!("v{} to v{}", a + 1, b - 1)
                    };
                    found.add(
                        &rules::VERSION_GAP,
                        path,
                        "",
                        format!("`{name}` keeps v{oldest} but has no schema for {missing}"),
                    );
                }
            }
            let files = self.schemas.get(name).into_iter().flatten();
            for (&v, a) in files {
                let Some(b) = v.checked_add(1).and_then(|next| self.schema(name, next)) else {
                    continue;
                };
                if let (Some(x), Some(y)) = (&a.schema, &b.schema) {
                    if without_version(x) == without_version(y) {
                        found.add(
                            &rules::VERSION_IDENTICAL,
                            b.path.clone(),
                            "",
                            format!("`{name}` v{} has the same schema as v{v}", v + 1),
                        );
                    }
                }
            }
        }
    }

    fn step_rules(&self, found: &mut Found) {
        for (name, entry) in &self.manifest.types {
            let step = |from: u32| entry.steps.iter().find(|s| s.from == from);
            for v in self.kept(name) {
                if v >= entry.current {
                    continue;
                }
                // The chain from a kept version must reach the current one.
                if let Some(missing) = (v..entry.current).find(|k| step(*k).is_none()) {
                    let incompatible = self.breaking(name, missing);
                    let file = self
                        .schema(name, v)
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    // The changes point into the newer schema, the reader's.
                    let newer = self
                        .schema(name, v + 1)
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    match incompatible {
                        Some(changes) if missing == v => found.add(
                            &rules::BREAKING_WITHOUT_MIGRATION,
                            newer,
                            &changes[0].pointer,
                            format!(
                                "`{name}` v{v}→v{} breaks old messages and no step converts them: {}",
                                v + 1,
                                describe(&changes)
                            ),
                        ),
                        _ => found.add(
                            &rules::CHAIN_BROKEN,
                            file,
                            "",
                            format!("`{name}` v{v} cannot reach v{}: no step v{missing}→v{}", entry.current, missing + 1),
                        ),
                    }
                    continue;
                }
                // A migration with no operations does not convert anything.
                let Some(s) = step(v) else { continue };
                let empty = s
                    .file
                    .as_ref()
                    .and_then(|f| self.migrations.get(f))
                    .is_some_and(|m| m.ops().is_empty());
                if empty {
                    if let Some(changes) = self.breaking(name, v) {
                        let file = s
                            .file
                            .as_deref()
                            .map(|f| display(&self.config.migrations.join(f)))
                            .unwrap_or_default();
                        found.add(
                            &rules::BREAKING_WITHOUT_MIGRATION,
                            file,
                            "/ops",
                            format!("`{name}` v{v}→v{} breaks old messages but this migration has no operations: {}", v + 1, describe(&changes)),
                        );
                    }
                }
            }
        }
    }

    /// The breaking changes of step `v` → `v + 1`, if both schemas are here and any are.
    fn breaking(&self, name: &str, v: u32) -> Option<Vec<compat::Change>> {
        let old = self.schema(name, v)?.schema.as_ref()?;
        let new = self.schema(name, v + 1)?.schema.as_ref()?;
        let changes: Vec<_> = compat::diff(old, new, Mode::Backward)
            .into_iter()
            .filter(|c| c.breaking)
            .collect();
        (!changes.is_empty()).then_some(changes)
    }

    fn sample_rules(&self, found: &mut Found) {
        for (name, entry) in &self.manifest.types {
            for v in self.kept(name) {
                let samples = self
                    .samples
                    .get(name)
                    .and_then(|s| s.get(&v))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if samples.is_empty() && v < entry.current {
                    let file = self
                        .schema(name, v)
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    found.add(
                        &rules::NO_SAMPLES,
                        file,
                        "",
                        format!(
                            "released `{name}` v{v} has no samples in {}",
                            display(&self.config.samples)
                        ),
                    );
                    self.check_generated(name, v, found);
                }
                for sample in samples {
                    self.check_sample(name, v, sample, found);
                }
            }
        }
    }

    /// A sample fits its schema, and each migration step takes it to something the next
    /// version's schema accepts. Rust steps are run by `cargo test`, not here.
    fn check_sample(&self, name: &str, version: u32, sample: &Sample, found: &mut Found) {
        let Some(entry) = self.manifest.types.get(name) else {
            return;
        };
        if let Some(problem) = self.invalid(name, version, &sample.payload) {
            found.add(
                &rules::SAMPLE_INVALID,
                sample.path.clone(),
                &format!("/payload{}", problem.0),
                problem.1,
            );
            return;
        }
        let mut payload = sample.payload.clone();
        for v in version..entry.current {
            let Some(step) = entry.steps.iter().find(|s| s.from == v) else {
                return;
            };
            let Some(migration) = step.file.as_ref().and_then(|f| self.migrations.get(f)) else {
                return;
            };
            if let Err(e) = migration.apply(&mut payload) {
                found.add(
                    &rules::SAMPLE_UPCAST_FAILED,
                    sample.path.clone(),
                    "/payload",
                    format!("`{name}` v{v}→v{}: {e}", v + 1),
                );
                return;
            }
            if let Some((pointer, why)) = self.invalid(name, v + 1, &payload) {
                let at = if pointer.is_empty() {
                    "the payload".to_owned()
                } else {
                    pointer
                };
                found.add(
                    &rules::MIGRATION_OUTPUT_INVALID,
                    display(&self.config.migrations.join(migration.file())),
                    "",
                    format!(
                        "over {}, the output is not a valid v{}, at {at}: {why}",
                        sample.path,
                        v + 1
                    ),
                );
                return;
            }
        }
    }

    /// With no stored samples, payloads generated from the version's schema take their
    /// place: each migration's output must fit the next version.
    fn check_generated(&self, name: &str, version: u32, found: &mut Found) {
        const EXAMPLES: usize = 24;
        let (Some(entry), Some(schema)) = (
            self.manifest.types.get(name),
            self.schema(name, version).and_then(|s| s.schema.as_ref()),
        ) else {
            return;
        };
        for payload in upcaster_testing::generate::examples(schema, EXAMPLES) {
            // The generator covers schemars's keywords, not all of JSON Schema.
            if self.invalid(name, version, &payload).is_some() {
                continue;
            }
            let mut payload = payload;
            for v in version..entry.current {
                let Some(step) = entry.steps.iter().find(|s| s.from == v) else {
                    return;
                };
                let Some(migration) = step.file.as_ref().and_then(|f| self.migrations.get(f))
                else {
                    return;
                };
                let shown = payload.to_string();
                let problem = match migration.apply(&mut payload) {
                    Err(e) => Some(e.to_string()),
                    Ok(()) => self.invalid(name, v + 1, &payload).map(|(at, why)| {
                        format!("the output is not a valid v{}, at {at}: {why}", v + 1)
                    }),
                };
                if let Some(problem) = problem {
                    found.add(
                        &rules::MIGRATION_OUTPUT_INVALID,
                        display(&self.config.migrations.join(migration.file())),
                        "",
                        format!("over the generated v{v} payload {shown}: {problem}"),
                    );
                    return;
                }
            }
        }
    }

    /// Why `payload` does not fit version `v`'s schema, if it does not.
    fn invalid(&self, name: &str, v: u32, payload: &Value) -> Option<(String, String)> {
        let schema = self.schema(name, v)?.schema.as_ref()?;
        let validator = jsonschema::validator_for(schema).ok()?;
        let error = validator.iter_errors(payload).next()?;
        Some((error.instance_path().to_string(), error.to_string()))
    }

    /// Rules that compare with the schemas at a git ref. Paths are taken relative to the
    /// repository's root, whatever the working directory or the spelling of `--schemas`.
    fn against(&self, base: &str, found: &mut Found) -> Result<(), ConfigError> {
        let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?.trim());
        let top = top.canonicalize().unwrap_or(top);
        let dir = self.config.schemas.canonicalize().map_err(|e| {
            ConfigError(format!(
                "cannot find {}: {e}",
                display(&self.config.schemas)
            ))
        })?;
        let rel_dir = dir.strip_prefix(&top).map_err(|_| {
            ConfigError(format!(
                "{} is outside the git repository {}",
                display(&dir),
                display(&top)
            ))
        })?;
        let rel_dir = rel_dir.to_string_lossy().replace('\\', "/");
        let show = |path: &str| git(&["show", &format!("{base}:{path}")]);
        let listing = ls_tree(base, &rel_dir)?;
        let base_manifest: Manifest = show(&format!("{rel_dir}/{MANIFEST}"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut base_files: BTreeSet<(String, u32)> = BTreeSet::new();
        for path in listing.iter() {
            let Some(inside) = path.strip_prefix(&format!("{rel_dir}/")) else {
                continue;
            };
            let mut parts = inside.split('/');
            let (Some(type_name), Some(file), None) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(version) = file
                .strip_suffix(".json")
                .and_then(upcaster::envelope::version_of_dir)
            else {
                continue;
            };
            base_files.insert((type_name.to_owned(), version));
            let old: Option<Value> = serde_json::from_str(&show(path)?).ok();
            let retired = self
                .manifest
                .types
                .get(type_name)
                .is_some_and(|t| t.retired.contains(&version));
            match self.schema(type_name, version) {
                None if !retired => found.add(
                    &rules::RELEASED_DELETED,
                    path.to_owned(),
                    "",
                    format!(
                        "`{type_name}` v{version} is in {base} but deleted here, and not retired"
                    ),
                ),
                None => {}
                // The whole file, marker included: its facts change verdicts too.
                Some(now) if now.schema != old => {
                    let changes = match (&old, &now.schema) {
                        (Some(o), Some(n)) => describe(&compat::diff(o, n, Mode::Full)),
                        _ => "the file changed".into(),
                    };
                    found.add(
                        &rules::RELEASED_MODIFIED,
                        now.path.clone(),
                        "",
                        format!("`{type_name}` v{version} differs from {base}: {changes}"),
                    );
                }
                Some(_) => {}
            }
        }
        // Samples are kept as the queue held them.
        if let Ok(samples) = self.config.samples.canonicalize() {
            if let Ok(rel) = samples.strip_prefix(&top) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                let listing = ls_tree(base, &rel)?;
                for path in listing.iter() {
                    let Some(inside) = path.strip_prefix(&format!("{rel}/")) else {
                        continue;
                    };
                    let Ok(now) = std::fs::read(self.config.samples.join(inside)) else {
                        continue;
                    };
                    let old = git_bytes(&["show", &format!("{base}:{path}")])?;
                    if now != old {
                        found.add(
                            &rules::SAMPLE_MODIFIED,
                            display(&self.config.samples.join(inside)),
                            "",
                            format!("differs from the sample committed in {base}"),
                        );
                    }
                }
            }
        }
        // A version retired in the base, and absent there, must not come back.
        for (name, entry) in &base_manifest.types {
            for v in &entry.retired {
                if base_files.contains(&(name.clone(), *v)) {
                    continue;
                }
                if let Some(now) = self.schema(name, *v) {
                    found.add(
                        &rules::VERSION_REUSED,
                        now.path.clone(),
                        "",
                        format!("`{name}` v{v} was retired in {base}; a retired version is not used again"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A schema without the version number our marker holds, to compare two versions.
fn without_version(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(m)) = v.get_mut("x-upcaster") {
        m.remove("version");
    }
    v
}

fn describe(changes: &[compat::Change]) -> String {
    let shown: Vec<String> = changes.iter().take(3).map(ToString::to_string).collect();
    let more = changes.len().saturating_sub(3);
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The files below `dir` (relative to the repository's root) at `base`, root-relative.
fn ls_tree(base: &str, dir: &str) -> Result<Vec<String>, ConfigError> {
    let pathspec = format!(":/{dir}");
    let listing = git(&[
        "ls-tree",
        "-r",
        "-z",
        "--name-only",
        "--full-name",
        base,
        "--",
        &pathspec,
    ])?;
    Ok(listing
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect())
}

fn git(args: &[&str]) -> Result<String, ConfigError> {
    git_bytes(args).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn git_bytes(args: &[&str]) -> Result<Vec<u8>, ConfigError> {
    let out = Command::new("git")
        .args(args)
        .output()
        .map_err(|e| ConfigError(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(ConfigError(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Reads a stored envelope with upcaster's own reader (the rules every decode applies:
/// duplicate keys, version forms, trailing bytes) and returns its payload, after checking
/// that its type (one of `names`) and version match the directory it is stored in.
fn read_sample(file: &Path, names: &[&str], version: u32) -> Result<Value, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let expected = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => upcaster::Format::Json,
        Some("msgpack") => upcaster::Format::MessagePack,
        _ => return Err("samples are .json or .msgpack envelopes".into()),
    };
    let (header, payload) = upcaster::read_untyped(&bytes).map_err(|e| e.to_string())?;
    if header.format != expected {
        return Err(format!(
            "a {:?} envelope in a file named .{}",
            header.format,
            file.extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
        ));
    }
    if header.version != version {
        return Err(format!(
            "stored under v{version} but its envelope has version {}",
            header.version
        ));
    }
    if !names.contains(&header.type_name.as_ref()) {
        let dir = names.first().copied().unwrap_or_default();
        return Err(format!(
            "stored under {dir} but its envelope has type {:?}",
            header.type_name
        ));
    }
    Ok(payload)
}
