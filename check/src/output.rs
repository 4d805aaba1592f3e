//! The output formats of `schema-check`: text for people, JSON, GitHub annotations and
//! SARIF for machines.

use std::fmt::Write as _;

use serde_json::json;

use super::rules::{self, Severity};
use super::Finding;

/// How findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputFormat {
    /// One block per finding, for people.
    Text,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow commands, which annotate the pull request.
    Github,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(OutputFormat::Text),
            "json" => Ok(OutputFormat::Json),
            "github" => Ok(OutputFormat::Github),
            "sarif" => Ok(OutputFormat::Sarif),
            other => Err(format!(
                "unknown format `{other}`; expected text, json, github or sarif"
            )),
        }
    }
}

/// The 1-based line of the place a JSON Pointer names in JSON `text`: the deepest member
/// or element of the path that exists; 1 for the whole document or unreadable text.
pub fn line_of(text: &str, pointer: &str) -> usize {
    let b = text.as_bytes();
    let mut at = skip_ws(b, 0);
    let mut found = at;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next = match b.get(at) {
            Some(b'{') => member(b, at, &token),
            Some(b'[') => token.parse::<usize>().ok().and_then(|i| element(b, at, i)),
            _ => None,
        };
        match next {
            Some(pos) => {
                found = pos;
                at = skip_ws(b, pos);
            }
            None => break,
        }
    }
    1 + b[..found.min(b.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The end of the string that starts at `i` (after its closing quote).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the value that starts at `i`; nesting is counted, not recursed.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    let mut i = skip_ws(b, i);
    let mut depth = 0usize;
    loop {
        match b.get(i)? {
            b'"' => i = skip_string(b, i)?,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            b',' | b':' if depth > 0 => i += 1,
            c if c.is_ascii_whitespace() => i += 1,
            _ if depth == 0 => {
                while b
                    .get(i)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    i += 1;
                }
                return Some(i);
            }
            _ => i += 1,
        }
        if depth == 0 {
            return Some(i);
        }
    }
}

/// Where the value of member `key` of the object at `i` starts.
fn member(b: &[u8], i: usize, key: &str) -> Option<usize> {
    let mut i = skip_ws(b, i + 1);
    loop {
        if b.get(i)? != &b'"' {
            return None;
        }
        let end = skip_string(b, i)?;
        let name: String = serde_json::from_slice(&b[i..end]).ok()?;
        i = skip_ws(b, end);
        if b.get(i)? != &b':' {
            return None;
        }
        let value = skip_ws(b, i + 1);
        if name == key {
            return Some(value);
        }
        i = skip_ws(b, skip_value(b, value)?);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

/// Where element `index` of the array at `i` starts.
fn element(b: &[u8], i: usize, index: usize) -> Option<usize> {
    let mut i = skip_ws(b, i + 1);
    for _ in 0..index {
        i = skip_ws(b, skip_value(b, i)?);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
    (b.get(i)? != &b']').then_some(i)
}

fn line_in_file(f: &Finding) -> usize {
    std::fs::read_to_string(&f.file)
        .map(|t| line_of(&t, &f.pointer))
        .unwrap_or(1)
}

/// Renders `findings`.
pub fn render(findings: &[Finding], format: OutputFormat) -> String {
    let mut out = String::new();
    match format {
        OutputFormat::Text => {
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
        OutputFormat::Json => {
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
        OutputFormat::Github => {
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
        OutputFormat::Sarif => {
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

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn lines_of_members_and_elements() {
        let text = "{\n  \"ops\": [\n    {\"op\": \"a\"},\n    {\"op\": \"b\", \"x\": \"]\"},\n    {\n      \"op\": \"c\"\n    }\n  ],\n  \"2\": 1\n}\n";
        assert_eq!(line_of(text, ""), 1);
        assert_eq!(line_of(text, "/ops"), 2);
        assert_eq!(line_of(text, "/ops/1"), 4);
        assert_eq!(line_of(text, "/ops/2/op"), 6);
        assert_eq!(line_of(text, "/2"), 9, "a key that looks like an index");
        assert_eq!(line_of(text, "/ops/9"), 2, "the deepest part that exists");
        assert_eq!(line_of("not json", "/a"), 1);
    }
}
