//! What both runtimes do around the decision core: the steps of one message, the stop
//! conditions checked between messages, and the tally of a run. Nothing here awaits or
//! blocks on a transport; each runtime does only the I/O these steps ask for.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use upcaster::Error;

use crate::decision::{self, Action, Outcome};
use crate::restart::{self, Reading, Verdict};
use crate::transport::{Delivery, StatCount};
use crate::{clock, panic_message, HandlerError, Limits, Report, RetryPolicy, StopReason};

/// How often an unreadable restart signal is read again, at most.
const FAILING_SIGNAL_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the resident set size is read, at most.
const MEMORY_CHECK_EVERY: Duration = Duration::from_millis(100);

/// A delivery after its first step: settled at once, or decoded with its handler run (sync)
/// or ready to run (async, `H` is the handler's future).
pub(crate) enum Started<H> {
    Settle(Action),
    Run {
        type_name: &'static str,
        version: u32,
        handler: H,
    },
}

/// Abandons a poison message, or decodes the delivery through `dispatch` (which runs or
/// starts the handler). A decode that panics is a failed message, not a dead worker. The
/// delivery's first decode is marked to count, in the same write as whatever settles it.
pub(crate) fn start<H>(
    delivery: &mut Delivery,
    retry: &RetryPolicy,
    dispatch: impl FnOnce(&[u8]) -> Result<(&'static str, u32, H), Error>,
) -> Started<H> {
    let body = &delivery.body;
    let header = || {
        upcaster::peek(body)
            .ok()
            .map(|h| (h.type_name.into_owned(), h.version))
    };
    if let Some(action) = decision::abandoned(delivery, retry, header, clock::now_ms()) {
        return Started::Settle(action);
    }
    let outcome = match catch_unwind(AssertUnwindSafe(|| dispatch(body))) {
        Ok(Ok((type_name, version, handler))) => {
            if decision::counts(delivery) {
                delivery.counts_as = Some(StatCount {
                    type_name,
                    version,
                    at_ms: clock::now_ms(),
                });
                delivery.counted = true;
            }
            return Started::Run {
                type_name,
                version,
                handler,
            };
        }
        Ok(Err(e)) => decide(delivery, Outcome::Undecodable(&e), retry),
        Err(panic) => decide(
            delivery,
            Outcome::DecodePanicked {
                message: panic_message(&*panic).to_owned(),
                header: header(),
            },
            retry,
        ),
    };
    Started::Settle(outcome)
}

/// The action once the handler of a decoded delivery returned `result`.
pub(crate) fn finish(
    delivery: &Delivery,
    type_name: &'static str,
    version: u32,
    result: &Result<(), HandlerError>,
    retry: &RetryPolicy,
) -> Action {
    let outcome = Outcome::Handled {
        type_name,
        version,
        error: result.as_ref().err().map(ToString::to_string),
    };
    decide(delivery, outcome, retry)
}

fn decide(delivery: &Delivery, outcome: Outcome<'_>, retry: &RetryPolicy) -> Action {
    decision::decide(delivery, outcome, retry, fastrand::f64(), clock::now_ms())
}

/// What settling one delivery did, for the tally.
#[derive(Debug)]
pub(crate) enum Settled {
    Handled,
    Retried,
    Requeued,
    /// Moved to the failure store, with this id there.
    Failed(String),
    /// Another consumer had taken it over: it settles it.
    TakenOver,
}

/// A run's tally and its stop conditions, checked between messages.
pub(crate) struct Run {
    pub(crate) report: Report,
    consecutive_failures: u32,
    /// Decode counts of the whole run, by type and version.
    decoded: BTreeMap<(&'static str, u32), u64>,
    limits: Limits,
    started: Instant,
    last_memory_check: Option<Instant>,
    last_restart_check: Option<Instant>,
    watch: restart::Watch,
}

impl Run {
    /// A run starting now, for code that started at `code_started`.
    pub(crate) fn new(limits: Limits, code_started: Instant, outage_limit: Duration) -> Self {
        Run {
            report: Report {
                reason: StopReason::Empty,
                received: 0,
                handled: 0,
                retried: 0,
                requeued: 0,
                failed: 0,
                decoded: BTreeMap::new(),
                elapsed: Duration::ZERO,
            },
            consecutive_failures: 0,
            decoded: BTreeMap::new(),
            limits,
            started: Instant::now(),
            last_memory_check: None,
            last_restart_check: None,
            watch: restart::Watch::new(code_started, outage_limit),
        }
    }

    /// The longest wait for a message that keeps the time limit.
    pub(crate) fn wait(&self, poll: Duration) -> Duration {
        match self.limits.time {
            Some(limit) => poll.min(limit.saturating_sub(self.started.elapsed())),
            None => poll,
        }
    }

    pub(crate) fn stop_when_empty(&self) -> bool {
        self.limits.stop_when_empty
    }

    /// A delivery was taken, decoded and counted as `counts_as` says.
    pub(crate) fn received(&mut self, counts_as: Option<&StatCount>) {
        self.report.received += 1;
        if let Some(c) = counts_as {
            *self.decoded.entry((c.type_name, c.version)).or_insert(0) += 1;
        }
    }

    /// A delivery was decoded for the first time after it was received (the async runtime
    /// decodes in the message's task).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn counted(&mut self, counts_as: &StatCount) {
        *self
            .decoded
            .entry((counts_as.type_name, counts_as.version))
            .or_insert(0) += 1;
    }

    /// A delivery was settled by `action`, as `settled` says.
    pub(crate) fn settled(&mut self, failure: bool, settled: &Settled) {
        if failure {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        } else if matches!(settled, Settled::Handled) {
            self.consecutive_failures = 0;
        }
        match settled {
            Settled::Handled => self.report.handled += 1,
            Settled::Retried => self.report.retried += 1,
            Settled::Requeued => self.report.requeued += 1,
            Settled::Failed(_) => self.report.failed += 1,
            Settled::TakenOver => {}
        }
    }

    /// The stop conditions that need no restart signal: the stop flag, the message count,
    /// consecutive failures, the time and the memory limits.
    pub(crate) fn limit_reached(&mut self, stop_flag: bool) -> Option<StopReason> {
        if stop_flag {
            return Some(StopReason::Signal);
        }
        if let Some(n) = self.limits.messages.filter(|&n| self.report.received >= n) {
            return Some(StopReason::MessageLimit(n));
        }
        if let Some(n) = self
            .limits
            .failures
            .filter(|&n| self.consecutive_failures >= n)
        {
            return Some(StopReason::FailureLimit(n));
        }
        if let Some(limit) = self.limits.time.filter(|&t| self.started.elapsed() >= t) {
            return Some(StopReason::TimeLimit(limit));
        }
        // /proc costs a few microseconds: not before every message.
        if let Some(limit) = self.limits.memory {
            if self
                .last_memory_check
                .is_none_or(|at| at.elapsed() >= MEMORY_CHECK_EVERY)
            {
                self.last_memory_check = Some(Instant::now());
                match crate::resident_set_size() {
                    Some(rss) if rss > limit => {
                        return Some(StopReason::MemoryLimit { rss, limit })
                    }
                    Some(_) => {}
                    None => {
                        return Some(StopReason::TransportFailed(
                            "the memory limit needs /proc/self/status (Linux)".to_owned(),
                        ))
                    }
                }
            }
        }
        None
    }

    /// Whether the restart signal is due for a read (`Some`: read it, with the store's clock
    /// if the flag says so), given how often the signal asks to be read.
    pub(crate) fn signal_due(&mut self, interval: Duration) -> Option<bool> {
        let every = match self.watch.failing() {
            true => interval.max(FAILING_SIGNAL_CHECK_EVERY),
            false => interval,
        };
        if self
            .last_restart_check
            .is_some_and(|at| at.elapsed() < every)
        {
            return None;
        }
        self.last_restart_check = Some(Instant::now());
        Some(self.watch.needs_clock())
    }

    /// What a read of the restart signal means: stop, go on, or go on with a warning.
    pub(crate) fn signal_read(
        &mut self,
        reading: Result<Reading, String>,
    ) -> Result<Option<String>, StopReason> {
        match self.watch.observe(reading, Instant::now()) {
            Verdict::Continue(warning) => Ok(warning),
            Verdict::Restart { at_ms } => Err(StopReason::RestartRequested { at_ms }),
            Verdict::Lost {
                problem,
                unreadable_for,
            } => Err(StopReason::RestartSignalLost {
                problem,
                unreadable_for,
            }),
        }
    }

    /// The report, with why the run stopped.
    pub(crate) fn finish(mut self, reason: StopReason) -> Report {
        self.report.reason = reason;
        self.report.decoded = std::mem::take(&mut self.decoded)
            .into_iter()
            .map(|((name, version), n)| ((name.to_owned(), version), n))
            .collect();
        self.report.elapsed = self.started.elapsed();
        self.report
    }
}

/// One read of the restart signal, with the store's clock when the watch needs it.
pub(crate) fn read_signal(
    signal: &mut dyn crate::RestartSignal,
    with_clock: bool,
) -> Result<Reading, String> {
    let store_now = match with_clock {
        true => Some(signal.now().map_err(|e| e.to_string())?),
        false => None,
    };
    Ok(Reading {
        requested_at: signal.requested_at().map_err(|e| e.to_string())?,
        store_now,
    })
}

/// The `message` span of one delivery; the handler fills in what only the envelope knows.
pub(crate) fn span(transport: &str, delivery: &Delivery) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "message",
        transport = transport,
        id = %delivery.id,
        attempt = delivery.attempt,
        r#type = Empty,
        version = Empty,
        message_id = Empty,
        correlation_id = Empty,
    )
}

/// Records a decoded message's type, version and ids in the current span.
pub(crate) fn record_in_span(type_name: &str, header: &upcaster::Header<'_>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("type", type_name);
    span.record("version", header.version);
    let headers = &header.headers;
    if let Some(id) = headers.get(upcaster::Headers::MESSAGE_ID) {
        span.record("message_id", id);
    }
    if let Some(id) = headers.get(crate::CORRELATION_ID) {
        span.record("correlation_id", id);
    }
}
