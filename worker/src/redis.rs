//! Redis Streams as a transport, and a restart signal that many hosts share.
//!
//! One stream with one consumer group is one queue. An entry has two fields, `body` (the
//! envelope's bytes, binary-safe) and `attempt` (decimal). Beside the stream, under keys that
//! start with the stream's name in braces:
//!
//! | key                            | type       | holds                                              |
//! |--------------------------------|------------|----------------------------------------------------|
//! | `<stream>`                     | stream     | messages waiting or being handled                  |
//! | `{<stream>}:delayed`           | sorted set | retries not yet due (score: due time in ms)        |
//! | `{<stream>}:failed`            | stream     | the failure transport: bytes and why they failed   |
//! | `{<stream>}:stats`             | hash       | decode counts by `<type>\t<version>`               |
//! | `{<stream>}:stats:last-seen`   | hash       | the latest decode time (ms) by `<type>\t<version>` |
//!
//! Stream names may not contain `{` or `}`, so no stream is ever another queue's derived key
//! (a queue named `orders:delayed` has nothing to do with `{orders}:delayed`), and the braces
//! are a hash tag: every key of one queue hashes to the slot of the stream itself.
//!
//! A settled entry is acked and deleted, so the stream's length is the queue's length; the
//! group is therefore the stream's only reader. Every write that must not half-happen (ack,
//! retry, fail, requeue, the move of due retries, statistics) is one Lua script, so two
//! workers never both move the same message. A script writes the message's new place first
//! and only then acks and deletes the entry: Redis does not roll back a script that fails
//! half-way, so a failing write leaves the message pending (to be delivered again), never
//! lost. Ack, retry and fail settle an entry only while it is pending for this consumer: a
//! worker whose message was reclaimed by another leaves it to that one. Scripts read the
//! server's clock (`TIME`), never a host's.
//!
//! An entry another producer wrote without a `body` field is delivered with an empty body
//! (the worker fails it as malformed), and an `attempt` that is not a count is read as 0, so
//! no entry stops the workers.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::restart::RestartSignal;
use crate::transport::{
    seconds, Access, Delivery, DrainStats, Dsn, FailedMessage, FailureRecord, FailureStore, Queue,
    StatRow, TransportError, TransportErrorKind,
};

/// How long connecting may take before the transport gives up.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The socket's read timeout beyond a `BLOCK`: a server that stopped answering fails the
/// worker instead of hanging it.
pub(crate) const REPLY_MARGIN: Duration = Duration::from_secs(30);
/// How often due retries are moved back to the stream, at most (one script call).
pub(crate) const DELAYED_EVERY: Duration = Duration::from_millis(200);
/// Delayed-set members a starting worker looks through for messages it can now read.
const RELEASE_SCAN: i64 = 1000;
/// Due retries moved per script call; more are moved on the next receive.
const DELAYED_BATCH: i64 = 100;
/// Reclaim scans run every `reclaim_after`, but at least every `RECLAIM_EVERY` and at most
/// every `RECLAIM_MIN`: a scan costs a round trip, so not one per receive.
const RECLAIM_EVERY: Duration = Duration::from_secs(5);
const RECLAIM_MIN: Duration = Duration::from_millis(50);
/// How often a worker reads the Redis restart signal: a round trip, so not per message.
const SIGNAL_CHECK_EVERY: Duration = Duration::from_millis(100);
/// The restart signal's socket timeouts: its replies are immediate, and a hung server must
/// not hold the worker between messages for long.
const SIGNAL_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Pages of idle pending entries a reclaim scan reads before it goes on at the next receive.
pub(crate) const RECLAIM_STEPS: usize = 10;
/// Entries a reclaim scan lists at a time.
pub(crate) const RECLAIM_PAGE: usize = 10;
/// The longest `BLOCK` of one `XREADGROUP`, in ms; a longer receive blocks again. Redis takes
/// `BLOCK` as milliseconds added to its clock, so a huge one is refused or waits forever.
const MAX_BLOCK_MS: u64 = 60_000;
/// The longest retry delay, in ms (about 31,700 years): the server's time plus it stays an
/// exact integer score (below 2^53), where `Duration::MAX` would not.
const MAX_DELAY_MS: u64 = 1_000_000_000_000_000;
/// The largest count Redis reads (`COUNT`, min-idle times, `HINCRBY`): a signed 64-bit one.
const REDIS_MAX: u64 = i64::MAX as u64;
/// The socket timeouts of the clean-up a dropped transport does, best effort.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_millis(500);

/// `true` (1) when entry `ARGV[2]` is pending for consumer `ARGV[3]` of group `ARGV[1]` on
/// stream `KEYS[1]`: the check that opens every script settling a delivery.
macro_rules! owned_check {
    () => {
        "if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3]) == 0 then \
         return 0 end\n"
    };
}

/// Adds one message to the drain statistics in hash `stats` (field `<type>\t<version>`) and
/// keeps the latest decode time in hash `seen`; nothing when `field` is empty. The settling
/// scripts call it, so that a count is written with the settle or not at all.
macro_rules! count_fn {
    () => {
        "local function count(stats, seen, field, at)
  if field == '' then return end
  redis.call('HINCRBY', stats, field, 1)
  local last = tonumber(redis.call('HGET', seen, field) or '')
  if not last or tonumber(at) > last then redis.call('HSET', seen, field, at) end
end
"
    };
}

/// Settles a delivery: counts it if asked (`KEYS[2]`, `KEYS[3]`, `ARGV[4]`, `ARGV[5]`), acks
/// and deletes the entry (deleting keeps `XLEN` the queue's length). Does nothing (0) when
/// the entry is no longer pending for this consumer.
const ACK_LUA: &str = concat!(
    owned_check!(),
    count_fn!(),
    r"count(KEYS[2], KEYS[3], ARGV[4], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"
);

/// Puts a delivery's message back, at once (delay 0) or in the delayed set, due at the
/// server's time plus the delay, then settles the delivery. The member is
/// `<attempt>:<entry id>:<body>`; the id keeps two equal bodies from collapsing into one
/// member. Does nothing (0) when the entry is no longer pending for this consumer.
const RETRY_LUA: &str = concat!(
    owned_check!(),
    count_fn!(),
    r"local delay = math.min(tonumber(ARGV[4]), 1e15)
local counted = ARGV[7] == '1'
local newer = ARGV[8] == '1'
if delay <= 0 then
  if counted then
    redis.call('XADD', KEYS[1], '*', 'body', ARGV[6], 'attempt', ARGV[5], 'counted', '1')
  else
    redis.call('XADD', KEYS[1], '*', 'body', ARGV[6], 'attempt', ARGV[5])
  end
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local head = ARGV[5]
  if counted then head = head .. 'c' end
  if newer then head = head .. 'n' end
  redis.call('ZADD', KEYS[2], string.format('%d', now + delay),
    head .. ':' .. ARGV[2] .. ':' .. ARGV[6])
end
count(KEYS[3], KEYS[4], ARGV[9], ARGV[10])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"
);

/// Moves due members of the delayed set back to the stream. A member not in the form
/// `<attempt>:<id>:<body>` goes to the failure stream whole rather than being dropped.
/// Returns the count moved and the milliseconds until the next member is due (-1: none).
const MOVE_DUE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local a = string.find(m, ':', 1, true)
  local b = a and string.find(m, ':', a + 1, true)
  local head = a and string.sub(m, 1, a - 1) or ''
  if string.sub(head, -1) == 'n' then head = string.sub(head, 1, -2) end
  local counted = string.sub(head, -1) == 'c'
  if counted then head = string.sub(head, 1, -2) end
  if b and tonumber(head) then
    if counted then
      redis.call('XADD', KEYS[2], '*', 'body', string.sub(m, b + 1), 'attempt', head, 'counted', '1')
    else
      redis.call('XADD', KEYS[2], '*', 'body', string.sub(m, b + 1), 'attempt', head)
    end
  else
    redis.call('XADD', KEYS[3], '*', 'body', m, 'class', 'transport',
      'error', 'a delayed retry not in the form <attempt>[c][n]:<id>:<body>',
      'attempts', '0', 'failed_at', string.format('%d', now))
  end
  redis.call('ZREM', KEYS[1], m)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
