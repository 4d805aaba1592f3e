//! PostgreSQL as a transport: a queue table read with `SELECT … FOR UPDATE SKIP LOCKED`,
//! idle workers woken by `LISTEN`/`NOTIFY`, failures and drain statistics in tables of their
//! own, and the restart signal in a table too, so PostgreSQL can be the only infrastructure.

use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Transaction};

use crate::restart::RestartSignal;
use crate::transport::{
    seconds, Access, Delivery, DrainStats, Dsn, FailedMessage, FailureRecord, FailureStore, Queue,
    StatRow, TransportError, TransportErrorKind,
};

/// The schema's versions, applied in order by [`PostgresTransport::setup`]; the version a
/// database has is kept in `upcaster_schema`. A new version is a new entry, never an edit.
const MIGRATIONS: &[&str] = &["
CREATE TABLE upcaster_messages (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    body BYTEA NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL,
    taken_at BIGINT,
    taken_by TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    counted BOOLEAN NOT NULL DEFAULT FALSE,
    waiting_newer BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX upcaster_messages_next ON upcaster_messages (queue, available_at, id);
CREATE TABLE upcaster_failed (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    body BYTEA NOT NULL,
    type_name TEXT,
    version BIGINT,
    class TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    failed_at BIGINT NOT NULL,
    counted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE upcaster_stats (
    queue TEXT NOT NULL,
    type_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    count BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (queue, type_name, version)
);
CREATE TABLE upcaster_restart (
    key TEXT PRIMARY KEY,
    requested_at BIGINT NOT NULL
);
"];

/// How long an idle receive waits for a notification before it looks again anyway: delayed
/// retries and reclaims become due without one.
const IDLE_LOOK: Duration = Duration::from_millis(200);

/// The milliseconds since the Unix epoch on the server's clock.
const SERVER_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The longest delay a retry is given, in milliseconds (about 30,000 years): added to the
/// server's clock without overflowing it, and as good as never.
const MAX_DELAY_MS: i64 = 1_000_000_000_000_000;

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A queue in a PostgreSQL table, for workers on many hosts sharing one database.
///
/// - **Taking** a message is one statement: the oldest available row, locked with
///   `FOR UPDATE SKIP LOCKED` so that workers never wait for each other, is marked taken by
///   this consumer. A row taken by a consumer that stopped answering is taken again once
///   [`PostgresTransport::reclaim_after`] has passed (300 s by default); a consumer never
///   takes back its own.
/// - **Idle workers** `LISTEN` on the queue's channel and every send `NOTIFY`s it, so a new
///   message is taken at once; they look anyway every 200 ms, for delayed retries.
/// - **Settling** (ack, retry, failure) is one transaction that also counts the message in
///   the drain statistics, and only the consumer that holds a row settles it.
/// - **Tables** come from an explicit, versioned migration: [`PostgresTransport::setup`], which
///   opening with [`Access::Create`] runs; commands that only look ([`Access::Existing`])
///   refuse a database without them and create nothing.
///
/// ```no_run
/// use std::time::Duration;
/// use upcaster_worker::prelude::*;
/// use upcaster_worker::PostgresTransport;
///
/// let mut queue = PostgresTransport::open_dsn("postgres://app@127.0.0.1/app?queue=images", "images")?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#)?;
/// if let Some(delivery) = queue.receive(Duration::from_secs(1))? {
///     queue.ack(&delivery)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresTransport {
    client: Client,
    name: String,
    queue: String,
    /// The queue's `LISTEN` channel: a quoted identifier, whatever the queue's name.
    channel: String,
    consumer: String,
    reclaim_after: Duration,
    listening: bool,
}

impl std::fmt::Debug for PostgresTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTransport")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Connects to the database a `postgres://` DSN names, with the parameters this crate reads
/// removed; `known` are the parameters the caller accepts.
fn connect(dsn: &str, known: &[&str]) -> Result<(Client, Dsn), TransportError> {
    let parsed = Dsn::parse(dsn)?;
    parsed.only(known)?;
    let mut url = url::Url::parse(dsn)
        .map_err(|e| TransportError::configuration(parsed.shown(), format!("not a DSN: {e}")))?;
    url.set_query(None);
    let client = Client::connect(url.as_str(), NoTls).map_err(|e| {
        TransportError::new(
            parsed.shown(),
            TransportErrorKind::Connection,
            format!("connecting failed{}", server_says(&e)),
        )
        .caused_by(e)
    })?;
    Ok((client, parsed))
}

impl PostgresTransport {
    /// Opens `postgres://[user[:password]@]host[:port]/database[?queue=<name>&reclaim_after=<seconds>]`,
    /// creating the tables if needed ([`PostgresTransport::setup`]). The queue defaults to
    /// `queue`.
    pub fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        PostgresTransport::open_dsn_with(dsn, queue, Access::Create)
    }

    /// Opens a DSN as [`PostgresTransport::open_dsn`]; with [`Access::Existing`] the tables
    /// must exist, and nothing is created.
    pub fn open_dsn_with(dsn: &str, queue: &str, access: Access) -> Result<Self, TransportError> {
        let (client, parsed) = connect(dsn, &["queue", "reclaim_after"])?;
        let queue = parsed.param("queue").unwrap_or(queue).to_owned();
        let name = parsed.shown();
        if queue.is_empty() {
            return Err(TransportError::configuration(
                &name,
                "the queue name is empty",
            ));
        }
        let reclaim_after = match parsed.param("reclaim_after") {
            Some(secs) => seconds(secs).ok_or_else(|| {
                TransportError::configuration(&name, "reclaim_after is not seconds")
            })?,
            None => Duration::from_secs(300),
        };
        let mut transport = PostgresTransport {
            client,
            channel: format!("\"upcaster:{}\"", queue.replace('"', "\"\"")),
            name,
            queue,
            consumer: crate::transport::consumer_name(),
            reclaim_after,
            listening: false,
        };
        match access {
            Access::Create => transport.setup()?,
            Access::Existing => {
                if schema_version(&mut transport.client, &transport.name)? == 0 {
                    return Err(TransportError::configuration(
                        &transport.name,
                        "this database holds no upcaster queue; this command creates none: check the DSN, or run a worker (or `PostgresTransport::setup`) first",
                    ));
                }
            }
        }
        Ok(transport)
    }

    /// Brings the tables to the newest schema version, in one transaction under an advisory
    /// lock, so that workers starting together apply each version once. The versions
    /// applied are recorded in `upcaster_schema`.
    pub fn setup(&mut self) -> Result<(), TransportError> {
        setup(&mut self.client, &self.name)
    }

    /// The schema version the database has; 0 when it has none.
    /// How long a taken message may stay unsettled before another consumer takes it.
    pub fn reclaim_after(mut self, timeout: Duration) -> Self {
        self.reclaim_after = timeout;
        self
    }

    fn err(&self, e: postgres::Error) -> TransportError {
        failed(&self.name)(e)
    }

    fn take(&mut self) -> Result<Option<Delivery>, TransportError> {
        let stale = millis(self.reclaim_after);
        let row = self
            .client
            .query_opt(
                &format!(
                    "WITH next AS (
                         SELECT id, taken_at IS NOT NULL AS reclaimed FROM upcaster_messages
                         WHERE queue = $1 AND available_at <= {SERVER_NOW}
                           AND (taken_at IS NULL
                                OR (taken_at <= {SERVER_NOW} - $2 AND taken_by IS DISTINCT FROM $3))
                         ORDER BY available_at, id
                         FOR UPDATE SKIP LOCKED LIMIT 1)
                     UPDATE upcaster_messages m
                     SET taken_at = {SERVER_NOW}, taken_by = $3,
                         deliveries = least(greatest(m.deliveries, 0), 2147483646) + 1
                     FROM next WHERE m.id = next.id
                     RETURNING m.id, m.body, m.attempt, next.reclaimed, m.deliveries, m.counted"
                ),
                &[&self.queue, &stale, &self.consumer],
            )
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| Delivery {
            id: r.get::<_, i64>(0).to_string(),
            body: r.get(1),
            attempt: clamp_u32(i64::from(r.get::<_, i32>(2))),
            reclaimed: r.get(3),
            deliveries: clamp_u32(i64::from(r.get::<_, i32>(4))),
            counted: r.get(5),
            counts_as: None,
        }))
    }

    /// Waits up to `wait` for a notification on the queue's channel.
    fn wait_for_notify(&mut self, wait: Duration) -> Result<(), TransportError> {
        if !self.listening {
            let listen = format!("LISTEN {}", self.channel);
            self.client
                .batch_execute(&listen)
                .map_err(|e| self.err(e))?;
            self.listening = true;
        }
        let mut notifications = self.client.notifications();
        let mut waiting = notifications.timeout_iter(wait);
        // One is enough: it means a send; the rest, if any, are read on the next wait.
        let _ = waiting.next().map_err(|e| failed(&self.name)(e))?;
        Ok(())
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
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let (name, queue, consumer) = (&self.name, &self.queue, &self.consumer);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        let ours = tx
            .execute(
                &format!(
                    "UPDATE upcaster_messages
                     SET available_at = {SERVER_NOW} + $1, attempt = $2, taken_at = NULL,
                         taken_by = NULL, deliveries = 0, counted = $3, waiting_newer = $4
                     WHERE id = $5 AND taken_by = $6"
                ),
                &[
                    &millis(delay).min(MAX_DELAY_MS),
                    &attempt,
                    &delivery.counted,
                    &newer,
                    &id,
                    consumer,
                ],
            )
            .map_err(failed(name))?;
        count_in(&mut tx, queue, delivery, ours).map_err(failed(name))?;
        tx.commit().map_err(failed(name))
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

impl Queue for PostgresTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        let (name, queue, channel) = (&self.name, &self.queue, &self.channel);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO upcaster_messages (queue, body, available_at)
                     VALUES ($1, $2, {SERVER_NOW}) RETURNING id"
                ),
                &[queue, &body],
            )
            .map_err(failed(name))?;
        // Delivered with the commit, so no worker wakes before the row is there.
        tx.batch_execute(&format!("NOTIFY {channel}"))
            .map_err(failed(name))?;
        tx.commit().map_err(failed(name))?;
        Ok(row.get::<_, i64>(0).to_string())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now().checked_add(timeout);
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
            self.wait_for_notify(left.min(IDLE_LOOK))?;
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        let id = self.row_id(&delivery.id)?;
        let (name, queue, consumer) = (&self.name, &self.queue, &self.consumer);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        // Only while it is ours: a message reclaimed by another consumer is theirs to settle.
        let ours = delete_ours(&mut tx, id, consumer).map_err(failed(name))?;
        count_in(&mut tx, queue, delivery, ours).map_err(failed(name))?;
        tx.commit().map_err(failed(name))
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
        let waiting = self
            .client
            .query(
                &format!(
                    "SELECT id, body FROM upcaster_messages
                     WHERE queue = $1 AND waiting_newer AND taken_by IS NULL
                       AND available_at > {SERVER_NOW}
                     ORDER BY id LIMIT 1000"
                ),
                &[&self.queue],
            )
            .map_err(|e| self.err(e))?;
        let mut released = 0;
        for row in waiting {
            let (id, body): (i64, Vec<u8>) = (row.get(0), row.get(1));
            if !readable(&body) {
                continue;
            }
            released += self
                .client
                .execute(
                    &format!(
                        "UPDATE upcaster_messages SET available_at = {SERVER_NOW},
                             waiting_newer = FALSE
                         WHERE id = $1 AND waiting_newer AND taken_by IS NULL"
                    ),
                    &[&id],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(released)
    }

    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let id = self.row_id(&delivery.id)?;
        let (name, queue, consumer) = (&self.name, &self.queue, &self.consumer);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        let ours = delete_ours(&mut tx, id, consumer).map_err(failed(name))?;
        if ours == 0 {
            // Reclaimed by another consumer meanwhile: theirs to settle, not ours to fail.
            return Ok(None);
        }
        let row = tx
            .query_one(
                "INSERT INTO upcaster_failed
                 (queue, body, type_name, version, class, error, attempts, failed_at, counted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    queue,
                    &delivery.body,
                    &record.type_name,
                    &record.version.map(i64::from),
                    &record.class,
                    &record.error,
                    &i64::from(record.attempts),
                    &to_i64(record.failed_at_ms),
                    &delivery.counted,
                ],
            )
            .map_err(failed(name))?;
        count_in(&mut tx, queue, delivery, ours).map_err(failed(name))?;
        tx.commit().map_err(failed(name))?;
        Ok(Some(row.get::<_, i64>(0).to_string()))
    }

    fn pending(&mut self) -> Result<u64, TransportError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM upcaster_messages WHERE queue = $1",
                &[&self.queue],
            )
            .map_err(|e| self.err(e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

impl FailureStore for PostgresTransport {
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "SELECT id, body, type_name, version, class, error, attempts, failed_at
                 FROM upcaster_failed WHERE queue = $1 ORDER BY id LIMIT $2",
                &[&self.queue, &limit],
            )
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| FailedMessage {
                id: r.get::<_, i64>(0).to_string(),
                body: r.get(1),
                record: FailureRecord {
                    type_name: r.get(2),
                    version: r.get::<_, Option<i64>>(3).map(clamp_u32),
                    class: r.get(4),
                    error: r.get(5),
                    attempts: clamp_u32(r.get(6)),
                    failed_at_ms: r.get::<_, i64>(7).max(0) as u64,
                },
            })
            .collect())
    }

    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.row_id(id)?;
        let (name, queue, channel) = (&self.name, &self.queue, &self.channel);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        let moved = tx
            .execute(
                &format!(
                    "WITH gone AS (DELETE FROM upcaster_failed WHERE id = $1 AND queue = $2
                                   RETURNING queue, body, counted)
                     INSERT INTO upcaster_messages (queue, body, attempt, available_at, counted)
                     SELECT queue, body, 0, {SERVER_NOW}, counted FROM gone"
                ),
                &[&id, queue],
            )
            .map_err(failed(name))?;
        tx.batch_execute(&format!("NOTIFY {channel}"))
            .map_err(failed(name))?;
        tx.commit().map_err(failed(name))?;
        Ok(moved == 1)
    }

    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.row_id(id)?;
        let n = self
            .client
            .execute(
                "DELETE FROM upcaster_failed WHERE id = $1 AND queue = $2",
                &[&id, &self.queue],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }
}

