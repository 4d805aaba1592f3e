use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 4294967296)]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 4294967295)]
struct Largest {
    image_post: u64,
}

fn main() {}
