//! Decoding another client's deliveries in split form: Kafka and SQS, for which upcaster has
//! no transport. Your own client (rdkafka, aws-sdk-sqs, omniqueue, …) receives; upcaster
//! reads type and version from the broker's headers and runs the chain on the bare payload.
//!
//! The two record types below have the shapes those clients hand out (rdkafka's
//! `Headers` of byte values beside a payload; an SQS message's string attributes beside a
//! text body), so the example compiles and runs without a broker:
//! `cargo run --example split_form`.

#[path = "ponka/messages.rs"]
mod messages;

use std::collections::HashMap;

use messages::{v1, AddPonkaToImage};
use upcaster::{Error, Format, Registry};

/// A Kafka record as rdkafka's `BorrowedMessage` gives it: headers whose values are bytes.
struct KafkaRecord {
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

/// An SQS message as aws-sdk-sqs's `Message` gives it: string attributes and a text body.
struct SqsMessage {
    message_attributes: HashMap<String, String>,
    body: String,
}

/// Why a delivery could not be read. Either way the caller still has the delivery to put in
/// its dead-letter queue: nothing is lost.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("no `{0}` header: not a split-form message")]
    Missing(&'static str),
    #[error("header `{0}` is not UTF-8")]
    NotText(&'static str),
    #[error(transparent)]
    Decode(#[from] Box<Error>),
}

fn kafka_header<'a>(record: &'a KafkaRecord, key: &'static str) -> Result<&'a str, ReadError> {
    let value = record
        .headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
        .ok_or(ReadError::Missing(key))?;
    std::str::from_utf8(value).map_err(|_| ReadError::NotText(key))
}

/// Today's struct from a Kafka record, whatever version the producer wrote.
fn from_kafka(registry: &Registry, record: &KafkaRecord) -> Result<AddPonkaToImage, ReadError> {
    let type_name = kafka_header(record, "type")?;
    let version = kafka_header(record, "version")?;
    let format = match record
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_slice())
    {
        Some(b"application/msgpack") => Format::MessagePack,
        _ => Format::Json,
    };
    let decoded = registry
        .decode_split::<AddPonkaToImage>(type_name, version, &record.payload, format)
        .map_err(Box::new)?;
    Ok(decoded.message)
}

/// Today's struct from an SQS message (JSON bodies: SQS bodies are text).
fn from_sqs(registry: &Registry, message: &SqsMessage) -> Result<AddPonkaToImage, ReadError> {
    let attribute = |key: &'static str| {
        message
            .message_attributes
            .get(key)
            .map(String::as_str)
            .ok_or(ReadError::Missing(key))
    };
    let decoded = registry
        .decode_split::<AddPonkaToImage>(
            attribute("type")?,
            attribute("version")?,
            message.body.as_bytes(),
            Format::Json,
        )
        .map_err(Box::new)?;
    Ok(decoded.message)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yesterday = messages::registry_v1()?;
    let today = messages::registry()?;

    // Yesterday's producer wrote v1 in split form to Kafka, in MessagePack.
    let split = yesterday.encode_split(
        &v1::AddPonkaToImage { image_post_id: 7 },
        Format::MessagePack,
    )?;
    let record = KafkaRecord {
        headers: vec![
            ("type".to_owned(), split.type_name.as_bytes().to_vec()),
            ("version".to_owned(), split.version.to_string().into_bytes()),
            ("content-type".to_owned(), b"application/msgpack".to_vec()),
        ],
        payload: split.body,
    };
    let message = from_kafka(&today, &record)?;
    println!("kafka: {message:?} (written as v{})", split.version);
    assert_eq!(message, AddPonkaToImage { image_post: 7 });

    // A producer in another language wrote v1 to SQS: two attributes and a JSON body.
    let sqs = SqsMessage {
        message_attributes: HashMap::from([
            ("type".to_owned(), "AddPonkaToImage".to_owned()),
            ("version".to_owned(), "1".to_owned()),
        ]),
        body: r#"{"imagePostId":8}"#.to_owned(),
    };
    let message = from_sqs(&today, &sqs)?;
    println!("sqs: {message:?} (written as v1)");
    assert_eq!(message, AddPonkaToImage { image_post: 8 });

    // A version newer than this code: an error that says to requeue, with the body kept.
    let newer = SqsMessage {
        message_attributes: HashMap::from([
            ("type".to_owned(), "AddPonkaToImage".to_owned()),
            ("version".to_owned(), "3".to_owned()),
        ]),
        body: r#"{"imagePost":9,"tags":[]}"#.to_owned(),
    };
    match from_sqs(&today, &newer) {
        Err(ReadError::Decode(e)) => {
            println!(
                "sqs: {e} (disposition {:?}; body kept: {} bytes)",
                e.disposition(),
                e.raw().len()
            );
            assert_eq!(e.raw(), newer.body.as_bytes());
        }
        other => return Err(format!("expected a decode error, got {other:?}").into()),
    }
    Ok(())
}
