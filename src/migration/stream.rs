//! Renames while streaming: a chain of migration steps that only rename keys is applied as
//! the payload is deserialized, with no object tree.
//!
//! The result must be exactly what the tree path gives, so the adapter refuses (and the
//! registry falls back to the tree, which then reports the real error) whenever the tree
//! path would fail or differ: a source key missing, a target key already present, a parent
//! that is not an object, a key repeated.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::op::Op;
use super::pointer::Token;
use super::Migration;

/// A segment of a rule's parent pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pat {
    Key(String),
    Any,
}

/// In every object at `parent`, the key `from` is read as `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    parent: Vec<Pat>,
    from: String,
    to: String,
    /// Every name the key takes on the way, `to` included: a key that arrives under one of
    /// them would be overwritten by the tree's `move`.
    via: Vec<String>,
}

/// The renames of a chain of steps, composed into one pass over the payload as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    rules: Vec<Rule>,
    /// The longest parent pattern: below it nothing is renamed or checked.
    depth: usize,
    /// What the payload's own object must hold and renames, worked out once.
    root: Object,
}

impl Plan {
    /// Composes `steps`, oldest first, if every operation is a rename within one object (or
    /// a `rename-type`); `None` when anything else (or an interaction too subtle to stream)
    /// needs the tree.
    pub(crate) fn compose<'m>(steps: impl IntoIterator<Item = &'m Migration>) -> Option<Plan> {
        let mut rules: Vec<Rule> = Vec::new();
        for step in steps {
            for op in step.ops() {
                let (from, path) = match op {
                    Op::RenameType { .. } => continue,
                    Op::Move { from, path } => (from, path),
                    _ => return None,
                };
                let (from_parent, from_key) = rename_parts(from.tokens())?;
                let (to_parent, to_key) = rename_parts(path.tokens())?;
                if from_parent != to_parent || from_key == to_key {
                    return None;
                }
                // The parent as it arrives: undo earlier renames of its segments.
                let mut parent = from_parent;
                for r in rules.iter().rev() {
                    let n = r.parent.len();
                    if parent.len() > n
                        && parent[..n] == r.parent[..]
                        && parent[n] == Pat::Key(r.to.clone())
                    {
                        parent[n] = Pat::Key(r.from.clone());
                    }
                }
                if rules.iter().any(|r| r.parent == parent && r.to == to_key) {
                    return None;
                }
                let chained = rules
                    .iter()
                    .position(|r| r.parent == parent && r.to == from_key);
                match chained {
                    // A key renamed again: compose.
                    Some(i) => {
                        rules[i].via.push(to_key.clone());
                        rules[i].to = to_key;
                    }
                    None => {
                        // A key an earlier step moved away is gone: the tree would fail.
                        if rules
                            .iter()
                            .any(|r| r.parent == parent && r.from == from_key)
                        {
                            return None;
                        }
                        rules.push(Rule {
                            parent,
                            from: from_key,
                            via: vec![to_key.clone()],
                            to: to_key,
                        });
                    }
                }
            }
        }
        let depth = rules.iter().map(|r| r.parent.len()).max()?;
        let mut plan = Plan {
            rules,
            depth,
            root: Object::default(),
        };
        plan.root = plan.object(&[]);
        // `seen` is a 64-bit mask.
        (plan.rules.len() < 64).then_some(plan)
    }

    /// Wraps a deserializer so that it reads the payload renamed.
    pub(crate) fn wrap<'p, D>(&'p self, de: D) -> Renaming<'p, D> {
        Renaming {
            de,
            plan: self,
            path: Vec::new(),
        }
    }

    /// What the value at `path` must be, for the tree path to succeed.
    fn need(&self, path: &[Seg]) -> Need {
        let mut need = Need::Anything;
        for r in &self.rules {
            // The full pattern is parent + [from]; every prefix of it must lead on.
            if path.len() > r.parent.len() || !matches(&r.parent[..path.len()], path) {
                continue;
            }
            match r.parent.get(path.len()) {
                Some(Pat::Any) if need == Need::Anything => need = Need::Container,
                Some(Pat::Any) => {}
                Some(Pat::Key(_)) | None => need = Need::Object,
            }
        }
        need
    }

    /// The keys an object at `path` must contain, and its renames.
    fn object_at(&self, path: &[Seg]) -> Cow<'_, Object> {
        if path.is_empty() {
            Cow::Borrowed(&self.root)
        } else {
            Cow::Owned(self.object(path))
        }
    }

    fn object(&self, path: &[Seg]) -> Object {
        let mut object = Object::default();
        for r in &self.rules {
            if path.len() > r.parent.len() || !matches(&r.parent[..path.len()], path) {
                continue;
            }
            match r.parent.get(path.len()) {
                None => {
                    object.renames.push((r.from.clone(), r.to.clone()));
                    object.required.push(r.from.clone());
                    object.taken.extend(r.via.iter().cloned());
                }
                Some(Pat::Key(k)) => object.required.push(k.clone()),
                Some(Pat::Any) => {}
            }
        }
        object.required.sort_unstable();
        object.required.dedup();
        object
    }
}

