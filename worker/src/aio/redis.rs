//! Redis Streams on `redis`'s async connections: the same keys, scripts and semantics as
//! the blocking [`RedisTransport`](crate::RedisTransport), so both work on one stream at once.
//! The commands, script calls and reply readers are the blocking transport's own
//! (`crate::redis::Keys`); this module does the I/O around them.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::runtime::Handle;

use super::{AsyncQueue, Readable};
use crate::redis::{
    block_ms, client, connect_failed, failed, int, later, retry_wake, Call, Failure, Keys, Lua,
    Schedule, CONNECT_TIMEOUT, DELAYED_EVERY, DROP_TIMEOUT, EVAL_TRIES, RECLAIM_PAGE,
    RECLAIM_STEPS, REPLY_MARGIN,
};
use crate::transport::{Access, Delivery, FailureRecord, TransportError};

/// Redis Streams for the async runtime: [`RedisTransport`](crate::RedisTransport)'s queue, on
/// `redis`'s tokio connections.
///
/// The keys, scripts and semantics are the blocking transport's, so the two work on one
/// stream at once: a message one sends, the other receives and settles. Its
/// [`reclaim_after`](AsyncRedisTransport::reclaim_after) must exceed the slowest handler, as
/// there.
///
/// - Sends, settles and housekeeping share one multiplexed connection: the tasks of the
///   messages in flight ack, retry and fail side by side, without waiting for each other.
/// - The blocking `XREADGROUP … BLOCK` has a connection of its own, opened by the first
///   receive, so that no settle waits behind it.
/// - Every reply is bounded: 30 s for a command, the block plus 30 s for a blocking read. A
///   command that fails on the socket runs once more on a fresh connection; one whose reply
///   did not come in time is not asked again, and the next command connects anew.
/// - After a read whose connection dropped, a receive reads this consumer's own pending
///   entries on a fresh connection, as the blocking transport does, so an entry the server
///   gave it is delivered now rather than after the reclaim timeout (after a read that timed
///   out, the next receive does this). Entries that tasks in flight hold are never delivered
///   again that way, and reclaim scans skip them too (a handler slower than `reclaim_after`:
///   its task settles it).
/// - While messages are in flight, a waiting receive looks again every 200 ms, so that a
///   retry one of them puts back is delivered when due.
/// - Dropping it deletes its consumer from the group unless messages are pending for it, as
///   the blocking one does, in a task on the runtime that opened it (best effort).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use upcaster_worker::aio::{AsyncQueue, AsyncRedisTransport};
///
/// let queue =
///     AsyncRedisTransport::open_dsn("redis://127.0.0.1:6379/0?group=resizers", "images").await?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#).await?;
/// if let Some(delivery) = queue.receive(Duration::from_secs(1)).await? {
///     queue.ack(&delivery).await?;
/// }
/// # Ok(()) }
/// ```
pub struct AsyncRedisTransport {
    keys: Keys,
    /// Every command but the blocking read.
    link: Link,
    /// Script hashes from `SCRIPT LOAD`, shared by the tasks settling at once.
    shas: Mutex<[Option<String>; Lua::COUNT]>,
    /// What only a receive touches, one receive at a time.
    receiving: tokio::sync::Mutex<Receiving>,
    /// What settles tell the next receive, which may hold `receiving` for its whole wait.
    nudge: Mutex<Nudge>,
    /// Ids of deliveries handed out and not yet settled.
    in_flight: Mutex<HashSet<EntryId>>,
    /// The runtime the connections run on, for the clean-up on drop.
    runtime: Option<Handle>,
}

/// The receive's state.
struct Receiving {
    schedule: Schedule,
    /// The blocking read's own connection, opened by the first receive: a transport that
    /// only sends holds one connection.
    reader: Option<MultiplexedConnection>,
    /// A read failed before its reply came: the server may have given this consumer an entry
    /// that nobody handles, so the next receive reads its own pending entries first.
    recover: bool,
}

/// What settles leave for the next receive.
#[derive(Default)]
struct Nudge {
    /// The earliest due time of a retry put back with a delay.
    retry_due: Option<Instant>,
    /// Messages were released from the delayed set.
    check_delayed: bool,
}

impl fmt::Debug for AsyncRedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRedisTransport")
            .field("name", &self.keys.name)
            .field("stream", &self.keys.stream)
            .field("group", &self.keys.group)
            .field("consumer", &self.keys.consumer)
            .field("reclaim_after", &self.keys.reclaim_after)
            .finish_non_exhaustive()
    }
}

