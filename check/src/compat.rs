//! The compatibility engine: does a reader with one JSON Schema accept every document a
//! writer with another produces?
//!
//! Backward compatibility (a new reader, old writers) asks it with the old schema as writer
//! and the new one as reader; forward asks the reverse; full asks both. The engine walks both
//! schemas side by side, resolving `$ref`s (recursion is assumed compatible once a pair is
//! being compared), and reports each difference with a rule id and the JSON Pointer of the
//! keyword in the reader's schema.
//!
//! It is sound where it can be and conservative where it cannot: two different `pattern`s,
//! say, are reported as narrowing, since regular-language containment is not decided here.
//! Where both schemas were written by upcaster from serde types (an `x-upcaster` key at the
//! root), it uses what serde guarantees: a writer emits only the fields it declares, so a
//! struct's object is closed for writing even when open for reading.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// Which documents must stay readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Every document valid under the old schema is valid under the new one: a new reader
    /// reads what old writers wrote (what a queue holds during a deploy).
    Backward,
    /// Every document valid under the new schema is valid under the old one: old readers
    /// read what new writers write.
    Forward,
    /// Both.
    Full,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backward" => Ok(Mode::Backward),
            "forward" => Ok(Mode::Forward),
            "full" => Ok(Mode::Full),
            other => Err(format!(
                "unknown mode `{other}`; expected backward, forward or full"
            )),
        }
    }
}

/// One difference between two schemas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// Stable id of the kind of change.
    pub rule: &'static str,
    /// JSON Pointer into the reader's schema (for forward mode, the old one).
    pub pointer: String,
    /// What changed.
    pub message: String,
    /// True when some document of the writer is no longer accepted.
    pub breaking: bool,
    /// The direction it was found in.
    pub direction: &'static str,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{} at {at}: {}", self.rule, self.message)
    }
}

/// Every difference between `old` and `new` for `mode`.
pub fn diff(old: &Value, new: &Value, mode: Mode) -> Vec<Change> {
    let mut changes = Vec::new();
    if matches!(mode, Mode::Backward | Mode::Full) {
        changes.extend(Engine::new(old, new, "backward").run());
    }
    if matches!(mode, Mode::Forward | Mode::Full) {
        changes.extend(Engine::new(new, old, "forward").run());
    }
    changes
}

/// True when no change is breaking.
pub fn compatible(changes: &[Change]) -> bool {
    !changes.iter().any(|c| c.breaking)
}

struct Engine<'a> {
    writer_root: &'a Value,
    reader_root: &'a Value,
    direction: &'static str,
    /// Both schemas come from serde types: writers emit only declared fields.
    serde: bool,
    /// `(writer, reader)` pairs under comparison, by address: recursion is assumed fine.
    active: HashSet<(usize, usize)>,
    /// Pairs reached through `$ref`s (so living in the roots) already shown compatible.
    proven: HashSet<(usize, usize)>,
    /// How deep the comparison is, and how many comparisons it made: both bounded, so that
    /// no schema can exhaust the stack or the clock. Past a bound, the answer is "breaking".
    depth: usize,
    steps: usize,
    changes: Vec<Change>,
}

const MAX_DEPTH: usize = 96;
const MAX_STEPS: usize = 200_000;

const INTEGER_FORMATS: &[(&str, i128, i128)] = &[
    ("int8", i8::MIN as i128, i8::MAX as i128),
    ("uint8", 0, u8::MAX as i128),
    ("int16", i16::MIN as i128, i16::MAX as i128),
    ("uint16", 0, u16::MAX as i128),
    ("int32", i32::MIN as i128, i32::MAX as i128),
    ("uint32", 0, u32::MAX as i128),
    ("int64", i64::MIN as i128, i64::MAX as i128),
    ("uint64", 0, u64::MAX as i128),
    ("int", i64::MIN as i128, i64::MAX as i128),
    ("uint", 0, u64::MAX as i128),
    ("int128", i128::MIN, i128::MAX),
    ("uint128", 0, i128::MAX),
];

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

