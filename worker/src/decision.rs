//! What happens to a delivery, decided without I/O: decode → handler outcome → ack, retry
//! with backoff and jitter, requeue for newer code, fail with a record, or abandon a poison
//! message. Every runtime calls these functions and only performs the [`Action`] they return,
//! so retry, requeue and failure behave the same by construction.

use std::time::Duration;

use upcaster::{Disposition, Error, ErrorKind};

use crate::transport::{Delivery, FailureRecord};
use crate::RetryPolicy;

/// What became of a delivery once the worker tried it.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// It decoded and its handler ran.
    Handled {
        /// The current type name.
        type_name: &'static str,
        /// The version it arrived in.
        version: u32,
        /// The handler's error (or panic), if it failed.
        error: Option<String>,
    },
    /// It did not decode.
    Undecodable(&'a Error),
    /// Decoding it panicked (an upcaster or a `Deserialize` impl).
    DecodePanicked {
        /// The panic's message.
        message: String,
        /// The type and version, as far as the envelope could be read.
        header: Option<(String, u32)>,
    },
}

/// What the worker does with a delivery.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// It is done: ack it.
    Ack,
    /// A failed attempt: deliver it again after `delay`, as attempt `attempt`.
    Retry {
        /// The backoff, jitter applied.
        delay: Duration,
        /// The attempt count the message carries from now on.
        attempt: u32,
        /// Why the attempt failed.
        error: String,
    },
    /// A message of a newer version: put it back after `delay`, spending no attempt, for a
    /// worker with newer code.
    Requeue {
        /// The wait before it is offered again.
        delay: Duration,
        /// The error that names the versions.
        error: String,
    },
    /// Move it, with its bytes and this record, to the failure transport.
    Fail(FailureRecord),
}

impl Action {
    /// Whether the action ends a run of successes (for the consecutive-failure limit).
    /// A requeue for newer code is no failure of this worker's.
    pub fn is_failure(&self) -> bool {
        matches!(self, Action::Retry { .. } | Action::Fail(_))
    }
}

/// A message delivered more often than it may be retried without ever being settled: every
/// worker that took it stopped while handling it (a crash, a kill, an abort). Handing it out
/// again would only stop the next one, so it fails without being decoded.
/// `header`: its type and version, if the envelope can be read.
pub fn abandoned(
    delivery: &Delivery,
    policy: &RetryPolicy,
    header: impl FnOnce() -> Option<(String, u32)>,
    now_ms: u64,
) -> Option<Action> {
    if delivery.deliveries <= policy.max_retries.saturating_add(1) {
        return None;
    }
    let error = format!(
        "delivered {} times without being settled: each worker that took it stopped while handling it",
        delivery.deliveries
    );
    Some(Action::Fail(record(
        "abandoned",
        error,
        header(),
        delivery,
        now_ms,
    )))
}

/// The action for a delivery that was tried. `jitter` is a number drawn uniformly from
/// [0, 1): the only randomness, passed in so that the decision is a function.
pub fn decide(
    delivery: &Delivery,
    outcome: Outcome<'_>,
    policy: &RetryPolicy,
    jitter: f64,
    now_ms: u64,
) -> Action {
    let (class, error, header, retryable) = match outcome {
        Outcome::Handled { error: None, .. } => return Action::Ack,
        Outcome::Handled {
            type_name,
            version,
            error: Some(error),
        } => (
            "handler",
            format!("handler of {type_name} (arrived as v{version}) failed: {error}"),
            Some((type_name.to_owned(), version)),
            true,
        ),
        Outcome::Undecodable(e) => {
            let header = e.header().type_name.clone().zip(e.header().version);
            match e.disposition() {
                Disposition::Requeue => {
                    return Action::Requeue {
                        delay: policy.future_version_delay,
                        error: e.to_string(),
                    }
                }
                disposition => (
                    class_of(e.kind()),
                    e.to_string(),
                    header,
                    disposition == Disposition::Retry,
                ),
            }
        }
        Outcome::DecodePanicked { message, header } => (
            "decode-panicked",
            format!("decoding panicked: {message}"),
            header,
            false,
        ),
    };
    if retryable && delivery.attempt < policy.max_retries {
        return Action::Retry {
            delay: policy.jittered(delivery.attempt, jitter),
            attempt: delivery.attempt.saturating_add(1),
            error,
        };
    }
    Action::Fail(record(class, error, header, delivery, now_ms))
}

