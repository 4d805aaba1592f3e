//! The operations of a declarative migration: their names and fields in a file, what they
//! do to a payload, and their inverses.

use std::fmt;

use serde_json::{Map, Value};

use super::pointer::{self, Pointer, Put};

/// One operation. Names and semantics follow RFC 6902 (JSON Patch) where it has one: `move`,
/// `copy`, `add`, `remove`, `replace`, `test`. The rest are ours.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// `{"op":"move","from":P,"path":Q}`: takes the value at P and adds it at Q.
    Move {
        /// Where the value is.
        from: Pointer,
        /// Where it goes.
        path: Pointer,
    },
    /// `{"op":"copy","from":P,"path":Q}`: adds a copy of the value at P at Q.
    Copy {
        /// Where the value is.
        from: Pointer,
        /// Where the copy goes.
        path: Pointer,
    },
    /// `{"op":"add","path":P,"value":V}`: adds V at P (replacing an object member).
    Add {
        /// Where to add.
        path: Pointer,
        /// The value.
        value: Value,
    },
    /// `{"op":"remove","path":P}`: removes the value at P. An optional `"value"` is what a
    /// downcast puts back, which makes the removal reversible.
    Remove {
        /// What to remove.
        path: Pointer,
        /// The value a downcast restores, if any.
        restore: Option<Value>,
    },
    /// `{"op":"replace","path":P,"value":V}`: replaces the existing value at P.
    Replace {
        /// What to replace.
        path: Pointer,
        /// The new value.
        value: Value,
    },
    /// `{"op":"test","path":P,"value":V}`: fails unless the value at P equals V.
    Test {
        /// What to test.
        path: Pointer,
        /// The expected value.
        value: Value,
    },
    /// `{"op":"set-if-absent","path":P,"value":V}`: adds V at P only where P is absent.
    SetIfAbsent {
        /// Where to add.
        path: Pointer,
        /// The default value.
        value: Value,
    },
    /// `{"op":"map","path":P,"values":{"old":"new",…}}`: maps the string at P (an enum
    /// value, say) through the table; a value missing from the table fails.
    Map {
        /// The value to map.
        path: Pointer,
        /// Old string → new value, in file order.
        values: Vec<(String, Value)>,
    },
    /// `{"op":"rename-type","from":"OldName"}`: the type was called OldName before this step.
    RenameType {
        /// The former name.
        from: String,
    },
    /// `{"op":"wrap","path":P,"key":K}`: the value V at P becomes `{K: V}`.
    Wrap {
        /// The value to wrap.
        path: Pointer,
        /// The key of the new object.
        key: String,
    },
    /// `{"op":"unwrap","path":P,"key":K}`: the object `{K: V}` at P becomes V; any other
    /// member fails, since it would be lost.
    Unwrap {
        /// The object to unwrap.
        path: Pointer,
        /// Its only key.
        key: String,
    },
    /// `{"op":"to-string","path":P}`: the integer at P becomes its decimal string.
    IntToString {
        /// The integer.
        path: Pointer,
    },
    /// `{"op":"to-integer","path":P}`: the decimal string at P (no sign `+`, no leading
    /// zero) becomes an integer.
    StringToInt {
        /// The string.
        path: Pointer,
    },
}

/// The operation names a file may use.
pub const OP_NAMES: &[&str] = &[
    "move",
    "copy",
    "add",
    "remove",
    "replace",
    "test",
    "set-if-absent",
    "map",
    "rename-type",
    "wrap",
    "unwrap",
    "to-string",
    "to-integer",
];

/// A problem in one operation's fields: the JSON Pointer into the operation, and what.
pub(crate) type FieldError = (String, String);

