//! End to end on apalis' Redis backend: jobs pushed by yesterday's code (a v1 registry), by
//! tomorrow's (v3) and as raw garbage, taken by today's worker (v2).
//!
//! They need a Redis server at `UPCASTER_REDIS_URL` (default `redis://127.0.0.1:6379`):
//! `.ci/redis` starts one. Without one they fail, naming that script.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_core::backend::codec::Codec;
use apalis_core::backend::ext::with_codec::WithCodec;
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::TaskSink;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError, WorkerError};
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::event::Event;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use upcaster::{Disposition, Message, Registry};
use upcaster_apalis::{upcast, Arrived, DecodeError, Job, UpcasterCodec};

/// Yesterday's code: v1 called the image post `imagePostId`.
mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "AddPonkaToImage", version = 1)]
    pub struct AddPonkaToImage {
        pub image_post_id: u64,
    }
}

/// Today's code: v2 renamed it `imagePost` (the repository's
/// `migrations/AddPonkaToImage/v1-to-v2.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "AddPonkaToImage", version = 2)]
struct AddPonkaToImage {
    image_post: u64,
}

/// Tomorrow's code: v3 adds a sticker.
mod v3 {
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "AddPonkaToImage", version = 3)]
    pub struct AddPonkaToImage {
        pub image_post: u64,
        pub sticker: String,
    }
}

fn registry_v1() -> Registry {
    Registry::builder()
        .register::<v1::AddPonkaToImage>()
        .build()
        .expect("yesterday's registry")
}

/// Today's registry, reading v1 through the repository's own migration file.
fn registry() -> Registry {
    let migrations = upcaster::embed_migrations!("../migrations").expect("the migrations");
    Registry::builder()
        .register::<AddPonkaToImage>()
        .migrations(migrations)
        .build()
        .expect("today's registry")
}

fn registry_v3() -> Registry {
    Registry::builder()
        .register::<v3::AddPonkaToImage>()
        .build()
        .expect("tomorrow's registry")
}

/// How long a check waits for what must happen before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A connection to the test server, or a failure that says how to start one.
async fn connect() -> ConnectionManager {
    let url =
        std::env::var("UPCASTER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let hint = "run .ci/redis to start one on 127.0.0.1:6379, or set UPCASTER_REDIS_URL";
    match tokio::time::timeout(Duration::from_secs(5), apalis_redis::connect(url.as_str())).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("no Redis server answers at {url} ({e}): {hint}"),
        Err(_) => panic!("no Redis server answered at {url} within 5 s: {hint}"),
    }
}

/// One test's queue, named after the message type as the crate's docs advise, made unique;
/// its keys are deleted when it is dropped.
struct Queue {
    name: String,
    conn: ConnectionManager,
}

