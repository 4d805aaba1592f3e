use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version)]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1, aliases =)]
struct DeleteImagePost {
    image_post: u64,
}

fn main() {}
