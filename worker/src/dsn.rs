//! DSNs: the table of schemes, and the one place that turns a DSN into a transport or a
//! restart signal. It sits above the transports, which know nothing of each other.

use std::path::Path;

use crate::restart::{FileSignal, RestartSignal};
use crate::transport::{redact, Access, Transport, TransportError};

/// What a DSN scheme opens, and whether this build can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scheme {
    /// The scheme, before `://`.
    pub name: &'static str,
    /// What it opens, with the DSN's form.
    pub opens: &'static str,
    /// The cargo feature of `upcaster-worker` that brings it; `None`: not supported.
    pub feature: Option<&'static str>,
    /// Whether it serves as a restart signal too.
    pub restart_signal: bool,
    /// Whether this build has it.
    pub available: bool,
}

/// Every scheme a DSN may have. `open` and `open_restart_signal` refuse the others, and an
/// unavailable one, when the DSN is read, never at first use.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        name: "sqlite",
        opens: "the embedded queue: sqlite://<path>[?queue=<name>&reclaim_after=<seconds>]",
        feature: Some("sqlite"),
        restart_signal: false,
        available: cfg!(feature = "sqlite"),
    },
    Scheme {
        name: "redis",
        opens: "Redis Streams: redis://[user:password@]<host>[:<port>][/<db>][?stream=<name>&group=<group>&reclaim_after=<seconds>], or a restart signal: redis://<host>?key=<key>",
        feature: Some("redis"),
        restart_signal: true,
        available: cfg!(feature = "redis"),
    },
    Scheme {
        name: "postgres",
        opens: "a PostgreSQL queue table: postgres://[user[:password]@]<host>[:<port>]/<database>[?queue=<name>&reclaim_after=<seconds>], or a restart signal: postgres://…/<database>?key=<key>",
        feature: Some("postgres"),
        restart_signal: true,
        available: cfg!(feature = "postgres"),
    },
    Scheme {
        name: "postgresql",
        opens: "the same as postgres://",
        feature: Some("postgres"),
        restart_signal: true,
        available: cfg!(feature = "postgres"),
    },
    Scheme {
        name: "nats",
        opens: "a NATS JetStream queue: nats://[user:password@]<host>[:<port>][?queue=<name>&reclaim_after=<seconds>&outage=<seconds>&form=split], or a restart signal: nats://<host>?key=<key>",
        feature: Some("nats"),
        restart_signal: true,
        available: cfg!(feature = "nats"),
    },
    Scheme {
        name: "rediss",
        opens: "Redis over TLS",
        feature: None,
        restart_signal: true,
        available: false,
    },
    Scheme {
        name: "file",
        opens: "a restart signal in a file: file://<absolute path>, or the bare path",
        feature: Some("(none)"),
        restart_signal: true,
        available: true,
    },
];

/// The scheme of `dsn`, if this build can open it; an error that names the feature or the
/// schemes there are otherwise.
fn scheme_of(dsn: &str, for_signal: bool) -> Result<&'static Scheme, TransportError> {
    let name = dsn.split_once("://").map_or("", |(s, _)| s);
    let known: Vec<&str> = SCHEMES
        .iter()
        .filter(|s| s.available && (s.restart_signal || !for_signal))
        .filter(|s| for_signal || s.name != "file")
        .map(|s| s.name)
        .collect();
    let shown = redact(dsn);
    match SCHEMES.iter().find(|s| s.name == name) {
        Some(s) if s.available && (for_signal || s.name != "file") => Ok(s),
        Some(Scheme {
            feature: None,
            opens,
            ..
        }) => Err(TransportError::configuration(
            shown,
            format!(
                "{opens} is not supported yet; use one of: {}",
                known.join(", ")
            ),
        )),
        Some(Scheme {
            feature: Some(feature),
            opens,
            available: false,
            ..
        }) => Err(TransportError::configuration(
            shown,
            format!("{opens} needs upcaster-worker's `{feature}` feature"),
        )),
        _ => Err(TransportError::configuration(
            shown,
            format!("unknown DSN scheme; expected one of: {}", known.join(", ")),
        )),
    }
}

/// Opens a transport from its DSN (see [`SCHEMES`]):
/// - `sqlite://<path>[?queue=<name>&reclaim_after=<seconds>]`, the embedded queue (a file,
///   nothing to run; feature `sqlite`);
/// - `redis://<host>[:<port>][/<db>][?stream=<name>&group=<group>&reclaim_after=<seconds>]`,
///   Redis Streams (feature `redis`);
/// - `postgres://[user[:password]@]<host>[:<port>]/<database>[?queue=<name>&reclaim_after=<seconds>]`,
///   a PostgreSQL table (feature `postgres`);
/// - `nats://[user:password@]<host>[:<port>][?queue=<name>&reclaim_after=<seconds>]`, a NATS
///   JetStream work queue (feature `nats`).
///
/// `queue` names the queue when the DSN does not.
pub fn open(dsn: &str, queue: &str) -> Result<Box<dyn Transport>, TransportError> {
    open_with(dsn, queue, Access::Create)
}