impl Queue {
    async fn new(test: &str) -> Queue {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "upcaster-apalis:{test}:{}:{nanos}:{}",
            std::process::id(),
            AddPonkaToImage::NAME
        );
        Queue {
            name,
            conn: connect().await,
        }
    }

    fn config(&self) -> Config {
        Config::default().queue(&self.name)
    }

    /// A backend of `Job<T>` on this queue, reading and writing with `registry`.
    fn storage<T: Message + Send + Sync + Unpin>(
        &self,
        registry: Registry,
    ) -> WithCodec<RedisStorage<Job<T>>, UpcasterCodec> {
        RedisStorage::<Job<T>>::new(self.conn.clone())
            .with_config(self.config())
            .with_codec(UpcasterCodec::new(registry))
    }

    /// Stores `bytes` as a job exactly as given, as a foreign or broken producer would.
    async fn push_raw(&self, bytes: &[u8]) {
        RedisStorage::<Vec<u8>>::new(self.conn.clone())
            .with_config(self.config())
            .with_codec(Verbatim)
            .push(bytes.to_vec())
            .await
            .expect("push the raw bytes");
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.expect("a Redis command")
    }

    /// The ids of the jobs stored on the queue.
    async fn task_ids(&self) -> Vec<String> {
        self.cmd(redis::cmd("HKEYS").arg(self.config().job_data_hash()))
            .await
    }

    /// The only job stored on the queue.
    async fn only_task(&self) -> String {
        let ids = self.task_ids().await;
        assert_eq!(ids.len(), 1, "one job on the queue: {ids:?}");
        ids[0].clone()
    }

    /// A job's bytes as stored.
    async fn stored(&self, id: &str) -> Vec<u8> {
        self.cmd(
            redis::cmd("HGET")
                .arg(self.config().job_data_hash())
                .arg(id),
        )
        .await
    }

    /// A field of the job's metadata (`status`, `attempts`, `result`), if set.
    async fn meta(&self, id: &str, field: &str) -> Option<String> {
        let key = format!("{}:{id}", self.config().job_meta_hash());
        self.cmd(redis::cmd("HGET").arg(key).arg(field)).await
    }

    async fn in_set(&self, set: String, id: &str) -> bool {
        self.cmd(redis::cmd("SISMEMBER").arg(set).arg(id)).await
    }

    /// Deletes the queue's keys (a failed test leaves them, under its unique name).
    async fn delete(self) {
        let keys: Vec<String> = self
            .cmd(redis::cmd("KEYS").arg(format!("{}:*", self.name)))
            .await;
        if !keys.is_empty() {
            let () = self.cmd(redis::cmd("DEL").arg(keys)).await;
        }
    }

    async fn scheduled_at(&self, id: &str) -> Option<f64> {
        self.cmd(
            redis::cmd("ZSCORE")
                .arg(self.config().scheduled_jobs_set())
                .arg(id),
        )
        .await
    }
}

/// A codec that stores bytes as they are: a producer that does not use upcaster.
#[derive(Clone)]
struct Verbatim;

impl Codec<Vec<u8>> for Verbatim {
    type Error = std::convert::Infallible;
    type Compact = Vec<u8>;
    fn encode(&self, bytes: &Vec<u8>) -> Result<Vec<u8>, Self::Error> {
        Ok(bytes.clone())
    }
    fn decode(&self, bytes: &Vec<u8>) -> Result<Vec<u8>, Self::Error> {
        Ok(bytes.clone())
    }
}

/// What a worker's handler and event listener saw.
enum Seen<T> {
    Handled(T, Arrived),
    Failed(Arc<BoxDynError>),
}

/// A worker of `Job<T>` running on the test's runtime, reporting each handled message and
/// each task error.
struct Running<T> {
    events: mpsc::UnboundedReceiver<Seen<T>>,
    stop: oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl<T: Message + Clone + Send + Sync + Unpin + 'static> Running<T> {
    /// Starts a worker on `queue` reading with `registry`, holding jobs of a newer version for
    /// `requeue_after`.
    fn start(queue: &Queue, name: &str, registry: Registry, requeue_after: Duration) -> Self {
        let (seen, events) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let backend = RedisStorage::<Job<T>>::new(queue.conn.clone())
            .with_config(queue.config())
            .with_codec(UpcasterCodec::new(registry));
        let handled = seen.clone();
        let handler = move |message: T, arrived: Arrived| {
            let handled = handled.clone();
            async move {
                handled.send(Seen::Handled(message, arrived)).ok();
                Ok::<(), BoxDynError>(())
            }
        };
        let worker = WorkerBuilder::new(format!("{}:{name}", queue.name))
            .backend(backend)
            .on_event(move |_, event| {
                if let Event::Error(e) = event {
                    seen.send(Seen::Failed(Arc::clone(e))).ok();
                }
            })
            .build(upcast(handler).requeue_after(requeue_after));
        let run = tokio::spawn(worker.run_until(async move {
            stopped.await.ok();
            Ok::<(), std::io::Error>(())
        }));
        Running { events, stop, run }
    }

