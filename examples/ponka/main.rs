//! The ponka story: a queue filled by yesterday's v1 code is drained by today's v2 code.
//!
//! Run it with `cargo run --example ponka`.

mod messages;

use messages::{v1, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use upcaster::{Decoded, Dispatcher, Format, Headers};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Yesterday: the v1 code fills the queue, in both codecs.
    let yesterday = messages::registry_v1()?;
    let mut queue: Vec<Vec<u8>> = Vec::new();
    for (id, format) in [(10, Format::Json), (11, Format::MessagePack)] {
        let message = v1::AddPonkaToImage { image_post_id: id };
        queue.push(yesterday.encode(&message, format)?);
    }
    let mut headers = Headers::new();
    headers.insert(Headers::MESSAGE_ID, "3f1c9a");
    let delete = DeleteImagePost {
        image_post: 10,
        filename: "ponka-10.jpg".into(),
    };
    queue.push(yesterday.encode_with_headers(&delete, &headers, Format::Json)?);
    // A producer in another language, with its own key order and an extra key.
    queue.push(
        br#"{"payload":{"imagePostId":12},"version":1,"type":"AddPonkaToImage","sentBy":"php"}"#
            .to_vec(),
    );

    // Today: the v2 code is deployed and adds its own messages.
    let today = messages::registry()?;
    queue.push(today.encode(&AddPonkaToImage { image_post: 13 }, Format::Json)?);
    let event = ImagePostDeletedEvent {
        filename: "ponka-10.jpg".into(),
    };
    queue.push(today.encode(&event, Format::MessagePack)?);
    // A message from a producer newer than this worker: it must be requeued, not lost.
    queue.push(
        br#"{"type":"AddPonkaToImage","version":3,"payload":{"imagePost":{"id":14}}}"#.to_vec(),
    );

    let handled = Dispatcher::new(&today)
        .on(|m: Decoded<AddPonkaToImage>| describe(&m))?
        .on(|m: Decoded<DeleteImagePost>| describe(&m))?
        .on(|m: Decoded<ImagePostDeletedEvent>| describe(&m))?;

    println!(
        "Draining {} queued messages with today's code, then one in split form\n",
        queue.len()
    );
    let mut requeued = Vec::new();
    for bytes in queue {
        println!("stored:   {}", show(&bytes));
        match handled.dispatch(&bytes) {
            Ok(line) => println!("{line}\n"),
            Err(e) if e.is_future_version() => {
                println!("requeued: {e}\n");
                requeued.push(e.into_raw());
            }
            Err(e) => {
                println!("failed:   {e}\n");
                return Err(e.into());
            }
        }
    }

    // The split form: type and version travel as broker headers beside a bare body.
    let split = today.encode_split(&AddPonkaToImage { image_post: 15 }, Format::Json)?;
    let version = split.version.to_string();
    let line = handled.dispatch_split(&split.type_name, &version, &split.body, Format::Json)?;
    println!(
        "stored:   type={} version={} body={}\n{line}\n",
        split.type_name,
        version,
        show(&split.body)
    );

    println!("{} message(s) requeued for a newer worker", requeued.len());
    Ok(())
}

fn describe<T: upcaster::Message + std::fmt::Debug>(m: &Decoded<'_, T>) -> String {
    let version = m.arrived_version();
    let how = if m.was_upcast() {
        format!("arrived as v{version}, upcast to v{}", T::VERSION)
    } else {
        format!("arrived as v{version}, already current")
    };
    format!("new code: {:?} ({how})", m.message)
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
