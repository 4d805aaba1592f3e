use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message("AddPonkaToImage", version = 1)]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message = "DeleteImagePost"]
struct DeleteImagePost {
    image_post: u64,
}

fn main() {}