    /// The next thing the worker saw, within [`PATIENCE`].
    async fn next(&mut self, what: &str) -> Seen<T> {
        match tokio::time::timeout(PATIENCE, self.events.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => panic!("the worker ended before {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }

    /// Stops the worker, which must end without a backend error.
    async fn stop(self) {
        self.stop.send(()).ok();
        let result = tokio::time::timeout(PATIENCE, self.run)
            .await
            .expect("the worker stops")
            .expect("the worker task did not panic");
        result.expect("the worker ran without a backend error");
    }
}

/// The `DecodeError` behind an apalis task error `E` (`AbortError`, `RetryAfterError`).
fn decode_error_in<E: std::error::Error + 'static>(e: &BoxDynError) -> &DecodeError {
    let outer = e
        .downcast_ref::<E>()
        .unwrap_or_else(|| panic!("expected a {}, got {e:?}", std::any::type_name::<E>()));
    std::error::Error::source(outer)
        .and_then(|s| s.downcast_ref::<DecodeError>())
        .unwrap_or_else(|| panic!("no DecodeError behind {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pushed_by_yesterdays_code_reaches_todays_handler_upcast() {
    let queue = Queue::new("upcast").await;
    let mut yesterday = queue.storage::<v1::AddPonkaToImage>(registry_v1());
    yesterday
        .push(Job::new(v1::AddPonkaToImage { image_post_id: 7 }))
        .await
        .expect("push as v1");

    // The backend holds yesterday's envelope, as upcaster writes it.
    let id = queue.only_task().await;
    assert_eq!(
        queue.stored(&id).await,
        br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":7}}"#
    );

    let mut worker =
        Running::<AddPonkaToImage>::start(&queue, "today", registry(), Duration::from_secs(30));
    match worker.next("the handled job").await {
        Seen::Handled(message, arrived) => {
            assert_eq!(message, AddPonkaToImage { image_post: 7 });
            assert_eq!(arrived.version, 1);
            assert_eq!(arrived.current, 2);
            assert!(arrived.was_upcast());
        }
        Seen::Failed(e) => panic!("the v1 job failed: {e}"),
    }
    worker.stop().await;
    assert!(queue.in_set(queue.config().done_jobs_set(), &id).await);
    assert_eq!(queue.meta(&id, "status").await.as_deref(), Some("Done"));
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_newer_version_waits_for_newer_code_instead_of_dying() {
    let queue = Queue::new("future").await;
    let tomorrow = v3::AddPonkaToImage {
        image_post: 7,
        sticker: "ponka".into(),
    };
    let mut producer = queue.storage::<v3::AddPonkaToImage>(registry_v3());
    producer
        .push(Job::new(tomorrow.clone()))
        .await
        .expect("push as v3");
    let id = queue.only_task().await;
    let bytes = queue.stored(&id).await;

    // Today's worker holds it, then hands it back: not handled, not killed.
    let hold = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let mut worker = Running::<AddPonkaToImage>::start(&queue, "today", registry(), hold);
    let e = match worker.next("the task error").await {
        Seen::Failed(e) => e,
        Seen::Handled(m, _) => panic!("today's handler got tomorrow's job: {m:?}"),
    };
    assert!(started.elapsed() >= hold, "handed back before the hold");
    let decode = decode_error_in::<RetryAfterError>(&e);
    assert!(decode.is_future_version());
    assert_eq!(decode.disposition(), Disposition::Requeue);
    assert_eq!(decode.expected(), "AddPonkaToImage");
    assert_eq!(decode.found_type(), Some("AddPonkaToImage"));
    assert_eq!(decode.found_version(), Some(3));
    assert_eq!(decode.current(), 2);
    assert_eq!(decode.raw(), bytes);
    worker.stop().await;

    // apalis marked it Pending and Redis rescheduled it; it is not dead and keeps its bytes.
    assert_eq!(queue.meta(&id, "status").await.as_deref(), Some("Pending"));
    let result = queue.meta(&id, "result").await.unwrap_or_default();
    assert!(
        result.contains("`AddPonkaToImage` v3 is newer than this code's v2"),
        "{result}"
    );
    assert!(!queue.in_set(queue.config().dead_jobs_set(), &id).await);
    let due = queue
        .scheduled_at(&id)
        .await
        .expect("the job is rescheduled");
    assert_eq!(queue.stored(&id).await, bytes);

    // Once tomorrow's code is deployed, its worker takes the same job.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        < due
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worker = Running::<v3::AddPonkaToImage>::start(&queue, "tomorrow", registry_v3(), hold);
    match worker.next("tomorrow's handled job").await {
        Seen::Handled(message, arrived) => {
            assert_eq!(message, tomorrow);
            assert_eq!(arrived.version, 3);
            assert!(!arrived.was_upcast());
        }
        Seen::Failed(e) => panic!("tomorrow's worker failed the job: {e}"),
    }
    worker.stop().await;
    assert_eq!(queue.meta(&id, "status").await.as_deref(), Some("Done"));
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_killed_with_its_bytes_and_the_worker_goes_on() {
    let queue = Queue::new("garbage").await;
    let garbage = b"\x00\x01 this is no envelope";
    queue.push_raw(garbage).await;
    let garbage_id = queue.only_task().await;
    let mut producer = queue.storage::<AddPonkaToImage>(registry());
    producer
        .push(Job::new(AddPonkaToImage { image_post: 8 }))
        .await
        .expect("push as v2");

    let mut worker =
        Running::<AddPonkaToImage>::start(&queue, "today", registry(), Duration::from_secs(30));
    let (mut failed, mut handled) = (None, None);
    while failed.is_none() || handled.is_none() {
        match worker.next("both jobs settled").await {
            Seen::Failed(e) => failed = Some(e),
            Seen::Handled(m, _) => handled = Some(m),
        }
    }
    assert_eq!(handled, Some(AddPonkaToImage { image_post: 8 }));
    let e = failed.expect("the garbage failed");
    let decode = decode_error_in::<AbortError>(&e);
    assert_eq!(decode.disposition(), Disposition::DeadLetter);
    assert_eq!(decode.expected(), "AddPonkaToImage");
    assert_eq!(decode.found_version(), None);
    assert_eq!(decode.raw(), garbage);
    worker.stop().await;

    // Killed: in the dead set with its bytes, never to be fetched again.
    assert!(
        queue
            .in_set(queue.config().dead_jobs_set(), &garbage_id)
            .await
    );
    assert_eq!(
        queue.meta(&garbage_id, "status").await.as_deref(),
        Some("Killed")
    );
    let result = queue.meta(&garbage_id, "result").await.unwrap_or_default();
    assert!(result.contains("not an envelope"), "{result}");
    assert_eq!(queue.stored(&garbage_id).await, garbage);
    assert_eq!(queue.task_ids().await.len(), 2);
    queue.delete().await;
}

/// Why [`Job`]: with the bare-`T` codec a job that does not decode is an apalis backend
/// error, which stops the worker; the job stays claimed by it, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_bare_codec_a_newer_version_stops_the_worker() {
    let queue = Queue::new("bare").await;
    let mut producer = queue.storage::<v3::AddPonkaToImage>(registry_v3());
    producer
        .push(Job::new(v3::AddPonkaToImage {
            image_post: 7,
            sticker: "ponka".into(),
        }))
        .await
        .expect("push as v3");
    let id = queue.only_task().await;

    let backend = RedisStorage::<AddPonkaToImage>::new(queue.conn.clone())
        .with_config(queue.config())
        .with_codec(UpcasterCodec::new(registry()));
    let name = format!("{}:bare", queue.name);
    let worker =
        WorkerBuilder::new(name.as_str())
            .backend(backend)
            .build(|m: AddPonkaToImage| async move {
                Err::<(), BoxDynError>(format!("the handler got {m:?}").into())
            });
    let ended = tokio::time::timeout(PATIENCE, worker.run())
        .await
        .expect("the worker ends on its own");
    match ended {
        Err(WorkerError::BackendError(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("`AddPonkaToImage` v3 is newer than this code's v2"),
                "{text}"
            );
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    let inflight = format!("{}:{name}", queue.config().inflight_jobs_set());
    assert!(queue.in_set(inflight, &id).await, "the job stays claimed");
    assert!(!queue.in_set(queue.config().dead_jobs_set(), &id).await);
    queue.delete().await;
}
