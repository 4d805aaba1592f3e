//! The output formats of `schema-check`: text for people, JSON, GitHub annotations and
//! SARIF for machines.

use std::fmt::Write as _;

use serde_json::json;

use super::rules::{self, Severity};
use super::Finding;

/// How findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One block per finding, for people.
    Text,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow commands, which annotate the pull request.
    Github,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "github" => Ok(Format::Github),
            "sarif" => Ok(Format::Sarif),
            other => Err(format!(
                "unknown format `{other}`; expected text, json, github or sarif"
            )),
        }
    }
}

/// The 1-based line of the place a JSON Pointer names in `text`, found by its keys in
/// order; 1 when the text is unreadable or the pointer empty.
pub fn line_of(text: &str, pointer: &str) -> usize {
    let mut line = 1;
    let mut rest = text;
    let mut offset = 0;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let needle = format!("\"{token}\"");
        match rest.find(&needle) {
            Some(i) => {
                offset += i + needle.len();
                rest = &text[offset..];
            }
            None => break,
        }
    }
    if offset > 0 {
        line += text[..offset].matches('\n').count();
    }
    line
}

fn line_in_file(f: &Finding) -> usize {
    std::fs::read_to_string(&f.file)
        .map(|t| line_of(&t, &f.pointer))
        .unwrap_or(1)
}

/// Renders `findings`.
pub fn render(findings: &[Finding], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Text => {
            for f in findings {
                let at = if f.pointer.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", f.pointer)
                };
                let _ = writeln!(out, "{}[{}] {}{at}", f.severity, f.rule, f.file);
                let _ = writeln!(out, "  {}", f.message);
                let _ = writeln!(out, "  fix: {}", f.fix);
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let warnings = findings.len() - errors;
            let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
        }
        Format::Json => {
            let list: Vec<_> = findings
                .iter()
                .map(|f| {
                    json!({
                        "rule": f.rule, "severity": f.severity, "file": f.file,
                        "pointer": f.pointer, "line": line_in_file(f),
                        "message": f.message, "fix": f.fix,
                    })
                })
                .collect();
            out = serde_json::to_string_pretty(&list).unwrap_or_default();
            out.push('\n');
        }
        Format::Github => {
            for f in findings {
                let level = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let message = format!("{} Fix: {}", f.message, f.fix);
                let _ = writeln!(
                    out,
                    "::{level} file={},line={},title={}::{}",
                    escape_property(&f.file),
                    line_in_file(f),
                    escape_property(f.rule),
                    escape_data(&message)
                );
            }
        }
        Format::Sarif => {
            let rules: Vec<_> = rules::ALL
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "shortDescription": {"text": r.summary},
                        "help": {"text": r.fix},
                        "defaultConfiguration": {"level": r.severity.to_string()},
                    })
                })
                .collect();
            let results: Vec<_> = findings
                .iter()
                .map(|f| {
                    json!({
                        "ruleId": f.rule,
                        "level": f.severity.to_string(),
                        "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
                        "locations": [{"physicalLocation": {
                            "artifactLocation": {"uri": f.file},
                            "region": {"startLine": line_in_file(f)},
                        }}],
                    })
                })
                .collect();
            let log = json!({
                "version": "2.1.0",
                "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                "runs": [{"tool": {"driver": {"name": "schema-check", "rules": rules}}, "results": results}],
            });
            out = serde_json::to_string_pretty(&log).unwrap_or_default();
            out.push('\n');
        }
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
