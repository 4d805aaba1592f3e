//! The embedded transport: a queue in an SQLite file. Nothing to run, and a message survives
//! a crash of its worker: it stays in the file, taken but not settled, and is delivered again
//! once its reclaim timeout passes.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::clock::now_ms;
use crate::transport::{
    seconds, Access, Delivery, DrainStats, Dsn, FailedMessage, FailureRecord, FailureStore, Queue,
    StatRow, TransportError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS upcaster_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    taken_at INTEGER,
    taken_by TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    counted INTEGER NOT NULL DEFAULT 0,
    waiting_newer INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS upcaster_messages_next
    ON upcaster_messages (queue, available_at, id);
CREATE TABLE IF NOT EXISTS upcaster_failed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    type_name TEXT,
    version INTEGER,
    class TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS upcaster_stats (
    queue TEXT NOT NULL,
    type_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (queue, type_name, version)
);
";

/// The longest wait for another process's write lock when settling a message.
const SETTLE_BUSY: Duration = Duration::from_secs(10);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms_i64() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// A queue in an SQLite file, shared by any number of worker processes on one host (not
/// over a network file system, where SQLite's locks do not hold).
///
/// ```
/// use std::time::Duration;
/// use upcaster_worker::prelude::*;
/// use upcaster_worker::SqliteTransport;
///
/// let dir = std::env::temp_dir().join(format!("upcaster-doc-{}", std::process::id()));
/// let mut queue = SqliteTransport::open(dir.join("queue.db"), "async")?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#)?;
/// let delivery = queue.receive(Duration::from_millis(100))?.expect("a message");
/// queue.ack(&delivery)?;
/// assert_eq!(queue.pending()?, 0);
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteTransport {
    conn: Connection,
    name: String,
    queue: String,
    consumer: String,
    reclaim_after: Duration,
    busy_timeout: Duration,
}

impl SqliteTransport {
    /// Opens (creating if needed) the queue `queue` in the SQLite file at `path`.
    pub fn open(path: impl AsRef<Path>, queue: &str) -> Result<Self, TransportError> {
        SqliteTransport::open_with(path.as_ref(), queue, Access::Create)
    }

    /// Opens the queue `queue` in the SQLite file at `path`, which must already hold a queue
    /// made by this transport: nothing is created.
    pub fn open_existing(path: impl AsRef<Path>, queue: &str) -> Result<Self, TransportError> {
        SqliteTransport::open_with(path.as_ref(), queue, Access::Existing)
    }

    fn open_with(path: &Path, queue: &str, access: Access) -> Result<Self, TransportError> {
        let name = format!("sqlite://{}?queue={queue}", path.display());
        let err = |e: rusqlite::Error| TransportError::storage(&name, "opening the queue", e);
        let conn = match access {
            Access::Create => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| TransportError::storage(&name, "creating its directory", e))?;
                }
                Connection::open(path).map_err(err)?
            }
            Access::Existing => {
                let missing = || {
                    TransportError::configuration(
                        &name,
                        "no queue file here; this command creates none: check the DSN",
                    )
                };
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(path, flags).map_err(|_| missing())?;
                let ours: bool = conn
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'upcaster_messages'",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|_| missing())?;
                if !ours {
                    return Err(TransportError::configuration(
                        &name,
                        "this file holds no upcaster queue; this command creates none: check the DSN",
                    ));
                }
                conn
            }
        };
        // Several worker processes share the file: wait for the writer rather than fail.
        conn.busy_timeout(SETTLE_BUSY).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // With WAL, NORMAL loses nothing when a process crashes (only on power loss).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Files made by earlier versions lack the newer columns.
        for (table, column) in [
            ("upcaster_messages", "deliveries"),
            ("upcaster_messages", "counted"),
            ("upcaster_messages", "waiting_newer"),
            ("upcaster_failed", "counted"),
        ] {
            let present: bool = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    params![table, column],
                    |r| r.get(0),
                )
                .map_err(err)?;
            if !present {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                ))
                .map_err(err)?;
            }
        }
        Ok(SqliteTransport {
            conn,
            name,
            queue: queue.to_owned(),
            consumer: crate::transport::consumer_name(),
            reclaim_after: Duration::from_secs(300),
            busy_timeout: SETTLE_BUSY,
        })
    }

    /// Opens `sqlite://<path>[?queue=<name>][&reclaim_after=<seconds>]`.
    pub fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        SqliteTransport::open_dsn_with(dsn, queue, Access::Create)
    }

    /// Opens a DSN as [`SqliteTransport::open_dsn`], creating nothing with
    /// [`Access::Existing`].
    pub fn open_dsn_with(dsn: &str, queue: &str, access: Access) -> Result<Self, TransportError> {
        let dsn = Dsn::parse(dsn)?;
        dsn.only(&["queue", "reclaim_after"])?;
        let path = dsn.file_path()?;
        let mut transport =
            SqliteTransport::open_with(&path, dsn.param("queue").unwrap_or(queue), access)?;
        if let Some(secs) = dsn.param("reclaim_after") {
            transport.reclaim_after = seconds(secs).ok_or_else(|| {
                TransportError::configuration(dsn.shown(), "reclaim_after is not seconds")
            })?;
        }
        Ok(transport)
    }

    /// How long a taken message may stay unsettled before another consumer takes it.
    pub fn reclaim_after(mut self, timeout: Duration) -> Self {
        self.reclaim_after = timeout;
        self
    }

    fn err(&self, e: rusqlite::Error) -> TransportError {
        failed(&self.name)(e)
    }

    fn take(&mut self, wait: Duration) -> Result<Option<Delivery>, TransportError> {
        // Waiting for another process's write lock counts against the receive's timeout;
        // a settle, which may come next (from a message in flight), waits its own time.
        self.busy(wait.clamp(Duration::from_millis(1), SETTLE_BUSY))?;
        let taken = self.take_now();
        self.busy(SETTLE_BUSY)?;
        taken
    }

    fn take_now(&mut self) -> Result<Option<Delivery>, TransportError> {
        let now = now_ms_i64();
        let stale = now.saturating_sub(millis(self.reclaim_after));
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) if is_busy(&e) => return Ok(None),
            Err(e) => return Err(failed(&self.name)(e)),
        };
        // A consumer never takes back a message it holds (its handler may still be running,
        // in the async runtime): other consumers reclaim it.
        // A body stored as text by another producer is read as its bytes, and an attempt
        // out of range is clamped: a row no worker can read would stall the queue.
        let row = tx
            .query_row(
                "SELECT id, CAST(body AS BLOB), attempt, taken_at IS NOT NULL, deliveries,
                        counted != 0
                 FROM upcaster_messages
                 WHERE queue = ?1 AND available_at <= ?2
                   AND (taken_at IS NULL OR (taken_at <= ?3 AND taken_by IS NOT ?4))
                 ORDER BY available_at, id LIMIT 1",
                params![self.queue, now, stale, self.consumer],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                        clamp_u32(r.get::<_, Option<i64>>(2)?.unwrap_or(0)),
                        r.get::<_, bool>(3)?,
                        clamp_u32(r.get::<_, Option<i64>>(4)?.unwrap_or(0)),
                        r.get::<_, Option<bool>>(5)?.unwrap_or(false),
                    ))
                },
            )
            .optional();
        let row = match row {
            Ok(row) => row,
            Err(e) if is_busy(&e) => return Ok(None),
            Err(e) => return Err(failed(&self.name)(e)),
        };
        let Some((id, body, attempt, reclaimed, deliveries, counted)) = row else {
            return Ok(None);
        };
        let deliveries = deliveries.saturating_add(1);
        tx.execute(
            "UPDATE upcaster_messages SET taken_at = ?1, taken_by = ?2, deliveries = ?3
             WHERE id = ?4",
            params![now, self.consumer, deliveries, id],
        )
        .map_err(failed(&self.name))?;
        tx.commit().map_err(failed(&self.name))?;
        Ok(Some(Delivery {
            id: id.to_string(),
            body,
            attempt,
            reclaimed,
            deliveries,
            counted,
            counts_as: None,
        }))
    }

    /// Puts a delivery back after `delay`, marked as waiting for newer code when `newer`.
    fn put_back(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
        newer: bool,
    ) -> Result<(), TransportError> {
        let id = self.row_id(&delivery.id)?;
        let at = now_ms_i64().saturating_add(millis(delay));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(&self.name))?;
        let ours = tx
            .execute(
                "UPDATE upcaster_messages
                 SET available_at = ?1, attempt = ?2, taken_at = NULL, taken_by = NULL,
                     deliveries = 0, counted = ?5, waiting_newer = ?6
                 WHERE id = ?3 AND taken_by = ?4",
                params![at, attempt, id, self.consumer, delivery.counted, newer],
            )
            .map_err(failed(&self.name))?;
        count_in(&tx, &self.queue, delivery, ours).map_err(failed(&self.name))?;
        tx.commit().map_err(failed(&self.name))
    }

    fn busy(&mut self, wait: Duration) -> Result<(), TransportError> {
        if self.busy_timeout != wait {
            self.conn.busy_timeout(wait).map_err(failed(&self.name))?;
            self.busy_timeout = wait;
        }
        Ok(())
    }

    fn row_id(&self, id: &str) -> Result<i64, TransportError> {
        id.parse().map_err(|_| {
            TransportError::configuration(
                &self.name,
                format!("`{id}` is not an id of this transport"),
            )
        })
    }
}