impl Op {
    /// Reads one operation object of a migration file.
    pub(crate) fn from_json(v: &Value) -> Result<Op, FieldError> {
        let Value::Object(o) = v else {
            return Err((String::new(), "an operation must be an object".into()));
        };
        let name = match o.get("op") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(("/op".into(), "`op` must be a string".into())),
            None => return Err((String::new(), "missing `op`".into())),
        };
        let (op, fields): (Op, &[&str]) = match name {
            "move" | "copy" => {
                let (from, path) = (pointer_field(o, "from")?, pointer_field(o, "path")?);
                if from.split().0 != path.split().0 {
                    return Err((
                        "/path".into(),
                        format!(
                            "`from` and `path` must share the part up to their last `*`: \
                             {from} and {path} do not"
                        ),
                    ));
                }
                if name == "move" && from.is_proper_prefix_of(&path) {
                    return Err((
                        "/path".into(),
                        format!("cannot move {from} into itself ({path})"),
                    ));
                }
                let op = if name == "move" {
                    Op::Move { from, path }
                } else {
                    Op::Copy { from, path }
                };
                (op, &["from", "path"])
            }
            "add" | "replace" | "test" | "set-if-absent" => {
                let path = pointer_field(o, "path")?;
                let value = o
                    .get("value")
                    .cloned()
                    .ok_or_else(|| (String::new(), "missing `value`".to_owned()))?;
                let op = match name {
                    "add" => Op::Add { path, value },
                    "replace" => Op::Replace { path, value },
                    "test" => Op::Test { path, value },
                    _ => Op::SetIfAbsent { path, value },
                };
                (op, &["path", "value"])
            }
            "remove" => {
                let path = pointer_field(o, "path")?;
                let restore = o.get("value").cloned();
                (Op::Remove { path, restore }, &["path", "value"])
            }
            "map" => {
                let path = pointer_field(o, "path")?;
                let values = match o.get("values") {
                    Some(Value::Object(m)) if !m.is_empty() => {
                        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                    }
                    Some(_) => {
                        return Err((
                            "/values".into(),
                            "`values` must be a non-empty object of old → new values".into(),
                        ))
                    }
                    None => return Err((String::new(), "missing `values`".into())),
                };
                (Op::Map { path, values }, &["path", "values"])
            }
            "rename-type" => {
                let from = string_field(o, "from")?;
                if from.is_empty() || from.chars().any(char::is_control) {
                    return Err((
                        "/from".into(),
                        "a type name must be non-empty, without control characters".into(),
                    ));
                }
                (Op::RenameType { from }, &["from"])
            }
            "wrap" | "unwrap" => {
                let path = pointer_field(o, "path")?;
                let key = string_field(o, "key")?;
                let op = if name == "wrap" {
                    Op::Wrap { path, key }
                } else {
                    Op::Unwrap { path, key }
                };
                (op, &["path", "key"])
            }
            "to-string" | "to-integer" => {
                let path = pointer_field(o, "path")?;
                let op = if name == "to-string" {
                    Op::IntToString { path }
                } else {
                    Op::StringToInt { path }
                };
                (op, &["path"])
            }
            other => {
                return Err((
                    "/op".into(),
                    format!(
                        "unknown operation `{other}`; expected one of {}",
                        OP_NAMES
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        for key in o.keys() {
            if key != "op" && !fields.contains(&key.as_str()) {
                let mut at = String::new();
                crate::codec::push_token(&mut at, key);
                return Err((
                    at,
                    format!(
                        "unknown field `{key}` for `{name}`; expected {}",
                        fields.join(", ")
                    ),
                ));
            }
        }
        Ok(op)
    }

    /// The operation's name in a file.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Move { .. } => "move",
            Op::Copy { .. } => "copy",
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Replace { .. } => "replace",
            Op::Test { .. } => "test",
            Op::SetIfAbsent { .. } => "set-if-absent",
            Op::Map { .. } => "map",
            Op::RenameType { .. } => "rename-type",
            Op::Wrap { .. } => "wrap",
            Op::Unwrap { .. } => "unwrap",
            Op::IntToString { .. } => "to-string",
            Op::StringToInt { .. } => "to-integer",
        }
    }

    /// Applies the operation to a payload. The error names the concrete pointer.
    pub(crate) fn apply(&self, root: &mut Value) -> Result<(), String> {
        match self {
            Op::Move { from, path } => {
                let (fan, src) = from.split();
                let dst = path.split().1;
                pointer::for_each(root, fan, &mut |base, at| {
                    let v = pointer::take(base, &src, at)?;
                    pointer::put(base, &dst, at, v, Put::Add)
                })
            }
            Op::Copy { from, path } => {
                let (fan, src) = from.split();
                let dst = path.split().1;
                pointer::for_each(root, fan, &mut |base, at| {
                    let v = pointer::get(base, &src, at)?.clone();
                    // Copies can double a payload each time: keep it to a sane size.
                    if nodes(&v) + nodes(base) > MAX_NODES {
                        return Err(format!(
                            "copying {} would make the payload larger than {MAX_NODES} values",
                            here(at, &src)
                        ));
                    }
                    pointer::put(base, &dst, at, v, Put::Add)
                })
            }
            Op::Add { path, value } => put_each(root, path, value, Put::Add),
            Op::Replace { path, value } => put_each(root, path, value, Put::Replace),
            Op::SetIfAbsent { path, value } => put_each(root, path, value, Put::IfAbsent),
            Op::Remove { path, .. } => each(root, path, |base, keys, at| {
                pointer::take(base, keys, at).map(drop)
            }),
            Op::Test { path, value } => each(root, path, |base, keys, at| {
                let found = pointer::get(base, keys, at)?;
                if found == value {
                    Ok(())
                } else {
                    Err(format!("{} is {found}, not {value}", here(at, keys)))
                }
            }),
            Op::Map { path, values } => each(root, path, |base, keys, at| {
                let v = pointer::get(base, keys, at)?;
                let mapped = match v {
                    Value::String(s) => values.iter().find(|(old, _)| old == s),
                    _ => None,
                };
                match mapped {
                    Some((_, new)) => {
                        *v = new.clone();
                        Ok(())
                    }
                    None => Err(format!(
                        "{} is {v}, which the map does not list",
                        here(at, keys)
                    )),
                }
            }),
            Op::RenameType { .. } => Ok(()),
            Op::Wrap { path, key } => each(root, path, |base, keys, at| {
                let v = pointer::get(base, keys, at)?;
                let mut object = Map::new();
                object.insert(key.clone(), v.take());
                *v = Value::Object(object);
                Ok(())
            }),
            Op::Unwrap { path, key } => each(root, path, |base, keys, at| {
                let v = pointer::get(base, keys, at)?;
                let inner = match v {
                    Value::Object(o) if o.len() == 1 => o.remove(key),
                    _ => None,
                };
                match inner {
                    Some(inner) => {
                        *v = inner;
                        Ok(())
                    }
                    None => Err(format!(
                        "{} is {}, not an object with the one key `{key}`",
                        here(at, keys),
                        pointer::kind(v)
                    )),
                }
            }),
            Op::IntToString { path } => each(root, path, |base, keys, at| {
                let v = pointer::get(base, keys, at)?;
                match v {
                    Value::Number(n) if n.is_i64() || n.is_u64() => {
                        *v = Value::String(n.to_string());
                        Ok(())
                    }
                    _ => Err(format!("{} is {v}, not an integer", here(at, keys))),
                }
            }),
            Op::StringToInt { path } => each(root, path, |base, keys, at| {
                let v = pointer::get(base, keys, at)?;
                let n = match v {
                    Value::String(s) => canonical_integer(s),
                    _ => None,
                };
                match n {
                    Some(n) => {
                        *v = Value::Number(n);
                        Ok(())
                    }
                    None => Err(format!(
                        "{} is {v}, not an integer written as a string",
                        here(at, keys)
                    )),
                }
            }),
        }
    }

    /// The operation that undoes this one, if one exists. `test` undoes to nothing.
    pub(crate) fn inverse(&self) -> Result<Option<Op>, &'static str> {
        Ok(Some(match self {
            Op::Move { from, path } => Op::Move {
                from: path.clone(),
                path: from.clone(),
            },
            Op::Copy { path, .. } => Op::Remove {
                path: path.clone(),
                restore: None,
            },
            Op::Add { path, .. } => Op::Remove {
                path: path.clone(),
                restore: None,
            },
            Op::Remove {
                path,
                restore: Some(value),
            } => Op::Add {
                path: path.clone(),
                value: value.clone(),
            },
            Op::Remove { restore: None, .. } => {
                return Err("it drops the value; give it a `value` to restore")
            }
            Op::Replace { .. } => return Err("the replaced value is lost"),
            Op::SetIfAbsent { .. } => {
                return Err("a downcast cannot tell whether the value was absent")
            }
            Op::Test { .. } | Op::RenameType { .. } => return Ok(None),
            Op::Map { path, values } => {
                let mut reversed = Vec::with_capacity(values.len());
                for (old, new) in values {
                    let Value::String(new) = new else {
                        return Err("it maps to a value that is not a string");
                    };
                    if reversed.iter().any(|(n, _): &(String, Value)| n == new) {
                        return Err("two values map to the same value");
                    }
                    reversed.push((new.clone(), Value::String(old.clone())));
                }
                Op::Map {
                    path: path.clone(),
                    values: reversed,
                }
            }
            Op::Wrap { path, key } => Op::Unwrap {
                path: path.clone(),
                key: key.clone(),
            },
            Op::Unwrap { path, key } => Op::Wrap {
                path: path.clone(),
                key: key.clone(),
            },
            Op::IntToString { path } => Op::StringToInt { path: path.clone() },
            Op::StringToInt { path } => Op::IntToString { path: path.clone() },
        }))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Move { from, path } | Op::Copy { from, path } => {
                write!(f, "{} {from} → {path}", self.name())
            }
            Op::Add { path, .. }
            | Op::Remove { path, .. }
            | Op::Replace { path, .. }
            | Op::Test { path, .. }
            | Op::SetIfAbsent { path, .. }
            | Op::Map { path, .. }
            | Op::IntToString { path }
            | Op::StringToInt { path } => write!(f, "{} {path}", self.name()),
            Op::Wrap { path, key } | Op::Unwrap { path, key } => {
                write!(f, "{} {path} `{key}`", self.name())
            }
            Op::RenameType { from } => write!(f, "rename-type from `{from}`"),
        }
    }
}

