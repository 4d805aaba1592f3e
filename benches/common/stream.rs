//! What the Redis benchmarks share: the keys of a bench stream, its entries, its replies.

use redis::Value;

/// The consumer group every bench loop reads in.
pub const GROUP: &str = "upcaster";

/// The stream and every key the transport keeps beside it.
pub fn keys(stream: &str) -> Vec<String> {
    let mut keys = vec![stream.to_owned()];
    keys.extend(
        ["delayed", "failed", "stats", "stats:last-seen"]
            .iter()
            .map(|suffix| format!("{{{stream}}}:{suffix}")),
    );
    keys
}

/// `batch` entries of `body` in the transport's entry format, in one pipeline.
pub fn entries(stream: &str, body: &[u8], batch: usize) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for _ in 0..batch {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("body")
            .arg(body)
            .arg("attempt")
            .arg("0")
            .ignore();
    }
    pipe
}

/// The bare loop's read: one new entry, waiting up to a second.
pub fn read_one(stream: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg("bare")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// The bare loop's settle: `XACK` and `XDEL` in one pipeline.
pub fn settle(stream: &str, id: &[u8]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(id)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(id)
        .ignore();
    pipe
}

/// `[[stream, [[id, [field, value, …]]]]]` → the id and the `body` field.
pub fn first_entry(reply: Value) -> Option<(Vec<u8>, Vec<u8>)> {
    let Value::Array(streams) = reply else {
        return None;
    };
    let Value::Array(mut pair) = streams.into_iter().next()? else {
        return None;
    };
    let Value::Array(entries) = pair.pop()? else {
        return None;
    };
    let Value::Array(mut entry) = entries.into_iter().next()? else {
        return None;
    };
    let Value::Array(fields) = entry.pop()? else {
        return None;
    };
    let Value::BulkString(id) = entry.pop()? else {
        return None;
    };
    let mut fields = fields.into_iter();
    while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
        (fields.next(), fields.next())
    {
        if name == b"body" {
            return Some((id, value));
        }
    }
    None
}
