//! `schema-check` on a small fixture repository: each rule fires on the change it guards
//! against, with its id and exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

struct Fixture {
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap() + "\n").unwrap();
}

fn order_v1() -> Value {
    json!({"type": "object", "properties": {"id": {"type": "number"}}, "required": ["id"],
           "x-upcaster": {"type": "Order", "version": 1}})
}

fn order_v2() -> Value {
    json!({"type": "object", "properties": {"id": {"type": "string"}, "note": {"type": ["string", "null"]}},
           "required": ["id"], "x-upcaster": {"type": "Order", "version": 2}})
}

fn manifest(steps: Value, retired: Value) -> Value {
    json!({"types": {"Order": {"current": 2, "retired": retired, "steps": steps}}})
}

fn migration_step() -> Value {
    json!([{"from": 1, "to": 2, "by": "migration", "file": "Order/v1-to-v2.json"}])
}

/// A clean repository: Order v1 → v2 (the id becomes a string) by a migration file, with a
/// sample of each version.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("upcaster-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write(&dir.join("schemas/Order/v1.json"), &order_v1());
    write(&dir.join("schemas/Order/v2.json"), &order_v2());
    write(
        &dir.join("schemas/manifest.json"),
        &manifest(migration_step(), json!([])),
    );
    write(
        &dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": [{"op": "to-string", "path": "/id"}]}),
    );
    write(
        &dir.join("tests/samples/Order/v1/first.json"),
        &json!({"type": "Order", "version": 1, "payload": {"id": 7}}),
    );
    write(
        &dir.join("tests/samples/Order/v2/first.json"),
        &json!({"type": "Order", "version": 2, "payload": {"id": "7"}}),
    );
    Fixture { dir }
}

struct Run {
    code: i32,
    findings: Vec<Value>,
    stdout: String,
}

impl Run {
    fn rules(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter_map(|f| f["rule"].as_str())
            .collect()
    }
    fn has(&self, rule: &str) -> bool {
        self.rules().contains(&rule)
    }
    /// The first finding of `rule`; fails the test, with the output, when there is none.
    fn finding(&self, rule: &str) -> &Value {
        self.findings
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("no `{rule}` finding in:\n{}", self.stdout))
    }
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_schema-check"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let findings = serde_json::from_str(&stdout).unwrap_or_default();
    Run {
        code: out.status.code().unwrap_or(-1),
        findings,
        stdout,
    }
}

fn check(f: &Fixture) -> Run {
    run_in(&f.dir, &["check", "--format", "json"])
}

#[test]
fn a_clean_repository_passes() {
    let f = fixture("clean");
    let run = check(&f);
    assert_eq!((run.code, run.rules()), (0, vec![]), "{}", run.stdout);
}

#[test]
fn schema_missing() {
    let f = fixture("missing");
    std::fs::remove_file(f.dir.join("schemas/Order/v2.json")).unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("schema-missing"), "{}", run.stdout);
}

#[test]
fn schema_missing_for_a_version_the_registry_reads() {
    let f = fixture("missing-old");
    let mut m = manifest(migration_step(), json!([]));
    m["types"]["Order"]["versions"] = json!([1, 2]);
    write(&f.dir.join("schemas/manifest.json"), &m);
    std::fs::remove_file(f.dir.join("schemas/Order/v1.json")).unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("schema-missing");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("reads `Order` v1"),
        "{finding}"
    );
}

#[test]
fn schema_invalid() {
    let f = fixture("invalid");
    std::fs::write(f.dir.join("schemas/Order/v2.json"), "{").unwrap();
    std::fs::write(f.dir.join("schemas/Order/version3.json"), "{}").unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    let invalid = run
        .findings
        .iter()
        .filter(|f| f["rule"] == "schema-invalid")
        .count();
    assert_eq!(invalid, 2, "{}", run.stdout);
}

#[test]
fn manifest_stale() {
    let f = fixture("stale");
    write(
        &f.dir.join("schemas/Ghost/v1.json"),
        &json!({"type": "object"}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("manifest-stale"), "{}", run.stdout);
}

#[test]
fn version_gap() {
    let f = fixture("gap");
    let mut m = manifest(
        json!([{"from": 1, "to": 2, "by": "migration", "file": "Order/v1-to-v2.json"},
               {"from": 2, "to": 3, "by": "rust"}]),
        json!([]),
    );
    m["types"]["Order"]["current"] = json!(3);
    write(&f.dir.join("schemas/manifest.json"), &m);
    std::fs::rename(
        f.dir.join("schemas/Order/v2.json"),
        f.dir.join("schemas/Order/v3.json"),
    )
    .unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("version-gap"), "{}", run.stdout);
}