-- Clamped: a Lua number past 2^63 does not convert to an integer reply.
if next[2] then wait = math.min(1e15, math.max(0, math.floor(tonumber(next[2]) - now))) end
return {#due, wait}
";

/// Moves member `ARGV[1]` of the delayed set (one waiting for newer code) back to the
/// stream at once, if it is still there; 1 when moved.
const RELEASE_LUA: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local m = ARGV[1]
local a = string.find(m, ':', 1, true)
local b = string.find(m, ':', a + 1, true)
local head = string.sub(m, 1, a - 1)
head = string.sub(head, 1, -2)
local counted = string.sub(head, -1) == 'c'
if counted then
  head = string.sub(head, 1, -2)
  redis.call('XADD', KEYS[2], '*', 'body', string.sub(m, b + 1), 'attempt', head, 'counted', '1')
else
  redis.call('XADD', KEYS[2], '*', 'body', string.sub(m, b + 1), 'attempt', head)
end
return 1
";

/// Appends a delivery's bytes and failure record to the failure stream, then settles the
/// delivery; returns the failed entry's id. Does nothing (0) when the entry is no longer
/// pending for this consumer.
const FAIL_LUA: &str = concat!(
    owned_check!(),
    count_fn!(),
    r"local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
count(KEYS[3], KEYS[4], ARGV[4], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
"
);

/// Moves a failed message's body back to the stream with attempt 0. 0: no such id.
const REQUEUE_LUA: &str = r"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local body, counted = nil, false
for i = 1, #f, 2 do
  if f[i] == 'body' then body = f[i + 1] end
  if f[i] == 'counted' and f[i + 1] == '1' then counted = true end
end
if not body then
  return redis.error_reply('failed entry ' .. ARGV[1] .. ' has no body field')
end
if counted then
  redis.call('XADD', KEYS[2], '*', 'body', body, 'attempt', '0', 'counted', '1')
else
  redis.call('XADD', KEYS[2], '*', 'body', body, 'attempt', '0')
end
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
";

/// Adds counts and keeps the latest last-seen, for (field, count, last seen) triples. A count
/// that would pass 2^63 - 1 stays there.
const STATS_LUA: &str = r"
for i = 1, #ARGV, 3 do
  local r = redis.pcall('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'overflow', 1, true) then return redis.error_reply(r.err) end
    redis.call('HSET', KEYS[1], ARGV[i], '9223372036854775807')
  end
  local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '')
  if not seen or tonumber(ARGV[i + 2]) > seen then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
return 1
";

/// Deletes consumer `ARGV[2]` of group `ARGV[1]` unless it still has pending entries (those
/// wait to be reclaimed under its name). Run once, by a transport being dropped.
const FORGET_CONSUMER_LUA: &str = r"
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
";

/// The scripts, by index into the script hashes a transport keeps.
#[derive(Clone, Copy)]
pub(crate) enum Lua {
    Ack,
    Retry,
    MoveDue,
    Fail,
    Requeue,
    Stats,
    Release,
}

impl Lua {
    pub(crate) const COUNT: usize = 7;

    fn text(self) -> &'static str {
        match self {
            Lua::Ack => ACK_LUA,
            Lua::Retry => RETRY_LUA,
            Lua::MoveDue => MOVE_DUE_LUA,
            Lua::Fail => FAIL_LUA,
            Lua::Requeue => REQUEUE_LUA,
            Lua::Stats => STATS_LUA,
            Lua::Release => RELEASE_LUA,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Lua::Ack => "the ack script",
            Lua::Retry => "the retry script",
            Lua::MoveDue => "the script moving due retries",
            Lua::Fail => "the fail script",
            Lua::Requeue => "the requeue script",
            Lua::Stats => "the statistics script",
            Lua::Release => "the script releasing messages for newer code",
        }
    }

    /// `SCRIPT LOAD` of this script.
    pub(crate) fn load(self) -> redis::Cmd {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(self.text());
        load
    }

    /// The hash that `SCRIPT LOAD` of this script answered.
    pub(crate) fn loaded(self, name: &str, reply: &Value) -> Result<String, TransportError> {
        text(reply).ok_or_else(|| {
            TransportError::new(
                name,
                TransportErrorKind::Broker,
                format!(
                    "SCRIPT LOAD of {} gave an unexpected reply {}",
                    self.name(),
                    describe(reply)
                ),
            )
        })
    }

    /// The error when every try of [`EVAL_TRIES`] met `NOSCRIPT`.
    pub(crate) fn forgotten(self, name: &str) -> TransportError {
        TransportError::new(
            name,
            TransportErrorKind::Broker,
            format!(
                "EVALSHA of {} failed: the server forgot the script right after loading it",
                self.name()
            ),
        )
    }
}

/// Tries of one script call, each loading the script again after `NOSCRIPT`.
pub(crate) const EVAL_TRIES: usize = 3;

/// One call of a script: its keys and arguments, built once for both transports.
pub(crate) struct Call<'a> {
    pub(crate) lua: Lua,
    keys: Vec<&'a str>,
    args: Vec<Cow<'a, [u8]>>,
}

impl Call<'_> {
    /// `EVALSHA` of the call, with the script's hash.
    pub(crate) fn evalsha(&self, sha: &str) -> redis::Cmd {
        // Sized up front: a settle per message, without the command growing as it is built.
        let size = "EVALSHA".len()
            + sha.len()
            + 20
            + self.keys.iter().map(|k| k.len()).sum::<usize>()
            + self.args.iter().map(|a| a.len()).sum::<usize>();
        let mut cmd = redis::Cmd::with_capacity(3 + self.keys.len() + self.args.len(), size);
        cmd.arg("EVALSHA")
            .arg(sha)
            .arg(self.keys.len())
            .arg(&self.keys);
        for arg in &self.args {
            cmd.arg(arg.as_ref());
        }
        cmd
    }
}

/// One queue's names (its keys, group and consumer), with the commands, script calls and
/// reply readers of both transports: the blocking [`RedisTransport`] and the async one only
/// do the I/O around them, so the two work on one stream at once.
pub(crate) struct Keys {
    /// The DSN without its password: what errors and logs name.
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) delayed: String,
    pub(crate) failed: String,
    pub(crate) stats: String,
    pub(crate) last_seen: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) reclaim_after: Duration,
}

impl Keys {
    /// Reads `redis://…[?stream=<name>&group=<group>&reclaim_after=<seconds>]` without
    /// connecting: the stream defaults to `queue`, the group to `upcaster`, the reclaim
    /// timeout to 300 s; unknown parameters and braces in the stream's name are refused.
    pub(crate) fn from_dsn(dsn: &str, queue: &str) -> Result<Keys, TransportError> {
        let parsed = Dsn::parse(dsn)?;
        parsed.only(&["stream", "group", "reclaim_after", "protocol"])?;
        let name = parsed.shown();
        let stream = parsed.param("stream").unwrap_or(queue).to_owned();
        let group = parsed.param("group").unwrap_or("upcaster").to_owned();
        if stream.is_empty() || group.is_empty() {
            return Err(TransportError::configuration(
                &name,
                "the stream and group names must not be empty",
            ));
        }
        let reclaim_after = match parsed.param("reclaim_after") {
            Some(secs) => seconds(secs).ok_or_else(|| {
                TransportError::configuration(&name, "reclaim_after is not seconds")
            })?,
            None => Duration::from_secs(300),
        };
        // Braces would change the stream's hash slot, and its derived keys (below) start with
        // one: no stream name can then coincide with another queue's derived key.
        if stream.contains(['{', '}']) {
            return Err(TransportError::configuration(
                &name,
                format!("the stream name `{stream}` must not contain `{{` or `}}`"),
            ));
        }
        // `{<stream>}` is a hash tag: a cluster would put every key of one queue in the slot
        // of the stream itself.
        let tag = format!("{{{stream}}}");
        Ok(Keys {
            delayed: format!("{tag}:delayed"),
            failed: format!("{tag}:failed"),
            stats: format!("{tag}:stats"),
            last_seen: format!("{tag}:stats:last-seen"),
            name,
            stream,
            group,
            consumer: crate::transport::consumer_name(),
            reclaim_after,
        })
    }

    pub(crate) fn bad_reply(&self, command: &str, what: impl fmt::Display) -> TransportError {
        TransportError::new(
            &self.name,
            TransportErrorKind::Broker,
            format!("{command} gave an unexpected reply: {what}"),
        )
    }

    pub(crate) fn reclaim_every(&self) -> Duration {
        self.reclaim_after.clamp(RECLAIM_MIN, RECLAIM_EVERY)
    }

    /// `TYPE` of the stream, for [`Access::Existing`].
    pub(crate) fn stream_type(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("TYPE");
        cmd.arg(&self.stream);
        cmd
    }

    /// Refuses a stream that `TYPE` did not find: commands that only look create none.
    pub(crate) fn must_exist(&self, kind: &Value) -> Result<(), TransportError> {
        if text(kind).as_deref() == Some("stream") {
            return Ok(());
        }
        Err(TransportError::configuration(
            &self.name,
            format!(
                "no stream `{}` here; this command creates none: check the DSN",
                self.stream
            ),
        ))
    }

    /// `XGROUP CREATE`, from 0: a new group also takes what was sent before any worker ran.
    pub(crate) fn create_group(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM");
        cmd
    }

