//! JSON Pointers (RFC 6901) with one extension: a `*` token stands for every element of an
//! array or every value of an object.

use std::fmt;

use serde_json::Value;

use crate::codec::push_token;

/// A parsed JSON Pointer such as `/items/*/price`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Key(String),
    Wildcard,
}

impl Pointer {
    /// Parses RFC 6901 text; `*` alone as a token is the wildcard.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must be empty or start with `/`"));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                tokens.push(Token::Wildcard);
                continue;
            }
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    key.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => return Err(format!("`{text}` has a `~` not followed by `0` or `1`")),
                }
            }
            tokens.push(Token::Key(key));
        }
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// True when the pointer has a wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.tokens.contains(&Token::Wildcard)
    }

    /// Splits after the last wildcard: the part that fans out, and the plain keys below it.
    pub(crate) fn split(&self) -> (&[Token], Vec<&str>) {
        let at = self
            .tokens
            .iter()
            .rposition(|t| *t == Token::Wildcard)
            .map_or(0, |i| i + 1);
        let keys = self.tokens[at..]
            .iter()
            .filter_map(|t| match t {
                Token::Key(k) => Some(k.as_str()),
                Token::Wildcard => None,
            })
            .collect();
        (&self.tokens[..at], keys)
    }

    /// True when `self` is a proper prefix of `other` (a value cannot move into itself).
    pub(crate) fn is_proper_prefix_of(&self, other: &Pointer) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() {
            "\"\""
        } else {
            &self.text
        })
    }
}

/// Calls `f` on every value that the wildcard part `fan` of a pointer reaches from `root`,
/// with the concrete pointer of that value.
pub(crate) fn for_each<F>(root: &mut Value, fan: &[Token], f: &mut F) -> Result<(), String>
where
    F: FnMut(&mut Value, &str) -> Result<(), String>,
{
    fn walk<F>(v: &mut Value, fan: &[Token], at: &mut String, f: &mut F) -> Result<(), String>
    where
        F: FnMut(&mut Value, &str) -> Result<(), String>,
    {
        let Some((first, rest)) = fan.split_first() else {
            return f(v, at);
        };
        let len = at.len();
        let result = match first {
            Token::Key(k) => {
                push_token(at, k);
                match child_mut(v, k) {
                    Some(c) => walk(c, rest, at, f),
                    None => Err(format!("{at} not found")),
                }
            }
            Token::Wildcard => match v {
                Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, c)| {
                    let len = at.len();
                    push_token(at, &i.to_string());
                    let r = walk(c, rest, at, f);
                    at.truncate(len);
                    r
                }),
                Value::Object(map) => map.iter_mut().try_for_each(|(k, c)| {
                    let len = at.len();
                    push_token(at, k);
                    let r = walk(c, rest, at, f);
                    at.truncate(len);
                    r
                }),
                _ => Err(format!(
                    "{} is {}, not an array or object",
                    shown(at),
                    kind(v)
                )),
            },
        };
        at.truncate(len);
        result
    }
    walk(root, fan, &mut String::new(), f)
}

/// `""` for the root, else the pointer itself.
pub(crate) fn shown(at: &str) -> &str {
    if at.is_empty() {
        "\"\""
    } else {
        at
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn child_mut<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    match v {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => index(key).and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

/// An RFC 6901 array index: digits without a leading zero.
fn index(key: &str) -> Option<usize> {
    let ok = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    ok.then(|| key.parse().ok()).flatten()
}

/// The concrete pointer of `keys` below `at`, for messages (built only on failure).
fn path_to(at: &str, keys: &[&str]) -> String {
    let mut here = at.to_owned();
    for k in keys {
        push_token(&mut here, k);
    }
    here
}

/// The value at `keys` below `base`.
pub(crate) fn get<'v>(
    base: &'v mut Value,
    keys: &[&str],
    at: &str,
) -> Result<&'v mut Value, String> {
    let mut v = base;
    for (i, k) in keys.iter().enumerate() {
        v = match child_mut(v, k) {
            Some(c) => c,
            None => return Err(format!("{} not found", path_to(at, &keys[..=i]))),
        };
    }
    Ok(v)
}

/// The parent of `keys` below `base`, and the last key.
fn parent<'v, 'k>(
    base: &'v mut Value,
    keys: &[&'k str],
    at: &str,
) -> Result<(&'v mut Value, &'k str), String> {
    match keys.split_last() {
        Some((last, path)) => Ok((get(base, path, at)?, last)),
        None => Err(format!("{} is the whole value", shown(at))),
    }
}

/// Removes and returns the value at `keys`.
pub(crate) fn take(base: &mut Value, keys: &[&str], at: &str) -> Result<Value, String> {
    if keys.is_empty() {
        return Ok(base.take());
    }
    let (parent, last) = parent(base, keys, at)?;
    let taken = match parent {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => match index(last) {
            Some(i) if i < items.len() => Some(items.remove(i)),
            _ => None,
        },
        other => {
            let (here, kind) = (path_to(at, keys), kind(other));
            return Err(format!("{here} not found: its parent is {kind}"));
        }
    };
    taken.ok_or_else(|| format!("{} not found", path_to(at, keys)))
}

/// How [`put`] treats an existing value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// RFC 6902 `add`: create, or replace an object member; insert into an array.
    Add,
    /// RFC 6902 `replace`: the target must exist.
    Replace,
    /// Create only; leave an existing value alone.
    IfAbsent,
}

/// Places `value` at `keys` below `base`.
pub(crate) fn put(
    base: &mut Value,
    keys: &[&str],
    at: &str,
    value: Value,
    mode: Put,
) -> Result<(), String> {
    if keys.is_empty() {
        if mode != Put::IfAbsent {
            *base = value;
        }
        return Ok(());
    }
    let (parent, last) = parent(base, keys, at)?;
    let fail = |what: &str| Err(format!("{} {what}", path_to(at, keys)));
    match parent {
        Value::Object(map) => {
            let present = map.contains_key(last);
            match mode {
                Put::Replace if !present => return fail("not found"),
                Put::IfAbsent if present => return Ok(()),
                _ => {}
            }
            map.insert(last.to_owned(), value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" {
                items.len()
            } else {
                match index(last) {
                    Some(i) => i,
                    None => return fail("is not an array index"),
                }
            };
            match mode {
                Put::Add if i <= items.len() => items.insert(i, value),
                Put::Replace if i < items.len() => items[i] = value,
                Put::IfAbsent if i < items.len() => {}
                Put::IfAbsent if i == items.len() => items.push(value),
                _ => return fail("is past the end of the array"),
            }
            Ok(())
        }
        other => fail(&format!("cannot be set: its parent is {}", kind(other))),
    }
}