#[test]
fn a_second_name_for_a_version_is_refused_by_the_envelope_s_version_rule() {
    // `v02` would be a second file for v2: the one version rule (no leading zero) refuses it.
    let f = fixture("duplicate");
    write(&f.dir.join("schemas/Order/v02.json"), &order_v2());
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("schema-invalid"), "{}", run.stdout);
    assert!(
        run.stdout.contains("schemas/Order/v02.json"),
        "{}",
        run.stdout
    );
}

#[test]
fn version_identical_is_a_warning() {
    let f = fixture("identical");
    let mut same = order_v1();
    same["x-upcaster"]["version"] = json!(2);
    write(&f.dir.join("schemas/Order/v2.json"), &same);
    write(
        &f.dir.join("tests/samples/Order/v2/first.json"),
        &json!({"type": "Order", "version": 2, "payload": {"id": 7}}),
    );
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": []}),
    );
    let run = check(&f);
    assert_eq!(run.code, 0, "warnings do not fail: {}", run.stdout);
    assert_eq!(run.rules(), ["version-identical"]);
}

#[test]
fn breaking_without_migration() {
    let f = fixture("breaking");
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(json!([]), json!([])),
    );
    std::fs::remove_dir_all(f.dir.join("migrations")).unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("breaking-without-migration"), "{}", run.stdout);
    let finding = run.finding("breaking-without-migration");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("type-narrowed"),
        "{finding}"
    );

    // An empty migration converts nothing either.
    let f = fixture("breaking-empty");
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": []}),
    );
    let run = check(&f);
    assert!(run.has("breaking-without-migration"), "{}", run.stdout);
}