impl Queue for SqliteTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        self.conn
            .execute(
                "INSERT INTO upcaster_messages (queue, body, attempt, available_at)
                 VALUES (?1, ?2, 0, ?3)",
                params![self.queue, body, now_ms_i64()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid().to_string())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        // A timeout too long to add is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(5);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if let Some(delivery) = self.take(left)? {
                return Ok(Some(delivery));
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        let id = self.row_id(&delivery.id)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(&self.name))?;
        // Only while it is ours: a message reclaimed by another consumer is theirs to settle.
        let ours = tx
            .execute(
                "DELETE FROM upcaster_messages WHERE id = ?1 AND taken_by = ?2",
                params![id, self.consumer],
            )
            .map_err(failed(&self.name))?;
        count_in(&tx, &self.queue, delivery, ours).map_err(failed(&self.name))?;
        tx.commit().map_err(failed(&self.name))
    }

    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, attempt, false)
    }

    fn requeue_for_newer(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, delivery.attempt, true)
    }

    fn release_waiting(
        &mut self,
        readable: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, TransportError> {
        let now = now_ms_i64();
        let waiting: Vec<(i64, Vec<u8>)> = {
            let mut statement = self
                .conn
                .prepare(
                    "SELECT id, CAST(body AS BLOB) FROM upcaster_messages
                     WHERE queue = ?1 AND waiting_newer = 1 AND taken_by IS NULL
                       AND available_at > ?2
                     ORDER BY id LIMIT 1000",
                )
                .map_err(failed(&self.name))?;
            let rows = statement
                .query_map(params![self.queue, now], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                    ))
                })
                .map_err(failed(&self.name))?;
            rows.collect::<Result<_, _>>().map_err(failed(&self.name))?
        };
        let mut released = 0;
        for (id, body) in waiting {
            if !readable(&body) {
                continue;
            }
            let changed = self
                .conn
                .execute(
                    "UPDATE upcaster_messages SET available_at = ?1, waiting_newer = 0
                     WHERE id = ?2 AND waiting_newer = 1 AND taken_by IS NULL",
                    params![now, id],
                )
                .map_err(|e| self.err(e))?;
            released += changed as u64;
        }
        Ok(released)
    }

    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let id = self.row_id(&delivery.id)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(&self.name))?;
        let ours = tx
            .execute(
                "DELETE FROM upcaster_messages WHERE id = ?1 AND taken_by = ?2",
                params![id, self.consumer],
            )
            .map_err(failed(&self.name))?;
        if ours == 0 {
            // Reclaimed by another consumer meanwhile: theirs to settle, not ours to fail.
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO upcaster_failed
             (queue, body, type_name, version, class, error, attempts, failed_at, counted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                self.queue,
                delivery.body,
                record.type_name,
                record.version,
                record.class,
                record.error,
                record.attempts,
                i64::try_from(record.failed_at_ms).unwrap_or(i64::MAX),
                delivery.counted
            ],
        )
        .map_err(failed(&self.name))?;
        let failed_id = tx.last_insert_rowid();
        count_in(&tx, &self.queue, delivery, ours).map_err(failed(&self.name))?;
        tx.commit().map_err(failed(&self.name))?;
        Ok(Some(failed_id.to_string()))
    }

    fn pending(&mut self) -> Result<u64, TransportError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM upcaster_messages WHERE queue = ?1",
                params![self.queue],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }
}