    /// `XADD` of a new message, attempt 0.
    pub(crate) fn add(&self, body: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("*")
            .arg("body")
            .arg(body)
            .arg("attempt")
            .arg("0");
        cmd
    }

    /// The id `XADD` answered.
    pub(crate) fn added(&self, reply: &Value) -> Result<String, TransportError> {
        text(reply).ok_or_else(|| self.bad_reply("XADD", describe(reply)))
    }

    /// `XREADGROUP` of at most `count` entries from `from` (`>`: new entries; `0`: this
    /// consumer's own pending ones), blocking for `block_ms` (see [`block_ms`]) if given.
    pub(crate) fn read(&self, block_ms: Option<u64>, from: &str, count: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        cmd
    }

    /// The deliveries of an `XREADGROUP` reply. An entry without fields is one of this
    /// consumer's own (`own`, read from `0`) deleted meanwhile, and is skipped; from `>` it
    /// is an error.
    pub(crate) fn read_reply(
        &self,
        reply: Value,
        own: bool,
    ) -> Result<Vec<Delivery>, TransportError> {
        const COMMAND: &str = "XREADGROUP";
        // RESP2: [[stream, [entry]]]; RESP3: {stream: [entry]}; nil when nothing came.
        let entries = match reply {
            Value::Nil => return Ok(Vec::new()),
            Value::Array(streams) => match streams.into_iter().next() {
                None => return Ok(Vec::new()),
                Some(Value::Array(mut pair)) if pair.len() == 2 => pair.swap_remove(1),
                Some(other) => return Err(self.bad_reply(COMMAND, describe(&other))),
            },
            Value::Map(streams) => match streams.into_iter().next() {
                None => return Ok(Vec::new()),
                Some((_, entries)) => entries,
            },
            other => return Err(self.bad_reply(COMMAND, describe(&other))),
        };
        let entries = array(entries).map_err(|v| self.bad_reply(COMMAND, describe(&v)))?;
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            match self.delivery(COMMAND, entry, false)? {
                Some(delivery) => deliveries.push(delivery),
                None if own => {}
                None => return Err(self.bad_reply(COMMAND, "an entry without fields")),
            }
        }
        Ok(deliveries)
    }

    /// `XPENDING … IDLE`: a page of the group's entries idle for longer than
    /// `reclaim_after`, after `cursor` (`-` from the start, `(<id>` after an entry).
    pub(crate) fn idle_pending(&self, cursor: &str) -> redis::Cmd {
        let min_idle = saturate(self.reclaim_after.as_millis(), REDIS_MAX);
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg("IDLE")
            .arg(min_idle)
            .arg(cursor)
            .arg("+")
            .arg(RECLAIM_PAGE);
        cmd
    }

    /// An [`Keys::idle_pending`] reply: each entry's id, whether this consumer holds it, and
    /// how often it was delivered.
    pub(crate) fn idle_rows(&self, reply: Value) -> Result<Vec<IdleEntry>, TransportError> {
        const COMMAND: &str = "XPENDING";
        // [[id, consumer, idle ms, deliveries], …]
        let rows = array(reply).map_err(|v| self.bad_reply(COMMAND, describe(&v)))?;
        rows.into_iter()
            .map(|row| {
                let fields = match &row {
                    Value::Array(fields) if fields.len() >= 4 => fields,
                    _ => return Err(self.bad_reply(COMMAND, describe(&row))),
                };
                match (text(&fields[0]), text(&fields[1]), int(&fields[3])) {
                    (Some(id), Some(consumer), Some(n)) => Ok(IdleEntry {
                        ours: consumer == self.consumer,
                        id,
                        deliveries: u32::try_from(n.max(0)).unwrap_or(u32::MAX),
                    }),
                    _ => Err(self.bad_reply(COMMAND, describe(&row))),
                }
            })
            .collect()
    }

    /// `XCLAIM` of entry `id` for this consumer, if it is still idle for longer than
    /// `reclaim_after` (another consumer may have taken it since it was listed).
    pub(crate) fn claim(&self, id: &str) -> redis::Cmd {
        let min_idle = saturate(self.reclaim_after.as_millis(), REDIS_MAX);
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle)
            .arg(id);
        cmd
    }

    /// An [`Keys::claim`] reply as a reclaimed delivery, its count set from `listed`; `None`
    /// when another consumer took it first, or it was deleted while pending.
    pub(crate) fn claimed(
        &self,
        reply: Value,
        listed: &IdleEntry,
    ) -> Result<Option<Delivery>, TransportError> {
        const COMMAND: &str = "XCLAIM";
        let entries = array(reply).map_err(|v| self.bad_reply(COMMAND, describe(&v)))?;
        for entry in entries {
            if matches!(entry, Value::Nil) {
                continue;
            }
            if let Some(mut delivery) = self.delivery(COMMAND, entry, true)? {
                // This claim is one more delivery.
                delivery.deliveries = listed.deliveries.saturating_add(1).max(2);
                return Ok(Some(delivery));
            }
        }
        Ok(None)
    }

    /// A stream entry `[id, [field, value, …]]` as a delivery (its first: `deliveries` 1);
    /// `None` for an entry without fields (deleted while pending). An entry without a `body`
    /// field has an empty body, which the worker fails as malformed; an `attempt` that is not
    /// a count is 0. Neither is an error: another producer's entry must not stop the workers.
    fn delivery(
        &self,
        command: &str,
        entry: Value,
        reclaimed: bool,
    ) -> Result<Option<Delivery>, TransportError> {
        let (id, fields) = parse_entry(entry).map_err(|what| self.bad_reply(command, what))?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let mut body = Vec::new();
        let mut attempt = 0;
        let mut counted = false;
        for (field, value) in fields {
            match field.as_slice() {
                b"body" => body = value,
                b"attempt" => attempt = attempt_count(&value),
                b"counted" => counted = value == b"1",
                _ => {}
            }
        }
        Ok(Some(Delivery {
            id,
            body,
            attempt,
            reclaimed,
            deliveries: 1,
            counted,
            counts_as: None,
        }))
    }

    /// A settling script's reply: `true` when it settled the delivery, `false` when the entry
    /// was no longer pending for this consumer (reclaimed by another, which settles it).
    pub(crate) fn settled(&self, lua: Lua, reply: &Value) -> Result<bool, TransportError> {
        match int(reply) {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(self.bad_reply(&format!("EVALSHA of {}", lua.name()), describe(reply))),
        }
    }

    /// The fail script's reply: the failed entry's id, or `None` when the delivery was no
    /// longer ours (the consumer that took it over settles it).
    pub(crate) fn failed_id(&self, reply: &Value) -> Result<Option<String>, TransportError> {
        match reply {
            Value::Int(0) => Ok(None),
            id => match text(id) {
                Some(id) => Ok(Some(id)),
                None => Err(self.bad_reply("EVALSHA of the fail script", describe(id))),
            },
        }
    }

    /// The move of due retries' reply: how many it moved, and the milliseconds until the
    /// next member is due (-1: none).
    pub(crate) fn moved(&self, reply: &Value) -> Result<(i64, i64), TransportError> {
        let (moved, wait) = match reply {
            Value::Array(v) if v.len() == 2 => (int(&v[0]), int(&v[1])),
            _ => (None, None),
        };
        match (moved, wait) {
            (Some(moved), Some(wait)) => Ok((moved, wait)),
            _ => Err(self.bad_reply("EVALSHA of the script moving due retries", describe(reply))),
        }
    }

    /// `XLEN` and `ZCARD` in one round trip: what [`Keys::pending_reply`] adds up.
    pub(crate) fn counts(&self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg(&self.stream)
            .cmd("ZCARD")
            .arg(&self.delayed);
        pipe
    }

    /// Messages waiting or being handled, delayed retries included, from [`Keys::counts`].
    pub(crate) fn pending_reply(&self, reply: &Value) -> Result<u64, TransportError> {
        let counts = match reply {
            Value::Array(v) if v.len() == 2 => Some((&v[0], &v[1])),
            _ => None,
        };
        let sum = counts.and_then(|(waiting, delayed)| {
            let waiting = u64::try_from(int(waiting)?).ok()?;
            let delayed = u64::try_from(int(delayed)?).ok()?;
            Some(waiting.saturating_add(delayed))
        });
        sum.ok_or_else(|| self.bad_reply("XLEN + ZCARD", describe(reply)))
    }

    /// The first members of the delayed set, where those waiting for newer code are.
    pub(crate) fn delayed_members(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&self.delayed).arg(0).arg(RELEASE_SCAN - 1);
        cmd
    }

    /// The members of a [`Keys::delayed_members`] reply that wait for newer code.
    pub(crate) fn waiting(&self, reply: Value) -> Result<Vec<Waiting>, TransportError> {
        const COMMAND: &str = "ZRANGE";
        let members = array(reply).map_err(|v| self.bad_reply(COMMAND, describe(&v)))?;
        let mut waiting = Vec::new();
        for member in members {
            let member = into_bytes(member).map_err(|v| self.bad_reply(COMMAND, describe(&v)))?;
            if let Some(body) = waiting_body(&member) {
                let body_at = member.len() - body.len();
                waiting.push(Waiting { member, body_at });
            }
        }
        Ok(waiting)
    }

    /// Deletes this consumer from the group unless messages are still pending for it.
    pub(crate) fn forget_consumer(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FORGET_CONSUMER_LUA)
            .arg(1)
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer);
        cmd
    }

    /// Settles a delivery (see [`ACK_LUA`]).
    pub(crate) fn ack_call<'a>(&'a self, delivery: &'a Delivery) -> Call<'a> {
        let (field, at) = count_args(delivery);
        Call {
            lua: Lua::Ack,
            keys: vec![&self.stream, &self.stats, &self.last_seen],
            args: vec![
                self.group.as_bytes().into(),
                delivery.id.as_bytes().into(),
                self.consumer.as_bytes().into(),
                field.into_bytes().into(),
                at.into_bytes().into(),
            ],
        }
    }

    /// Puts a delivery back (see [`RETRY_LUA`]): at once, or in the delayed set, marked as
    /// waiting for newer code when `newer`. With the delay in ms, 0 when at once.
    pub(crate) fn put_back_call<'a>(
        &'a self,
        delivery: &'a Delivery,
        delay: Duration,
        attempt: u32,
        newer: bool,
    ) -> (Call<'a>, u64) {
        // Never at once for newer code: the mark lives in the delayed set.
        let delay = if newer {
            delay.max(Duration::from_millis(1))
        } else {
            delay
        };
        // Rounded up: a delay, however short, never means at once.
        let ms = saturate(delay.as_micros().div_ceil(1000), MAX_DELAY_MS);
        let (field, at) = count_args(delivery);
        let flag = |on: bool| -> Cow<'a, [u8]> { if on { b"1" } else { b"0" }.as_slice().into() };
        let call = Call {
            lua: Lua::Retry,
            keys: vec![&self.stream, &self.delayed, &self.stats, &self.last_seen],
            args: vec![
                self.group.as_bytes().into(),
                delivery.id.as_bytes().into(),
                self.consumer.as_bytes().into(),
                ms.to_string().into_bytes().into(),
                attempt.to_string().into_bytes().into(),
                delivery.body.as_slice().into(),
                flag(delivery.counted),
                flag(newer),
                field.into_bytes().into(),
                at.into_bytes().into(),
            ],
        };
        (call, ms)
    }

    /// Moves a delivery's bytes and `record` to the failure stream (see [`FAIL_LUA`]).
    pub(crate) fn fail_call<'a>(
        &'a self,
        delivery: &'a Delivery,
        record: &'a FailureRecord,
    ) -> Call<'a> {
        let (field, at) = count_args(delivery);
        let mut args: Vec<Cow<'a, [u8]>> = vec![
            self.group.as_bytes().into(),
            delivery.id.as_bytes().into(),
            self.consumer.as_bytes().into(),
            field.into_bytes().into(),
            at.into_bytes().into(),
            b"body".as_slice().into(),
            delivery.body.as_slice().into(),
            b"class".as_slice().into(),
            record.class.as_bytes().into(),
            b"error".as_slice().into(),
            record.error.as_bytes().into(),
            b"attempts".as_slice().into(),
            record.attempts.to_string().into_bytes().into(),
            b"failed_at".as_slice().into(),
            record.failed_at_ms.to_string().into_bytes().into(),
        ];
        if delivery.counted {
            args.extend([b"counted".as_slice().into(), b"1".as_slice().into()]);
        }
        // Unknown type or version: the field is left out.
        if let Some(type_name) = &record.type_name {
            args.extend([b"type".as_slice().into(), type_name.as_bytes().into()]);
        }
        if let Some(version) = record.version {
            args.extend([
                b"version".as_slice().into(),
                version.to_string().into_bytes().into(),
            ]);
        }
        Call {
            lua: Lua::Fail,
            keys: vec![&self.stream, &self.failed, &self.stats, &self.last_seen],
            args,
        }
    }

    /// Moves due retries back to the stream (see [`MOVE_DUE_LUA`]).
    pub(crate) fn move_due_call(&self) -> Call<'_> {
        Call {
            lua: Lua::MoveDue,
            keys: vec![&self.delayed, &self.stream, &self.failed],
            args: vec![DELAYED_BATCH.to_string().into_bytes().into()],
        }
    }

    /// Moves one member waiting for newer code back to the stream (see [`RELEASE_LUA`]).
    pub(crate) fn release_call<'a>(&'a self, member: &'a [u8]) -> Call<'a> {
        Call {
            lua: Lua::Release,
            keys: vec![&self.delayed, &self.stream],
            args: vec![member.into()],
        }
    }

    /// Moves failed entry `id` back to the stream (see [`REQUEUE_LUA`]).
    fn requeue_call<'a>(&'a self, id: &'a str) -> Call<'a> {
        Call {
            lua: Lua::Requeue,
            keys: vec![&self.failed, &self.stream],
            args: vec![id.as_bytes().into()],
        }
    }

    /// Adds decode counts (see [`STATS_LUA`]).
    fn stats_call(&self, rows: &[StatRow]) -> Call<'_> {
        let mut args = Vec::with_capacity(rows.len() * 3);
        for row in rows {
            // Redis counts in i64; the script keeps a sum at its largest too.
            args.push(
                format!("{}\t{}", row.type_name, row.version)
                    .into_bytes()
                    .into(),
            );
            args.push(row.count.min(REDIS_MAX).to_string().into_bytes().into());
            args.push(row.last_seen_ms.to_string().into_bytes().into());
        }
        Call {
            lua: Lua::Stats,
            keys: vec![&self.stats, &self.last_seen],
            args,
        }
    }
}

