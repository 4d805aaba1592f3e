use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = 3, version = 1, aliases = "AddPonka")]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = AddPonka, version = 2, aliases = ["Ponka", 7], previous = "AddPonkaToImage")]
struct AddPonka {
    image_post: u64,
}

fn main() {}