impl FailureStore for SqliteTransport {
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, body, type_name, version, class, error, attempts, failed_at
                 FROM upcaster_failed WHERE queue = ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(failed(&self.name))?;
        let rows = stmt
            .query_map(
                params![self.queue, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(FailedMessage {
                        id: r.get::<_, i64>(0)?.to_string(),
                        body: r.get(1)?,
                        record: FailureRecord {
                            type_name: r.get(2)?,
                            version: r.get(3)?,
                            class: r.get(4)?,
                            error: r.get(5)?,
                            attempts: r.get(6)?,
                            failed_at_ms: r.get::<_, i64>(7)?.max(0) as u64,
                        },
                    })
                },
            )
            .map_err(failed(&self.name))?;
        rows.collect::<Result<_, _>>().map_err(failed(&self.name))
    }

    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.row_id(id)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(&self.name))?;
        let moved = tx
            .execute(
                "INSERT INTO upcaster_messages (queue, body, attempt, available_at, counted)
                 SELECT queue, body, 0, ?1, counted FROM upcaster_failed
                 WHERE id = ?2 AND queue = ?3",
                params![now_ms_i64(), id, self.queue],
            )
            .map_err(failed(&self.name))?;
        tx.execute(
            "DELETE FROM upcaster_failed WHERE id = ?1 AND queue = ?2",
            params![id, self.queue],
        )
        .map_err(failed(&self.name))?;
        tx.commit().map_err(failed(&self.name))?;
        Ok(moved == 1)
    }

    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.row_id(id)?;
        let n = self
            .conn
            .execute(
                "DELETE FROM upcaster_failed WHERE id = ?1 AND queue = ?2",
                params![id, self.queue],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }
}

