use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
struct AddPonkaToImage {
    #[message(name = "imagePost")]
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
enum ImageEvent {
    #[message(version = 2)]
    Uploaded { id: u64 },
}

fn main() {}
