use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(nmae = "AddPonkaToImage", version = 1)]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
