//! The ponka story: a queue filled by yesterday's v1 code is drained by today's v2 code.
//!
//! `cargo run --example ponka` tells the story on a fresh embedded queue. The worker
//! commands are mounted too, on a queue that persists (`target/ponka/` by default):
//!
//! ```text
//! cargo run --example ponka -- produce --code v1 --count 100
//! cargo run --example ponka -- consume --limit 50 --time-limit 3600 --memory-limit 128M
//! cargo run --example ponka -- stop-workers
//! cargo run --example ponka -- failed show
//! cargo run --example ponka -- stats
//! ```
//!
//! `PONKA_QUEUE` (a DSN, `sqlite://…` or `redis://…`) and `PONKA_RESTART` (a file path or
//! `redis://…?key=…`) point them elsewhere; `--code v1` runs yesterday's worker.

mod messages;
mod places;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use messages::{v1, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use places::{queue_dsn, restart_dsn};
use upcaster::{Decoded, Dispatcher, Format, Headers, Registry};
use upcaster_worker::cli::{Command, Console};
use upcaster_worker::prelude::*;
use upcaster_worker::{Handlers, Limits, SqliteTransport, Worker};

#[derive(Parser)]
#[command(
    name = "ponka",
    about = "Yesterday's v1 messages, drained by today's v2 code"
)]
struct Cli {
    /// Which release's code this process runs.
    #[arg(long, value_enum, default_value_t = Code::V2, global = true)]
    code: Code,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Code {
    /// Yesterday's release: AddPonkaToImage v1 (`imagePostId`).
    V1,
    /// Today's release: AddPonkaToImage v2 (`imagePost`), reading v1 through the migration.
    V2,
}

#[derive(Subcommand)]
enum Commands {
    /// Send AddPonkaToImage messages as this release's code writes them.
    Produce {
        /// How many.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// The first image post id.
        #[arg(long, default_value_t = 1)]
        first: u64,
    },
    #[command(flatten)]
    Worker(Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => story(),
        Some(Commands::Produce { count, first }) => produce(cli.code, first, count),
        Some(Commands::Worker(command)) => return worker(cli.code, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn registry(code: Code) -> Result<Registry, Box<dyn std::error::Error>> {
    Ok(match code {
        Code::V1 => messages::registry_v1()?,
        Code::V2 => messages::registry()?,
    })
}

/// The handlers of this release's code. They print what the new code sees.
fn handlers(code: Code, registry: &Registry) -> Result<Handlers<'_>, upcaster::RegistryError> {
    let handlers = Handlers::new(registry)
        .on(|m: Decoded<DeleteImagePost>| ok(describe(&m)))?
        .on(|m: Decoded<ImagePostDeletedEvent>| ok(describe(&m)))?;
    match code {
        Code::V1 => handlers.on(|m: Decoded<v1::AddPonkaToImage>| ok(describe(&m))),
        Code::V2 => handlers.on(|m: Decoded<AddPonkaToImage>| ok(describe(&m))),
    }
}

fn ok(line: String) -> Result<(), std::io::Error> {
    println!("  {line}");
    Ok(())
}

fn worker(code: Code, command: Command) -> ExitCode {
    let registry = match registry(code) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match handlers(code, &registry) {
        Ok(handlers) => Console::new(handlers)
            .transport("async", &queue_dsn())
            .restart_signal(&restart_dsn())
            .run(command),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    code
}

fn produce(code: Code, first: u64, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let registry = registry(code)?;
    let mut queue = upcaster_worker::open(&queue_dsn(), "async")?;
    for id in first..first + count {
        let bytes = match code {
            Code::V1 => {
                registry.encode(&v1::AddPonkaToImage { image_post_id: id }, Format::Json)?
            }
            Code::V2 => registry.encode(&AddPonkaToImage { image_post: id }, Format::Json)?,
        };
        queue.send(&bytes)?;
    }
    println!(
        "sent {count} AddPonkaToImage message(s) to {}",
        queue.name()
    );
    Ok(())
}

/// The story, on a fresh queue of its own.
fn story() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ponka-story-{}", std::process::id()));
    let result = tell(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tell(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = SqliteTransport::open(dir.join("queue.db"), "async")?;

    // Yesterday: the v1 code fills the queue, in both codecs.
    let yesterday = messages::registry_v1()?;
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for (id, format) in [(10, Format::Json), (11, Format::MessagePack)] {
        let message = v1::AddPonkaToImage { image_post_id: id };
        stored.push(yesterday.encode(&message, format)?);
    }
    let mut headers = Headers::new();
    headers.insert(Headers::MESSAGE_ID, "3f1c9a");
    let delete = DeleteImagePost {
        image_post: 10,
        filename: "ponka-10.jpg".into(),
    };
    stored.push(yesterday.encode_with_headers(&delete, &headers, Format::Json)?);
    // A producer in another language, with its own key order and an extra key.
    stored.push(
        br#"{"payload":{"imagePostId":12},"version":1,"type":"AddPonkaToImage","sentBy":"php"}"#
            .to_vec(),
    );

    // Today: the v2 code is deployed and adds its own messages.
    let today = messages::registry()?;
    stored.push(today.encode(&AddPonkaToImage { image_post: 13 }, Format::Json)?);
    let event = ImagePostDeletedEvent {
        filename: "ponka-10.jpg".into(),
    };
    stored.push(today.encode(&event, Format::MessagePack)?);
    // A message from a producer newer than this worker: it must be requeued, not lost.
    stored.push(
        br#"{"type":"AddPonkaToImage","version":3,"payload":{"imagePost":{"id":14}}}"#.to_vec(),
    );
    // A message cut short in transit: kept with its bytes in the failure transport.
    stored.push(br#"{"type":"AddPonkaToImage","version":1,"payload":{"imageP"#.to_vec());

    println!("The queue holds {} messages:", stored.len());
    for bytes in &stored {
        println!("  {}", show(bytes));
        queue.send(bytes)?;
    }

    println!(
        "\nToday's worker drains it through the chain (embedded queue in {}):",
        dir.display()
    );
    let handlers = handlers(Code::V2, &today)?;
    let report = Worker::new(handlers)
        .transport(Box::new(queue))
        .limits(Limits::default().messages(stored.len() as u64))
        .poll_interval(Duration::from_millis(100))
        .on_event(|event| println!("{event}"))
        .run();
    println!("\n{report}");

    let mut queue = SqliteTransport::open(dir.join("queue.db"), "async")?;
    println!(
        "\nStill queued: {} (the v3 message, for a newer worker). In the failure transport:",
        queue.pending()?
    );
    for failed in queue.failed(10)? {
        let r = &failed.record;
        println!(
            "  {} ({} bytes kept, {} attempt(s)): {}",
            r.class,
            failed.body.len(),
            r.attempts,
            r.error
        );
    }
    println!("Decoded, by type and arrived version (the `stats` command):");
    for row in queue.stats()? {
        println!("  {} v{}: {}", row.type_name, row.version, row.count);
    }

    // The split form: type and version travel as broker headers beside a bare body.
    let dispatcher = Dispatcher::new(&today).on(|m: Decoded<AddPonkaToImage>| describe(&m))?;
    let split = today.encode_split(&AddPonkaToImage { image_post: 15 }, Format::Json)?;
    let version = split.version.to_string();
    let line = dispatcher.dispatch_split(&split.type_name, &version, &split.body, Format::Json)?;
    println!(
        "\nIn split form, type={} version={} body={}\n  {line}",
        split.type_name,
        version,
        show(&split.body)
    );
    Ok(())
}

fn describe<T: upcaster::Message + std::fmt::Debug>(m: &Decoded<'_, T>) -> String {
    let version = m.arrived_version();
    let how = if m.was_upcast() {
        format!("arrived as v{version}, upcast to v{}", T::VERSION)
    } else {
        format!("arrived as v{version}, already current")
    };
    format!("handler got {:?} ({how})", m.message)
}

/// JSON as text; MessagePack as its size and the same data shown as JSON.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if bytes.first() == Some(&b'{') => text.to_owned(),
        _ => match rmp_serde::from_slice::<upcaster::Value>(bytes) {
            Ok(value) => format!("MessagePack, {} bytes, shown as JSON: {value}", bytes.len()),
            Err(_) => format!("{} bytes", bytes.len()),
        },
    }
}
