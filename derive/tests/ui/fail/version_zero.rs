use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 0)]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
