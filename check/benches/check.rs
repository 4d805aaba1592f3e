//! `schema-check` over a large repository: 1,000 message types × 5 versions, each step a
//! migration file, each version with a sample. Run with `cargo bench --bench check`; the
//! issue's target is under 2 s for `check` on a 2-core machine.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use upcaster_check::{self as check, Config};

const TYPES: usize = 1000;
const VERSIONS: u32 = 5;

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dir");
    std::fs::write(path, serde_json::to_string_pretty(v).expect("json")).expect("write");
}

/// Version `v` names its id field `id{v}`, so each step is a rename.
fn schema(name: &str, v: u32) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            format!("id{v}"): {"type": "integer", "format": "uint64", "minimum": 0},
            "title": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": ["string", "null"]}
        },
        "required": [format!("id{v}"), "title"],
        "x-upcaster": {"type": name, "version": v}
    })
}

fn generate(root: &Path) {
    let mut types = serde_json::Map::new();
    for t in 0..TYPES {
        let name = format!("Message{t:04}");
        let mut steps = Vec::new();
        for v in 1..=VERSIONS {
            write(
                &root.join(format!("schemas/{name}/v{v}.json")),
                &schema(&name, v),
            );
            write(
                &root.join(format!("tests/samples/{name}/v{v}/one.json")),
                &json!({"type": name, "version": v,
                        "payload": {format!("id{v}"): t, "title": "a title", "tags": ["x", "y"]}}),
            );
            if v < VERSIONS {
                let file = format!("{name}/v{v}-to-v{}.json", v + 1);
                write(
                    &root.join("migrations").join(&file),
                    &json!({"ops": [{"op": "move", "from": format!("/id{v}"), "path": format!("/id{}", v + 1)}]}),
                );
                steps.push(json!({"from": v, "to": v + 1, "by": "migration", "file": file}));
            }
        }
        types.insert(name, json!({"current": VERSIONS, "steps": steps}));
    }
    write(
        &root.join("schemas/manifest.json"),
        &json!({"types": types}),
    );
}

fn main() {
    let root = std::env::temp_dir().join(format!("upcaster-bench-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    generate(&root);
    let config = Config::new(
        root.join("schemas"),
        root.join("migrations"),
        root.join("tests/samples"),
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let findings = check::check(&config).expect("the generated repository loads");
        times.push(start.elapsed().as_secs_f64());
        assert!(
            findings.is_empty(),
            "the generated repository is clean: {findings:?}"
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "check over {TYPES} types x {VERSIONS} versions ({} schemas, {} migrations, {} samples): \
         median {median:.3} s of {} runs (min {:.3} s, max {:.3} s); target < 2 s: {}",
        TYPES * VERSIONS as usize,
        TYPES * (VERSIONS as usize - 1),
        TYPES * VERSIONS as usize,
        times.len(),
        times[0],
        times[times.len() - 1],
        if median < 2.0 { "yes" } else { "NO" }
    );
    let _ = std::fs::remove_dir_all(&root);
}
