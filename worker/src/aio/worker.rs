//! The async worker and its handlers.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;
use upcaster::{Decoded, Dispatcher, Error, Message, Registry, RegistryError};

use super::{AnyQueue, AsyncQueue};
use crate::decision::Action;
use crate::flow::{self, Settled, Started};
use crate::transport::{Delivery, TransportError};
use crate::{
    panic_message, Event, HandlerError, Limits, Report, RestartSignal, RetryPolicy, StopReason,
    DEFAULT_OUTAGE_LIMIT,
};

/// A handler's work on one message, boxed: each message type's handler returns its own
/// future type.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A decoded message whose handler has started.
struct Pending {
    type_name: &'static str,
    version: u32,
    future: HandlerFuture,
}

/// The async handlers of a worker, one per message type, each seeing only the current
/// version. `Send + Sync + 'static`: they share the registry through an `Arc`, so they can
/// live in a service's state and move into spawned tasks.
///
/// ```
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use upcaster::{Decoded, Message, Registry};
/// use upcaster_worker::aio::AsyncHandlers;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(version = 1)]
/// struct ResizeImage { id: u64 }
///
/// let registry = Arc::new(Registry::builder().register::<ResizeImage>().build()?);
/// let handlers = AsyncHandlers::new(registry).on(|m: Decoded<ResizeImage>| async move {
///     // An async client call (sqlx, reqwest, tonic) goes here.
///     println!("resizing {}", m.message.id);
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncHandlers {
    dispatcher: Dispatcher<'static, Pending>,
}

impl AsyncHandlers {
    /// No handlers yet.
    pub fn new(registry: Arc<Registry>) -> Self {
        AsyncHandlers {
            dispatcher: Dispatcher::shared(registry),
        }
    }

    /// Sets the handler of `T`, which must be registered. An `Err` (or a panic, while
    /// starting or while running) is a failed attempt: the message is retried, then sent to
    /// the failure transport.
    pub fn on<T, F, Fut, E>(self, handler: F) -> Result<Self, RegistryError>
    where
        T: Message + Send + 'static,
        F: Fn(Decoded<'static, T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let dispatcher = self.dispatcher.on(move |m: Decoded<'_, T>| {
            let version = m.header.version;
            flow::record_in_span(T::NAME, &m.header);
            let m = m.into_owned();
            let future: HandlerFuture = match catch_unwind(AssertUnwindSafe(|| handler(m))) {
                Ok(future) => Box::pin(async move { future.await.map_err(Into::into) }),
                Err(panic) => {
                    let error = format!("handler panicked: {}", panic_message(&*panic));
                    Box::pin(async move { Err(error.into()) })
                }
            };
            Pending {
                type_name: T::NAME,
                version,
                future,
            }
        })?;
        Ok(AsyncHandlers { dispatcher })
    }

    /// The registry the handlers decode with.
    pub fn registry(&self) -> &Registry {
        self.dispatcher.registry()
    }

    /// Decodes `bytes` as the worker would, without running a handler: the current type's
    /// name and the version the message arrived in.
    pub fn check(&self, bytes: &[u8]) -> Result<(&'static str, u32), Error> {
        self.dispatcher.check(bytes)
    }
}

/// A future that turns a panic while it is polled into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic).to_owned())),
        }
    }
}

type Logger = Box<dyn Fn(&Event<'_>) + Send + Sync>;

/// What the tasks of messages in flight share.
struct Shared<Q> {
    handlers: AsyncHandlers,
    queues: Vec<Q>,
    retry: RetryPolicy,
    log: Option<Logger>,
}

/// What one message's task reports back.
struct Done {
    failure: bool,
    settled: Settled,
    counted: Option<crate::StatCount>,
}

/// Drains queues through async handlers, with up to [`AsyncWorker::in_flight`] messages
/// handled at once, until a stop condition holds or the service's shutdown future ends.
///
/// It makes the decisions of the blocking [`Worker`](crate::Worker) (the same code decides
/// retries, requeues of newer versions and failures) and honours the same limits and
/// restart signal, between messages: once one holds, it takes no new message, lets those in
/// flight finish and settle, then returns its [`Report`]. It installs no signal handler:
/// shutting down is the service's call ([`AsyncWorker::run_until`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use upcaster::{Decoded, Format, Message, Registry};
/// use upcaster_worker::aio::{AsyncHandlers, AsyncQueue, AsyncWorker, Blocking};
/// use upcaster_worker::{Limits, SqliteTransport, StopReason};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(version = 1)]
/// struct ResizeImage { id: u64 }
///
/// let registry = Arc::new(Registry::builder().register::<ResizeImage>().build()?);
/// let dir = std::env::temp_dir().join(format!("upcaster-aio-doc-{}", std::process::id()));
/// let queue = Blocking::new(SqliteTransport::open(dir.join("queue.db"), "images")?);
/// queue.send(&registry.encode(&ResizeImage { id: 7 }, Format::Json)?).await?;
///
/// let handlers = AsyncHandlers::new(registry).on(|m: Decoded<ResizeImage>| async move {
///     tokio::task::yield_now().await;
///     println!("resizing {}", m.message.id);
///     Ok::<(), std::io::Error>(())
/// })?;
/// let report = AsyncWorker::new(handlers, queue)
///     .in_flight(8)
///     .limits(Limits::default().stop_when_empty())
///     .run_until(std::future::pending())
///     .await;
/// assert_eq!(report.reason, StopReason::Empty);
/// assert_eq!(report.handled, 1);
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(()) }
/// ```
pub struct AsyncWorker<Q = AnyQueue> {
    shared: Shared<Q>,
    limits: Limits,
    in_flight: usize,
    restart: Option<Box<dyn RestartSignal>>,
    started: Instant,
    outage_limit: Duration,
    stop: Arc<AtomicBool>,
    poll: Duration,
}

