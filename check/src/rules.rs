//! Every rule of `schema-check`: one registry, so that `rules`, the docs and the checks
//! cannot disagree.

use serde::Serialize;

/// How serious a finding is: errors fail the check (exit 1), warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Fails the check.
    Error,
    /// Reported, but does not fail the check.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One rule: a stable id, a severity, what it finds and what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rule {
    /// Stable id, used in output and in `rules`.
    pub id: &'static str,
    /// Severity of its findings.
    pub severity: Severity,
    /// What it finds, in one line.
    pub summary: &'static str,
    /// What to do.
    pub fix: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $severity:ident, $summary:literal, $fix:literal;)*) => {
        $(
            #[doc = $summary]
            pub const $name: Rule = Rule {
                id: $id,
                severity: Severity::$severity,
                summary: $summary,
                fix: $fix,
            };
        )*
        /// Every rule, in the order `schema-check rules` lists them.
        pub const ALL: &[Rule] = &[$($name),*];
    };
}

rules! {
    SCHEMA_DRIFT = "schema-drift", Error,
        "a message's code no longer matches its committed schema (checked by the test helper in `cargo test`)",
        "bump the version if the old one was released, else regenerate with UPCASTER_SCHEMAS=write cargo test";
    SCHEMA_MISSING = "schema-missing", Error,
        "the manifest names a version with no schema file",
        "regenerate with UPCASTER_SCHEMAS=write cargo test";
    SCHEMA_INVALID = "schema-invalid", Error,
        "a schema file is not JSON, not a JSON Schema, or has a bad name",
        "restore the file as generated, named v<N>.json";
    MANIFEST_STALE = "manifest-stale", Error,
        "the manifest and the files disagree: a type or migration one has and the other lacks",
        "regenerate with UPCASTER_SCHEMAS=write cargo test";
    RELEASED_MODIFIED = "released-modified", Error,
        "a released version's schema was edited",
        "restore the released file, and make the change as a new version with a migration";
    RELEASED_DELETED = "released-deleted", Error,
        "a released version's schema was deleted while its messages may still be queued",
        "restore the file, or list the version under `retired` once no message of it can be queued";
    VERSION_REUSED = "version-reused", Error,
        "a retired version number is used again",
        "give the new shape the next unused version number";
    VERSION_GAP = "version-gap", Error,
        "a version between the oldest kept and the current one has no schema",
        "restore the missing version's schema, or retire every version below it";
    VERSION_IDENTICAL = "version-identical", Warning,
        "a version's schema is identical to the one before it",
        "drop the bump if nothing changed on the wire, or say what changed in a migration";
    BREAKING_WITHOUT_MIGRATION = "breaking-without-migration", Error,
        "a step is backward-incompatible and nothing converts old payloads",
        "add a migration file (or a Rust upcaster) for the step, or make the change compatible (an optional field, #[serde(default)])";
    CHAIN_BROKEN = "chain-broken", Error,
        "a kept version has no chain of steps to the current one",
        "add the missing step (an empty migration file for a compatible change), or retire the version";
    MIGRATION_INVALID = "migration-invalid", Error,
        "a migration file does not load",
        "fix the file at the operation and pointer named";
    MIGRATION_OUTPUT_INVALID = "migration-output-invalid", Error,
        "a migration's output over a sample does not match the next version's schema",
        "fix the migration so its output fits the next version";
    SAMPLE_INVALID = "sample-invalid", Error,
        "a sample does not match its own version's schema",
        "samples are never edited: restore it, or fix the schema if it is not yet released";
    SAMPLE_UPCAST_FAILED = "sample-upcast-failed", Error,
        "a sample fails to upcast through the migration files",
        "fix the migration step named, or add one that handles this payload";
    SAMPLE_MODIFIED = "sample-modified", Error,
        "a committed sample was edited",
        "restore it: a sample is kept as the queue held it; store a new one under a new name";
    NO_SAMPLES = "no-samples", Warning,
        "a released version has no stored samples",
        "store a message of that version in tests/samples/<TypeName>/v<N>/";
}

/// The rule with id `id`.
pub fn by_id(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}
