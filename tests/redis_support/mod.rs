//! What the Redis test files share: the server's URL (or a failure saying how to start one),
//! a stream of one test whose keys go with it, a plain connection.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use upcaster_worker::RedisTransport;

/// The Redis server at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`); a test without
/// one fails, never skips.
pub fn redis_url() -> String {
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let reached = redis::Client::open(url.as_str()).and_then(|c| {
        let mut conn = c.get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("PING").query::<String>(&mut conn)
    });
    if let Err(e) = reached {
        panic!(
            "cannot reach Redis at {url} ({e}): these tests need a Redis server; \
             run .ci/redis to start one on 127.0.0.1:6379, or set UPCASTER_REDIS_URL"
        );
    }
    url
}

/// A DSN: the server's URL with `params` added to its query.
pub fn dsn(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A stream of one test, its keys deleted when it goes out of scope (a failing test too).
pub struct Stream {
    pub url: String,
    pub name: String,
}

impl Stream {
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Stream {
            url: redis_url(),
            name: format!(
                "upcaster-test:{}-{}-{nanos:08x}:{test}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    pub fn dsn(&self) -> String {
        dsn(&self.url, &format!("stream={}", self.name))
    }

    /// A blocking transport on the stream.
    pub fn open(&self) -> RedisTransport {
        RedisTransport::open_dsn(&self.dsn(), "unused").unwrap_or_else(|e| {
            panic!("{e} (is Redis running? .ci/redis starts one)");
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let n = &self.name;
        let keys = [
            n.clone(),
            format!("{{{n}}}:delayed"),
            format!("{{{n}}}:failed"),
            format!("{{{n}}}:stats"),
            format!("{{{n}}}:stats:last-seen"),
        ];
        if let Ok(mut conn) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        {
            let _ = redis::cmd("DEL").arg(&keys).exec(&mut conn);
        }
    }
}

/// A plain connection, for what the transports do not expose.
pub fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("a Redis connection")
}