impl AsyncRedisTransport {
    /// Opens `redis://[user:password@]host[:port][/db][?stream=<name>&group=<group>&reclaim_after=<seconds>]`,
    /// creating the stream and its consumer group if needed, as
    /// [`RedisTransport::open_dsn`](crate::RedisTransport::open_dsn) does. The stream
    /// defaults to `queue`, the group to `upcaster`, the reclaim timeout to 300 s.
    pub async fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        AsyncRedisTransport::open_dsn_with(dsn, queue, Access::Create).await
    }

    /// Opens a DSN as [`AsyncRedisTransport::open_dsn`]; with [`Access::Existing`] the stream
    /// must exist, and neither it nor the group is created.
    pub async fn open_dsn_with(
        dsn: &str,
        queue: &str,
        access: Access,
    ) -> Result<Self, TransportError> {
        let keys = Keys::from_dsn(dsn, queue)?;
        let link = Link {
            client: client(dsn, &keys.name)?,
            name: keys.name.clone(),
            current: tokio::sync::Mutex::default(),
        };
        // Connected now: a DSN that reaches no server fails here, not at the first receive.
        link.connection().await?;
        if access == Access::Existing {
            let kind = link.query("TYPE", &keys.stream_type()).await?;
            keys.must_exist(&kind)?;
        } else {
            match link.run(Request::Cmd(&keys.create_group())).await {
                Ok(_) => {}
                Err(Failure::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(failed(&keys.name, "XGROUP CREATE", e)),
            }
        }
        Ok(AsyncRedisTransport {
            keys,
            link,
            shas: Mutex::default(),
            receiving: tokio::sync::Mutex::new(Receiving {
                schedule: Schedule::new(),
                reader: None,
                recover: false,
            }),
            nudge: Mutex::default(),
            in_flight: Mutex::default(),
            runtime: Handle::try_current().ok(),
        })
    }

    /// How long a taken message may stay unsettled before another consumer takes it (300 s
    /// by default). It must exceed the slowest handler: a message still being handled when it
    /// runs out is handed to another consumer and handled twice. `Duration::MAX` never
    /// reclaims in practice (Redis is asked for its largest idle time).
    pub fn reclaim_after(mut self, timeout: Duration) -> Self {
        self.keys.reclaim_after = timeout;
        self
    }

    /// The stream this transport reads.
    pub fn stream(&self) -> &str {
        &self.keys.stream
    }

    /// The consumer group this transport reads in.
    pub fn group(&self) -> &str {
        &self.keys.group
    }

    /// This transport's consumer name in the group (host, process id and a random suffix).
    pub fn consumer(&self) -> &str {
        &self.keys.consumer
    }

    /// Runs a script by its hash, loading it first if needed or after `NOSCRIPT`, as the
    /// blocking transport's `eval` does.
    async fn eval(&self, call: &Call<'_>) -> Result<Value, TransportError> {
        let (lua, what) = (call.lua, call.lua.name());
        for _ in 0..EVAL_TRIES {
            // Built while the hash is borrowed: no copy of it per settle.
            let known = lock(&self.shas)[lua as usize]
                .as_deref()
                .map(|sha| call.evalsha(sha));
            let cmd = match known {
                Some(cmd) => cmd,
                None => {
                    let reply = self
                        .link
                        .query(&format!("SCRIPT LOAD of {what}"), &lua.load())
                        .await?;
                    let sha = lua.loaded(&self.keys.name, &reply)?;
                    let cmd = call.evalsha(&sha);
                    lock(&self.shas)[lua as usize] = Some(sha);
                    cmd
                }
            };
            match self.link.run(Request::Cmd(&cmd)).await {
                Ok(v) => return Ok(v),
                Err(Failure::Redis(e)) if e.code() == Some("NOSCRIPT") => {
                    lock(&self.shas)[lua as usize] = None;
                }
                Err(e) => return Err(failed(&self.keys.name, &format!("EVALSHA of {what}"), e)),
            }
        }
        Err(lua.forgotten(&self.keys.name))
    }

    /// Runs a settling script. The delivery is out of flight afterwards whatever came of it:
    /// an entry left unsettled is pending, to be delivered again.
    async fn settle(&self, delivery: &Delivery, call: &Call<'_>) -> Result<Value, TransportError> {
        let reply = self.eval(call).await;
        lock(&self.in_flight).remove(&EntryId::of(&delivery.id));
        reply
    }

    async fn put_back(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
        newer: bool,
    ) -> Result<(), TransportError> {
        let (call, ms) = self.keys.put_back_call(delivery, delay, attempt, newer);
        let reply = self.settle(delivery, &call).await?;
        // Not ours any more: the consumer that took it over settles it.
        if self.keys.settled(Lua::Retry, &reply)? {
            if let Some(due) = retry_wake(ms) {
                let mut nudge = lock(&self.nudge);
                nudge.retry_due = Some(nudge.retry_due.map_or(due, |d| d.min(due)));
            }
        }
        Ok(())
    }

    async fn receive_in(
        &self,
        state: &mut Receiving,
        timeout: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        let deadline = later(Instant::now(), timeout);
        loop {
            let nudge = std::mem::take(&mut *lock(&self.nudge));
            if let Some(due) = nudge.retry_due {
                state.schedule.retry_due(due);
            }
            if nudge.check_delayed {
                state.schedule.check_delayed_now();
            }
            if state.recover {
                if let Some(delivery) = self.recover(state).await? {
                    return Ok(Some(delivery));
                }
            }
            if let Some(delivery) = self.housekeeping(&mut state.schedule).await? {
                return Ok(Some(delivery));
            }
            if timeout.is_zero() {
                return self.read(state, None).await;
            }
            // Wake for the next reclaim scan or due retry, if sooner than the deadline.
            let now = Instant::now();
            let mut wake = state.schedule.wake(deadline);
            // A task in flight may put a retry back, due before `wake`, while this read
            // blocks: look again as often as due retries are moved.
            let busy = !lock(&self.in_flight).is_empty();
            if busy {
                wake = wake.min(now + DELAYED_EVERY);
            }
            let block = wake.saturating_duration_since(now);
            if let Some(delivery) = self.read(state, Some(block)).await? {
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The time-gated work of a receive, as the blocking transport's: the move of due
    /// retries, and a reclaim scan (which may deliver).
    async fn housekeeping(
        &self,
        schedule: &mut Schedule,
    ) -> Result<Option<Delivery>, TransportError> {
        let now = Instant::now();
        if schedule.delayed_check_due(now) {
            let reply = self.eval(&self.keys.move_due_call()).await?;
            let (moved, wait) = self.keys.moved(&reply)?;
            schedule.moved(moved, wait, Instant::now());
        }
        if schedule.reclaim_due(now) {
            return self.reclaim(schedule).await;
        }
        Ok(None)
    }

    /// One reclaim scan, as the blocking transport's.
    async fn reclaim(&self, schedule: &mut Schedule) -> Result<Option<Delivery>, TransportError> {
        for _ in 0..RECLAIM_STEPS {
            let cmd = self.keys.idle_pending(schedule.reclaim_cursor());
            let rows = self
                .keys
                .idle_rows(self.link.query("XPENDING", &cmd).await?)?;
            let done = rows.len() < RECLAIM_PAGE;
            for row in rows {
                schedule.scanned(&row.id);
                // Its own are in flight here: their tasks settle them.
                if row.ours {
                    continue;
                }
                let reply = self.link.query("XCLAIM", &self.keys.claim(&row.id)).await?;
                if let Some(delivery) = self.keys.claimed(reply, &row)? {
                    // More may wait: scan on at the next receive.
                    schedule.reclaim_on();
                    return Ok(Some(delivery));
                }
            }
            if done {
                schedule.reclaim_done(self.keys.reclaim_every());
                return Ok(None);
            }
        }
        // A long pending list: go on at the next receive rather than hold this one.
        Ok(None)
    }

    /// The reader connection, opened if there is none.
    async fn reader<'s>(
        &self,
        state: &'s mut Receiving,
    ) -> Result<&'s mut MultiplexedConnection, TransportError> {
        let conn = match state.reader.take() {
            Some(conn) => conn,
            None => connect(&self.link.client, &self.keys.name).await?,
        };
        Ok(state.reader.insert(conn))
    }

    /// One `XREADGROUP` for a new entry, on the reader; `block` `None` asks without waiting.
    async fn read(
        &self,
        state: &mut Receiving,
        block: Option<Duration>,
    ) -> Result<Option<Delivery>, TransportError> {
        const COMMAND: &str = "XREADGROUP";
        let block_ms = block.map(block_ms);
        let cmd = self.keys.read(block_ms, ">", 1);
        let reader = self.reader(state).await?;
        let blocks = Duration::from_millis(block_ms.unwrap_or(0));
        reader.set_response_timeout(blocks.saturating_add(REPLY_MARGIN));
        let reply = match cmd.query_async::<Value>(reader).await {
            Ok(reply) => reply,
            Err(e) if e.is_io_error() => {
                // Replaced: a late reply could still come on it. The server may have given
                // this consumer an entry meanwhile, to be delivered rather than left for the
                // reclaim timeout.
                state.reader = None;
                state.recover = true;
                // A server that does not answer in time is not asked again now.
                if e.is_timeout() {
                    return Err(failed(&self.keys.name, COMMAND, Failure::Redis(e)));
                }
                // A dropped connection: read this consumer's own entries on a fresh one, as
                // the blocking transport does.
                if let Err(c) = self.reader(state).await {
                    return Err(failed(&self.keys.name, COMMAND, Failure::Lost(e, c)));
                }
                return self.recover(state).await;
            }
            Err(e) => return Err(failed(&self.keys.name, COMMAND, Failure::Redis(e))),
        };
        Ok(self.keys.read_reply(reply, false)?.into_iter().next())
    }

    /// This consumer's first pending entry that no task is handling, read from `0`: the one a
    /// lost reply gave it, if any. Unlike the blocking transport's, this consumer may hold
    /// entries in flight, so it reads one more than it holds; the set is taken before the
    /// read, since one settled meanwhile may still be in the reply.
    async fn recover(&self, state: &mut Receiving) -> Result<Option<Delivery>, TransportError> {
        const COMMAND: &str = "XREADGROUP";
        let handling = lock(&self.in_flight).clone();
        let cmd = self.keys.read(None, "0", handling.len().saturating_add(1));
        let reader = self.reader(state).await?;
        reader.set_response_timeout(REPLY_MARGIN);
        let reply = match cmd.query_async::<Value>(reader).await {
            Ok(reply) => reply,
            Err(e) => {
                if e.is_io_error() {
                    state.reader = None;
                }
                return Err(failed(&self.keys.name, COMMAND, Failure::Redis(e)));
            }
        };
        let own = self.keys.read_reply(reply, true)?;
        state.recover = false;
        Ok(own
            .into_iter()
            .find(|d| !handling.contains(&EntryId::of(&d.id))))
    }
}

/// A stream entry id, `<ms>-<seq>`, as numbers: kept for each delivery in flight without a
/// copy of its text. An id of another shape (never sent by Redis) is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EntryId(u64, u64);

impl EntryId {
    fn of(id: &str) -> EntryId {
        let parsed = id
            .split_once('-')
            .and_then(|(ms, seq)| Some(EntryId(ms.parse().ok()?, seq.parse().ok()?)));
        parsed.unwrap_or_else(|| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            id.hash(&mut hasher);
            // Out of the range of real ids' milliseconds.
            EntryId(u64::MAX, hasher.finish())
        })
    }
}