impl<Q: AsyncQueue> AsyncWorker<Q> {
    /// A worker with `handlers` reading `queue`, one message in flight, no limits and the
    /// default retries.
    pub fn new(handlers: AsyncHandlers, queue: Q) -> Self {
        AsyncWorker {
            shared: Shared {
                handlers,
                queues: vec![queue],
                retry: RetryPolicy::default(),
                log: None,
            },
            limits: Limits::default(),
            in_flight: 1,
            restart: None,
            started: Instant::now(),
            outage_limit: DEFAULT_OUTAGE_LIMIT,
            stop: Arc::new(AtomicBool::new(false)),
            poll: Duration::from_secs(1),
        }
    }

    /// Adds another queue. The first with a message wins, in the order added.
    pub fn queue(mut self, queue: Q) -> Self {
        self.shared.queues.push(queue);
        self
    }

    /// How many messages may be handled at once (1 by default, at least 1). With more than
    /// one, messages of one queue may finish out of order, as with several workers. A
    /// message's settle (its ack, retry or failure) does not hold its place: the next
    /// message is taken while the ack is on its way, and every settle ends before the
    /// worker returns.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Sets the stop conditions.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.shared.retry = retry;
        self
    }

    /// Listens to `stop-workers` through `signal`, read on tokio's blocking threads.
    pub fn restart_signal(mut self, signal: Box<dyn RestartSignal>) -> Self {
        self.restart = Some(signal);
        self
    }

    /// When this worker's code started, as [`Worker::started_at`](crate::Worker::started_at).
    pub fn started_at(mut self, at: Instant) -> Self {
        self.started = at;
        self
    }

    /// How long the worker goes on while its restart signal cannot be read (30 s by
    /// default), as [`Worker::restart_signal_outage`](crate::Worker::restart_signal_outage).
    pub fn restart_signal_outage(mut self, limit: Duration) -> Self {
        self.outage_limit = limit;
        self
    }

    /// A flag that stops the worker between messages when set (the CLI sets it on SIGTERM
    /// and SIGINT).
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = flag;
        self
    }

    /// The longest single wait for a message (one second by default): stop conditions and
    /// the shutdown future take effect within it while the queue is empty.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// Calls `log` for every message settled and every warning, from the message's task.
    pub fn on_event(mut self, log: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.shared.log = Some(Box::new(log));
        self
    }

    /// Runs until a stop condition holds.
    pub async fn run(self) -> Report {
        self.run_until(std::future::pending()).await
    }

    /// Runs until a stop condition holds or `shutdown` ends (a `CancellationToken`'s
    /// `cancelled_owned()`, `tokio::signal::ctrl_c()`, a channel): then it takes no new
    /// message, finishes those in flight, and returns with [`StopReason::Shutdown`]. A
    /// receive already waiting is let finish (within the poll interval), and a message it
    /// brings is handled too: nothing taken is left unsettled.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Report {
        let AsyncWorker {
            shared,
            limits,
            in_flight,
            restart,
            started,
            outage_limit,
            stop,
            poll,
        } = self;
        let shared = Arc::new(shared);
        let mut run = flow::Run::new(limits, started, outage_limit);
        let restart = restart.map(|s| Arc::new(Mutex::new(s)));
        let reason = drain(
            &shared,
            &mut run,
            in_flight,
            restart.clone(),
            &stop,
            poll,
            shutdown,
        )
        .await;
        // Closed on a blocking thread: a blocking client (PostgreSQL's) must not close on
        // the executor.
        if let Some(signal) = restart {
            let _ = tokio::task::spawn_blocking(move || drop(signal)).await;
        }
        run.finish(reason)
    }
}