/// A delayed-set member waiting for newer code.
pub(crate) struct Waiting {
    pub(crate) member: Vec<u8>,
    body_at: usize,
}

impl Waiting {
    /// The message's bytes.
    pub(crate) fn body(&self) -> &[u8] {
        &self.member[self.body_at..]
    }
}

/// When a receive's housekeeping runs next: what both transports keep between receives.
/// A pending entry a reclaim scan found idle.
pub(crate) struct IdleEntry {
    pub(crate) id: String,
    /// Whether this consumer holds it: a consumer never takes back its own (its handler may
    /// still be running, in the async runtime); other consumers reclaim it.
    pub(crate) ours: bool,
    pub(crate) deliveries: u32,
}

pub(crate) struct Schedule {
    /// When the next reclaim scan may run, and where it goes on from.
    next_reclaim: Instant,
    reclaim_cursor: String,
    /// When the delayed set may next be checked, and when its first member is due (as last
    /// seen; `None`: it was empty).
    next_delayed_check: Instant,
    delayed_due: Option<Instant>,
}

impl Schedule {
    /// Everything due at once: the first receive scans and checks.
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Schedule {
            next_reclaim: now,
            reclaim_cursor: "-".to_owned(),
            next_delayed_check: now,
            delayed_due: None,
        }
    }

    pub(crate) fn delayed_check_due(&self, now: Instant) -> bool {
        now >= self.next_delayed_check
    }

    pub(crate) fn reclaim_due(&self, now: Instant) -> bool {
        now >= self.next_reclaim
    }

    pub(crate) fn reclaim_cursor(&self) -> &str {
        &self.reclaim_cursor
    }

    /// After a move of due retries at `now` ([`Keys::moved`]).
    pub(crate) fn moved(&mut self, moved: i64, wait_ms: i64, now: Instant) {
        // A full batch may leave more due: look again on the next receive.
        self.next_delayed_check = if moved >= DELAYED_BATCH {
            now
        } else {
            now + DELAYED_EVERY
        };
        self.delayed_due = u64::try_from(wait_ms)
            .ok()
            .map(|ms| later(now, Duration::from_millis(ms)));
    }

    /// Keeps a reclaim step's next cursor; `true` when the scan reached the end.
    /// The scan went past entry `id`: the next page starts after it.
    pub(crate) fn scanned(&mut self, id: &str) {
        self.reclaim_cursor = format!("({id}");
    }

    /// A scan delivered: more may wait, so it goes on at the next receive.
    pub(crate) fn reclaim_on(&mut self) {
        self.next_reclaim = Instant::now();
    }

    /// A scan reached the end of the pending list: the next one starts over, after `every`.
    pub(crate) fn reclaim_done(&mut self, every: Duration) {
        self.reclaim_cursor = "-".to_owned();
        self.next_reclaim = Instant::now() + every;
    }

    /// A retry put back by this transport falls due at `due`: wake for it even if no other
    /// worker moves it first.
    pub(crate) fn retry_due(&mut self, due: Instant) {
        self.delayed_due = Some(self.delayed_due.map_or(due, |d| d.min(due)));
    }

    /// Messages were released from the delayed set: look at it on the next receive.
    pub(crate) fn check_delayed_now(&mut self) {
        self.next_delayed_check = Instant::now();
    }

    /// When a read waiting until `deadline` should return instead: sooner for the next
    /// reclaim scan or due retry.
    pub(crate) fn wake(&self, deadline: Instant) -> Instant {
        let mut wake = deadline.min(self.next_reclaim);
        if let Some(due) = self.delayed_due {
            wake = wake.min(due.max(self.next_delayed_check));
        }
        wake
    }
}