impl AsyncQueue for AsyncRedisTransport {
    fn name(&self) -> &str {
        &self.keys.name
    }

    /// Deletes this consumer from the group unless messages are still pending for it (one
    /// script: the check and the delete), with a short reply timeout; errors are ignored.
    async fn close(&self) {
        let conn = self.link.current.lock().await.conn.clone();
        let Some(mut conn) = conn else {
            return;
        };
        conn.set_response_timeout(DROP_TIMEOUT);
        let _ = self
            .keys
            .forget_consumer()
            .query_async::<Value>(&mut conn)
            .await;
    }

    async fn send(&self, body: &[u8]) -> Result<String, TransportError> {
        let reply = self.link.query("XADD", &self.keys.add(body)).await?;
        self.keys.added(&reply)
    }

    async fn receive(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let mut state = self.receiving.lock().await;
        let got = self.receive_in(&mut state, timeout).await?;
        if let Some(delivery) = &got {
            lock(&self.in_flight).insert(EntryId::of(&delivery.id));
        }
        Ok(got)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        // One round trip, XACK and XDEL (and the count) together or not at all.
        let reply = self.settle(delivery, &self.keys.ack_call(delivery)).await?;
        self.keys.settled(Lua::Ack, &reply).map(|_| ())
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, attempt, false).await
    }

    async fn requeue_for_newer(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.put_back(delivery, delay, delivery.attempt, true).await
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let call = self.keys.fail_call(delivery, record);
        let reply = self.settle(delivery, &call).await?;
        self.keys.failed_id(&reply)
    }

    async fn pending(&self) -> Result<u64, TransportError> {
        let reply = self
            .link
            .run(Request::Pipe(&self.keys.counts()))
            .await
            .map_err(|e| failed(&self.keys.name, "XLEN + ZCARD", e))?;
        self.keys.pending_reply(&reply)
    }

    async fn release_waiting(&self, readable: Readable) -> Result<u64, TransportError> {
        let reply = self
            .link
            .query("ZRANGE", &self.keys.delayed_members())
            .await?;
        let mut released = 0;
        for waiting in self.keys.waiting(reply)? {
            if !readable(waiting.body()) {
                continue;
            }
            let reply = self.eval(&self.keys.release_call(&waiting.member)).await?;
            if int(&reply) == Some(1) {
                released += 1;
            }
        }
        if released > 0 {
            lock(&self.nudge).check_delayed = true;
        }
        Ok(released)
    }
}

