//! The embedded transport: a queue in an SQLite file. Nothing to run, and a message survives
//! a crash of its worker: it stays in the file, taken but not settled, and is delivered again
//! once its reclaim timeout passes.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::transport::{
    dsn_parts, now_ms, Delivery, FailedMessage, FailureRecord, StatRow, Transport, TransportError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS upcaster_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    taken_at INTEGER,
    taken_by TEXT
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
    failed_at INTEGER NOT NULL
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

/// A queue in an SQLite file, shared by any number of worker processes on one host.
///
/// ```
/// use std::time::Duration;
/// use upcaster::worker::{SqliteTransport, Transport};
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
}

impl SqliteTransport {
    /// Opens (creating if needed) the queue `queue` in the SQLite file at `path`.
    pub fn open(path: impl AsRef<Path>, queue: &str) -> Result<Self, TransportError> {
        let path = path.as_ref();
        let name = format!("sqlite://{}?queue={queue}", path.display());
        let err = |e: &dyn std::fmt::Display| TransportError::new(&name, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| err(&e))?;
        // Several worker processes share the file: wait for the writer rather than fail.
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(&e))?;
        // With WAL, NORMAL loses nothing when a process crashes (only on power loss).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(&e))?;
        Ok(SqliteTransport {
            conn,
            name,
            queue: queue.to_owned(),
            consumer: super::consumer_name(),
            reclaim_after: Duration::from_secs(300),
        })
    }

    /// Opens `sqlite://<path>[?queue=<name>][&reclaim_after=<seconds>]`.
    pub fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        let (path, named) = dsn_parts(dsn, "queue");
        if path.is_empty() {
            return Err(TransportError::new(dsn, "the DSN names no file"));
        }
        let mut transport = SqliteTransport::open(path, named.unwrap_or(queue))?;
        if let (_, Some(secs)) = dsn_parts(dsn, "reclaim_after") {
            let secs: f64 = secs
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| TransportError::new(dsn, "reclaim_after is not seconds"))?;
            transport.reclaim_after = Duration::from_secs_f64(secs);
        }
        Ok(transport)
    }

    /// How long a taken message may stay unsettled before another consumer takes it.
    pub fn reclaim_after(mut self, timeout: Duration) -> Self {
        self.reclaim_after = timeout;
        self
    }

    fn err(&self, e: impl std::fmt::Display) -> TransportError {
        TransportError::new(&self.name, e)
    }

    fn take(&mut self) -> Result<Option<Delivery>, TransportError> {
        let now = now_ms() as i64;
        let stale = now.saturating_sub(self.reclaim_after.as_millis() as i64);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| TransportError::new(&self.name, e))?;
        let row = tx
            .query_row(
                "SELECT id, body, attempt, taken_at IS NOT NULL FROM upcaster_messages
                 WHERE queue = ?1 AND available_at <= ?2 AND (taken_at IS NULL OR taken_at <= ?3)
                 ORDER BY available_at, id LIMIT 1",
                params![self.queue, now, stale],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| TransportError::new(&self.name, e))?;
        let Some((id, body, attempt, reclaimed)) = row else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE upcaster_messages SET taken_at = ?1, taken_by = ?2 WHERE id = ?3",
            params![now, self.consumer, id],
        )
        .map_err(|e| TransportError::new(&self.name, e))?;
        tx.commit()
            .map_err(|e| TransportError::new(&self.name, e))?;
        Ok(Some(Delivery {
            id: id.to_string(),
            body,
            attempt,
            reclaimed,
        }))
    }

    fn row_id(&self, id: &str) -> Result<i64, TransportError> {
        id.parse()
            .map_err(|_| self.err(format!("`{id}` is not an id of this transport")))
    }
}