impl DrainStats for PostgresTransport {
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError> {
        let (name, queue) = (&self.name, &self.queue);
        let mut tx = self.client.transaction().map_err(failed(name))?;
        for row in rows {
            upsert_stats(
                &mut tx,
                queue,
                &row.type_name,
                row.version,
                row.count,
                row.last_seen_ms,
            )
            .map_err(failed(name))?;
        }
        tx.commit().map_err(failed(name))
    }

    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError> {
        let rows = self
            .client
            .query(
                "SELECT type_name, version, count, last_seen FROM upcaster_stats
                 WHERE queue = $1 ORDER BY type_name, version",
                &[&self.queue],
            )
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| StatRow {
                type_name: r.get(0),
                version: clamp_u32(r.get(1)),
                count: r.get::<_, i64>(2).max(0) as u64,
                last_seen_ms: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }
}

/// The schema version the database has; 0 when it has none.
fn schema_version(client: &mut Client, name: &str) -> Result<usize, TransportError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('upcaster_schema') IS NOT NULL", &[])
        .map_err(failed(name))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM upcaster_schema", &[])
        .map_err(failed(name))?;
    Ok(usize::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// Applies the schema versions the database lacks ([`PostgresTransport::setup`]).
fn setup(client: &mut Client, name: &str) -> Result<(), TransportError> {
    // Up to date: nothing to create, so a role without CREATE rights can run workers once
    // an owner has applied the schema.
    if schema_version(client, name)? >= MIGRATIONS.len() {
        return Ok(());
    }
    let err = |e: postgres::Error| {
        let doing = format!("setting up the tables{}", server_says(&e));
        TransportError::storage(name, doing, e)
    };
    let mut tx = client.transaction().map_err(err)?;
    // One key for every upcaster setup in this database.
    tx.execute("SELECT pg_advisory_xact_lock(7236912874)", &[])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS upcaster_schema (version INTEGER NOT NULL)")
        .map_err(err)?;
    let have: Option<i32> = tx
        .query_opt("SELECT max(version) FROM upcaster_schema", &[])
        .map_err(err)?
        .and_then(|row| row.get(0));
    let have = usize::try_from(have.unwrap_or(0)).unwrap_or(0);
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(have) {
        tx.batch_execute(migration).map_err(err)?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO upcaster_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// The error of a PostgreSQL call on the queue `name`, for `map_err` while a transaction
/// borrows the client.
fn failed(name: &str) -> impl Fn(postgres::Error) -> TransportError + '_ {
    move |e| {
        let kind = if e.is_closed() {
            TransportErrorKind::Connection
        } else {
            TransportErrorKind::Broker
        };
        TransportError::new(name, kind, format!("PostgreSQL failed{}", server_says(&e)))
            .caused_by(e)
    }
}

/// The server's own message (its code and text), which `postgres::Error` does not show:
/// `: permission denied for schema public (42501)`; nothing for errors of the client.
fn server_says(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(": {} ({})", db.message(), db.code().code()),
        None => String::new(),
    }
}

/// Deletes a taken row, only while `consumer` holds it; 0 when another consumer took it
/// over (theirs to settle).
fn delete_ours(tx: &mut Transaction<'_>, id: i64, consumer: &str) -> Result<u64, postgres::Error> {
    tx.execute(
        "DELETE FROM upcaster_messages WHERE id = $1 AND taken_by = $2",
        &[&id, &consumer],
    )
}

/// Adds a delivery's count (if the worker set one) to the drain statistics, in the settle's
/// own transaction, when the settle changed `settled` rows (0: not ours any more).
fn count_in(
    tx: &mut Transaction<'_>,
    queue: &str,
    delivery: &Delivery,
    settled: u64,
) -> Result<(), postgres::Error> {
    match delivery.counts_as.as_ref().filter(|_| settled > 0) {
        Some(c) => upsert_stats(tx, queue, c.type_name, c.version, 1, c.at_ms),
        None => Ok(()),
    }
}

/// Adds `count` to a (queue, type, version) row, keeping the latest last-seen.
fn upsert_stats(
    tx: &mut Transaction<'_>,
    queue: &str,
    type_name: &str,
    version: u32,
    count: u64,
    last_seen_ms: u64,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO upcaster_stats (queue, type_name, version, count, last_seen)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (queue, type_name, version) DO UPDATE SET
             count = upcaster_stats.count + excluded.count,
             last_seen = greatest(upcaster_stats.last_seen, excluded.last_seen)",
        &[
            &queue,
            &type_name,
            &i64::from(version),
            &to_i64(count),
            &to_i64(last_seen_ms),
        ],
    )
    .map(|_| ())
}

/// The restart signal in a PostgreSQL table (`upcaster_restart`, one row per key), for
/// services whose only infrastructure is the database. Times are the server's clock.
///
/// ```no_run
/// use upcaster_worker::{PostgresSignal, RestartSignal};
///
/// let mut signal = PostgresSignal::open_dsn("postgres://app@127.0.0.1/app?key=shop")?;
/// let at = signal.request()?;
/// assert_eq!(signal.requested_at()?, Some(at));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresSignal {
    client: Client,
    name: String,
    key: String,
}