impl Drop for AsyncRedisTransport {
    /// Deletes this consumer from the group unless messages are still pending for it, as the
    /// blocking transport does. Drop cannot wait for a reply without blocking the executor,
    /// so the script runs in a task spawned on the runtime that opened the transport, with a
    /// short reply timeout; nothing is done without a connection, and nothing happens if that
    /// runtime shuts down before the task runs.
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let Some(mut conn) = self.link.current.get_mut().conn.clone() else {
            return;
        };
        conn.set_response_timeout(DROP_TIMEOUT);
        let forget = self.keys.forget_consumer();
        runtime.spawn(async move {
            let _ = forget.query_async::<Value>(&mut conn).await;
        });
    }
}

/// The connection every command but the blocking read shares, with the blocking transport's
/// reconnect policy: a command that fails on the socket runs once more on a fresh
/// connection; one whose reply did not come in time is not asked again, and the next command
/// connects anew (the late reply may still come).
struct Link {
    /// For reconnecting; never shown (it may hold a password).
    client: redis::Client,
    /// What errors name: the DSN without its password.
    name: String,
    current: tokio::sync::Mutex<Current>,
}

/// The shared connection, and how many were opened: a task that lost connection `n` drops
/// it only if no other task has replaced it yet.
#[derive(Default)]
struct Current {
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

/// A command or a pipeline, for [`Link::run`].
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

impl Request<'_> {
    async fn send(self, conn: &mut MultiplexedConnection) -> redis::RedisResult<Value> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipe(pipe) => pipe.query_async(conn).await,
        }
    }
}

