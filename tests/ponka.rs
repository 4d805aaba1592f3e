//! The story: yesterday's v1 code wrote the queue, today's v2 code reads it.

mod common;

use common::ponka::{self, v1, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use upcaster::{Decoded, Dispatcher, Format, Headers};

#[test]
fn v1_messages_written_by_the_v1_struct_decode_with_the_v2_code() {
    let yesterday = ponka::registry_v1().unwrap();
    let today = ponka::registry().unwrap();
    for format in [Format::Json, Format::MessagePack] {
        let bytes = yesterday
            .encode(&v1::AddPonkaToImage { image_post_id: 42 }, format)
            .unwrap();
        let d: Decoded<AddPonkaToImage> = today.decode(&bytes).unwrap();
        assert_eq!(d.message, AddPonkaToImage { image_post: 42 });
        assert_eq!(d.arrived_version(), 1);
        assert!(d.was_upcast());
        assert_eq!(d.header.format, format);
    }
}

#[derive(Debug, PartialEq)]
enum Handled {
    AddPonka { image_post: u64, arrived: u32 },
    Delete { image_post: u64 },
    Deleted { filename: String },
}

#[test]
fn a_mixed_queue_of_v1_and_v2_in_both_codecs_drains_in_order() {
    let yesterday = ponka::registry_v1().unwrap();
    let today = ponka::registry().unwrap();
    let mut queue = Vec::new();
    let mut expected = Vec::new();
    for (i, format) in [
        Format::Json,
        Format::MessagePack,
        Format::MessagePack,
        Format::Json,
    ]
    .into_iter()
    .enumerate()
    {
        let id = i as u64;
        queue.push(
            yesterday
                .encode(&v1::AddPonkaToImage { image_post_id: id }, format)
                .unwrap(),
        );
        expected.push(Handled::AddPonka {
            image_post: id,
            arrived: 1,
        });
        queue.push(
            today
                .encode(
                    &AddPonkaToImage {
                        image_post: 100 + id,
                    },
                    format,
                )
                .unwrap(),
        );
        expected.push(Handled::AddPonka {
            image_post: 100 + id,
            arrived: 2,
        });
        let delete = DeleteImagePost {
            image_post: id,
            filename: format!("{id}.jpg"),
        };
        queue.push(yesterday.encode(&delete, format).unwrap());
        expected.push(Handled::Delete { image_post: id });
        let event = ImagePostDeletedEvent {
            filename: format!("{id}.jpg"),
        };
        queue.push(today.encode(&event, format).unwrap());
        expected.push(Handled::Deleted {
            filename: format!("{id}.jpg"),
        });
    }
    let dispatcher = Dispatcher::new(&today)
        .on(|d: Decoded<AddPonkaToImage>| Handled::AddPonka {
            image_post: d.message.image_post,
            arrived: d.header.version,
        })
        .unwrap()
        .on(|d: Decoded<DeleteImagePost>| Handled::Delete {
            image_post: d.message.image_post,
        })
        .unwrap()
        .on(|d: Decoded<ImagePostDeletedEvent>| Handled::Deleted {
            filename: d.message.filename,
        })
        .unwrap();
    let handled: Vec<Handled> = queue
        .iter()
        .map(|bytes| dispatcher.dispatch(bytes).unwrap())
        .collect();
    assert_eq!(handled, expected);
}

#[test]
fn the_split_form_runs_the_same_chain() {
    let yesterday = ponka::registry_v1().unwrap();
    let today = ponka::registry().unwrap();
    let dispatcher = Dispatcher::new(&today)
        .on(|d: Decoded<AddPonkaToImage>| (d.header.version, d.message))
        .unwrap();
    for format in [Format::Json, Format::MessagePack] {
        let old = yesterday
            .encode_split(&v1::AddPonkaToImage { image_post_id: 8 }, format)
            .unwrap();
        assert_eq!((&*old.type_name, old.version), ("AddPonkaToImage", 1));
        let d: Decoded<AddPonkaToImage> = today
            .decode_split(&old.type_name, "1", &old.body, format)
            .unwrap();
        assert_eq!(d.message, AddPonkaToImage { image_post: 8 });
        assert_eq!(d.arrived_version(), 1);
        let (arrived, message) = dispatcher
            .dispatch_split("AddPonkaToImage", "1", &old.body, format)
            .unwrap();
        assert_eq!((arrived, message.image_post), (1, 8));

        let new = today
            .encode_split(&AddPonkaToImage { image_post: 9 }, format)
            .unwrap();
        let d: Decoded<AddPonkaToImage> = today
            .decode_split(&new.type_name, &new.version.to_string(), &new.body, format)
            .unwrap();
        assert_eq!(d.message.image_post, 9);
        assert!(!d.was_upcast());
    }
}

#[test]
fn headers_travel_through_the_chain() {
    let yesterday = ponka::registry_v1().unwrap();
    let today = ponka::registry().unwrap();
    let mut headers = Headers::new();
    headers.insert(Headers::MESSAGE_ID, "m-1");
    headers.insert(Headers::CORRELATION_ID, "c-1");
    for format in [Format::Json, Format::MessagePack] {
        let bytes = yesterday
            .encode_with_headers(&v1::AddPonkaToImage { image_post_id: 1 }, &headers, format)
            .unwrap();
        let d: Decoded<AddPonkaToImage> = today.decode(&bytes).unwrap();
        assert_eq!(d.header.headers, headers);
    }
}
