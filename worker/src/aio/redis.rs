//! Redis Streams on `redis`'s async connections: the same keys, scripts and semantics as
//! the blocking [`RedisTransport`](crate::RedisTransport).

use std::time::Duration;

use super::{AsyncQueue, Readable};
use crate::transport::{Delivery, FailureRecord, TransportError};

/// Redis Streams for the async runtime (being written).
pub struct AsyncRedisTransport {
    name: String,
}

impl AsyncQueue for AsyncRedisTransport {
    fn name(&self) -> &str {
        &self.name
    }
    async fn send(&self, _body: &[u8]) -> Result<String, TransportError> {
        todo!()
    }
    async fn receive(&self, _timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        todo!()
    }
    async fn ack(&self, _delivery: &Delivery) -> Result<(), TransportError> {
        todo!()
    }
    async fn retry_later(&self, _d: &Delivery, _delay: Duration, _a: u32) -> Result<(), TransportError> {
        todo!()
    }
    async fn requeue_for_newer(&self, _d: &Delivery, _delay: Duration) -> Result<(), TransportError> {
        todo!()
    }
    async fn fail(&self, _d: &Delivery, _r: &FailureRecord) -> Result<Option<String>, TransportError> {
        todo!()
    }
    async fn pending(&self) -> Result<u64, TransportError> {
        todo!()
    }
    async fn release_waiting(&self, _readable: Readable) -> Result<u64, TransportError> {
        todo!()
    }
}