/// Runs `f` on every place a single-pointer operation reaches, with the keys below it.
fn each<F>(root: &mut Value, path: &Pointer, mut f: F) -> Result<(), String>
where
    F: FnMut(&mut Value, &[&str], &str) -> Result<(), String>,
{
    let (fan, keys) = path.split();
    pointer::for_each(root, fan, &mut |base, at| f(base, &keys, at))
}

fn put_each(root: &mut Value, path: &Pointer, value: &Value, mode: Put) -> Result<(), String> {
    each(root, path, |base, keys, at| {
        pointer::put(base, keys, at, value.clone(), mode)
    })
}

/// The most values a payload may hold after a `copy`.
const MAX_NODES: usize = 1_000_000;

/// How many values `v` holds, counting it; stops counting past [`MAX_NODES`].
fn nodes(v: &Value) -> usize {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        if count > MAX_NODES {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

fn here(at: &str, keys: &[&str]) -> String {
    let mut s = at.to_owned();
    for k in keys {
        crate::codec::push_token(&mut s, k);
    }
    pointer::shown(&s).to_owned()
}

/// `"42"` → 42, accepting only the text `to-string` would write back.
fn canonical_integer(s: &str) -> Option<serde_json::Number> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return None;
    }
    match s.parse::<u64>() {
        Ok(n) => Some(n.into()),
        Err(_) => s.parse::<i64>().ok().map(Into::into),
    }
}

fn pointer_field(o: &Map<String, Value>, field: &str) -> Result<Pointer, FieldError> {
    let text = string_field(o, field)?;
    Pointer::parse(&text).map_err(|e| (format!("/{field}"), format!("malformed pointer: {e}")))
}

fn string_field(o: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match o.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err((format!("/{field}"), format!("`{field}` must be a string"))),
        None => Err((String::new(), format!("missing `{field}`"))),
    }
}
