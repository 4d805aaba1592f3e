//! Envelope headers: string metadata beside a message. A leaf that every layer may use.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::codec::shorten;

/// String metadata that travels with a message: ids, timestamps, user keys.
///
/// Keys are unique: a reader rejects an envelope whose `headers` repeat a key.
///
/// ```
/// let mut headers = upcaster::Headers::new();
/// headers.insert(upcaster::Headers::MESSAGE_ID, "0b7c…");
/// assert_eq!(headers.get("message-id"), Some("0b7c…"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Headers(
    // Sorted by key. A Vec, not a BTreeMap: most messages carry none or a few, and an empty
    // Vec costs nothing to create or drop on the decode path.
    Vec<(String, String)>,
);

impl Headers {
    /// Conventional key for a unique message id.
    pub const MESSAGE_ID: &'static str = "message-id";
    /// Conventional key for the id that ties related messages together.
    pub const CORRELATION_ID: &'static str = "correlation-id";
    /// Conventional key for when the message was produced (RFC 3339).
    pub const CREATED_AT: &'static str = "created-at";

    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Sets a header, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value.into())),
            Err(i) => {
                self.0.insert(i, (key, value.into()));
                None
            }
        }
    }

    /// The value of a header.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// Removes a header, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Headers from pairs whose keys must be unique; the error names a repeated key. Sorts
    /// once, so many headers cost n log n, not n².
    pub(crate) fn from_unique(mut pairs: Vec<(String, String)>) -> Result<Self, String> {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        match pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            Some(w) => Err(format!("duplicate header `{}`", shorten(&w[0].0))),
            None => Ok(Headers(pairs)),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (k, v) in iter {
            headers.insert(k, v);
        }
        headers
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of unique string keys to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(key) = map.next_key::<String>()? {
                    pairs.push((key, map.next_value::<String>()?));
                }
                Headers::from_unique(pairs).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_map(HeadersVisitor)
    }
}
