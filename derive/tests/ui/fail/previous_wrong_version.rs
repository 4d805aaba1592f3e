use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 1)]
struct AddPonkaToImageV1 {
    image_post: u64,
}

// Version 3 must link to version 2, not 1.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 3, previous = AddPonkaToImageV1)]
struct AddPonkaToImage {
    image_post: u64,
}

impl From<AddPonkaToImageV1> for AddPonkaToImage {
    fn from(v1: AddPonkaToImageV1) -> Self {
        AddPonkaToImage {
            image_post: v1.image_post,
        }
    }
}

fn main() {}
