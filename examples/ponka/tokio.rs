//! The ponka story in a tokio service: async handlers, eight messages in flight, graceful
//! shutdown on Ctrl-C, and the same worker commands mounted as in `ponka`.
//!
//! `cargo run --example ponka-tokio` drains a fresh embedded queue of yesterday's v1
//! messages with today's v2 handlers, each of which awaits (a stand-in for sqlx, reqwest or
//! tonic). The commands work as in `ponka`, on the same queue (`target/ponka/` by default,
//! or `PONKA_QUEUE`, `sqlite://…` or `redis://…`):
//!
//! ```text
//! cargo run --example ponka -- produce --code v1 --count 100
//! cargo run --example ponka-tokio -- consume --in-flight 16 --stop-when-empty
//! cargo run --example ponka-tokio -- stats
//! ```

#[allow(dead_code)]
mod messages;
mod places;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use messages::{v1, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use places::{queue_dsn, restart_dsn};
use upcaster::{Decoded, Format, Registry};
use upcaster_worker::aio::{AsyncHandlers, AsyncQueue, AsyncWorker};
use upcaster_worker::cli::{Command, Console};
use upcaster_worker::Limits;

#[derive(Parser)]
#[command(
    name = "ponka-tokio",
    about = "Today's async workers drain yesterday's messages"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the service's handlers share: in a real service, its pools and clients.
#[derive(Default)]
struct Images {
    ponkas_added: AtomicU64,
}

impl Images {
    async fn add_ponka(&self, image_post: u64) -> Result<(), std::io::Error> {
        // An await on I/O, as a database or HTTP call would.
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.ponkas_added.fetch_add(1, Ordering::Relaxed);
        println!("  added ponka to image post {image_post}");
        Ok(())
    }
}

fn handlers(
    registry: Arc<Registry>,
    images: Arc<Images>,
) -> Result<AsyncHandlers, upcaster::RegistryError> {
    AsyncHandlers::new(registry)
        .on(move |m: Decoded<AddPonkaToImage>| {
            let images = Arc::clone(&images);
            async move { images.add_ponka(m.message.image_post).await }
        })?
        .on(|m: Decoded<DeleteImagePost>| async move {
            println!("  deleting {}", m.message.filename);
            Ok::<(), std::io::Error>(())
        })?
        .on(|m: Decoded<ImagePostDeletedEvent>| async move {
            println!("  deleted {}", m.message.filename);
            Ok::<(), std::io::Error>(())
        })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = match messages::registry() {
        Ok(registry) => Arc::new(registry),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let images = Arc::new(Images::default());
    let handlers = match handlers(Arc::clone(&registry), Arc::clone(&images)) {
        Ok(handlers) => handlers,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(command) => {
            Console::new_async(handlers)
                .in_flight(8)
                .transport("async", &queue_dsn())
                .restart_signal(&restart_dsn())
                .run_async(command)
                .await
        }
        None => match story(registry, handlers, &images).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Yesterday's code fills a fresh queue; today's async worker drains it.
async fn story(
    registry: Arc<Registry>,
    handlers: AsyncHandlers,
    images: &Images,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ponka-tokio-{}", std::process::id()));
    let dsn = format!("sqlite://{}/queue.db", dir.display());
    let queue = upcaster_worker::open_async(&dsn, "async").await?;
    let yesterday = messages::registry_v1()?;
    for id in 1..=40 {
        let format = if id % 2 == 0 {
            Format::Json
        } else {
            Format::MessagePack
        };
        queue
            .send(&yesterday.encode(&v1::AddPonkaToImage { image_post_id: id }, format)?)
            .await?;
    }
    println!("Yesterday's v1 code queued 40 AddPonkaToImage messages; today's v2 handlers drain them, 8 at once:");
    let report = AsyncWorker::new(handlers, queue)
        .in_flight(8)
        .limits(Limits::default().stop_when_empty())
        // The service decides when to stop: here, Ctrl-C.
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    println!("\n{report}");
    println!(
        "{} ponkas added, every one from a v1 message upcast to v{}",
        images.ponkas_added.load(Ordering::Relaxed),
        registry
            .current_version("AddPonkaToImage")
            .unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if report.handled != 40 {
        return Err(format!("handled {} of 40", report.handled).into());
    }
    Ok(())
}
