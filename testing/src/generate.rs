//! Payloads generated from a JSON Schema, as proptest strategies: the samples a version has
//! when nobody stored one. Covers what schemars emits: `type` (and nullable type arrays),
//! `enum`/`const`, `properties`/`required`, `items`/`prefixItems`, bounds, integer `format`s,
//! lengths, `anyOf`/`oneOf`/`allOf` and `$ref`/`$defs`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Number, Value};

/// How deep `$ref`s are followed before a generator settles for the smallest value.
const MAX_DEPTH: usize = 6;

/// A strategy for documents valid under `schema` (as far as the keywords above go).
pub fn strategy(schema: &Value) -> BoxedStrategy<Value> {
    Gen { root: schema }.of(schema, 0)
}

/// `count` documents drawn from `schema` with a fixed seed, for tools that want examples
/// rather than a property test.
pub fn examples(schema: &Value, count: usize) -> Vec<Value> {
    let strategy = strategy(schema);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    (0..count)
        .filter_map(|_| strategy.new_tree(&mut runner).ok().map(|t| t.current()))
        .collect()
}

struct Gen<'a> {
    root: &'a Value,
}

impl Gen<'_> {
    fn of(&self, schema: &Value, depth: usize) -> BoxedStrategy<Value> {
        let o = match schema {
            Value::Bool(false) => return Just(Value::Null).boxed(),
            Value::Object(o) => o,
            _ => return any_scalar(),
        };
        if let Some(target) = o.get("$ref").and_then(Value::as_str) {
            let resolved = target
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
                .cloned();
            return match resolved {
                Some(s) if depth < MAX_DEPTH => self.of(&s, depth + 1),
                Some(s) => Just(smallest(&s)).boxed(),
                None => Just(Value::Null).boxed(),
            };
        }
        if let Some(c) = o.get("const") {
            return Just(c.clone()).boxed();
        }
        if let Some(Value::Array(values)) = o.get("enum") {
            if !values.is_empty() {
                return proptest::sample::select(values.clone()).boxed();
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(parts)) = o.get(key) {
                let options: Vec<_> = parts.iter().map(|p| self.of(p, depth + 1)).collect();
                if !options.is_empty() {
                    return proptest::strategy::Union::new(options).boxed();
                }
            }
        }
        if let Some(Value::Array(parts)) = o.get("allOf") {
            // The first part stands for the whole: enough for schemars's `allOf: [{$ref}]`.
            if let Some(first) = parts.first() {
                return self.of(first, depth + 1);
            }
        }
        let types: Vec<&str> = match o.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ if o.contains_key("properties") => vec!["object"],
            _ if o.contains_key("items") || o.contains_key("prefixItems") => vec!["array"],
            _ => return any_scalar(),
        };
        let options: Vec<_> = types.iter().map(|t| self.typed(t, o, depth)).collect();
        proptest::strategy::Union::new(options).boxed()
    }

    fn typed(&self, t: &str, o: &Map<String, Value>, depth: usize) -> BoxedStrategy<Value> {
        match t {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
            "integer" => {
                let (lo, hi) = integer_range(o);
                (lo..=hi)
                    .prop_map(|n| Value::Number(Number::from(n)))
                    .boxed()
            }
            "number" => {
                let lo = o.get("minimum").and_then(Value::as_f64).unwrap_or(-1e6);
                let hi = o.get("maximum").and_then(Value::as_f64).unwrap_or(1e6);
                (lo..=hi.max(lo))
                    .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number))
                    .boxed()
            }
            "string" => {
                let min = o.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
                let max = o
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .map_or(min + 8, |m| m as usize);
                proptest::collection::vec(proptest::char::range('a', 'z'), min..=max.max(min))
                    .prop_map(|cs| Value::String(cs.into_iter().collect()))
                    .boxed()
            }
            "array" => self.array(o, depth),
            "object" => self.object(o, depth),
            _ => any_scalar(),
        }
    }

    fn array(&self, o: &Map<String, Value>, depth: usize) -> BoxedStrategy<Value> {
        let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = o
            .get("maxItems")
            .and_then(Value::as_u64)
            .map_or(min + 3, |m| m as usize);
        if let Some(Value::Array(prefix)) = o.get("prefixItems") {
            let parts: Vec<_> = prefix.iter().map(|p| self.of(p, depth + 1)).collect();
            return parts.prop_map(Value::Array).boxed();
        }
        let item = match o.get("items") {
            Some(items) => self.of(items, depth + 1),
            None => any_scalar(),
        };
        let max = if depth >= MAX_DEPTH {
            min
        } else {
            max.max(min)
        };
        proptest::collection::vec(item, min..=max)
            .prop_map(Value::Array)
            .boxed()
    }

    fn object(&self, o: &Map<String, Value>, depth: usize) -> BoxedStrategy<Value> {
        let required: Vec<&str> = o
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
        if let Some(Value::Object(props)) = o.get("properties") {
            for (name, schema) in props {
                let name = name.clone();
                let value = self.of(schema, depth + 1);
                if required.contains(&name.as_str()) {
                    fields.push(value.prop_map(move |v| Some((name.clone(), v))).boxed());
                } else if depth < MAX_DEPTH {
                    fields.push(
                        proptest::option::of(value.prop_map(move |v| (name.clone(), v))).boxed(),
                    );
                }
            }
        }
        fields
            .prop_map(|members| Value::Object(members.into_iter().flatten().collect()))
            .boxed()
    }
}