impl Transport for SqliteTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        self.conn
            .execute(
                "INSERT INTO upcaster_messages (queue, body, attempt, available_at)
                 VALUES (?1, ?2, 0, ?3)",
                params![self.queue, body, now_ms() as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid().to_string())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        // A timeout too long to add is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(delivery) = self.take()? {
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
        self.conn
            .execute("DELETE FROM upcaster_messages WHERE id = ?1", params![id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn retry_later(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        let id = self.row_id(&delivery.id)?;
        let at = now_ms().saturating_add(delay.as_millis() as u64) as i64;
        self.conn
            .execute(
                "UPDATE upcaster_messages
                 SET available_at = ?1, attempt = ?2, taken_at = NULL, taken_by = NULL
                 WHERE id = ?3",
                params![at, attempt, id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn fail(&mut self, delivery: &Delivery, record: &FailureRecord) -> Result<(), TransportError> {
        let id = self.row_id(&delivery.id)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| TransportError::new(&self.name, e))?;
        tx.execute(
            "INSERT INTO upcaster_failed
             (queue, body, type_name, version, class, error, attempts, failed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                self.queue,
                delivery.body,
                record.type_name,
                record.version,
                record.class,
                record.error,
                record.attempts,
                record.failed_at_ms as i64
            ],
        )
        .map_err(|e| TransportError::new(&self.name, e))?;
        tx.execute("DELETE FROM upcaster_messages WHERE id = ?1", params![id])
            .map_err(|e| TransportError::new(&self.name, e))?;
        tx.commit().map_err(|e| TransportError::new(&self.name, e))
    }

    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, body, type_name, version, class, error, attempts, failed_at
                 FROM upcaster_failed WHERE queue = ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| TransportError::new(&self.name, e))?;
        let rows = stmt
            .query_map(params![self.queue, limit as i64], |r| {
                Ok(FailedMessage {
                    id: r.get::<_, i64>(0)?.to_string(),
                    body: r.get(1)?,
                    record: FailureRecord {
                        type_name: r.get(2)?,
                        version: r.get(3)?,
                        class: r.get(4)?,
                        error: r.get(5)?,
                        attempts: r.get(6)?,
                        failed_at_ms: r.get::<_, i64>(7)? as u64,
                    },
                })
            })
            .map_err(|e| TransportError::new(&self.name, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| TransportError::new(&self.name, e))
    }

    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.row_id(id)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| TransportError::new(&self.name, e))?;
        let moved = tx
            .execute(
                "INSERT INTO upcaster_messages (queue, body, attempt, available_at)
                 SELECT queue, body, 0, ?1 FROM upcaster_failed WHERE id = ?2 AND queue = ?3",
                params![now_ms() as i64, id, self.queue],
            )
            .map_err(|e| TransportError::new(&self.name, e))?;
        tx.execute(
            "DELETE FROM upcaster_failed WHERE id = ?1 AND queue = ?2",
            params![id, self.queue],
        )
        .map_err(|e| TransportError::new(&self.name, e))?;
        tx.commit()
            .map_err(|e| TransportError::new(&self.name, e))?;
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

    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| TransportError::new(&self.name, e))?;
        for row in rows {
            tx.execute(
                "INSERT INTO upcaster_stats (queue, type_name, version, count, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (queue, type_name, version) DO UPDATE SET
                     count = count + excluded.count,
                     last_seen = max(last_seen, excluded.last_seen)",
                params![
                    self.queue,
                    row.type_name,
                    row.version,
                    row.count as i64,
                    row.last_seen_ms as i64
                ],
            )
            .map_err(|e| TransportError::new(&self.name, e))?;
        }
        tx.commit().map_err(|e| TransportError::new(&self.name, e))
    }

    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT type_name, version, count, last_seen FROM upcaster_stats
                 WHERE queue = ?1 ORDER BY type_name, version",
            )
            .map_err(|e| TransportError::new(&self.name, e))?;
        let rows = stmt
            .query_map(params![self.queue], |r| {
                Ok(StatRow {
                    type_name: r.get(0)?,
                    version: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    last_seen_ms: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|e| TransportError::new(&self.name, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| TransportError::new(&self.name, e))
    }

    fn pending(&mut self) -> Result<u64, TransportError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM upcaster_messages WHERE queue = ?1",
                params![self.queue],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}