impl<'a> Engine<'a> {
    fn new(writer: &'a Value, reader: &'a Value, direction: &'static str) -> Self {
        let ours = |v: &Value| v.get("x-upcaster").is_some();
        Engine {
            writer_root: writer,
            reader_root: reader,
            direction,
            serde: ours(writer) && ours(reader),
            active: HashSet::new(),
            proven: HashSet::new(),
            depth: 0,
            steps: 0,
            changes: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Change> {
        let (w, r) = (self.writer_root, self.reader_root);
        self.accepts(w, r, "");
        self.changes
    }

    fn report(&mut self, rule: &'static str, at: &str, message: String, breaking: bool) {
        self.changes.push(Change {
            rule,
            pointer: at.to_owned(),
            message,
            breaking,
            direction: self.direction,
        });
    }

    fn breaking(&mut self, rule: &'static str, at: &str, message: String) {
        self.report(rule, at, message, true);
    }

    /// Follows `$ref`s within a root; `None` for a reference that does not resolve.
    fn resolve<'v>(root: &'v Value, schema: &'v Value) -> Option<&'v Value> {
        Self::follow(root, schema).map(|(v, _)| v)
    }

    /// [`Engine::resolve`], and whether a `$ref` was followed (the result then lives in the
    /// root, at a stable address).
    fn follow<'v>(root: &'v Value, mut schema: &'v Value) -> Option<(&'v Value, bool)> {
        let mut followed = false;
        for _ in 0..64 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                return Some((schema, followed));
            };
            let pointer = r.strip_prefix('#')?;
            schema = root.pointer(pointer)?;
            followed = true;
        }
        None
    }

    /// Does the reader schema `r` accept every document the writer schema `w` accepts?
    fn accepts<'s>(&mut self, w: &'s Value, r: &'s Value, at: &str)
    where
        'a: 's,
    {
        self.steps += 1;
        if self.depth >= MAX_DEPTH || self.steps > MAX_STEPS {
            if !self.changes.iter().any(|c| c.rule == "schema-too-complex") {
                self.breaking(
                    "schema-too-complex",
                    at,
                    "the schemas are nested or branched past what is compared; treated as breaking"
                        .into(),
                );
            }
            return;
        }
        // `$ref` beside other keywords means both apply (draft 2019-09 on).
        if let Some((target, siblings)) = split_ref(r) {
            self.accepts(w, &target, at);
            self.accepts(w, &siblings, at);
            return;
        }
        if let Some((target, siblings)) = split_ref(w) {
            let merged = match Self::resolve(self.writer_root, &target) {
                Some(t) => match siblings {
                    Value::Object(o) => merge(&o, t, self.writer_root),
                    other => other,
                },
                None => target,
            };
            self.accepts(&merged, r, at);
            return;
        }
        let (Some((w, w_followed)), Some((r, r_followed))) = (
            Self::follow(self.writer_root, w),
            Self::follow(self.reader_root, r),
        ) else {
            self.breaking(
                "ref-unresolved",
                at,
                "a `$ref` does not resolve within its schema".into(),
            );
            return;
        };
        let key = (w as *const Value as usize, r as *const Value as usize);
        let stable = w_followed && r_followed;
        if (stable && self.proven.contains(&key)) || !self.active.insert(key) {
            return;
        }
        let before = self.changes.iter().filter(|c| c.breaking).count();
        self.depth += 1;
        self.compare(w, r, at);
        self.depth -= 1;
        self.active.remove(&key);
        if stable && self.changes.iter().filter(|c| c.breaking).count() == before {
            self.proven.insert(key);
        }
    }

    fn compare<'s>(&mut self, w: &'s Value, r: &'s Value, at: &str)
    where
        'a: 's,
    {
        // Boolean schemas and empty ones.
        if accepts_all(r) || rejects_all(w) {
            return;
        }
        if rejects_all(r) {
            self.breaking("schema-false", at, "the reader accepts nothing here".into());
            return;
        }
        static ANY: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| Value::Object(Map::new()));
        // `true` is the schema with no keywords.
        let w = if w == &Value::Bool(true) { &*ANY } else { w };
        let (Value::Object(wo), Value::Object(ro)) = (w, r) else {
            if !r.is_object() {
                self.breaking("schema-invalid", at, format!("{r} is not a schema"));
            }
            return;
        };
        // Keywords this engine does not compare: a reader may not add or change them.
        for (k, v) in ro {
            if !is_annotation(k) && !KNOWN.contains(&k.as_str()) && wo.get(k) != Some(v) {
                self.breaking(
                    "keyword-unsupported",
                    &format!("{at}/{}", escape(k)),
                    format!("`{k}` is not compared here; a reader that adds or changes it may refuse old documents"),
                );
            }
        }

        // `allOf` on the reader: each part must accept the writer.
        if let Some(parts) = ro.get("allOf").and_then(Value::as_array) {
            for (i, part) in parts.iter().enumerate() {
                self.accepts(w, part, &format!("{at}/allOf/{i}"));
            }
        }
        // Alternatives on the writer: each must be accepted (both lists, when there are two).
        if wo.contains_key("anyOf") || wo.contains_key("oneOf") {
            let rest = without(wo, &["anyOf", "oneOf"]);
            for key in ["anyOf", "oneOf"] {
                for part in wo.get(key).and_then(Value::as_array).into_iter().flatten() {
                    let merged = merge(&rest, part, self.writer_root);
                    self.accepts(&merged, r, at);
                }
            }
            return;
        }
        // `allOf` on the writer: its parts together describe the writer.
        if let Some(parts) = wo.get("allOf").and_then(Value::as_array) {
            let mut merged = without(wo, &["allOf"]);
            for part in parts {
                merged = match merge(&merged, part, self.writer_root) {
                    Value::Object(m) => m,
                    _ => merged,
                };
            }
            // Parts with no type or value in common: the writer produces nothing.
            if merged.get("type") == Some(&Value::Array(Vec::new()))
                || merged.get("enum") == Some(&Value::Array(Vec::new()))
            {
                return;
            }
            let merged = Value::Object(merged);
            let r_rest = Value::Object(without(ro, &["allOf"]));
            self.accepts(&merged, &r_rest, at);
            return;
        }
        // Alternatives on the reader: the writer must fit one of them (and, for `oneOf`, not
        // two of them, or the reader refuses).
        let mut alternatives = false;
        for key in ["anyOf", "oneOf"] {
            if let Some(parts) = ro.get(key).and_then(Value::as_array) {
                self.some_branch(w, parts, &format!("{at}/{key}"), key == "oneOf");
                alternatives = true;
            }
        }
        if alternatives {
            let rest = Value::Object(without(ro, &["anyOf", "oneOf", "allOf"]));
            self.accepts(w, &rest, at);
            return;
        }
        if let Some(not) = ro.get("not") {
            match wo.get("not") {
                // The reader refuses `not`: the writer must refuse at least that much. The
                // roles swap, and so do the roots the `$ref`s resolve in.
                Some(wnot) => {
                    let mut inner = Engine::new(self.reader_root, self.writer_root, self.direction);
                    inner.serde = self.serde;
                    inner.depth = self.depth + 1;
                    inner.accepts(not, wnot, &format!("{at}/not"));
                    self.steps += inner.steps;
                    self.changes.extend(inner.changes);
                }
                None => self.breaking(
                    "not-added",
                    &format!("{at}/not"),
                    "the reader refuses documents the writer may produce".into(),
                ),
            }
        }

        let w_types = types(wo);
        let r_types = types(ro);
        if let Some(rt) = &r_types {
            // A writer limited to listed values produces only their types.
            let listed: Option<Vec<&str>> =
                values(wo).map(|vs| vs.iter().map(|v| value_type(v)).collect());
            let mut missing: Vec<&str> = match (&listed, &w_types) {
                (Some(vt), _) => vt.iter().copied().filter(|t| !type_in(t, rt)).collect(),
                (None, None) => TYPES.iter().copied().filter(|t| !type_in(t, rt)).collect(),
                (None, Some(wt)) => wt.iter().copied().filter(|t| !type_in(t, rt)).collect(),
            };
            missing.dedup();
            if !missing.is_empty() {
                self.breaking(
                    "type-narrowed",
                    &format!("{at}/type"),
                    format!("the reader no longer accepts {}", missing.join(", ")),
                );
            }
        }
        let has = |t: &str| w_types.as_ref().is_none_or(|wt| type_in(t, wt));

        self.values(wo, ro, at);
        if has("number") || has("integer") {
            self.numbers(wo, ro, at);
        }
        if has("string") {
            self.strings(wo, ro, at);
        }
        if has("array") {
            self.arrays(wo, ro, at);
        }
        if has("object") {
            self.objects(wo, ro, at);
        }
    }

    /// The writer must fit one reader branch; the best match explains a failure. With
    /// `exclusive` (`oneOf`), fitting two branches fails too: a document valid under both is
    /// refused.
    fn some_branch<'s>(&mut self, w: &'s Value, parts: &'s [Value], at: &str, exclusive: bool)
    where
        'a: 's,
    {
        let mut best: Option<Vec<Change>> = None;
        let mut fitting = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let saved = std::mem::take(&mut self.changes);
            self.accepts(w, part, &format!("{at}/{i}"));
            let found = std::mem::replace(&mut self.changes, saved);
            let broken = found.iter().filter(|c| c.breaking).count();
            if broken == 0 {
                fitting.push(i);
                if !exclusive {
                    return;
                }
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|b| broken < b.iter().filter(|c| c.breaking).count())
            {
                best = Some(found);
            }
        }
        match (fitting.len(), best) {
            (1, _) => {}
            (n, _) if n > 1 => self.breaking(
                "one-of-ambiguous",
                at,
                format!("the writer fits {n} alternatives of a `oneOf`, which accepts exactly one"),
            ),
            (_, Some(found)) => self.changes.extend(found),
            (_, None) => self.breaking(
                "branch-unmatched",
                at,
                "no alternative of the reader accepts the writer".into(),
            ),
        }
    }

    fn values(&mut self, wo: &Map<String, Value>, ro: &Map<String, Value>, at: &str) {
        let Some(rv) = values(ro) else { return };
        // A serde enum with a `#[serde(other)]` variant reads any unknown variant as it.
        if at.is_empty() && self.reader_root.pointer("/x-upcaster/other").is_some() {
            return;
        }
        match values(wo) {
            None => self.breaking(
                "enum-added",
                &format!("{at}/enum"),
                "the reader now accepts only listed values".into(),
            ),
            Some(wv) => {
                let accepted: HashSet<String> = rv.iter().map(|v| canonical(v)).collect();
                let lost: Vec<String> = wv
                    .iter()
                    .filter(|v| !accepted.contains(&canonical(v)))
                    .take(20)
                    .map(|v| v.to_string())
                    .collect();
                if !lost.is_empty() {
                    let rule = if ro.contains_key("const") {
                        "const-changed"
                    } else {
                        "enum-narrowed"
                    };
                    self.breaking(
                        rule,
                        &format!("{at}/enum"),
                        format!("the reader no longer accepts {}", lost.join(", ")),
                    );
                }
            }
        }
    }

    fn numbers(&mut self, wo: &Map<String, Value>, ro: &Map<String, Value>, at: &str) {
        let serde = self.serde;
        let (w_lo, w_hi) = (lower(wo, serde), upper(wo, serde));
        let (r_lo, r_hi) = (lower(ro, serde), upper(ro, serde));
        if let Some(r) = r_lo {
            if w_lo.is_none_or(|w| bound_below(w, r)) {
                self.breaking(
                    "minimum-raised",
                    &format!("{at}/minimum"),
                    format!(
                        "the reader's lower bound {} excludes values the writer may produce",
                        r.0
                    ),
                );
            }
        }
        if let Some(r) = r_hi {
            if w_hi.is_none_or(|w| bound_above(w, r)) {
                self.breaking(
                    "maximum-lowered",
                    &format!("{at}/maximum"),
                    format!(
                        "the reader's upper bound {} excludes values the writer may produce",
                        r.0
                    ),
                );
            }
        }
        if let Some(rm) = ro.get("multipleOf").and_then(Value::as_f64) {
            // The writer's step must be a whole multiple of the reader's.
            let fits = wo
                .get("multipleOf")
                .and_then(Value::as_f64)
                .is_some_and(|wm| {
                    let ratio = wm / rm;
                    rm > 0.0
                        && ratio >= 1.0 - 1e-9
                        && (ratio - ratio.round()).abs() < 1e-9 * ratio.max(1.0)
                });
            if !fits {
                self.breaking(
                    "multiple-of-changed",
                    &format!("{at}/multipleOf"),
                    format!("the reader requires multiples of {rm}"),
                );
            }
        }
    }

    fn strings(&mut self, wo: &Map<String, Value>, ro: &Map<String, Value>, at: &str) {
        self.count_bounds(wo, ro, at, "minLength", "maxLength", "length-narrowed");
        if let Some(rp) = ro.get("pattern") {
            if wo.get("pattern") != Some(rp) {
                self.breaking(
                    "pattern-changed",
                    &format!("{at}/pattern"),
                    format!("the reader requires the pattern {rp}"),
                );
            }
        }
        if let Some(rf) = ro.get("format").and_then(Value::as_str) {
            // Number formats are ranges (integers) or precision (floats), not string shapes.
            let number =
                INTEGER_FORMATS.iter().any(|(f, ..)| *f == rf) || matches!(rf, "float" | "double");
            if !number && wo.get("format").and_then(Value::as_str) != Some(rf) {
                self.breaking(
                    "format-changed",
                    &format!("{at}/format"),
                    format!("the reader requires the format `{rf}`"),
                );
            }
        }
    }

    fn count_bounds(
        &mut self,
        wo: &Map<String, Value>,
        ro: &Map<String, Value>,
        at: &str,
        min: &str,
        max: &str,
        rule: &'static str,
    ) {
        let get = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_f64);
        if let Some(r) = get(ro, min) {
            if get(wo, min).is_none_or(|w| w < r) {
                self.breaking(
                    rule,
                    &format!("{at}/{min}"),
                    format!("the reader requires {min} {r}"),
                );
            }
        }
        if let Some(r) = get(ro, max) {
            if get(wo, max).is_none_or(|w| w > r) {
                self.breaking(
                    rule,
                    &format!("{at}/{max}"),
                    format!("the reader allows at most {max} {r}"),
                );
            }
        }
    }

    fn arrays<'s>(&mut self, wo: &'s Map<String, Value>, ro: &'s Map<String, Value>, at: &str)
    where
        'a: 's,
    {
        let (w_prefix, w_rest) = tuple(wo);
        let (r_prefix, r_rest) = tuple(ro);
        let n = w_prefix.len().max(r_prefix.len());
        for i in 0..n {
            let w = w_prefix.get(i).copied().unwrap_or(w_rest);
            let r = r_prefix.get(i).copied().unwrap_or(r_rest);
            let key = if ro.contains_key("prefixItems") {
                "prefixItems"
            } else {
                "items"
            };
            self.accepts(w, r, &format!("{at}/{key}/{i}"));
        }
        let rest_key = if ro.get("items").is_some_and(Value::is_array) {
            "additionalItems"
        } else {
            "items"
        };
        self.accepts(w_rest, r_rest, &format!("{at}/{rest_key}"));
        self.count_bounds(wo, ro, at, "minItems", "maxItems", "items-count-narrowed");
        if ro.get("uniqueItems") == Some(&Value::Bool(true))
            && wo.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.breaking(
                "unique-items-added",
                &format!("{at}/uniqueItems"),
                "the reader requires unique items".into(),
            );
        }
        // `minContains: 0` makes `contains` demand nothing.
        fn demands(o: &Map<String, Value>) -> Option<&Value> {
            o.get("contains")
                .filter(|_| o.get("minContains").and_then(Value::as_f64) != Some(0.0))
        }
        if let Some(rc) = demands(ro) {
            match demands(wo) {
                Some(wc) => {
                    self.accepts(wc, rc, &format!("{at}/contains"));
                    self.count_bounds(
                        wo,
                        ro,
                        at,
                        "minContains",
                        "maxContains",
                        "contains-narrowed",
                    );
                }
                None => self.breaking(
                    "contains-added",
                    &format!("{at}/contains"),
                    "the reader requires an item the writer need not produce".into(),
                ),
            }
        }
    }

    fn objects<'s>(&mut self, wo: &'s Map<String, Value>, ro: &'s Map<String, Value>, at: &str)
    where
        'a: 's,
    {
        let empty = Map::new();
        let w_props = wo
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let r_props = ro
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let w_rest = self.writer_rest(wo);
        let r_rest = rest_of(ro);
        // Field aliases the reader's serde type declares (recorded at the schema's root):
        // old name → the field that reads it.
        let mut alias_of: Vec<(&str, &str)> = Vec::new();
        if at.is_empty() {
            if let Some(Value::Object(a)) = self.reader_root.pointer("/x-upcaster/aliases") {
                for (field, names) in a {
                    for n in names
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        alias_of.push((n, field.as_str()));
                    }
                }
            }
        }
        let mut names: Vec<&String> = w_props.keys().chain(r_props.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            if let (Some(w), false) = (w_props.get(name), r_props.contains_key(name)) {
                if let Some((_, field)) = alias_of.iter().find(|(a, _)| a == name) {
                    if let Some(r) = r_props.get(*field) {
                        let here = format!("{at}/properties/{}", escape(field));
                        if w_props.contains_key(*field) {
                            // serde refuses a document with both the field and its alias.
                            self.breaking(
                                "alias-clash",
                                &here,
                                format!("the writer may send both `{name}` and `{field}`, which serde reads as a duplicate field"),
                            );
                        }
                        self.report(
                            "property-renamed-with-alias",
                            &here,
                            format!("`{name}` is read as `{field}` through its serde alias"),
                            false,
                        );
                        self.accepts(w, r, &here);
                        continue;
                    }
                }
            }
            let w = w_props
                .get(name)
                .unwrap_or_else(|| pattern_for(wo, name).unwrap_or(w_rest));
            let here = format!("{at}/properties/{}", escape(name));
            match (w_props.contains_key(name), r_props.contains_key(name)) {
                (false, true) => self.report(
                    "property-added",
                    &here,
                    format!("`{name}` is declared"),
                    false,
                ),
                (true, false) => self.report(
                    "property-removed",
                    &here,
                    format!("`{name}` is no longer declared"),
                    false,
                ),
                _ => {}
            }
            // The reader applies its declaration and every pattern that may match the name;
            // only a name none of them covers falls to its rest.
            let mut readers: Vec<(&Value, String)> = Vec::new();
            if let Some(r) = r_props.get(name) {
                readers.push((r, here.clone()));
            }
            for (p, rp) in patterns(ro) {
                if may_match(p, name) {
                    readers.push((rp, format!("{at}/patternProperties/{}", escape(p))));
                }
            }
            if readers.is_empty() {
                readers.push((r_rest, here));
            }
            for (r, pointer) in readers {
                self.accepts(w, r, &pointer);
            }
        }
        // Undeclared members: the writer's patterns and rest, against each reader pattern
        // they may overlap (any two patterns may) and the reader's rest.
        for (p, r) in patterns(ro) {
            let here = format!("{at}/patternProperties/{}", escape(p));
            for (q, w) in patterns(wo) {
                if may_overlap(q, p) {
                    self.accepts(w, r, &here);
                }
            }
            self.accepts(w_rest, r, &here);
        }
        let rest_here = format!("{at}/{}", rest_key(ro));
        for (q, w) in patterns(wo) {
            // Names the reader matches with the very same pattern never reach its rest.
            if !patterns(ro).any(|(p, _)| p == q) {
                self.accepts(w, r_rest, &rest_here);
            }
        }
        self.accepts(w_rest, r_rest, &rest_here);

        let required = |o: &'s Map<String, Value>| -> Vec<&'s str> {
            o.get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        let w_req = required(wo);
        let mut r_req = required(ro);
        // Fields serde needs though the writer may skip them (`skip_serializing_if` without
        // `default`): the schema calls them optional.
        if at.is_empty() {
            if let Some(Value::Array(extra)) = self.reader_root.pointer("/x-upcaster/required") {
                r_req.extend(extra.iter().filter_map(Value::as_str));
            }
        }
        r_req.sort_unstable();
        r_req.dedup();
        for name in r_req {
            let by_alias = alias_of
                .iter()
                .any(|(a, f)| *f == name && w_req.contains(a));
            if w_req.contains(&name) || by_alias {
                continue;
            }
            // A default is filled in by serde, not by JSON Schema validators.
            let has_default = self.serde
                && r_props
                    .get(name)
                    .is_some_and(|p| p.get("default").is_some());
            if has_default {
                self.report(
                    "required-with-default",
                    &format!("{at}/required"),
                    format!("`{name}` is required but has a default the reader fills in"),
                    false,
                );
            } else {
                self.breaking(
                    "required-added",
                    &format!("{at}/required"),
                    format!("the reader requires `{name}`, which the writer may omit"),
                );
            }
        }
        self.count_bounds(
            wo,
            ro,
            at,
            "minProperties",
            "maxProperties",
            "property-count-narrowed",
        );
        self.dependencies(wo, ro, at);
        if let Some(rn) = ro.get("propertyNames") {
            match wo.get("propertyNames") {
                Some(wn) => self.accepts(wn, rn, &format!("{at}/propertyNames")),
                None => self.breaking(
                    "property-names-added",
                    &format!("{at}/propertyNames"),
                    "the reader restricts member names".into(),
                ),
            }
        }
    }

    /// The schema of the writer's undeclared members. A serde struct writes only its
    /// declared fields, so for one of ours it is `false`, whatever readers accept.
    fn writer_rest<'s>(&self, wo: &'s Map<String, Value>) -> &'s Value {
        static FALSE: Value = Value::Bool(false);
        static TRUE: Value = Value::Bool(true);
        // A schema for the rest is a flattened map: its members are written.
        let open = matches!(
            wo.get("additionalProperties"),
            None | Some(Value::Bool(true))
        );
        if self.serde && wo.contains_key("properties") && open {
            return &FALSE;
        }
        // `unevaluatedProperties` depends on what subschemas evaluate: assume the writer may
        // write anything there.
        wo.get("additionalProperties").unwrap_or(&TRUE)
    }

    fn dependencies<'s>(&mut self, wo: &'s Map<String, Value>, ro: &'s Map<String, Value>, at: &str)
    where
        'a: 's,
    {
        for key in ["dependencies", "dependentRequired", "dependentSchemas"] {
            let Some(rd) = ro.get(key).and_then(Value::as_object) else {
                continue;
            };
            let wd = wo.get(key).and_then(Value::as_object);
            for (name, r) in rd {
                let here = format!("{at}/{key}/{}", escape(name));
                match (wd.and_then(|d| d.get(name)), r) {
                    (Some(Value::Array(w)), Value::Array(r)) => {
                        if r.iter().any(|x| !w.contains(x)) {
                            self.breaking(
                                "dependency-added",
                                &here,
                                format!("`{name}` brings more required members"),
                            );
                        }
                    }
                    (Some(w), r) if !r.is_array() && !w.is_array() => self.accepts(w, r, &here),
                    _ => self.breaking(
                        "dependency-added",
                        &here,
                        format!("the reader adds a dependency on `{name}`"),
                    ),
                }
            }
        }
    }
}

