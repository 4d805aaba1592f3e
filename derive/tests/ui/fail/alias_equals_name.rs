use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 1, aliases = ["AddPonka", "AddPonkaToImage"])]
struct AddPonka {
    image_post: u64,
}

fn main() {}