/// Opens a transport as [`open`] does; with [`Access::Existing`] its queue must exist, and
/// nothing is created (for commands that only look).
pub fn open_with(
    dsn: &str,
    queue: &str,
    access: Access,
) -> Result<Box<dyn Transport>, TransportError> {
    let scheme = scheme_of(dsn, false)?;
    match scheme.name {
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Box::new(crate::sqlite::SqliteTransport::open_dsn_with(
            dsn, queue, access,
        )?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(Box::new(crate::redis::RedisTransport::open_dsn_with(
            dsn, queue, access,
        )?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Box::new(
            crate::postgres::PostgresTransport::open_dsn_with(dsn, queue, access)?,
        )),
        #[cfg(feature = "nats")]
        "nats" => Ok(Box::new(crate::nats::NatsTransport::open_dsn_with(
            dsn, queue, access,
        )?)),
        _ => {
            let _ = (queue, access);
            Err(TransportError::configuration(
                redact(dsn),
                "no transport for this scheme",
            ))
        }
    }
}

/// Opens a queue for the async runtime from its DSN (the same DSNs as [`open`]): Redis on
/// async connections, the SQLite and PostgreSQL queues on tokio's blocking threads.
#[cfg(feature = "tokio")]
pub async fn open_async(dsn: &str, queue: &str) -> Result<crate::aio::AnyQueue, TransportError> {
    let scheme = scheme_of(dsn, false)?;
    match scheme.name {
        #[cfg(feature = "redis")]
        "redis" => Ok(crate::aio::AnyQueue::Redis(
            crate::aio::AsyncRedisTransport::open_dsn(dsn, queue).await?,
        )),
        #[cfg(feature = "nats")]
        "nats" => Ok(crate::aio::AnyQueue::Nats(
            crate::aio::AsyncNatsTransport::open_dsn(dsn, queue).await?,
        )),
        _ => {
            let (dsn, queue) = (dsn.to_owned(), queue.to_owned());
            let opened = tokio::task::spawn_blocking(move || open(&dsn, &queue)).await;
            let transport = opened.map_err(|e| {
                TransportError::new(
                    "async open",
                    crate::TransportErrorKind::Storage,
                    format!("opening the queue failed: {e}"),
                )
            })??;
            Ok(crate::aio::AnyQueue::Blocking(crate::aio::Blocking::new(
                transport,
            )))
        }
    }
}

/// Opens a restart signal from its DSN: a file path (`file://<path>` or a bare absolute
/// path), `redis://<host>[:<port>][/<db>]?key=<key>` (feature `redis`), or
/// `postgres://…/<database>?key=<key>` (feature `postgres`), or
/// `nats://<host>[:<port>]?key=<key>` (feature `nats`).
pub fn open_restart_signal(dsn: &str) -> Result<Box<dyn RestartSignal>, TransportError> {
    if !dsn.contains("://") || dsn.starts_with("file://") {
        let path = dsn.strip_prefix("file://").unwrap_or(dsn);
        if path.is_empty() {
            return Err(TransportError::configuration(
                format!("restart signal {dsn}"),
                "expected an absolute file path (or file://<path>) or redis://<host>?key=<key>",
            ));
        }
        // A relative path moves with the working directory, as a release directory does on
        // deploy, and the old workers would never see the request.
        if !Path::new(path).is_absolute() {
            return Err(TransportError::configuration(
                format!("restart signal {dsn}"),
                "give an absolute path, the same for every release",
            ));
        }
        return Ok(Box::new(FileSignal::new(path)));
    }
    let scheme = scheme_of(dsn, true).map_err(|e| {
        TransportError::new(
            format!("restart signal {}", e.transport),
            e.kind,
            format!(
                "{} (a restart signal is a file path, file://<path>, redis://<host>?key=<key>, postgres://…?key=<key> or nats://<host>?key=<key>)",
                e.problem
            ),
        )
    })?;
    match scheme.name {
        #[cfg(feature = "redis")]
        "redis" => Ok(Box::new(crate::redis::RedisSignal::open_dsn(dsn)?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Box::new(crate::postgres::PostgresSignal::open_dsn(dsn)?)),
        #[cfg(feature = "nats")]
        "nats" => Ok(Box::new(crate::nats::NatsSignal::open_dsn(dsn)?)),
        _ => Err(TransportError::configuration(
            format!("restart signal {}", redact(dsn)),
            "expected an absolute file path (or file://<path>) or redis://<host>?key=<key>",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_schemes_are_refused_when_the_dsn_is_read() {
        let e = open("amqp://guest:secret@localhost", "q").err().unwrap();
        assert!(e.to_string().contains("unknown DSN scheme"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = open("rediss://localhost:6380", "q").err().unwrap();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        let e = open_restart_signal("rediss://localhost?key=k")
            .err()
            .unwrap();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        let e = open("file:///tmp/q", "q").err().unwrap();
        assert!(e.to_string().contains("unknown DSN scheme"), "{e}");
        let e = open_restart_signal("sqlite:///tmp/restart").err().unwrap();
        assert!(e.to_string().contains("restart signal"), "{e}");
        #[cfg(not(feature = "redis"))]
        {
            let e = open("redis://localhost", "q").err().unwrap();
            assert!(e.to_string().contains("`redis` feature"), "{e}");
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let e = open("sqlite:///tmp/q.db", "q").err().unwrap();
            assert!(e.to_string().contains("`sqlite` feature"), "{e}");
        }
    }

    #[test]
    fn passwords_never_reach_an_error() {
        assert_eq!(redact("redis://u:p@h:1/0?k=v"), "redis://u@h:1/0?k=v");
        assert_eq!(redact("redis://:p@h"), "redis://@h");
        assert_eq!(redact("redis://h"), "redis://h");
    }
}
