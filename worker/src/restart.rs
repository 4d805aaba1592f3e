//! The restart signal: `stop-workers` records "restart requested at T", and every worker
//! running yesterday's code exits after its current message.
//!
//! The store is named explicitly (a file path or a Redis key), never derived from a cache
//! namespace that a deploy could change: the old workers and the new `stop-workers` must
//! find the same place.
//!
//! # Clock rules
//!
//! - Times are the **store's** clock: the host's for a file, the Redis server's (`TIME`) for a
//!   Redis key. A worker converts its own start into that clock (the store's time at its first
//!   read, less the time since it started), so host clocks never judge each other.
//! - A worker exits when, at its first read, the stored time is later than its start (a
//!   request made while it was still opening its transports), or when the stored value
//!   **changes** while it runs: any write after its first read is a request made after it
//!   started, even if a clock was stepped back in between.
//! - A stored time more than [`CLOCK_TOLERANCE`] ahead of the store's clock cannot be a
//!   request that happened: [`RestartSignal::request_at`] refuses to write it, and a worker
//!   that finds one at start warns and ignores it, rather than exit at once in a restart loop
//!   until the clock passes it.
//! - A worker that cannot read its signal warns once, goes on, and stops (exit 1) once the
//!   signal has been unreadable for longer than its outage limit (30 s by default,
//!   [`crate::Worker::restart_signal_outage`]), rather than run yesterday's code blind.

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::transport::{TransportError, TransportErrorKind};

/// How far a stored restart time may be ahead of the store's clock and still be taken as a
/// request: the clock's granularity, not a tolerance for skew (one clock judges both sides).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// How long a worker goes on while its restart signal cannot be read, by default.
pub const DEFAULT_OUTAGE_LIMIT: Duration = Duration::from_secs(30);

/// Where "restart requested at" lives.
pub trait RestartSignal: Send {
    /// The store, for logs: a path or a Redis key.
    fn name(&self) -> String;
    /// The store's clock, in milliseconds since the Unix epoch. A worker converts its start
    /// time to it, so one clock judges both sides.
    fn now(&mut self) -> Result<u64, TransportError>;
    /// Writes `at_ms` as the latest request, unchecked. Use [`RestartSignal::request`] or
    /// [`RestartSignal::request_at`].
    fn store(&mut self, at_ms: u64) -> Result<(), TransportError>;
    /// The latest request, if any.
    fn requested_at(&mut self) -> Result<Option<u64>, TransportError>;
    /// How often a worker reads the signal, at most: zero (the default) reads it before
    /// every message, as a local file allows. A store a round trip away should return more
    /// (the Redis signal: 100 ms), or every message pays a round trip for it.
    fn check_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Records a restart request now, by the store's clock; returns its time.
    fn request(&mut self) -> Result<u64, TransportError> {
        let at = self.now()?;
        self.store(at)?;
        Ok(at)
    }

    /// Records a restart request made at `at_ms` (by the store's clock). A time more than
    /// [`CLOCK_TOLERANCE`] ahead of the store's clock is refused: no worker could honour it
    /// without exiting at once on every start until then.
    fn request_at(&mut self, at_ms: u64) -> Result<(), TransportError> {
        let now = self.now()?;
        if is_future(at_ms, now) {
            return Err(TransportError::configuration(
                format!("restart signal {}", self.name()),
                format!(
                    "refusing to record a restart at {at_ms} ms, {} ms ahead of the store's clock",
                    at_ms - now
                ),
            ));
        }
        self.store(at_ms)
    }
}

fn is_future(at_ms: u64, now_ms: u64) -> bool {
    at_ms > now_ms.saturating_add(CLOCK_TOLERANCE.as_millis() as u64)
}

/// One read of a signal: the stored time, and the store's clock when the worker asked for it
/// (only until it knows its start in that clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    pub requested_at: Option<u64>,
    pub store_now: Option<u64>,
}

/// What a worker does after a look at its signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on; log the warning, if any.
    Continue(Option<String>),
    /// A restart was requested after this worker started.
    Restart { at_ms: u64 },
    /// The signal has been unreadable for longer than the outage limit.
    Lost {
        problem: String,
        unreadable_for: Duration,
    },
}

/// The decisions about a restart signal, without I/O: the worker reads, this judges.
#[derive(Debug)]
pub(crate) struct Watch {
    started: Instant,
    outage_limit: Duration,
    /// The value of the latest successful read; `None` until the first.
    seen: Option<Option<u64>>,
    unreadable_since: Option<Instant>,
    /// The last warning given, so each is given once.
    warned: Option<String>,
}

impl Watch {
    pub(crate) fn new(started: Instant, outage_limit: Duration) -> Self {
        Watch {
            started,
            outage_limit,
            seen: None,
            unreadable_since: None,
            warned: None,
        }
    }

    /// Whether the last read failed: the worker then reads less often, so that a store
    /// that hangs costs it a wait now and then, not one before every message.
    pub(crate) fn failing(&self) -> bool {
        self.unreadable_since.is_some()
    }