fn any_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| Value::Number(n.into())),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
    .boxed()
}

/// The integer range of a schema: bounds, and the `format` schemars writes for widths.
fn integer_range(o: &Map<String, Value>) -> (i64, i64) {
    let (mut lo, mut hi) = (-1_000_000i64, 1_000_000i64);
    match o.get("format").and_then(Value::as_str) {
        Some("uint8") => (lo, hi) = (0, 255),
        Some("int8") => (lo, hi) = (-128, 127),
        Some("uint16") => (lo, hi) = (0, 65535),
        Some("int16") => (lo, hi) = (-32768, 32767),
        Some(f) if f.starts_with("uint") => lo = 0,
        _ => {}
    }
    if let Some(m) = o.get("minimum").and_then(Value::as_i64) {
        lo = lo.max(m);
    }
    if let Some(m) = o.get("maximum").and_then(Value::as_i64) {
        hi = hi.min(m);
    }
    if let Some(m) = o.get("exclusiveMinimum").and_then(Value::as_i64) {
        lo = lo.max(m.saturating_add(1));
    }
    if let Some(m) = o.get("exclusiveMaximum").and_then(Value::as_i64) {
        hi = hi.min(m.saturating_sub(1));
    }
    (lo, hi.max(lo))
}

/// The smallest value of a schema, where recursion must stop.
fn smallest(schema: &Value) -> Value {
    let Some(o) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(c) = o.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(v)) = o.get("enum") {
        return v.first().cloned().unwrap_or(Value::Null);
    }
    let t = match o.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) if ts.iter().any(|t| t == "null") => "null",
        Some(Value::Array(ts)) => ts.first().and_then(Value::as_str).unwrap_or("null"),
        _ => "null",
    };
    match t {
        "boolean" => Value::Bool(false),
        "integer" | "number" => Value::Number(integer_range(o).0.into()),
        "string" => Value::String(String::new()),
        "array" => Value::Array(Vec::new()),
        "object" => {
            let mut m = Map::new();
            for name in o
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(name), Some(s)) = (
                    name.as_str(),
                    o.get("properties").and_then(|p| p.get(name.as_str()?)),
                ) {
                    m.insert(name.to_owned(), smallest(s));
                }
            }
            Value::Object(m)
        }
        _ => Value::Null,
    }
}
