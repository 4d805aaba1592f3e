use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
