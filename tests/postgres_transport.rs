//! The PostgreSQL transport against a real server: the transport contract in both runtimes,
//! the restart signal contract, a kill mid-message, and commands that only look.
//!
//! They need PostgreSQL at `UPCASTER_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`): `.ci/postgres` starts one. Without it they
//! fail, never skip. Each test works on a queue (or restart key) of its own and deletes its
//! rows.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use upcaster_worker::prelude::*;
use upcaster_worker::{Access, PostgresSignal, PostgresTransport, TransportErrorKind};

/// The server's URL, or a failure saying how to start one.
fn postgres_url() -> String {
    let url = std::env::var("UPCASTER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if let Err(e) = postgres::Client::connect(&url, postgres::NoTls) {
        panic!(
            "cannot reach PostgreSQL at {url} ({e}): these tests need a server; run .ci/postgres \
             to start one on 127.0.0.1:5432, or set UPCASTER_POSTGRES_URL"
        );
    }
    url
}

/// A queue of one test; its rows go when it is dropped.
struct TestQueue {
    url: String,
    name: String,
}

impl TestQueue {
    fn new(test: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestQueue {
            url: postgres_url(),
            name: format!("{test}-{}-{nanos}", std::process::id()),
        }
    }

    fn dsn(&self) -> String {
        format!("{}?queue={}", self.url, self.name)
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            for table in ["upcaster_messages", "upcaster_failed", "upcaster_stats"] {
                let _ = client.execute(
                    &format!("DELETE FROM {table} WHERE queue = $1"),
                    &[&self.name],
                );
            }
            let _ = client.execute("DELETE FROM upcaster_restart WHERE key = $1", &[&self.name]);
        }
    }
}

fn contract_fixture(name: &str) -> common::contract::Fixture {
    let queue = TestQueue::new(name);
    let dsn = queue.dsn();
    let again = dsn.clone();
    common::contract::Fixture::blocking(
        dsn,
        move || {
            let transport = PostgresTransport::open_dsn(&again, "unused").unwrap();
            Box::new(transport.reclaim_after(common::contract::RECLAIM_AFTER))
        },
        queue,
    )
}

common::contract::transport_contract!(contract_fixture);

#[test]
fn the_postgres_restart_signal_keeps_the_restart_signal_contract() {
    let queue = TestQueue::new("signal");
    let mut signal =
        PostgresSignal::open_dsn(&format!("{}?key={}", queue.url, queue.name)).unwrap();
    common::contract::restart_signal(&mut signal);
}

#[test]
fn a_restart_signal_without_a_key_is_refused() {
    let e = PostgresSignal::open_dsn(&postgres_url()).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
    assert!(e.to_string().contains("?key="), "{e}");
}

#[test]
fn commands_that_only_look_refuse_a_database_without_the_tables_and_create_none() {
    let url = postgres_url();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let database = format!("upcaster_empty_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .unwrap();
    let other = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => panic!("{url} names no database"),
    };
    let other = other.as_str();
    let e = PostgresTransport::open_dsn_with(other, "q", Access::Existing).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
    assert!(e.to_string().contains("creates none"), "{e}");
    let mut look = postgres::Client::connect(other, postgres::NoTls).unwrap();
    let tables: i64 = look
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'upcaster%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a read-only open created tables");
    drop(look);
    // Opening to consume sets the tables up; then the look finds them.
    PostgresTransport::open_dsn(other, "q").unwrap();
    PostgresTransport::open_dsn_with(other, "q", Access::Existing).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn unknown_parameters_are_refused_and_the_password_never_shown() {
    let url = postgres_url();
    let e = PostgresTransport::open_dsn(&format!("{url}?queue=a&qeue=b"), "q").unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Configuration);
    assert!(e.to_string().contains("unknown parameter `qeue`"), "{e}");
    let e =
        PostgresTransport::open_dsn("postgres://app:s3cr%23t@127.0.0.1:1/test", "q").unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Connection);
    assert!(!format!("{e} {e:?}").contains("s3cr"), "{e:?}");
}

#[test]
fn a_message_sent_while_a_consumer_waits_is_received_in_that_wait() {
    let queue = TestQueue::new("notify");
    let mut consumer = PostgresTransport::open_dsn(&queue.dsn(), "q").unwrap();
    let dsn = queue.dsn();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        PostgresTransport::open_dsn(&dsn, "q")
            .unwrap()
            .send(b"wake")
            .unwrap();
    });
    let got = consumer
        .receive(std::time::Duration::from_secs(30))
        .unwrap();
    sender.join().unwrap();
    assert_eq!(got.map(|d| d.body), Some(b"wake".to_vec()));
}

#[test]
fn errors_carry_the_server_s_own_message() {
    let url = postgres_url();
    let missing = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/upcaster_no_such_database"),
        None => panic!("{url} names no database"),
    };
    let e = PostgresTransport::open_dsn(&missing, "q").unwrap_err();
    assert!(
        e.to_string()
            .contains("upcaster_no_such_database\" does not exist"),
        "{e}"
    );
}

#[test]
fn a_row_delivered_as_often_as_an_integer_holds_is_still_delivered() {
    let queue = TestQueue::new("deliveries");
    let mut t = PostgresTransport::open_dsn(&queue.dsn(), "q").unwrap();
    let id = t.send(b"{}").unwrap();
    let mut client = postgres::Client::connect(&queue.url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE upcaster_messages SET deliveries = 2147483647 WHERE id = $1",
            &[&id.parse::<i64>().unwrap()],
        )
        .unwrap();
    let d = t
        .receive(std::time::Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(d.deliveries, i32::MAX as u32);
}

#[test]
fn a_role_without_create_rights_runs_workers_once_the_schema_is_set_up() {
    let url = postgres_url();
    let queue = TestQueue::new("least-privilege");
    // The owner applies the schema.
    PostgresTransport::open_dsn(&queue.dsn(), "q").unwrap();
    let role = format!("upcaster_worker_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN;
             REVOKE CREATE ON SCHEMA public FROM {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON upcaster_schema, upcaster_messages,
                 upcaster_failed, upcaster_stats, upcaster_restart TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .unwrap();
    let as_role = queue
        .dsn()
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let outcome = PostgresTransport::open_dsn(&as_role, "q").and_then(|mut t| {
        t.send(b"x")?;
        t.receive(std::time::Duration::from_secs(5))
    });
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};
             REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role};
             DROP ROLE {role};"
        ))
        .unwrap();
    let got = outcome.unwrap();
    assert_eq!(got.map(|d| d.body), Some(b"x".to_vec()));
}
