//! The restart signal: `stop-workers` records "restart requested at T", and every worker
//! started before T exits after its current message.
//!
//! The store is named explicitly (a file path or a Redis key), never derived from a cache
//! namespace that a deploy could change: the old workers and the new `stop-workers` must
//! find the same place.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::transport::{now_ms, TransportError};

/// Where "restart requested at" lives.
pub trait RestartSignal: Send {
    /// The store, for logs: a path or a Redis key.
    fn name(&self) -> String;
    /// The store's clock, in milliseconds since the Unix epoch. A worker takes its start
    /// time from it, so one clock judges both sides.
    fn now(&mut self) -> Result<u64, TransportError>;
    /// Records a restart request now; returns its time.
    fn request(&mut self) -> Result<u64, TransportError>;
    /// The latest request, if any.
    fn requested_at(&mut self) -> Result<Option<u64>, TransportError>;
    /// How often a worker reads the signal, at most: zero (the default) reads it before
    /// every message, as a local file allows. A store a round trip away should return more
    /// (the Redis signal: 100 ms), or every message pays a round trip for it.
    fn check_interval(&self) -> Duration {
        Duration::ZERO
    }
}

/// The default store: a file holding the time in milliseconds. One host, nothing to run.
pub struct FileSignal {
    path: PathBuf,
}

impl FileSignal {
    /// A signal kept in the file at `path` (created by the first request).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSignal { path: path.into() }
    }

    fn error(&self, problem: impl std::fmt::Display) -> TransportError {
        TransportError::new(format!("restart file {}", self.path.display()), problem)
    }
}

impl RestartSignal for FileSignal {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn now(&mut self) -> Result<u64, TransportError> {
        Ok(now_ms())
    }

    fn request(&mut self) -> Result<u64, TransportError> {
        let at = now_ms();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        }
        // Written aside and renamed, so a worker never reads half a number.
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let written = fs::File::create(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(at.to_string().as_bytes())?;
            // On disk before the rename, so a crash cannot leave an empty signal behind.
            f.sync_all()
        });
        written.map_err(|e| self.error(e))?;
        fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        Ok(at)
    }

    fn requested_at(&mut self) -> Result<Option<u64>, TransportError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.error(format!("not a time in milliseconds: {text:?}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Opens a restart signal from its DSN: a file path (`file://<path>` or a bare path), or
/// `redis://<host>[:<port>][/<db>]?key=<key>` (feature `redis`).
pub fn open(dsn: &str) -> Result<Box<dyn RestartSignal>, TransportError> {
    if dsn.starts_with("redis:") || dsn.starts_with("rediss:") {
        #[cfg(feature = "redis")]
        return Ok(Box::new(super::redis::RedisSignal::open_dsn(dsn)?));
        #[cfg(not(feature = "redis"))]
        return Err(TransportError::new(
            dsn,
            "a Redis restart signal needs upcaster's `redis` feature",
        ));
    }
    let path = dsn.strip_prefix("file://").unwrap_or(dsn);
    if path.contains("://") || path.is_empty() {
        return Err(TransportError::new(
            format!("restart signal {dsn}"),
            "expected an absolute file path (or file://<path>) or redis://<host>?key=<key>",
        ));
    }
    // A relative path moves with the working directory, as a release directory does on
    // deploy, and the old workers would never see the request.
    if !std::path::Path::new(path).is_absolute() {
        return Err(TransportError::new(
            format!("restart signal {dsn}"),
            "give an absolute path, the same for every release",
        ));
    }
    Ok(Box::new(FileSignal::new(path)))
}
