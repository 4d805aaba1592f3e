use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1, aliases = ["AddPonkaToImage"])]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