impl DrainStats for SqliteTransport {
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(&self.name))?;
        for row in rows {
            tx.execute(
                UPSERT_STATS,
                params![
                    self.queue,
                    row.type_name,
                    row.version,
                    i64::try_from(row.count).unwrap_or(i64::MAX),
                    i64::try_from(row.last_seen_ms).unwrap_or(i64::MAX)
                ],
            )
            .map_err(failed(&self.name))?;
        }
        tx.commit().map_err(failed(&self.name))
    }

    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT type_name, version, count, last_seen FROM upcaster_stats
                 WHERE queue = ?1 ORDER BY type_name, version",
            )
            .map_err(failed(&self.name))?;
        let rows = stmt
            .query_map(params![self.queue], |r| {
                Ok(StatRow {
                    type_name: r.get(0)?,
                    version: r.get(1)?,
                    count: r.get::<_, i64>(2)?.max(0) as u64,
                    last_seen_ms: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(failed(&self.name))?;
        rows.collect::<Result<_, _>>().map_err(failed(&self.name))
    }
}

/// The error of an SQLite call on the queue `name`: a closure for `map_err`, borrowing only
/// the name, so it can be used while a transaction borrows the connection.
fn failed(name: &str) -> impl Fn(rusqlite::Error) -> TransportError + '_ {
    move |e| TransportError::storage(name, "SQLite failed", e)
}

/// Adds a delivery's count (if the worker set one) to the drain statistics, in the settle's
/// own transaction, when the settle changed `settled` rows (0: not ours any more).
fn count_in(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    delivery: &Delivery,
    settled: usize,
) -> rusqlite::Result<()> {
    let Some(count) = delivery.counts_as.as_ref().filter(|_| settled > 0) else {
        return Ok(());
    };
    tx.execute(
        UPSERT_STATS,
        params![
            queue,
            count.type_name,
            count.version,
            1,
            i64::try_from(count.at_ms).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(())
}

/// Adds a count to a (queue, type, version) row, keeping the latest last-seen.
const UPSERT_STATS: &str =
    "INSERT INTO upcaster_stats (queue, type_name, version, count, last_seen)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (queue, type_name, version) DO UPDATE SET
         count = count + excluded.count,
         last_seen = max(last_seen, excluded.last_seen)";
