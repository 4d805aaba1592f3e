use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "AddPonkaToImage", version = 1, name = "AddPonka")]
struct AddPonkaToImage {
    image_post: u64,
}

// Several attributes are read as one, so a key may not be repeated across them either.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "DeleteImagePost", version = 1)]
#[message(version = 2)]
struct DeleteImagePost {
    image_post: u64,
}

fn main() {}
