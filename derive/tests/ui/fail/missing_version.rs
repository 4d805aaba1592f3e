use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage")]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
