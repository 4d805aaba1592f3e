//! Checks every transport must pass, written once and run against each.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use upcaster::{Decoded, Format};
use upcaster_worker::{Event, Handlers, Limits, RetryPolicy, StopReason, Transport, Worker};

use super::ponka::{self, AddPonkaToImage};

/// The drain statistics count each message once, the first time it decodes: not again on
/// its retries, nor after the failure transport and `failed retry`. `make` opens a fresh
/// handle on one and the same empty queue.
pub fn each_message_is_counted_once(make: &dyn Fn() -> Box<dyn Transport>) {
    let registry = ponka::registry().unwrap();
    let bytes = registry
        .encode(&AddPonkaToImage { image_post: 7 }, Format::Json)
        .unwrap();
    // A message before it, so that its queue id and its failure id differ on any transport.
    let mut t = make();
    t.send(b"filler").unwrap();
    let filler = t
        .receive(Duration::from_secs(2))
        .unwrap()
        .expect("the filler");
    t.ack(&filler).unwrap();
    t.send(&bytes).unwrap();
    drop(t);
    let retries = RetryPolicy::default()
        .max_retries(1)
        .delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(2));
    let failing = AtomicBool::new(true);
    let logged_ids = std::sync::Mutex::new(Vec::new());
    let calls = AtomicU32::new(0);
    let drain = || {
        let handlers = Handlers::new(&registry)
            .on(|_: Decoded<AddPonkaToImage>| {
                calls.fetch_add(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) {
                    Err("not yet")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        Worker::new(handlers)
            .transport(make())
            .retry(retries.clone())
            .poll_interval(Duration::from_millis(20))
            .limits(Limits::default().stop_when_empty())
            .on_event(|e| {
                if let Event::Failed { failed_id, .. } = e {
                    logged_ids.lock().unwrap().push(failed_id.to_string());
                }
            })
            .run()
    };
    // Two attempts, then the failure transport.
    let report = drain();
    assert_eq!((report.reason, report.failed), (StopReason::Empty, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let count = || {
        let rows = make().stats().unwrap();
        rows.iter()
            .filter(|r| r.type_name == "AddPonkaToImage")
            .map(|r| r.count)
            .sum::<u64>()
    };
    assert_eq!(count(), 1, "counted once through its retry");
    // `failed retry`, with the fixed code.
    let mut t = make();
    let failed = t.failed(10).unwrap();
    assert_eq!(failed.len(), 1);
    // The log names the id `failed show` lists, not the queue's.
    assert_eq!(*logged_ids.lock().unwrap(), [failed[0].id.clone()]);
    assert!(t.requeue_failed(&failed[0].id).unwrap());
    failing.store(false, Ordering::SeqCst);
    let report = drain();
    assert_eq!((report.reason, report.handled), (StopReason::Empty, 1));
    assert_eq!(count(), 1, "counted again after `failed retry`");
}