/// When a retry put back with a delay of `ms` ([`Keys::put_back_call`]) falls due; `None`
/// for one put back at once.
pub(crate) fn retry_wake(ms: u64) -> Option<Instant> {
    (ms > 0).then(|| later(Instant::now(), Duration::from_millis(ms)))
}

/// A read's `BLOCK` in ms: never 0, which would wait forever, so at least 1 ms, rounded up;
/// at most [`MAX_BLOCK_MS`] (a receive blocks again while its timeout lasts).
pub(crate) fn block_ms(block: Duration) -> u64 {
    saturate(block.as_micros().div_ceil(1000), MAX_BLOCK_MS).max(1)
}

/// A queue on a Redis stream with a consumer group, for workers on many hosts (Redis ≥ 6.2).
///
/// - A message is delivered to one consumer of the group at a time; the hot path is one
///   `XREADGROUP` to take a message and one script call (`EVALSHA`) to settle it.
/// - A message taken by a consumer that died is taken back once it has been pending for
///   [`RedisTransport::reclaim_after`] (5 minutes by default): a scan lists idle entries
///   (`XPENDING … IDLE`) and claims one another consumer holds (`XCLAIM`, which checks the
///   idle time again), and delivers it with [`Delivery::reclaimed`] set and
///   [`Delivery::deliveries`] counted. A consumer never takes back its own entries. Scans run
///   on the first receive, then every 5 s (or every `reclaim_after`, if shorter).
/// - **`reclaim_after` must exceed the slowest handler.** A message still being handled when
///   it runs out is delivered to another consumer too, and handled twice; the first
///   consumer's ack, retry or fail then does nothing, as the message is no longer its own.
/// - Streams cannot delay an entry, so a retry with a delay waits in the sorted set
///   `{<stream>}:delayed` and is moved back by whichever worker sees it due first (checked
///   every 200 ms at most, in one script call).
/// - Failed messages go to the stream `{<stream>}:failed`; drain statistics to the hashes
///   `{<stream>}:stats` and `{<stream>}:stats:last-seen` (the module docs give the layout).
/// - Each transport reads as a consumer of its own name; dropping it deletes that consumer
///   from the group (best effort) unless messages are still pending for it, so restarted
///   workers do not pile up consumers.
///
/// Acked entries are deleted: use one consumer group per stream.
///
/// Connect to a single Redis server, or to the primary of a replicated one. **Redis Cluster
/// is not supported**: the scripts touch several keys at once (the stream, its delayed set,
/// its failure stream), and the connection does not follow a cluster's redirects.
///
/// ```no_run
/// use std::time::Duration;
/// use upcaster_worker::prelude::*;
/// use upcaster_worker::RedisTransport;
///
/// let mut queue = RedisTransport::open_dsn("redis://127.0.0.1:6379/0?group=resizers", "images")?;
/// queue.send(br#"{"type":"Ping","version":1,"payload":{}}"#)?;
/// if let Some(delivery) = queue.receive(Duration::from_secs(1))? {
///     queue.ack(&delivery)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisTransport {
    link: Link,
    keys: Keys,
    schedule: Schedule,
    /// Script hashes from `SCRIPT LOAD`, loaded on first use and again after `NOSCRIPT`.
    shas: [Option<String>; Lua::COUNT],
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("name", &self.keys.name)
            .field("stream", &self.keys.stream)
            .field("group", &self.keys.group)
            .field("consumer", &self.keys.consumer)
            .field("reclaim_after", &self.keys.reclaim_after)
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// Opens `redis://[user:password@]host[:port][/db][?stream=<name>&group=<group>&reclaim_after=<seconds>]`,
    /// creating the stream and its consumer group if needed. The stream defaults to `queue`,
    /// the group to `upcaster`, the reclaim timeout to 300 s.
    pub fn open_dsn(dsn: &str, queue: &str) -> Result<Self, TransportError> {
        RedisTransport::open_dsn_with(dsn, queue, Access::Create)
    }

    /// Opens a DSN as [`RedisTransport::open_dsn`]; with [`Access::Existing`] the stream must
    /// exist, and neither it nor the group is created.
    pub fn open_dsn_with(dsn: &str, queue: &str, access: Access) -> Result<Self, TransportError> {
        let keys = Keys::from_dsn(dsn, queue)?;
        let link = Link::open(dsn, &keys.name, REPLY_MARGIN)?;
        let mut transport = RedisTransport {
            link,
            keys,
            schedule: Schedule::new(),
            shas: Default::default(),
        };
        if access == Access::Existing {
            let kind = transport
                .link
                .query("TYPE", &transport.keys.stream_type())?;
            transport.keys.must_exist(&kind)?;
            return Ok(transport);
        }
        let create = transport.keys.create_group();
        match transport.link.run(|c| create.query::<Value>(c)) {
            Ok(_) => {}
            Err(Failure::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(transport.link.failed("XGROUP CREATE", e)),
        }
        Ok(transport)
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

    fn query(&mut self, command: &str, cmd: &redis::Cmd) -> Result<Value, TransportError> {
        self.link.query(command, cmd)
    }

    /// The time-gated work of a receive: a reclaim scan (which may deliver) and the move of
    /// due retries. Costs nothing on most calls.
    fn housekeeping(&mut self) -> Result<Option<Delivery>, TransportError> {
        let now = Instant::now();
        if self.schedule.delayed_check_due(now) {
            self.move_due()?;
        }
        if self.schedule.reclaim_due(now) {
            return self.reclaim();
        }
        Ok(None)
    }

    fn move_due(&mut self) -> Result<(), TransportError> {
        let reply = eval(&mut self.link, &mut self.shas, &self.keys.move_due_call())?;
        let (moved, wait) = self.keys.moved(&reply)?;
        self.schedule.moved(moved, wait, Instant::now());
        Ok(())
    }

    /// One reclaim scan over the group's pending entries, from where the last one stopped;
    /// delivers the first entry idle longer than `reclaim_after`.
    fn reclaim(&mut self) -> Result<Option<Delivery>, TransportError> {
        for _ in 0..RECLAIM_STEPS {
            let cmd = self.keys.idle_pending(self.schedule.reclaim_cursor());
            let reply = self.query("XPENDING", &cmd)?;
            let rows = self.keys.idle_rows(reply)?;
            let done = rows.len() < RECLAIM_PAGE;
            for row in rows {
                self.schedule.scanned(&row.id);
                if row.ours {
                    continue;
                }
                let reply = self.query("XCLAIM", &self.keys.claim(&row.id))?;
                if let Some(delivery) = self.keys.claimed(reply, &row)? {
                    // More may wait: scan on at the next receive.
                    self.schedule.reclaim_on();
                    return Ok(Some(delivery));
                }
            }
            if done {
                self.schedule.reclaim_done(self.keys.reclaim_every());
                return Ok(None);
            }
        }
        // A long pending list: go on at the next receive rather than hold this one.
        Ok(None)
    }

    /// One `XREADGROUP` for a new entry; `block` `None` asks without waiting.
    fn read(&mut self, block: Option<Duration>) -> Result<Option<Delivery>, TransportError> {
        self.read_from(block, ">")
    }

    /// `XREADGROUP` from `from`: `>` for new entries, `0` for this consumer's own pending
    /// ones.
    fn read_from(
        &mut self,
        block: Option<Duration>,
        from: &str,
    ) -> Result<Option<Delivery>, TransportError> {
        const COMMAND: &str = "XREADGROUP";
        let block_ms = block.map(block_ms);
        if let Some(ms) = block_ms {
            self.link.fit_read_timeout(Duration::from_millis(ms))?;
        }
        let cmd = self.keys.read(block_ms, from, 1);
        let reply = match cmd.query::<Value>(self.link.conn()?) {
            Ok(reply) => reply,
            // A signal interrupts a blocking read (socket reads with a timeout are not
            // restarted), and a dropped connection fails the same way. Its reply may still
            // come on the old connection, so start a fresh one. The server may already have
            // given us an entry: this consumer holds nothing else while it reads, so
            // whatever is pending for it is that entry, and it is delivered now rather than
            // left for the reclaim timeout.
            Err(e) if e.is_io_error() && from == ">" => {
                if let Err(c) = self.link.reconnect() {
                    return Err(self.link.failed(COMMAND, Failure::Lost(e, c)));
                }
                return self.read_from(None, "0");
            }
            Err(e) => return Err(self.link.failed(COMMAND, Failure::Redis(e))),
        };
        Ok(self.keys.read_reply(reply, from != ">")?.into_iter().next())
    }

    /// Puts a delivery back ([`Keys::put_back_call`]).
    fn put_back(
        &mut self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u32,
        newer: bool,
    ) -> Result<(), TransportError> {
        let (call, ms) = self.keys.put_back_call(delivery, delay, attempt, newer);
        let reply = eval(&mut self.link, &mut self.shas, &call)?;
        // Not ours any more: the consumer that took it over settles it.
        if self.keys.settled(Lua::Retry, &reply)? {
            if let Some(due) = retry_wake(ms) {
                self.schedule.retry_due(due);
            }
        }
        Ok(())
    }

    fn entry_id<'a>(&self, id: &'a str) -> Result<&'a str, TransportError> {
        let valid = id.split_once('-').is_some_and(|(ms, seq)| {
            !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && seq.bytes().all(|b| b.is_ascii_digit())
        });
        if valid {
            Ok(id)
        } else {
            Err(TransportError::configuration(
                &self.keys.name,
                format!("`{id}` is not a stream entry id (<ms>-<seq>)"),
            ))
        }
    }

    fn failed_message(&self, entry: Value) -> Result<Option<FailedMessage>, TransportError> {
        const COMMAND: &str = "XRANGE";
        let (id, fields) = parse_entry(entry).map_err(|what| self.keys.bad_reply(COMMAND, what))?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let bad = |field: &str| {
            self.keys.bad_reply(
                COMMAND,
                format!("failed entry {id} has a missing or bad `{field}` field"),
            )
        };
        let (mut body, mut type_name, mut version, mut class, mut error) =
            (None, None, None, None, None);
        let (mut attempts, mut failed_at) = (None, None);
        fn number<T: std::str::FromStr>(text: Option<String>) -> Option<T> {
            text?.parse().ok()
        }
        for (field, value) in fields {
            if field == b"body" {
                body = Some(value);
                continue;
            }
            let text = String::from_utf8(value).ok();
            match field.as_slice() {
                b"type" => type_name = Some(text.ok_or_else(|| bad("type"))?),
                b"version" => version = Some(number(text).ok_or_else(|| bad("version"))?),
                b"class" => class = Some(text.ok_or_else(|| bad("class"))?),
                b"error" => error = Some(text.ok_or_else(|| bad("error"))?),
                b"attempts" => attempts = Some(number(text).ok_or_else(|| bad("attempts"))?),
                b"failed_at" => failed_at = Some(number(text).ok_or_else(|| bad("failed_at"))?),
                _ => {}
            }
        }
        Ok(Some(FailedMessage {
            body: body.ok_or_else(|| bad("body"))?,
            record: FailureRecord {
                type_name,
                version,
                class: class.ok_or_else(|| bad("class"))?,
                error: error.ok_or_else(|| bad("error"))?,
                attempts: attempts.ok_or_else(|| bad("attempts"))?,
                failed_at_ms: failed_at.ok_or_else(|| bad("failed_at"))?,
            },
            id,
        }))
    }

    /// Reads a hash whose fields are `<type>\t<version>` and values integers.
    fn stat_fields(&self, reply: Value) -> Result<Vec<(StatKey, u64)>, TransportError> {
        const COMMAND: &str = "HGETALL";
        let pairs = field_pairs(reply).map_err(|v| self.keys.bad_reply(COMMAND, describe(&v)))?;
        pairs
            .into_iter()
            .map(|(field, value)| {
                let key = std::str::from_utf8(&field)
                    .ok()
                    .and_then(|f| f.rsplit_once('\t'))
                    .and_then(|(t, v)| Some((t.to_owned(), v.parse::<u32>().ok()?)));
                let n = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok());
                match (key, n) {
                    (Some(key), Some(n)) => Ok((key, n)),
                    _ => Err(self.keys.bad_reply(
                        COMMAND,
                        format!(
                            "a statistics field {:?} = {:?}",
                            String::from_utf8_lossy(&field),
                            String::from_utf8_lossy(&value)
                        ),
                    )),
                }
            })
            .collect()
    }
}

