use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 1)]
struct AddPonkaToImageV1 {
    image_id: u64,
}

// No `From<AddPonkaToImageV1>` nor `TryFrom` for the version 2 struct.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 2, previous = AddPonkaToImageV1)]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
