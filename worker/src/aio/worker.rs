//! The async worker (being written).

/// Async handlers.
pub struct AsyncHandlers;
/// The async worker.
pub struct AsyncWorker;