impl Link {
    /// The connection, opening one if there is none. Tasks that lost it together open one
    /// new connection: the lock is held while connecting.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), TransportError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = &current.conn {
            return Ok((current.generation, conn.clone()));
        }
        let conn = connect(&self.client, &self.name).await?;
        current.generation += 1;
        current.conn = Some(conn.clone());
        Ok((current.generation, conn))
    }

    /// Drops connection `generation`, unless it was replaced already.
    async fn lose(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.generation == generation {
            current.conn = None;
        }
    }

    /// Runs `request`, and once more on a fresh connection if the socket failed.
    async fn run(&self, request: Request<'_>) -> Result<Value, Failure> {
        let (generation, mut conn) = self.connection().await.map_err(Failure::Unconnected)?;
        let lost = match request.send(&mut conn).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_timeout() => {
                self.lose(generation).await;
                return Err(Failure::Redis(e));
            }
            Err(e) if e.is_io_error() => e,
            Err(e) => return Err(Failure::Redis(e)),
        };
        self.lose(generation).await;
        let (generation, mut conn) = match self.connection().await {
            Ok(fresh) => fresh,
            Err(c) => return Err(Failure::Lost(lost, c)),
        };
        match request.send(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() {
                    self.lose(generation).await;
                }
                Err(Failure::Redis(e))
            }
        }
    }

    async fn query(&self, command: &str, cmd: &redis::Cmd) -> Result<Value, TransportError> {
        self.run(Request::Cmd(cmd))
            .await
            .map_err(|e| failed(&self.name, command, e))
    }
}

/// Connects with a bounded wait; replies are bounded by [`REPLY_MARGIN`] unless the caller
/// sets another timeout.
async fn connect(
    client: &redis::Client,
    name: &str,
) -> Result<MultiplexedConnection, TransportError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(REPLY_MARGIN));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| connect_failed(name, e))
}

/// The value behind `m`, even after a panic while it was held: each is left whole by every
/// step that changes it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
