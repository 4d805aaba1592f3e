//! Setup shared by the integration tests.
#![allow(dead_code)]

pub mod contract;
#[path = "../../examples/ponka/messages.rs"]
pub mod ponka;

use upcaster::{Error, ErrorKind, Malformation};

/// The `Malformation` of a malformed-envelope error, or a panic naming what came instead.
pub fn malformation(e: &Error) -> &Malformation {
    match e.kind() {
        ErrorKind::Malformed { problem, .. } => problem,
        other => panic!("expected a malformed envelope, got {other:?}"),
    }
}

/// Builds MessagePack bytes by hand, so tests can write what no serde writer would.
pub struct Pack(pub Vec<u8>);

impl Pack {
    pub fn map(n: u32) -> Self {
        let mut p = Pack(Vec::new());
        rmp::encode::write_map_len(&mut p.0, n).unwrap();
        p
    }
    pub fn str(mut self, s: &str) -> Self {
        rmp::encode::write_str(&mut self.0, s).unwrap();
        self
    }
    pub fn uint(mut self, n: u64) -> Self {
        rmp::encode::write_uint(&mut self.0, n).unwrap();
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Appends a value serialized with named fields.
    pub fn value<T: serde::Serialize>(mut self, v: &T) -> Self {
        self.0.extend(rmp_serde::to_vec_named(v).unwrap());
        self
    }
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A value a handler and its test share. Handlers are `Send + Sync`, so not a `Cell`.
pub struct Shared<T>(std::sync::Mutex<T>);

impl<T: Copy> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(std::sync::Mutex::new(value))
    }
    pub fn get(&self) -> T {
        *self.0.lock().unwrap()
    }
    pub fn set(&self, value: T) {
        *self.0.lock().unwrap() = value;
    }
}