/// `parent/key` of a rename's pointer: a plain, non-numeric last key, and a parent with no
/// numeric keys (which could address array elements).
fn rename_parts(tokens: &[Token]) -> Option<(Vec<Pat>, String)> {
    let (last, parent) = tokens.split_last()?;
    let plain = |k: &str| !k.is_empty() && !k.bytes().all(|b| b.is_ascii_digit()) && k != "-";
    let Token::Key(last) = last else { return None };
    if !plain(last) {
        return None;
    }
    let parent = parent
        .iter()
        .map(|t| match t {
            Token::Wildcard => Some(Pat::Any),
            Token::Key(k) if plain(k) => Some(Pat::Key(k.clone())),
            Token::Key(_) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((parent, last.clone()))
}

/// Where a value sits, in the payload as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index,
    /// A key that is no string (MessagePack allows them): no pattern matches it.
    Other,
}

fn matches(pattern: &[Pat], path: &[Seg]) -> bool {
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(p, s)| match (p, s) {
            (Pat::Any, Seg::Key(_) | Seg::Index) => true,
            (Pat::Key(k), Seg::Key(s)) => k == s,
            _ => false,
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Anything,
    Container,
    Object,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Object {
    renames: Vec<(String, String)>,
    required: Vec<String>,
    /// Names a renamed key takes: another key arriving under one would be overwritten.
    taken: Vec<String>,
}

fn refuse<E: de::Error>(why: impl fmt::Display) -> E {
    E::custom(format_args!("not streamable: {why}"))
}

/// A deserializer that renames keys on the way through.
pub(crate) struct Renaming<'p, D> {
    de: D,
    plan: &'p Plan,
    path: Vec<Seg>,
}

impl<'p, D> Renaming<'p, D> {
    fn visitor<V>(&self, inner: V) -> Watch<'p, V> {
        Watch {
            inner,
            plan: self.plan,
            need: self.plan.need(&self.path),
            path: self.path.clone(),
        }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                let watch = self.visitor(visitor);
                self.de.$method($($arg,)* watch)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Renaming<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_seq(), deserialize_map(),
        deserialize_identifier(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // A skipped value is not visited, so its checks could not run: read it instead.
        let watch = self.visitor(visitor);
        self.de.deserialize_any(watch)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor that checks what it is shown against the plan, and renames inside objects.
struct Watch<'p, V> {
    inner: V,
    plan: &'p Plan,
    need: Need,
    path: Vec<Seg>,
}

impl<V> Watch<'_, V> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        match self.need {
            Need::Anything => Ok(()),
            _ => Err(refuse("a value the renames go through is not an object")),
        }
    }
}

