//! Where the example's commands keep their queue and restart signal.

/// `PONKA_QUEUE`, or an embedded queue under `target/ponka/`.
pub fn queue_dsn() -> String {
    std::env::var("PONKA_QUEUE").unwrap_or_else(|_| {
        format!(
            "sqlite://{}/target/ponka/queue.db",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// `PONKA_RESTART`, or a file under `target/ponka/`: one absolute place for every release,
/// as a path that moved with a deploy would lose the request.
pub fn restart_dsn() -> String {
    std::env::var("PONKA_RESTART").unwrap_or_else(|_| {
        format!(
            "{}/target/ponka/restart-requested-at",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}
