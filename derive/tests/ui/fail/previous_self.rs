use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 2, previous = Self)]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 2, previous = DeleteImagePost)]
struct DeleteImagePost {
    image_post: u64,
}

fn main() {}