macro_rules! scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.scalar()?;
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, 'p, V: Visitor<'de>> Visitor<'de> for Watch<'p, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    scalars! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.scalar()?;
        self.inner.visit_unit()
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.scalar()?;
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let renaming = Renaming {
            de: d,
            plan: self.plan,
            path: self.path,
        };
        self.inner.visit_some(renaming)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let renaming = Renaming {
            de: d,
            plan: self.plan,
            path: self.path,
        };
        self.inner.visit_newtype_struct(renaming)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.need == Need::Object {
            return Err(refuse("an array where the renames need an object"));
        }
        self.inner.visit_seq(Elements {
            seq,
            plan: self.plan,
            path: self.path,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let object = self.plan.object_at(&self.path);
        if object.required.len() > 64 {
            return Err(refuse("more required keys than the mask holds"));
        }
        self.inner.visit_map(Members {
            map,
            keys: Keys {
                plan: self.plan,
                path: self.path,
                object,
                seen: 0,
                key: None,
            },
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        // An enum's variant is a key of the tree: too subtle to match here.
        if self.path.len() <= self.plan.depth {
            return Err(refuse("an enum where renames apply"));
        }
        self.inner.visit_enum(data)
    }
}

/// The elements of an array the renames may reach into.
struct Elements<'p, A> {
    seq: A,
    plan: &'p Plan,
    path: Vec<Seg>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Elements<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        if self.path.len() >= self.plan.depth {
            return self.seq.next_element_seed(seed);
        }
        let mut path = self.path.clone();
        path.push(Seg::Index);
        self.seq.next_element_seed(Inside {
            seed,
            plan: self.plan,
            path,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// The members of an object the renames may apply to.
struct Members<'p, A> {
    map: A,
    keys: Keys<'p>,
}

/// What an object's keys are checked against, and what was read.
struct Keys<'p> {
    plan: &'p Plan,
    path: Vec<Seg>,
    object: Cow<'p, Object>,
    /// Which of `object.required` have been read, as bits.
    seen: u64,
    /// The key just read, as it arrived.
    key: Option<Seg>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Members<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let keys = &mut self.keys;
        let key = self.map.next_key_seed(KeySeed { seed, keys })?;
        if key.is_none() {
            let required = &self.keys.object.required;
            if let Some(missing) = (0..required.len()).find(|i| self.keys.seen & (1 << i) == 0) {
                return Err(refuse(format_args!("`{}` is missing", required[missing])));
            }
        }
        Ok(key)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        if self.keys.path.len() >= self.keys.plan.depth {
            // The value is below every pattern: read at full speed.
            return self.map.next_value_seed(seed);
        }
        let mut path = self.keys.path.clone();
        path.push(self.keys.key.take().unwrap_or(Seg::Other));
        self.map.next_value_seed(Inside {
            seed,
            plan: self.keys.plan,
            path,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

impl<'p> Keys<'p> {
    /// Records a key as it arrived and gives the name to read it as.
    fn arrive<E: de::Error>(&mut self, key: &str) -> Result<Option<&str>, E> {
        if let Some(i) = self.object.required.iter().position(|r| r == key) {
            if self.seen & (1 << i) != 0 {
                return Err(refuse(format_args!("`{key}` appears twice")));
            }
            self.seen |= 1 << i;
        }
        let renamed = self.object.renames.iter().position(|(from, _)| from == key);
        if renamed.is_none() && self.object.taken.iter().any(|t| t == key) {
            return Err(refuse(format_args!("`{key}` is already present")));
        }
        if self.path.len() < self.plan.depth {
            self.key = Some(Seg::Key(key.to_owned()));
        }
        Ok(renamed.map(|i| self.object.renames[i].1.as_str()))
    }
}

/// A value inside an array or object: checked and renamed while shallow enough to matter.
struct Inside<'p, T> {
    seed: T,
    plan: &'p Plan,
    path: Vec<Seg>,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Inside<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        if self.path.len() > self.plan.depth {
            // Below every pattern: read at full speed.
            return self.seed.deserialize(d);
        }
        self.seed.deserialize(Renaming {
            de: d,
            plan: self.plan,
            path: self.path,
        })
    }
}

/// The key of an object member: read through [`KeyName`].
struct KeySeed<'m, 'p, K> {
    seed: K,
    keys: &'m mut Keys<'p>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, '_, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        self.seed.deserialize(KeyName {
            de: d,
            keys: self.keys,
        })
    }
}

/// A key deserializer that hands the renamed key to whoever reads it.
struct KeyName<'m, 'p, D> {
    de: D,
    keys: &'m mut Keys<'p>,
}

macro_rules! forward_key {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.de.$method($($arg,)* KeyVisitor { inner: visitor, keys: self.keys })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyName<'_, '_, D> {
    type Error = D::Error;

    forward_key! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_seq(), deserialize_map(),
        deserialize_identifier(), deserialize_ignored_any(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct KeyVisitor<'m, 'p, V> {
    inner: V,
    keys: &'m mut Keys<'p>,
}

macro_rules! other_keys {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.keys.key = None;
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match self.keys.arrive(v)? {
            Some(to) => self.inner.visit_str(to),
            None => self.inner.visit_str(v),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match self.keys.arrive(v)? {
            Some(to) => self.inner.visit_str(to),
            None => self.inner.visit_borrowed_str(v),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match self.keys.arrive(&v)? {
            Some(to) => self.inner.visit_str(to),
            None => self.inner.visit_string(v),
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => {
                self.keys.key = None;
                self.inner.visit_bytes(v)
            }
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_borrowed_str(s),
            Err(_) => {
                self.keys.key = None;
                self.inner.visit_borrowed_bytes(v)
            }
        }
    }

    other_keys! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_byte_buf(Vec<u8>),
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.keys.key = None;
        self.inner.visit_unit()
    }
}