impl Queue for RedisTransport {
    fn name(&self) -> &str {
        &self.keys.name
    }

    fn send(&mut self, body: &[u8]) -> Result<String, TransportError> {
        let reply = self.query("XADD", &self.keys.add(body))?;
        self.keys.added(&reply)
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = later(Instant::now(), timeout);
        loop {
            if let Some(delivery) = self.housekeeping()? {
                return Ok(Some(delivery));
            }
            if timeout.is_zero() {
                return self.read(None);
            }
            // Wake for the next reclaim scan or due retry, if sooner than the deadline.
            let wake = self.schedule.wake(deadline);
            let now = Instant::now();
            if let Some(delivery) = self.read(Some(wake.saturating_duration_since(now)))? {
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        // One round trip, XACK and XDEL (and the count) together or not at all.
        let reply = eval(
            &mut self.link,
            &mut self.shas,
            &self.keys.ack_call(delivery),
        )?;
        self.keys.settled(Lua::Ack, &reply).map(|_| ())
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
        let reply = self.query("ZRANGE", &self.keys.delayed_members())?;
        let mut released = 0;
        for waiting in self.keys.waiting(reply)? {
            if !readable(waiting.body()) {
                continue;
            }
            let call = self.keys.release_call(&waiting.member);
            let reply = eval(&mut self.link, &mut self.shas, &call)?;
            if int(&reply) == Some(1) {
                released += 1;
            }
        }
        if released > 0 {
            self.schedule.check_delayed_now();
        }
        Ok(released)
    }

    fn fail(
        &mut self,
        delivery: &Delivery,
        record: &FailureRecord,
    ) -> Result<Option<String>, TransportError> {
        let call = self.keys.fail_call(delivery, record);
        let reply = eval(&mut self.link, &mut self.shas, &call)?;
        self.keys.failed_id(&reply)
    }

    fn pending(&mut self) -> Result<u64, TransportError> {
        let pipe = self.keys.counts();
        let reply = self
            .link
            .run(|c| pipe.query::<Value>(c))
            .map_err(|e| self.link.failed("XLEN + ZCARD", e))?;
        self.keys.pending_reply(&reply)
    }
}

impl FailureStore for RedisTransport {
    fn failed(&mut self, limit: usize) -> Result<Vec<FailedMessage>, TransportError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply = self.query(
            "XRANGE",
            redis::cmd("XRANGE")
                .arg(&self.keys.failed)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(saturate(limit, REDIS_MAX)),
        )?;
        let entries = array(reply).map_err(|v| self.keys.bad_reply("XRANGE", describe(&v)))?;
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(message) = self.failed_message(entry)? {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    fn requeue_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.entry_id(id)?;
        let reply = eval(&mut self.link, &mut self.shas, &self.keys.requeue_call(id))?;
        match int(&reply) {
            Some(n) => Ok(n == 1),
            None => Err(self
                .keys
                .bad_reply("EVALSHA of the requeue script", describe(&reply))),
        }
    }

    fn remove_failed(&mut self, id: &str) -> Result<bool, TransportError> {
        let id = self.entry_id(id)?;
        let reply = self.query("XDEL", redis::cmd("XDEL").arg(&self.keys.failed).arg(id))?;
        match int(&reply) {
            Some(n) => Ok(n == 1),
            None => Err(self.keys.bad_reply("XDEL", describe(&reply))),
        }
    }
}

impl DrainStats for RedisTransport {
    fn record_stats(&mut self, rows: &[StatRow]) -> Result<(), TransportError> {
        if rows.is_empty() {
            return Ok(());
        }
        eval(&mut self.link, &mut self.shas, &self.keys.stats_call(rows))?;
        Ok(())
    }

    fn stats(&mut self) -> Result<Vec<StatRow>, TransportError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(&self.keys.stats)
            .cmd("HGETALL")
            .arg(&self.keys.last_seen);
        let reply: (Value, Value) = self
            .link
            .run(|c| pipe.query(c))
            .map_err(|e| self.link.failed("HGETALL", e))?;
        let counts = self.stat_fields(reply.0)?;
        let seen: std::collections::HashMap<StatKey, u64> =
            self.stat_fields(reply.1)?.into_iter().collect();
        let mut rows: Vec<StatRow> = counts
            .into_iter()
            .map(|(key, count)| StatRow {
                last_seen_ms: seen.get(&key).copied().unwrap_or(0),
                type_name: key.0,
                version: key.1,
                count,
            })
            .collect();
        rows.sort();
        Ok(rows)
    }
}

impl Drop for RedisTransport {
    /// Deletes this consumer from the group unless messages are still pending for it, so
    /// that restarted workers (each a new consumer name) do not pile up in the group. Best
    /// effort: one round trip with a short timeout, errors ignored. The check and the delete
    /// are one script, so a consumer holding messages is never deleted (its messages would
    /// leave the pending list and never be delivered again).
    fn drop(&mut self) {
        let Some(conn) = self.link.conn.as_mut() else {
            return;
        };
        let _ = conn.set_read_timeout(Some(DROP_TIMEOUT));
        let _ = conn.set_write_timeout(Some(DROP_TIMEOUT));
        let _ = self.keys.forget_consumer().query::<Value>(conn);
    }
}

/// The restart signal in a Redis key, shared by workers on every host.
///
/// `stop-workers` stores the server's time (from `TIME`, in milliseconds) in the key, and a
/// worker takes its start time from the same clock, so no host's clock skew matters. The key
/// must be named in the DSN (`?key=<app>:restart-requested-at`): there is no default, since
/// two applications sharing one Redis database and one key would restart each other's
/// workers. It is never derived from a namespace that a deploy could change. A worker reads
/// it every 100 ms at most, so the check costs no round trip per message; a value that is
/// not a time in milliseconds is an error (the worker reports it), not "no request".
///
/// Its connection follows the queue's reconnect policy: a dropped connection (a Redis
/// restart, a failover, `CLIENT KILL`, a proxy) is replaced on the next read. Replies are
/// bounded by 5 s, so a hung server cannot hold a worker long between messages.
///
/// ```no_run
/// use upcaster_worker::{RedisSignal, RestartSignal};
///
/// let mut signal = RedisSignal::open_dsn("redis://127.0.0.1:6379?key=shop:restart-requested-at")?;
/// let at = signal.request()?;
/// assert_eq!(signal.requested_at()?, Some(at));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisSignal {
    link: Link,
    key: String,
}