async fn drain<Q: AsyncQueue>(
    shared: &Arc<Shared<Q>>,
    run: &mut flow::Run,
    in_flight: usize,
    restart: Option<Arc<Mutex<Box<dyn RestartSignal>>>>,
    stop: &AtomicBool,
    poll: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> StopReason {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shut = false;
    let mut tasks: JoinSet<Result<Done, TransportError>> = JoinSet::new();
    let mut failed: Option<StopReason> = None;
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    if let Err(e) = release_waiting(shared).await {
        return StopReason::TransportFailed(e.to_string());
    }
    let reason = loop {
        if let Some(reason) = failed.take() {
            break reason;
        }
        if shut {
            break StopReason::Shutdown;
        }
        // What finished meanwhile counts before the stop conditions are checked.
        while let Some(done) = tasks.try_join_next() {
            tally(run, Some(done), &mut failed);
        }
        if let Some(reason) = failed.take() {
            break reason;
        }
        if let Some(reason) = should_stop(shared, run, restart.as_ref(), stop).await {
            break reason;
        }
        // A free handler slot, or a reason to stop. Settles do not hold a slot: the next
        // message is taken while the last one's ack is on its way.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tokio::select! {
                    done = tasks.join_next(), if !tasks.is_empty() => tally(run, done, &mut failed),
                    () = &mut shutdown, if !shut => shut = true,
                }
                continue;
            }
        };
        let wait = run.wait(poll);
        let received = {
            let mut receive = std::pin::pin!(receive(shared, wait));
            // The receive is never dropped before it ends: a message it took is ours.
            loop {
                tokio::select! {
                    biased;
                    received = &mut receive => break received,
                    done = tasks.join_next(), if !tasks.is_empty() => tally(run, done, &mut failed),
                    () = &mut shutdown, if !shut => shut = true,
                }
            }
        };
        match received {
            Ok(Some((i, delivery))) => {
                run.received(None);
                let shared = Arc::clone(shared);
                if in_flight == 1 {
                    // Nothing to overlap with: handled here, without a task's hand-off
                    // between threads; only its settle goes on beside the next receive.
                    let handled = handler(&shared, i, delivery).await;
                    drop(permit);
                    tasks.spawn(settle(shared, i, handled));
                } else {
                    tasks.spawn(async move {
                        let handled = handler(&shared, i, delivery).await;
                        drop(permit);
                        settle(shared, i, handled).await
                    });
                }
            }
            Ok(None) if run.stop_when_empty() && tasks.is_empty() => {
                match all_empty(shared).await {
                    Ok(true) => break StopReason::Empty,
                    Ok(false) => {}
                    Err(e) => break StopReason::TransportFailed(e.to_string()),
                }
            }
            Ok(None) => {}
            Err(e) => break StopReason::TransportFailed(e.to_string()),
        }
    };
    // Those in flight finish and settle, whatever the reason.
    let mut late = None;
    while let Some(done) = tasks.join_next().await {
        tally(run, Some(done), &mut late);
    }
    for q in &shared.queues {
        q.close().await;
    }
    match late {
        Some(failure) if !matches!(reason, StopReason::TransportFailed(_)) => failure,
        _ => reason,
    }
}

/// Adds a finished task to the run; a transport failure becomes the reason to stop.
fn tally(
    run: &mut flow::Run,
    done: Option<Result<Result<Done, TransportError>, tokio::task::JoinError>>,
    failed: &mut Option<StopReason>,
) {
    match done {
        None => {}
        Some(Ok(Ok(done))) => {
            if let Some(c) = &done.counted {
                run.counted(c);
            }
            run.settled(done.failure, &done.settled);
        }
        Some(Ok(Err(e))) => {
            failed.get_or_insert(StopReason::TransportFailed(e.to_string()));
        }
        // Handler panics are caught in the task: this is the worker's own fault, and the
        // message it held is delivered again.
        Some(Err(e)) => {
            failed.get_or_insert(StopReason::TransportFailed(format!(
                "a message's task failed: {e}"
            )));
        }
    }
}

