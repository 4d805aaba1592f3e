use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonka\nToImage", version = 1, aliases = ["Add\tPonka"])]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {}