    /// Whether the next read must include the store's clock.
    pub(crate) fn needs_clock(&self) -> bool {
        self.seen.is_none()
    }

    /// Judges one read, made at `now`.
    pub(crate) fn observe(&mut self, reading: Result<Reading, String>, now: Instant) -> Verdict {
        let reading = match reading {
            Ok(reading) => reading,
            Err(problem) => return self.unreadable(problem, now),
        };
        let value = reading.requested_at;
        let was_unreadable = self.unreadable_since.take().is_some();
        let previous = self.seen.replace(value);
        let verdict = match (previous, reading.store_now) {
            // The first read: a request later than this worker's start (in the store's clock)
            // came while it was starting.
            (None, Some(store_now)) => {
                let age = now.saturating_duration_since(self.started);
                let started_ms = store_now.saturating_sub(age.as_millis() as u64);
                match value {
                    Some(at) if is_future(at, store_now) => self.warn(format!(
                        "restart signal holds {at} ms, {} ms ahead of its clock; ignored (see the clock rules)",
                        at - store_now
                    )),
                    Some(at) if at > started_ms => Verdict::Restart { at_ms: at },
                    _ => Verdict::Continue(None),
                }
            }
            // Not a first read after all: the clock was not asked for.
            (None, None) => {
                self.seen = None;
                Verdict::Continue(None)
            }
            // Any write after the first read is a request made after this worker started.
            (Some(before), _) => match value {
                Some(at) if before != Some(at) => Verdict::Restart { at_ms: at },
                _ => Verdict::Continue(None),
            },
        };
        if was_unreadable && verdict == Verdict::Continue(None) {
            self.warned = None;
            return Verdict::Continue(Some("restart signal readable again".to_owned()));
        }
        verdict
    }

    /// Warns once per outage, whatever the errors on the way, and gives up past the limit.
    fn unreadable(&mut self, problem: String, now: Instant) -> Verdict {
        let Some(since) = self.unreadable_since else {
            self.unreadable_since = Some(now);
            return self.warn(format!(
                "{problem} (the worker stops if it stays unreadable for {} s)",
                self.outage_limit.as_secs_f64()
            ));
        };
        let unreadable_for = now.saturating_duration_since(since);
        if unreadable_for > self.outage_limit {
            return Verdict::Lost {
                problem,
                unreadable_for,
            };
        }
        Verdict::Continue(None)
    }

    fn warn(&mut self, problem: String) -> Verdict {
        if self.warned.as_deref() == Some(problem.as_str()) {
            return Verdict::Continue(None);
        }
        self.warned = Some(problem.clone());
        Verdict::Continue(Some(problem))
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
        TransportError::new(
            format!("restart file {}", self.path.display()),
            TransportErrorKind::Storage,
            problem,
        )
    }
}

impl RestartSignal for FileSignal {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn now(&mut self) -> Result<u64, TransportError> {
        Ok(now_ms())
    }

    fn store(&mut self, at_ms: u64) -> Result<(), TransportError> {
        let path = signal_file(&self.path).map_err(|e| self.error(e))?;
        write_atomically(&path, at_ms.to_string().as_bytes()).map_err(|e| self.error(e))
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

/// The file a request is written to. A release directory often links to one shared signal
/// (`releases/42/restart -> /srv/shared/restart`), so a symlink is followed to its target,
/// where every release reads, but only a link this user or root owns: one another user
/// planted (in a directory others can write) could aim the write at any file of ours.
fn signal_file(path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mut at = path.to_path_buf();
        // A chain of links, each of them checked; a loop fails like `open` does.
        for _ in 0..40 {
            let link = match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => m,
                _ => return Ok(at),
            };
            let me = fs::metadata("/proc/self").map(|m| m.uid())?;
            if link.uid() != me && link.uid() != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symlink owned by user {}, not by this user ({me}) or root: not followed",
                        at.display(),
                        link.uid()
                    ),
                ));
            }
            let target = fs::read_link(&at)?;
            at = match at.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
        }
        Err(std::io::Error::other(format!(
            "{}: too many levels of symbolic links",
            path.display()
        )))
    }
    #[cfg(not(unix))]
    Ok(path.to_path_buf())
}