impl fmt::Debug for RedisSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSignal")
            .field("name", &self.link.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisSignal {
    /// Opens `redis://[user:password@]host[:port][/db]?key=<key>`; the key is required, one
    /// per application (`<app>:restart-requested-at`, say).
    pub fn open_dsn(dsn: &str) -> Result<Self, TransportError> {
        let parsed = Dsn::parse(dsn)?;
        let name = format!("restart signal {}", parsed.shown());
        let Some(key) = parsed.param("key") else {
            return Err(TransportError::configuration(
                name,
                "the DSN names no key: add `?key=<app>:restart-requested-at` (or \
                 `&key=…` after other parameters), one key per application, since \
                 applications sharing a key restart each other's workers",
            ));
        };
        if key.is_empty() {
            return Err(TransportError::configuration(
                name,
                "the restart key must not be empty",
            ));
        }
        parsed.only(&["key", "protocol"]).map_err(|e| {
            TransportError::configuration(
                &name,
                format!("{} (a restart signal takes `key`)", e.problem),
            )
        })?;
        Ok(RedisSignal {
            link: Link::open(dsn, &name, SIGNAL_REPLY_TIMEOUT)?,
            key: key.to_owned(),
        })
    }

    /// The key holding the time of the latest request.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl RestartSignal for RedisSignal {
    fn name(&self) -> String {
        let dsn = self
            .link
            .name
            .trim_start_matches("restart signal ")
            .split_once('?')
            .map_or(self.link.name.as_str(), |(d, _)| d);
        format!("key {} on {dsn}", self.key)
    }

    fn check_interval(&self) -> Duration {
        SIGNAL_CHECK_EVERY
    }

    fn now(&mut self) -> Result<u64, TransportError> {
        let reply = self.link.query("TIME", &redis::cmd("TIME"))?;
        let parts = match &reply {
            Value::Array(parts) if parts.len() == 2 => {
                int(&parts[0]).zip(int(&parts[1])).and_then(|(s, us)| {
                    let s = u64::try_from(s).ok()?;
                    let us = u64::try_from(us).ok()?;
                    s.checked_mul(1000)?.checked_add(us / 1000)
                })
            }
            _ => None,
        };
        parts.ok_or_else(|| {
            TransportError::new(
                &self.link.name,
                TransportErrorKind::Broker,
                format!("TIME gave an unexpected reply: {}", describe(&reply)),
            )
        })
    }

    fn store(&mut self, at_ms: u64) -> Result<(), TransportError> {
        self.link
            .query("SET", redis::cmd("SET").arg(&self.key).arg(at_ms))
            .map(|_| ())
    }

    fn requested_at(&mut self) -> Result<Option<u64>, TransportError> {
        let reply = self.link.query("GET", redis::cmd("GET").arg(&self.key))?;
        match reply {
            Value::Nil => Ok(None),
            other => match int(&other).and_then(|n| u64::try_from(n).ok()) {
                Some(at) => Ok(Some(at)),
                None => Err(TransportError::new(
                    &self.link.name,
                    TransportErrorKind::Broker,
                    format!(
                        "key {} holds no time in milliseconds: {}",
                        self.key,
                        describe(&other)
                    ),
                )),
            },
        }
    }
}

/// One connection to Redis, with the reconnect policy that every connection a worker holds
/// shares (its queue's and its restart signal's): a command that fails on the socket (a
/// dropped connection, a server restart, `CLIENT KILL`, a signal interrupting a read) runs
/// once more on a fresh connection. If that fails too, the error goes to the caller, and the
/// next command connects again.
struct Link {
    /// `None` after a connection failed and no new one could be opened.
    conn: Option<Connection>,
    /// For reconnecting; never shown (it may hold a password).
    dsn: String,
    /// What errors name: the DSN without its password.
    name: String,
    /// The socket's read timeout for ordinary replies.
    reply_timeout: Duration,
    /// The socket's read timeout now, raised for a longer `BLOCK`.
    read_timeout: Duration,
}

/// Why a command failed, on a [`Link`] or on the async transport's connections.
pub(crate) enum Failure {
    /// Redis answered with an error, or the socket failed on the second try.
    Redis(redis::RedisError),
    /// The socket failed, and no new connection could be opened.
    Lost(redis::RedisError, TransportError),
    /// There was no connection, and none could be opened.
    Unconnected(TransportError),
}

impl Link {
    fn open(dsn: &str, name: &str, reply_timeout: Duration) -> Result<Self, TransportError> {
        Ok(Link {
            conn: Some(connect(dsn, name, reply_timeout)?),
            dsn: dsn.to_owned(),
            name: name.to_owned(),
            reply_timeout,
            read_timeout: reply_timeout,
        })
    }

    /// The connection, opening one if the last was lost.
    fn conn(&mut self) -> Result<&mut Connection, TransportError> {
        match self.conn {
            Some(ref mut conn) => Ok(conn),
            None => self.reconnect(),
        }
    }

    /// Drops the connection (its replies may still come) and opens a new one.
    fn reconnect(&mut self) -> Result<&mut Connection, TransportError> {
        self.conn = None;
        let conn = connect(&self.dsn, &self.name, self.reply_timeout)?;
        self.read_timeout = self.reply_timeout;
        Ok(self.conn.insert(conn))
    }

    /// Runs `f` on the connection, and once more on a fresh one if the socket failed.
    fn run<T>(
        &mut self,
        f: impl Fn(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        let lost = match self.conn.as_mut() {
            Some(conn) => match f(conn) {
                Ok(v) => return Ok(v),
                // A server that does not answer in time is not a dropped connection: asking
                // again would only wait as long again. The late reply may still come, so
                // the next command opens a new connection.
                Err(e) if e.is_timeout() => {
                    self.conn = None;
                    return Err(Failure::Redis(e));
                }
                Err(e) if e.is_io_error() => Some(e),
                Err(e) => return Err(Failure::Redis(e)),
            },
            None => None,
        };
        let conn = match (self.reconnect(), lost) {
            (Ok(conn), _) => conn,
            (Err(c), Some(e)) => return Err(Failure::Lost(e, c)),
            (Err(c), None) => return Err(Failure::Unconnected(c)),
        };
        f(conn).map_err(|e| {
            if e.is_io_error() {
                self.conn = None;
            }
            Failure::Redis(e)
        })
    }

    fn query(&mut self, command: &str, cmd: &redis::Cmd) -> Result<Value, TransportError> {
        self.run(|c| cmd.query::<Value>(c))
            .map_err(|e| self.failed(command, e))
    }

    fn failed(&self, command: &str, failure: Failure) -> TransportError {
        failed(&self.name, command, failure)
    }

    /// Raises the socket's read timeout when a `BLOCK` would outlast it.
    fn fit_read_timeout(&mut self, block: Duration) -> Result<(), TransportError> {
        let needed = block.saturating_add(self.reply_timeout);
        if needed > self.read_timeout {
            let set = self.conn()?.set_read_timeout(Some(needed));
            set.map_err(|e| self.failed("setting the read timeout", Failure::Redis(e)))?;
            self.read_timeout = needed;
        }
        Ok(())
    }
}

/// The error of `command` of transport `name`: a connection error when the socket failed or
/// timed out (the broker may come back), a broker error when Redis answered with one.
pub(crate) fn failed(name: &str, command: &str, failure: Failure) -> TransportError {
    let doing = format!("{command} failed");
    match failure {
        Failure::Redis(e) => {
            let kind = if e.is_io_error() || e.is_connection_dropped() {
                TransportErrorKind::Connection
            } else {
                TransportErrorKind::Broker
            };
            TransportError::new(name, kind, doing).caused_by(e)
        }
        Failure::Lost(e, c) => TransportError::new(
            name,
            TransportErrorKind::Connection,
            format!("{doing}: {e}; reconnecting failed"),
        )
        .caused_by(c),
        Failure::Unconnected(c) => {
            TransportError::new(name, TransportErrorKind::Connection, doing).caused_by(c)
        }
    }
}

/// Runs a script by its hash, loading it first if this connection has not, or if the server
/// lost it (a restart, `SCRIPT FLUSH`). A socket failure runs it once more on a fresh
/// connection ([`Link`]): every settling script checks that the entry is still ours, so a
/// second run after a first that did happen changes nothing.
fn eval(
    link: &mut Link,
    shas: &mut [Option<String>; Lua::COUNT],
    call: &Call<'_>,
) -> Result<Value, TransportError> {
    let (lua, what) = (call.lua, call.lua.name());
    for _ in 0..EVAL_TRIES {
        let sha = match &shas[lua as usize] {
            Some(sha) => sha.clone(),
            None => {
                let load = lua.load();
                let reply = link
                    .run(|c| load.query::<Value>(c))
                    .map_err(|e| link.failed(&format!("SCRIPT LOAD of {what}"), e))?;
                let sha = lua.loaded(&link.name, &reply)?;
                shas[lua as usize] = Some(sha.clone());
                sha
            }
        };
        let cmd = call.evalsha(&sha);
        match link.run(|c| cmd.query::<Value>(c)) {
            Ok(v) => return Ok(v),
            Err(Failure::Redis(e)) if e.code() == Some("NOSCRIPT") => shas[lua as usize] = None,
            Err(e) => return Err(link.failed(&format!("EVALSHA of {what}"), e)),
        }
    }
    Err(lua.forgotten(&link.name))
}

/// The body of a delayed-set member `<attempt>[c]n:<id>:<body>` marked as waiting for newer
/// code; `None` for any other member.
fn waiting_body(member: &[u8]) -> Option<&[u8]> {
    let a = member.iter().position(|&c| c == b':')?;
    if a == 0 || member[a - 1] != b'n' {
        return None;
    }
    let b = a + 1 + member[a + 1..].iter().position(|&c| c == b':')?;
    Some(&member[b + 1..])
}

/// The statistics field and time of a delivery's count, for the settling scripts; an empty
/// field when the worker set none.
fn count_args(delivery: &Delivery) -> (String, String) {
    match &delivery.counts_as {
        Some(c) => (
            format!("{}\t{}", c.type_name, c.version),
            c.at_ms.to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

/// `n` as a u64, at most `max`: a count or duration as Redis accepts it.
fn saturate<N: TryInto<u64>>(n: N, max: u64) -> u64 {
    n.try_into().map_or(max, |n| n.min(max))
}

/// An entry's `attempt` field: 0 when it is not a decimal count (another producer's entry),
/// `u32::MAX` when it is one past that.
fn attempt_count(value: &[u8]) -> u32 {
    match std::str::from_utf8(value).map(str::trim) {
        Ok(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

/// `at + wait`, or a year on where that would overflow (a wait of `Duration::MAX`).
pub(crate) fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
}

/// The client of a DSN (nothing connects yet).
pub(crate) fn client(dsn: &str, name: &str) -> Result<redis::Client, TransportError> {
    redis::Client::open(dsn)
        .map_err(|e| TransportError::configuration(name, "not a Redis DSN").caused_by(e))
}

/// A connection that could not be opened.
pub(crate) fn connect_failed(name: &str, e: redis::RedisError) -> TransportError {
    TransportError::new(name, TransportErrorKind::Connection, "connecting failed").caused_by(e)
}

/// Connects with a bounded wait, and bounds every reply too.
fn connect(dsn: &str, name: &str, reply_timeout: Duration) -> Result<Connection, TransportError> {
    let conn = client(dsn, name)?
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| connect_failed(name, e))?;
    conn.set_read_timeout(Some(reply_timeout))
        .and_then(|()| conn.set_write_timeout(Some(reply_timeout)))
        .map_err(|e| {
            TransportError::new(
                name,
                TransportErrorKind::Connection,
                "setting socket timeouts failed",
            )
            .caused_by(e)
        })?;
    Ok(conn)
}

/// A reply's text, for ids and hashes.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A reply's integer, whether sent as one or as text.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A reply's bytes, taken without a copy.
fn into_bytes(v: Value) -> Result<Vec<u8>, Value> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(other),
    }
}

/// An array reply (nil is empty).
fn array(v: Value) -> Result<Vec<Value>, Value> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(other),
    }
}

/// Field–value pairs, from a flat array (RESP2) or a map (RESP3).
fn field_pairs(v: Value) -> Result<Fields, Value> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(Value::Array(flat));
            }
            let mut it = flat.into_iter();
            let mut pairs = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Nil => Vec::new(),
        other => return Err(other),
    };
    pairs
        .into_iter()
        .map(|(k, v)| Ok((into_bytes(k)?, into_bytes(v)?)))
        .collect()
}