impl std::fmt::Debug for PostgresSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSignal")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PostgresSignal {
    /// Opens `postgres://…/database?key=<key>`, creating the tables if needed. The key is
    /// required: two applications sharing a database must not restart each other's workers.
    pub fn open_dsn(dsn: &str) -> Result<Self, TransportError> {
        let (mut client, parsed) = connect(dsn, &["key"])?;
        let name = format!("{} (restart signal)", parsed.shown());
        let key = match parsed.param("key") {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => {
                return Err(TransportError::configuration(
                    name,
                    "a PostgreSQL restart signal needs ?key=<app>: its row in upcaster_restart",
                ))
            }
        };
        setup(&mut client, &name)?;
        Ok(PostgresSignal { client, name, key })
    }
}

impl RestartSignal for PostgresSignal {
    fn name(&self) -> String {
        format!("{} key {}", self.name, self.key)
    }

    fn now(&mut self) -> Result<u64, TransportError> {
        let row = self
            .client
            .query_one(&format!("SELECT {SERVER_NOW}"), &[])
            .map_err(failed(&self.name))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    fn store(&mut self, at_ms: u64) -> Result<(), TransportError> {
        self.client
            .execute(
                "INSERT INTO upcaster_restart (key, requested_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET requested_at = excluded.requested_at",
                &[&self.key, &to_i64(at_ms)],
            )
            .map(|_| ())
            .map_err(failed(&self.name))
    }

    fn requested_at(&mut self) -> Result<Option<u64>, TransportError> {
        let row = self
            .client
            .query_opt(
                "SELECT requested_at FROM upcaster_restart WHERE key = $1",
                &[&self.key],
            )
            .map_err(failed(&self.name))?;
        Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
    }
}