fn without(o: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    o.iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The keywords of `base` and `part` together, as `allOf` means; on a clash, the stricter
/// part is kept for the keywords it is easy to intersect.
fn merge(base: &Map<String, Value>, part: &Value, root: &Value) -> Value {
    let part = Engine::resolve(root, part).unwrap_or(part);
    let Value::Object(p) = part else {
        return Value::Object(base.clone());
    };
    let mut out = base.clone();
    for (k, v) in p {
        match (k.as_str(), out.get(k)) {
            (_, None) => {
                out.insert(k.clone(), v.clone());
            }
            ("required", Some(Value::Array(a))) => {
                let mut all = a.clone();
                all.extend(v.as_array().into_iter().flatten().cloned());
                all.dedup();
                out.insert(k.clone(), Value::Array(all));
            }
            ("properties", Some(Value::Object(a))) => {
                let mut all = a.clone();
                if let Value::Object(b) = v {
                    for (name, s) in b {
                        all.entry(name.clone()).or_insert_with(|| s.clone());
                    }
                }
                out.insert(k.clone(), Value::Object(all));
            }
            ("type", Some(t)) => {
                let mine: Vec<&str> = match t {
                    Value::String(x) => vec![x.as_str()],
                    Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                let theirs: Vec<&str> = match v {
                    Value::String(x) => vec![x.as_str()],
                    Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                // Intersect, an integer being a number.
                let mut both: Vec<Value> = Vec::new();
                for a in &mine {
                    for b in &theirs {
                        let common = if a == b {
                            Some(*a)
                        } else if (*a, *b) == ("integer", "number")
                            || (*a, *b) == ("number", "integer")
                        {
                            Some("integer")
                        } else {
                            None
                        };
                        if let Some(c) = common {
                            if !both.contains(&Value::from(c)) {
                                both.push(Value::from(c));
                            }
                        }
                    }
                }
                out.insert(k.clone(), Value::Array(both));
            }
            ("enum", Some(Value::Array(a))) => {
                let kept: Vec<Value> = a
                    .iter()
                    .filter(|x| v.as_array().is_some_and(|b| b.contains(x)))
                    .cloned()
                    .collect();
                out.insert(k.clone(), Value::Array(kept));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn accepts_all(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(o) => o.keys().all(|k| is_annotation(k)),
        _ => false,
    }
}

fn rejects_all(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn is_annotation(k: &str) -> bool {
    matches!(
        k,
        "$schema"
            | "$id"
            | "$comment"
            | "title"
            | "description"
            | "default"
            | "examples"
            | "deprecated"
            | "readOnly"
            | "writeOnly"
            | "definitions"
            | "$defs"
    ) || k.starts_with("x-")
}

fn types(o: &Map<String, Value>) -> Option<Vec<&str>> {
    match o.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// `t` is allowed by `types`, integers being numbers.
fn type_in(t: &str, types: &[&str]) -> bool {
    types.contains(&t) || (t == "integer" && types.contains(&"number"))
}

/// The only values a schema allows, from `enum` or `const`.
fn values(o: &Map<String, Value>) -> Option<Vec<&Value>> {
    if let Some(c) = o.get("const") {
        return Some(vec![c]);
    }
    o.get("enum")?.as_array().map(|a| a.iter().collect())
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A bound: the value, and whether it is exclusive.
type Bound = (Num, bool);

/// A number as JSON wrote it: integers compare exactly, beyond `f64`'s 53 bits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

fn num(v: &Value) -> Option<Num> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(Num::Int(i128::from(i)));
    }
    if let Some(u) = n.as_u64() {
        return Some(Num::Int(i128::from(u)));
    }
    n.as_f64().map(Num::Float)
}

fn num_cmp(a: Num, b: Num) -> std::cmp::Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (x, y) => {
            let f = |n: Num| match n {
                Num::Int(i) => i as f64,
                Num::Float(v) => v,
            };
            f(x).total_cmp(&f(y))
        }
    }
}

/// The tightest lower bound of `o`: `minimum`, `exclusiveMinimum` (a number, or draft 4's
/// boolean beside `minimum`), and for serde schemas an integer `format`.
fn lower(o: &Map<String, Value>, serde: bool) -> Option<Bound> {
    bound(
        o,
        serde,
        "minimum",
        "exclusiveMinimum",
        std::cmp::Ordering::Greater,
        |(_, lo, _)| lo,
    )
}

fn upper(o: &Map<String, Value>, serde: bool) -> Option<Bound> {
    bound(
        o,
        serde,
        "maximum",
        "exclusiveMaximum",
        std::cmp::Ordering::Less,
        |(_, _, hi)| hi,
    )
}

fn bound(
    o: &Map<String, Value>,
    serde: bool,
    inclusive: &str,
    exclusive: &str,
    tighter: std::cmp::Ordering,
    from_format: fn((&str, i128, i128)) -> i128,
) -> Option<Bound> {
    let mut best: Option<Bound> = None;
    let mut take = |b: Bound| {
        let better = best.is_none_or(|c| {
            let o = num_cmp(b.0, c.0);
            o == tighter || (o == std::cmp::Ordering::Equal && b.1)
        });
        if better {
            best = Some(b);
        }
    };
    let draft4_exclusive = o.get(exclusive) == Some(&Value::Bool(true));
    if let Some(v) = o.get(inclusive).and_then(num) {
        take((v, draft4_exclusive));
    }
    if let Some(v) = o.get(exclusive).and_then(num) {
        take((v, true));
    }
    // Validators do not enforce `format`; serde's integer types do.
    if let Some(f) = int_format(o).filter(|_| serde) {
        take((Num::Int(from_format(f)), false));
    }
    best
}

/// An integer `format` as a range: schemars writes `u32` and `u64` alike but for it.
fn int_format(o: &Map<String, Value>) -> Option<(&'static str, i128, i128)> {
    let f = o.get("format")?.as_str()?;
    INTEGER_FORMATS
        .iter()
        .copied()
        .find(|(name, ..)| *name == f)
}

/// The writer's lower bound `w` lets through values below the reader's `r`.
fn bound_below(w: Bound, r: Bound) -> bool {
    match num_cmp(w.0, r.0) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Equal => !w.1 && r.1,
        std::cmp::Ordering::Greater => false,
    }
}

fn bound_above(w: Bound, r: Bound) -> bool {
    match num_cmp(w.0, r.0) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => !w.1 && r.1,
        std::cmp::Ordering::Less => false,
    }
}

/// The text a value is compared by: `1` and `1.0` are the same number.
fn canonical(v: &Value) -> String {
    match num(v) {
        Some(Num::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

/// A `$ref` with other keywords beside it: the reference alone, and the rest.
fn split_ref(v: &Value) -> Option<(Value, Value)> {
    let o = v.as_object()?;
    let target = o.get("$ref")?;
    if o.keys().all(|k| k == "$ref" || is_annotation(k)) {
        return None;
    }
    let mut only = Map::new();
    only.insert("$ref".into(), target.clone());
    Some((Value::Object(only), Value::Object(without(o, &["$ref"]))))
}

/// The keywords compared here; any other on the reader is reported, not ignored.
const KNOWN: &[&str] = &[
    "type",
    "enum",
    "const",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "required",
    "minProperties",
    "maxProperties",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "$anchor",
];

fn patterns(o: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    o.get("patternProperties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// Whether a `patternProperties` regex may match `name`: a pattern the regex engine cannot
/// read may, to stay on the safe side.
fn may_match(pattern: &str, name: &str) -> bool {
    regex::Regex::new(pattern).map_or(true, |re| re.is_match(name))
}

/// The item schemas of an array: per position, then for the rest.
fn tuple(o: &Map<String, Value>) -> (Vec<&Value>, &Value) {
    static TRUE: Value = Value::Bool(true);
    if let Some(Value::Array(prefix)) = o.get("prefixItems") {
        return (prefix.iter().collect(), o.get("items").unwrap_or(&TRUE));
    }
    match o.get("items") {
        Some(Value::Array(prefix)) => (
            prefix.iter().collect(),
            o.get("additionalItems").unwrap_or(&TRUE),
        ),
        Some(items) => (Vec::new(), items),
        None => (Vec::new(), &TRUE),
    }
}

/// The schema of members neither declared nor matched by a pattern.
fn rest_of(o: &Map<String, Value>) -> &Value {
    static TRUE: Value = Value::Bool(true);
    o.get("additionalProperties")
        .or_else(|| o.get("unevaluatedProperties"))
        .unwrap_or(&TRUE)
}

fn rest_key(o: &Map<String, Value>) -> &'static str {
    if o.contains_key("unevaluatedProperties") && !o.contains_key("additionalProperties") {
        "unevaluatedProperties"
    } else {
        "additionalProperties"
    }
}

/// Whether two `patternProperties` regexes may match a common name. Decided only for plain
/// anchored prefixes (`^I_`), the usual shape; any other pair may.
fn may_overlap(a: &str, b: &str) -> bool {
    let prefix = |p: &str| {
        let literal = p.strip_prefix('^')?;
        literal
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            .then_some(literal.to_owned())
    };
    match (prefix(a), prefix(b)) {
        (Some(x), Some(y)) => x.starts_with(&y) || y.starts_with(&x),
        _ => true,
    }
}

/// The schema of the first writer or reader pattern that may match an undeclared `name`.
fn pattern_for<'v>(o: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    patterns(o)
        .find(|(p, _)| may_match(p, name))
        .map(|(_, s)| s)
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