/// Replaces `path` with `bytes` so that a reader sees the old content or the new, never half.
///
/// The bytes go to a temporary file with an unpredictable name, created exclusively
/// (`O_CREAT | O_EXCL`, which never follows a symlink) beside `path`, and synced before it is
/// renamed over `path`. Its mode is 0664 less the umask: others never get write access.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?
        .to_string_lossy();
    fs::create_dir_all(dir)?;
    let (tmp, mut file) = create_exclusive(dir, &file_name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // The rename itself on disk too (best effort: not every file system syncs directories).
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn create_exclusive(dir: &Path, file_name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(format!(".{file_name}.{:016x}.tmp", unpredictable()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o664);
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Taken (by chance or planted): another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// 64 bits another user cannot guess: std's hasher keys come from the OS's randomness.
fn unpredictable() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn first(at: Option<u64>, store_now: u64) -> Result<Reading, String> {
        Ok(Reading {
            requested_at: at,
            store_now: Some(store_now),
        })
    }

    fn later(at: Option<u64>) -> Result<Reading, String> {
        Ok(Reading {
            requested_at: at,
            store_now: None,
        })
    }

    #[test]
    fn a_request_made_while_the_worker_started_stops_it() {
        let t0 = Instant::now();
        // Started at store time 10,000; its first read came 3 s later.
        let mut w = Watch::new(t0, 30 * S);
        assert!(w.needs_clock());
        assert_eq!(
            w.observe(first(Some(10_500), 13_000), t0 + 3 * S),
            Verdict::Restart { at_ms: 10_500 }
        );
        // One from before its start does not concern it.
        let mut w = Watch::new(t0, 30 * S);
        assert_eq!(
            w.observe(first(Some(9_000), 13_000), t0 + 3 * S),
            Verdict::Continue(None)
        );
        assert!(!w.needs_clock());
        assert_eq!(
            w.observe(later(Some(9_000)), t0 + 4 * S),
            Verdict::Continue(None)
        );
    }

    #[test]
    fn any_write_after_the_first_read_stops_the_worker_even_an_earlier_time() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, 30 * S);
        w.observe(first(Some(50_000), 60_000), t0);
        // The clock was stepped back, then stop-workers wrote its (smaller) now.
        assert_eq!(
            w.observe(later(Some(40_000)), t0 + S),
            Verdict::Restart { at_ms: 40_000 }
        );
        let mut w = Watch::new(t0, 30 * S);
        w.observe(first(None, 60_000), t0);
        assert_eq!(
            w.observe(later(Some(61_000)), t0 + S),
            Verdict::Restart { at_ms: 61_000 }
        );
        // A deleted key is no request.
        let mut w = Watch::new(t0, 30 * S);
        w.observe(first(Some(1), 60_000), t0);
        assert_eq!(w.observe(later(None), t0 + S), Verdict::Continue(None));
    }

    #[test]
    fn a_future_time_is_warned_about_once_and_ignored() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, 30 * S);
        let hour_ahead = 60_000 + 3_600_000;
        match w.observe(first(Some(hour_ahead), 60_000), t0) {
            Verdict::Continue(Some(warning)) => assert!(warning.contains("ahead"), "{warning}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            w.observe(later(Some(hour_ahead)), t0 + S),
            Verdict::Continue(None)
        );
        // Within the clock's granularity it is a request.
        let mut w = Watch::new(t0, 30 * S);
        assert_eq!(
            w.observe(first(Some(60_900), 60_000), t0),
            Verdict::Restart { at_ms: 60_900 }
        );
    }

    #[test]
    fn an_unreadable_signal_warns_once_then_stops_the_worker_past_the_outage_limit() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, 10 * S);
        let gone = || Err::<Reading, _>("GET failed: connection refused".to_owned());
        assert!(matches!(w.observe(gone(), t0), Verdict::Continue(Some(_))));
        assert_eq!(w.observe(gone(), t0 + 5 * S), Verdict::Continue(None));
        assert_eq!(w.observe(gone(), t0 + 10 * S), Verdict::Continue(None));
        match w.observe(gone(), t0 + 11 * S) {
            Verdict::Lost {
                problem,
                unreadable_for,
            } => {
                assert!(problem.contains("refused"));
                assert_eq!(unreadable_for, 11 * S);
            }
            other => panic!("{other:?}"),
        }
        // Readable again in time: the clock of the outage starts over.
        let mut w = Watch::new(t0, 10 * S);
        w.observe(gone(), t0);
        assert_eq!(
            w.observe(first(None, 1_000), t0 + 9 * S),
            Verdict::Continue(Some("restart signal readable again".to_owned()))
        );
        w.observe(gone(), t0 + 15 * S);
        assert!(matches!(
            w.observe(gone(), t0 + 24 * S),
            Verdict::Continue(_)
        ));
        assert!(matches!(
            w.observe(gone(), t0 + 26 * S),
            Verdict::Lost { .. }
        ));
    }

    #[test]
    fn a_request_at_a_future_time_is_refused_when_written() {
        let dir = std::env::temp_dir().join(format!("upcaster-restart-{}", unpredictable()));
        let mut s = FileSignal::new(dir.join("restart"));
        let now = now_ms();
        let e = s.request_at(now + 3_600_000).unwrap_err();
        assert!(e.to_string().contains("ahead of the store's clock"), "{e}");
        assert_eq!(s.requested_at().unwrap(), None);
        s.request_at(now).unwrap();
        assert_eq!(s.requested_at().unwrap(), Some(now));
        let _ = fs::remove_dir_all(dir);
    }
}