#[test]
fn chain_broken() {
    let f = fixture("chain");
    // A compatible change still needs a step for the registry to read v1.
    let mut v2 = order_v1();
    v2["properties"]["note"] = json!({"type": ["string", "null"]});
    v2["x-upcaster"]["version"] = json!(2);
    write(&f.dir.join("schemas/Order/v2.json"), &v2);
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(json!([]), json!([])),
    );
    std::fs::remove_dir_all(f.dir.join("migrations")).unwrap();
    write(
        &f.dir.join("tests/samples/Order/v2/first.json"),
        &json!({"type": "Order", "version": 2, "payload": {"id": 7}}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert_eq!(run.rules(), ["chain-broken"], "{}", run.stdout);
}

#[test]
fn migration_invalid() {
    let f = fixture("migration-invalid");
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": [{"op": "rename", "from": "/id", "path": "/key"}]}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("migration-invalid");
    assert_eq!(finding["pointer"], "/ops/0/op");
    assert!(finding["file"]
        .as_str()
        .unwrap()
        .ends_with("migrations/Order/v1-to-v2.json"));
}

#[test]
fn migration_output_invalid() {
    let f = fixture("output-invalid");
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": [{"op": "move", "from": "/id", "path": "/key"}]}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    assert!(run.has("migration-output-invalid"), "{}", run.stdout);
}

#[test]
fn sample_invalid() {
    let f = fixture("sample-invalid");
    write(
        &f.dir.join("tests/samples/Order/v1/bad.json"),
        &json!({"type": "Order", "version": 1, "payload": {"id": "seven"}}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("sample-invalid");
    assert_eq!(finding["pointer"], "/payload/id");
}

#[test]
fn sample_upcast_failed() {
    let f = fixture("upcast-failed");
    write(
        &f.dir.join("tests/samples/Order/v1/fraction.json"),
        &json!({"type": "Order", "version": 1, "payload": {"id": 1.5}}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("sample-upcast-failed");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("op 0 (to-string /id)"),
        "{finding}"
    );
}

#[test]
fn no_samples_is_a_warning() {
    let f = fixture("no-samples");
    std::fs::remove_dir_all(f.dir.join("tests/samples/Order/v1")).unwrap();
    // Integer ids: every generated v1 payload converts.
    let mut v1 = order_v1();
    v1["properties"]["id"] = json!({"type": "integer"});
    write(&f.dir.join("schemas/Order/v1.json"), &v1);
    let run = check(&f);
    assert_eq!(
        (run.code, run.rules()),
        (0, vec!["no-samples"]),
        "{}",
        run.stdout
    );
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git {args:?}");
}

fn committed(name: &str) -> Fixture {
    let f = fixture(name);
    git(&f.dir, &["init", "-q"]);
    git(&f.dir, &["add", "."]);
    git(&f.dir, &["commit", "-qm", "base"]);
    f
}

#[test]
fn released_modified() {
    let f = committed("modified");
    let mut v1 = order_v1();
    v1["properties"]["id"] = json!({"type": "integer"});
    write(&f.dir.join("schemas/Order/v1.json"), &v1);
    assert!(
        !check(&f).has("released-modified"),
        "only --against can tell"
    );
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert_eq!(run.code, 1);
    assert!(run.has("released-modified"), "{}", run.stdout);
}

#[test]
fn released_deleted_unless_retired() {
    let f = committed("deleted");
    std::fs::remove_file(f.dir.join("schemas/Order/v1.json")).unwrap();
    std::fs::remove_dir_all(f.dir.join("tests/samples/Order/v1")).unwrap();
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert_eq!(run.code, 1);
    assert!(run.has("released-deleted"), "{}", run.stdout);
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(migration_step(), json!([1])),
    );
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert!(!run.has("released-deleted"), "{}", run.stdout);
}

#[test]
fn version_reused() {
    let f = fixture("reused");
    std::fs::remove_file(f.dir.join("schemas/Order/v1.json")).unwrap();
    std::fs::remove_dir_all(f.dir.join("tests/samples/Order/v1")).unwrap();
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(migration_step(), json!([1])),
    );
    git(&f.dir, &["init", "-q"]);
    git(&f.dir, &["add", "."]);
    git(&f.dir, &["commit", "-qm", "v1 retired"]);
    write(&f.dir.join("schemas/Order/v1.json"), &order_v1());
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert_eq!(run.code, 1);
    assert!(run.has("version-reused"), "{}", run.stdout);
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let empty = std::env::temp_dir().join(format!("upcaster-check-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(run_in(&empty, &["check"]).code, 2, "no manifest");
    assert_eq!(run_in(&empty, &["check", "--format", "xml"]).code, 2);
    assert_eq!(run_in(&empty, &["frobnicate"]).code, 2);
    let f = fixture("bad-ref");
    assert_eq!(
        run_in(&f.dir, &["check", "--against", "HEAD"]).code,
        2,
        "not a git repository"
    );
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn diff_exits_by_verdict_and_lists_changes() {
    let f = fixture("diff");
    let run = run_in(
        &f.dir,
        &[
            "diff",
            "schemas/Order/v1.json",
            "schemas/Order/v2.json",
            "--format",
            "json",
        ],
    );
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["compatible"], false);
    let change = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["breaking"] == true)
        .unwrap();
    assert_eq!(
        (change["rule"].as_str(), change["pointer"].as_str()),
        (Some("type-narrowed"), Some("/properties/id/type"))
    );
    let run = run_in(
        &f.dir,
        &["diff", "schemas/Order/v2.json", "schemas/Order/v2.json"],
    );
    assert_eq!(run.code, 0);
    let run = run_in(
        &f.dir,
        &[
            "diff",
            "schemas/Order/v1.json",
            "schemas/Order/v2.json",
            "--mode",
            "sideways",
        ],
    );
    assert_eq!(run.code, 2);
}

#[test]
fn rules_lists_every_rule_and_github_format_annotates() {
    let f = fixture("formats");
    let run = run_in(&f.dir, &["rules"]);
    assert_eq!(run.code, 0);
    for rule in upcaster_check::rules::ALL {
        assert!(
            run.stdout.contains(rule.id),
            "{} missing from `rules`",
            rule.id
        );
    }
    std::fs::remove_file(f.dir.join("schemas/Order/v2.json")).unwrap();
    let run = run_in(&f.dir, &["check", "--format", "github"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .lines()
            .any(|l| l
                .starts_with("::error file=schemas/Order/v2.json,line=1,title=schema-missing::")),
        "{}",
        run.stdout
    );
    let run = run_in(&f.dir, &["check", "--format", "sarif"]);
    let sarif: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "schema-missing");
}

// Found by review: each of these once crashed, hung, hid a finding or invented one.

#[test]
fn an_absurd_current_version_is_one_gap_not_a_hang() {
    let f = fixture("absurd");
    let mut m = manifest(migration_step(), json!([]));
    m["types"]["Order"]["current"] = json!(u32::MAX);
    write(&f.dir.join("schemas/manifest.json"), &m);
    let run = check(&f);
    assert_eq!(run.code, 1);
    let gaps = run
        .findings
        .iter()
        .filter(|f| f["rule"] == "version-gap")
        .count();
    assert_eq!(gaps, 1, "{}", run.stdout);
}

#[test]
fn a_sample_stored_under_another_type_is_invalid() {
    let f = fixture("wrong-type");
    write(
        &f.dir.join("tests/samples/Order/v1/stray.json"),
        &json!({"type": "Invoice", "version": 1, "payload": {"id": 1}}),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("sample-invalid");
    assert!(
        finding["message"].as_str().unwrap().contains("\"Invoice\""),
        "{finding}"
    );
}

#[test]
fn a_breaking_step_points_into_the_newer_schema() {
    let f = fixture("points");
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(json!([]), json!([])),
    );
    std::fs::remove_dir_all(f.dir.join("migrations")).unwrap();
    let run = run_in(&f.dir, &["check", "--format", "github"]);
    assert!(
        run.stdout
            .contains("file=schemas/Order/v2.json,line=4,title=breaking-without-migration"),
        "{}",
        run.stdout
    );
}

#[test]
fn one_broken_migration_hides_no_other_finding() {
    let f = fixture("one-broken");
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": []}),
    );
    write(
        &f.dir.join("migrations/Zed/v1-to-v2.json"),
        &json!({"ops": [{"op": "bogus"}]}),
    );
    let run = check(&f);
    assert!(run.has("migration-invalid"), "{}", run.stdout);
    assert!(run.has("breaking-without-migration"), "{}", run.stdout);
}

#[test]
fn manifest_steps_must_be_consistent() {
    let f = fixture("steps");
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(
            json!([{"from": 1, "to": 2, "by": "migration", "file": "Order/v1-to-v2.json"},
                   {"from": 1, "to": 7, "by": "migration"},
                   {"from": 1, "to": 2, "by": "migration", "file": "Other/v5-to-v6.json"}]),
            json!([]),
        ),
    );
    let run = check(&f);
    assert_eq!(run.code, 1);
    let messages: Vec<&str> = run
        .findings
        .iter()
        .filter(|f| f["rule"] == "manifest-stale")
        .filter_map(|f| f["message"].as_str())
        .collect();
    for expected in [
        "not one step up",
        "two steps from v1",
        "a migration with no file",
        "names Other/v5-to-v6.json",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{expected}: {messages:#?}"
        );
    }
}

#[test]
fn a_kept_retired_file_is_not_a_reused_version() {
    let f = fixture("kept-retired");
    write(
        &f.dir.join("schemas/manifest.json"),
        &manifest(migration_step(), json!([1])),
    );
    git(&f.dir, &["init", "-q"]);
    git(&f.dir, &["add", "."]);
    git(&f.dir, &["commit", "-qm", "base"]);
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert!(!run.has("version-reused"), "{}", run.stdout);
}

#[test]
fn editing_the_serde_facts_of_a_released_schema_is_a_modification() {
    let f = committed("facts");
    let mut v1 = order_v1();
    v1["x-upcaster"]["aliases"] = json!({"id": ["key"]});
    write(&f.dir.join("schemas/Order/v1.json"), &v1);
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert!(run.has("released-modified"), "{}", run.stdout);
}

#[test]
fn against_finds_edits_whatever_the_path_spelling_or_directory() {
    let f = committed("spelling");
    let mut v1 = order_v1();
    v1["properties"]["id"] = json!({"type": "integer"});
    write(&f.dir.join("schemas/Order/v1.json"), &v1);
    let absolute = f.dir.join("schemas");
    for schemas in [
        "./schemas",
        "schemas/../schemas",
        absolute.to_str().unwrap(),
    ] {
        let run = run_in(
            &f.dir,
            &[
                "check",
                "--format",
                "json",
                "--against",
                "HEAD",
                "--schemas",
                schemas,
            ],
        );
        assert!(
            run.has("released-modified"),
            "--schemas {schemas}: {}",
            run.stdout
        );
    }
    let sub = f.dir.join("tests");
    let run = run_in(
        &sub,
        &[
            "check",
            "--format",
            "json",
            "--against",
            "HEAD",
            "--schemas",
            "../schemas",
            "--migrations",
            "../migrations",
            "--samples",
            "samples",
        ],
    );
    assert!(run.has("released-modified"), "{}", run.stdout);
}

#[test]
fn a_migration_that_doubles_the_payload_stops_at_a_limit() {
    let f = fixture("doubling");
    let mut ops = vec![json!({"op": "to-string", "path": "/id"})];
    for i in 0..40 {
        ops.push(json!({"op": "copy", "from": "", "path": format!("/k{i}")}));
    }
    write(
        &f.dir.join("migrations/Order/v1-to-v2.json"),
        &json!({"ops": ops}),
    );
    let run = check(&f);
    let failed = run.finding("sample-upcast-failed");
    assert!(
        failed["message"].as_str().unwrap().contains("larger than"),
        "{failed}"
    );
}

#[test]
fn generated_payloads_stand_in_for_missing_samples() {
    // v1 ids are any number, but the migration converts only integers: no stored sample
    // shows it, a generated one does.
    let f = fixture("generated");
    std::fs::remove_dir_all(f.dir.join("tests/samples/Order/v1")).unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    let finding = run.finding("migration-output-invalid");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.starts_with("over the generated v1 payload {\"id\":"),
        "{message}"
    );
    assert!(message.contains("not an integer"), "{message}");
}