/// Whether a delivery that decoded counts in the drain statistics: each message once, the
/// first time it decodes and settles, never again after a retry, the failure transport and
/// `failed retry` (the transport keeps [`Delivery::counted`]). A count is written with the
/// settle, so a redelivery after a crash counts: the delivery that crashed never settled,
/// and its count never landed.
pub fn counts(delivery: &Delivery) -> bool {
    !delivery.counted
}

fn record(
    class: &str,
    error: String,
    header: Option<(String, u32)>,
    delivery: &Delivery,
    now_ms: u64,
) -> FailureRecord {
    let mut record = FailureRecord::new(class, error)
        .attempts(delivery.attempt.saturating_add(1))
        .failed_at_ms(now_ms);
    if let Some((type_name, version)) = header {
        record = record.message(type_name, version);
    }
    record
}

/// The failure class stored with a message that could not be decoded.
fn class_of(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Malformed { .. } => "malformed",
        ErrorKind::UnknownType { .. } => "unknown-type",
        ErrorKind::UnexpectedType { .. } => "unexpected-type",
        ErrorKind::NotCurrent { .. } => "not-current",
        ErrorKind::FutureVersion { .. } => "future-version",
        ErrorKind::MissingUpcaster { .. } => "missing-upcaster",
        ErrorKind::UpcastFailed { .. } => "upcast-failed",
        ErrorKind::PayloadInvalid { .. } => "payload-invalid",
        ErrorKind::Unhandled { .. } => "unhandled",
        _ => "undecodable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use upcaster::Registry;

    #[derive(Serialize, Deserialize, upcaster::Message)]
    #[message(name = "Ping", version = 2)]
    struct Ping {
        n: u32,
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .max_retries(2)
            .delay(Duration::from_secs(1))
            .multiplier(2.0)
            .max_delay(Duration::from_secs(60))
            .jitter(0.5)
            .future_version_delay(Duration::from_secs(30))
    }

    fn delivery(attempt: u32, deliveries: u32) -> Delivery {
        Delivery {
            id: "1".to_owned(),
            body: Vec::new(),
            attempt,
            reclaimed: deliveries > 1,
            deliveries,
            counted: false,
            counts_as: None,
        }
    }

    fn error(bytes: &[u8]) -> Error {
        let registry = Registry::builder().register::<Ping>().build().unwrap();
        match registry.decode::<Ping>(bytes) {
            Err(e) => e,
            Ok(_) => panic!("{} decoded", String::from_utf8_lossy(bytes)),
        }
    }

    fn failed(action: Action) -> FailureRecord {
        match action {
            Action::Fail(record) => record,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_handled_message_is_acked() {
        let outcome = Outcome::Handled {
            type_name: "Ping",
            version: 1,
            error: None,
        };
        assert_eq!(
            decide(&delivery(0, 1), outcome, &policy(), 0.5, NOW),
            Action::Ack
        );
    }

    #[test]
    fn a_failing_handler_is_retried_with_growing_jittered_backoff_then_failed() {
        let outcome = || Outcome::Handled {
            type_name: "Ping",
            version: 1,
            error: Some("disk full".to_owned()),
        };
        // attempt 0 → 1 s, attempt 1 → 2 s; jitter 0 is the band's bottom, 1 its top.
        for (attempt, base) in [(0u32, 1.0f64), (1, 2.0)] {
            for (u, factor) in [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5)] {
                match decide(&delivery(attempt, 1), outcome(), &policy(), u, NOW) {
                    Action::Retry {
                        delay,
                        attempt: next,
                        error,
                    } => {
                        assert_eq!(next, attempt + 1);
                        assert!(
                            (delay.as_secs_f64() - base * factor).abs() < 1e-9,
                            "{delay:?}"
                        );
                        assert_eq!(error, "handler of Ping (arrived as v1) failed: disk full");
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let record = failed(decide(&delivery(2, 1), outcome(), &policy(), 0.5, NOW));
        assert_eq!(record.class, "handler");
        assert_eq!(
            (record.type_name.as_deref(), record.version),
            (Some("Ping"), Some(1))
        );
        assert_eq!((record.attempts, record.failed_at_ms), (3, NOW));
        assert!(record.error.contains("disk full"));
    }

    #[test]
    fn backoff_never_passes_max_delay() {
        let p = policy().max_delay(Duration::from_secs(3));
        let outcome = Outcome::Handled {
            type_name: "Ping",
            version: 2,
            error: Some("x".to_owned()),
        };
        let p = p.max_retries(100);
        match decide(&delivery(50, 1), outcome, &p, 1.0, NOW) {
            Action::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_newer_version_is_requeued_without_spending_an_attempt() {
        let e = error(br#"{"type":"Ping","version":3,"payload":{"n":1}}"#);
        // However many attempts it has: a newer worker, not a retry, settles it.
        for attempt in [0, 2, 5] {
            match decide(
                &delivery(attempt, 1),
                Outcome::Undecodable(&e),
                &policy(),
                0.5,
                NOW,
            ) {
                Action::Requeue { delay, error } => {
                    assert_eq!(delay, Duration::from_secs(30));
                    assert!(error.contains("v3"), "{error}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!Action::Requeue {
            delay: Duration::ZERO,
            error: String::new()
        }
        .is_failure());
    }

    #[test]
    fn an_unknown_type_is_retried_then_failed() {
        let e = error(br#"{"type":"Pong","version":1,"payload":{}}"#);
        assert!(matches!(
            decide(
                &delivery(0, 1),
                Outcome::Undecodable(&e),
                &policy(),
                0.5,
                NOW
            ),
            Action::Retry { attempt: 1, .. }
        ));
        let record = failed(decide(
            &delivery(2, 1),
            Outcome::Undecodable(&e),
            &policy(),
            0.5,
            NOW,
        ));
        assert_eq!(record.class, "unknown-type");
        assert_eq!(
            (record.type_name.as_deref(), record.version),
            (Some("Pong"), Some(1))
        );
    }

    #[test]
    fn an_undecodable_message_fails_at_once_with_its_class_and_header() {
        type Case<'a> = (&'a [u8], &'a str, Option<(&'a str, u32)>);
        let cases: [Case; 3] = [
            (b"{\"type\":\"Ping\",", "malformed", None),
            (
                br#"{"type":"Ping","version":2,"payload":{"n":"x"}}"#,
                "payload-invalid",
                Some(("Ping", 2)),
            ),
            (
                br#"{"type":"Ping","version":1,"payload":{"n":1}}"#,
                "missing-upcaster",
                Some(("Ping", 1)),
            ),
        ];
        for (bytes, class, header) in cases {
            let e = error(bytes);
            let record = failed(decide(
                &delivery(0, 1),
                Outcome::Undecodable(&e),
                &policy(),
                0.5,
                NOW,
            ));
            assert_eq!(record.class, class, "{e}");
            assert_eq!(
                record.type_name.as_deref().zip(record.version),
                header,
                "{e}"
            );
            assert_eq!(record.attempts, 1);
            assert_eq!(record.error, e.to_string());
        }
    }

    #[test]
    fn a_panic_while_decoding_fails_the_message() {
        let outcome = Outcome::DecodePanicked {
            message: "index out of bounds".to_owned(),
            header: Some(("Ping".to_owned(), 1)),
        };
        let record = failed(decide(&delivery(0, 1), outcome, &policy(), 0.5, NOW));
        assert_eq!(record.class, "decode-panicked");
        assert_eq!(record.error, "decoding panicked: index out of bounds");
        assert_eq!(record.version, Some(1));
    }

    #[test]
    fn a_message_that_keeps_stopping_its_workers_is_abandoned_before_it_is_decoded() {
        let p = policy(); // 2 retries: 3 deliveries allowed
        let never = || -> Option<(String, u32)> { panic!("no header needed") };
        assert_eq!(abandoned(&delivery(0, 3), &p, never, NOW), None);
        let action = abandoned(&delivery(1, 4), &p, || Some(("Ping".to_owned(), 2)), NOW);
        let record = failed(action.expect("abandoned"));
        assert_eq!(record.class, "abandoned");
        assert_eq!((record.attempts, record.version), (2, Some(2)));
        assert!(
            record.error.contains("delivered 4 times"),
            "{}",
            record.error
        );
    }

    #[test]
    fn each_message_counts_once_in_the_drain_statistics() {
        assert!(counts(&delivery(0, 1)));
        assert!(
            counts(&delivery(0, 0)),
            "a transport that does not count deliveries"
        );
        assert!(
            counts(&delivery(2, 1)),
            "first decoded on a retry (an unknown type that newer code knows)"
        );
        assert!(
            counts(&delivery(0, 2)),
            "a redelivery after a crash: the first delivery's count never landed"
        );
        let counted = Delivery {
            counted: true,
            ..delivery(0, 1)
        };
        assert!(
            !counts(&counted),
            "counted before: a retry, or after `failed retry`"
        );
    }
}