/// A stream entry's fields and values, in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;
/// A statistics field: type name and version.
type StatKey = (String, u32);

/// A stream entry `[id, fields]`; the fields are `None` when the entry was deleted.
fn parse_entry(entry: Value) -> Result<(String, Option<Fields>), String> {
    let mut parts = match entry {
        Value::Array(parts) if parts.len() == 2 => parts,
        other => return Err(format!("a stream entry {}", describe(&other))),
    };
    let fields = parts.pop().unwrap_or(Value::Nil);
    let id = parts
        .pop()
        .as_ref()
        .and_then(text)
        .ok_or_else(|| "a stream entry without an id".to_owned())?;
    if matches!(fields, Value::Nil) {
        return Ok((id, None));
    }
    let fields =
        field_pairs(fields).map_err(|v| format!("entry {id} has fields {}", describe(&v)))?;
    Ok((id, Some(fields)))
}

/// A reply, shortened for an error message.
fn describe(v: &Value) -> String {
    let mut text = format!("{v:?}");
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_attempt_is_zero_a_huge_one_saturates_and_counts_clamp() {
        assert_eq!(attempt_count(b"3"), 3);
        assert_eq!(attempt_count(b" 7 "), 7);
        for bad in [&b""[..], b"many", b"-1", b"+2", b"1.5", b"\xff"] {
            assert_eq!(attempt_count(bad), 0, "{bad:?}");
        }
        assert_eq!(attempt_count(b"4294967296"), u32::MAX);
        assert_eq!(attempt_count(b"99999999999999999999999"), u32::MAX);
        assert_eq!(saturate(usize::MAX, REDIS_MAX), REDIS_MAX);
        assert_eq!(saturate(u128::MAX, MAX_BLOCK_MS), MAX_BLOCK_MS);
        assert_eq!(saturate(5u128, MAX_BLOCK_MS), 5);
    }

    #[test]
    fn entries_read_in_both_protocols_and_deleted_ones_have_no_fields() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let resp2 = Value::Array(vec![
            bulk(b"1-0"),
            Value::Array(vec![
                bulk(b"body"),
                bulk(b"\0\xff"),
                bulk(b"attempt"),
                bulk(b"2"),
            ]),
        ]);
        let (id, fields) = parse_entry(resp2).unwrap();
        assert_eq!(id, "1-0");
        assert_eq!(
            fields.unwrap(),
            vec![
                (b"body".to_vec(), b"\0\xff".to_vec()),
                (b"attempt".to_vec(), b"2".to_vec())
            ]
        );
        let resp3 = Value::Array(vec![
            bulk(b"2-0"),
            Value::Map(vec![(bulk(b"body"), bulk(b"x"))]),
        ]);
        assert_eq!(parse_entry(resp3).unwrap().1.unwrap().len(), 1);
        assert_eq!(
            parse_entry(Value::Array(vec![bulk(b"3-0"), Value::Nil])).unwrap(),
            ("3-0".to_owned(), None)
        );
        assert!(parse_entry(Value::Int(1)).is_err());
        assert!(parse_entry(Value::Array(vec![
            bulk(b"4-0"),
            Value::Array(vec![bulk(b"odd")])
        ]))
        .is_err());
    }
}
