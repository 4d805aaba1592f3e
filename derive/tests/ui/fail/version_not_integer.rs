use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = "2")]
struct FromString {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 2.0)]
struct FromFloat {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = -2)]
struct FromNegative {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = LATEST)]
struct FromConstant {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 2u8)]
struct WithSuffix {
    image_post: u64,
}

const LATEST: u32 = 2;

fn main() {}
