//! Setup shared by the integration tests.
#![allow(dead_code)]

pub mod contract;
pub mod nats_server;
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

/// A `tracing` writer that keeps what it is given, for tests that read the log.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// A subscriber writing here, at DEBUG and above, without colours.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The message whose handler emits `adding Ponka` (`image_post=42`): a v1 AddPonkaToImage
/// with a `message-id` and a `correlation-id`.
pub fn traced_message() -> Vec<u8> {
    let mut headers = upcaster::Headers::new();
    headers.insert("message-id", "m-42");
    headers.insert("correlation-id", "order-7");
    ponka::registry_v1()
        .unwrap()
        .encode_with_headers(
            &ponka::v1::AddPonkaToImage { image_post_id: 42 },
            &headers,
            upcaster::Format::Json,
        )
        .unwrap()
}

/// Checks that the handler's `adding Ponka` event of [`traced_message`], delivered as id 1
/// by an SQLite queue, carries the message span's fields, and that the worker logged it
/// handled at DEBUG.
pub fn assert_handler_event_in_message_span(log: &str) {
    let line = log
        .lines()
        .find(|l| l.contains("adding Ponka"))
        .unwrap_or_else(|| panic!("no handler event in:\n{log}"));
    for field in [
        "message{",
        "transport=\"sqlite://",
        "id=1",
        "attempt=0",
        "type=\"AddPonkaToImage\"",
        "version=1",
        "message_id=\"m-42\"",
        "correlation_id=\"order-7\"",
        "image_post=42",
    ] {
        assert!(line.contains(field), "`{field}` missing from: {line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("handled AddPonkaToImage")),
        "{log}"
    );
}