#[test]
fn sample_modified() {
    let f = committed("sample-modified");
    write(
        &f.dir.join("tests/samples/Order/v1/first.json"),
        &json!({"type": "Order", "version": 1, "payload": {"id": 8}}),
    );
    let run = run_in(&f.dir, &["check", "--format", "json", "--against", "HEAD"]);
    assert_eq!(run.code, 1);
    assert!(run.has("sample-modified"), "{}", run.stdout);
}

#[test]
fn sample_add_files_a_message_by_its_envelope() {
    let f = fixture("sample-add");
    let message = f.dir.join("queued.bin");
    std::fs::write(
        &message,
        br#"{"type":"Order","version":1,"payload":{"id":9}}"#,
    )
    .unwrap();
    let run = run_in(
        &f.dir,
        &["sample", "add", "queued.bin", "--name", "from-prod"],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(f.dir.join("tests/samples/Order/v1/from-prod.json").exists());
    let again = run_in(
        &f.dir,
        &["sample", "add", "queued.bin", "--name", "from-prod"],
    );
    assert_eq!(again.code, 1, "a sample is never overwritten");
    std::fs::write(&message, b"not a message").unwrap();
    assert_eq!(
        run_in(&f.dir, &["sample", "add", "queued.bin", "--name", "x"]).code,
        1
    );
    assert_eq!(check(&f).code, 0, "the stored sample passes the rules");
}

#[test]
fn a_sample_is_read_by_the_envelope_s_own_rules() {
    // Two `version` keys: every upcaster reader refuses it, so schema-check must too, rather
    // than take the last one (and report a version mismatch, or nothing).
    let f = fixture("envelope-rules");
    let dir = f.dir.join("tests/samples/Order/v1");
    std::fs::write(
        dir.join("twice.json"),
        r#"{"type":"Order","version":1,"version":2,"payload":{"id":1}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("trailing.json"),
        r#"{"type":"Order","version":1,"payload":{"id":1}} {}"#,
    )
    .unwrap();
    let run = check(&f);
    assert_eq!(run.code, 1);
    let messages: Vec<String> = run
        .findings
        .iter()
        .filter(|f| f["rule"] == "sample-invalid")
        .map(|f| format!("{} {}", f["file"], f["message"]))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("twice.json") && m.contains("duplicate key `version`")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("trailing.json") && m.contains("trailing bytes")),
        "{messages:#?}"
    );
    assert!(
        !run.stdout.contains("its envelope has version 2"),
        "the last `version` was taken: {}",
        run.stdout
    );
}
