use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 1)]
struct AddPonkaToImageV1 {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1, previous = AddPonkaToImageV1)]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