async fn should_stop<Q>(
    shared: &Shared<Q>,
    run: &mut flow::Run,
    restart: Option<&Arc<Mutex<Box<dyn RestartSignal>>>>,
    stop: &AtomicBool,
) -> Option<StopReason> {
    if let Some(reason) = run.limit_reached(stop.load(Ordering::SeqCst)) {
        return Some(reason);
    }
    let signal = restart?;
    let interval = lock(signal).check_interval();
    let with_clock = run.signal_due(interval)?;
    let signal = Arc::clone(signal);
    let reading =
        tokio::task::spawn_blocking(move || flow::read_signal(&mut **lock(&signal), with_clock))
            .await
            .unwrap_or_else(|e| Err(format!("reading the restart signal failed: {e}")));
    match run.signal_read(reading) {
        Ok(None) => None,
        Ok(Some(problem)) => {
            emit(&shared.log, &Event::Warning { problem: &problem });
            None
        }
        Err(reason) => Some(reason),
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn release_waiting<Q: AsyncQueue>(shared: &Arc<Shared<Q>>) -> Result<(), TransportError> {
    let readable: super::Readable = {
        let shared = Arc::clone(shared);
        Arc::new(move |body: &[u8]| {
            catch_unwind(AssertUnwindSafe(|| shared.handlers.check(body).is_ok())).unwrap_or(false)
        })
    };
    for q in &shared.queues {
        let count = q.release_waiting(Arc::clone(&readable)).await?;
        if count > 0 {
            let transport = q.name();
            emit(&shared.log, &Event::Released { transport, count });
        }
    }
    Ok(())
}

async fn receive<Q: AsyncQueue>(
    shared: &Shared<Q>,
    wait: Duration,
) -> Result<Option<(usize, Delivery)>, TransportError> {
    if let [only] = shared.queues.as_slice() {
        return Ok(only.receive(wait).await?.map(|d| (0, d)));
    }
    for (i, q) in shared.queues.iter().enumerate() {
        if let Some(d) = q.receive(Duration::ZERO).await? {
            return Ok(Some((i, d)));
        }
    }
    let each = wait / shared.queues.len().max(1) as u32;
    for (i, q) in shared.queues.iter().enumerate() {
        if let Some(d) = q.receive(each).await? {
            return Ok(Some((i, d)));
        }
    }
    Ok(None)
}

async fn all_empty<Q: AsyncQueue>(shared: &Shared<Q>) -> Result<bool, TransportError> {
    for q in &shared.queues {
        if q.pending().await? > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A message whose handler has run (or that was settled without one): what to do with it.
struct Handled {
    delivery: Delivery,
    span: tracing::Span,
    action: Action,
    /// Its type and arrived version, if it decoded.
    decoded: Option<(&'static str, u32)>,
}

/// Decodes a delivery and runs its handler, in the message's span; the decision core says
/// what becomes of it.
async fn handler<Q: AsyncQueue>(shared: &Shared<Q>, i: usize, mut delivery: Delivery) -> Handled {
    let span = flow::span(shared.queues[i].name(), &delivery);
    let started = {
        let _in_span = span.enter();
        flow::start(&mut delivery, &shared.retry, |body| {
            let pending = shared.handlers.dispatcher.dispatch(body)?;
            Ok((pending.type_name, pending.version, pending.future))
        })
    };
    let (action, decoded) = match started {
        Started::Settle(action) => (action, None),
        Started::Run {
            type_name,
            version,
            handler,
        } => {
            let result = match CatchUnwind(handler).instrument(span.clone()).await {
                Ok(result) => result,
                Err(panic) => Err(format!("handler panicked: {panic}").into()),
            };
            let action = flow::finish(&delivery, type_name, version, &result, &shared.retry);
            (action, Some((type_name, version)))
        }
    };
    Handled {
        delivery,
        span,
        action,
        decoded,
    }
}

/// Settles a handled message as the decision core said, and reports it.
async fn settle<Q: AsyncQueue>(
    shared: Arc<Shared<Q>>,
    i: usize,
    handled: Handled,
) -> Result<Done, TransportError> {
    let Handled {
        mut delivery,
        span,
        action,
        decoded,
    } = handled;
    let queue = &shared.queues[i];
    async {
        let failure = action.is_failure();
        let settled = perform(queue, &delivery, &action).await?;
        crate::report(
            queue.name(),
            &delivery,
            action,
            decoded,
            &settled,
            |event| emit(&shared.log, event),
        );
        Ok(Done {
            failure,
            settled,
            counted: delivery.counts_as.take(),
        })
    }
    .instrument(span)
    .await
}

/// Does what the decision core asked for a delivery.
async fn perform<Q: AsyncQueue>(
    queue: &Q,
    delivery: &Delivery,
    action: &Action,
) -> Result<Settled, TransportError> {
    Ok(match action {
        Action::Ack => {
            queue.ack(delivery).await?;
            Settled::Handled
        }
        Action::Retry { delay, attempt, .. } => {
            queue.retry_later(delivery, *delay, *attempt).await?;
            Settled::Retried
        }
        Action::Requeue { delay, .. } => {
            queue.requeue_for_newer(delivery, *delay).await?;
            Settled::Requeued
        }
        // `None`: another consumer took it over, and settles it.
        Action::Fail(record) => match queue.fail(delivery, record).await? {
            Some(id) => Settled::Failed(id),
            None => Settled::TakenOver,
        },
    })
}

fn emit(log: &Option<Logger>, event: &Event<'_>) {
    crate::trace(event);
    if let Some(log) = log {
        log(event);
    }
}
