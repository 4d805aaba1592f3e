use serde::{Deserialize, Serialize};
use upcaster::Message;

// Several `#[message]` attributes are read as one.
#[derive(Serialize, Deserialize, Message)]
#[message(name = "AddPonkaToImage", version = 3)]
#[message(aliases = ["AddPonka", "Ponka", "add-ponka.v0"])]
struct AddPonkaToImage {
    image_post: u64,
}

#[derive(Serialize, Deserialize, Message)]
#[message(version = 1, aliases = [])]
struct NoAliases;

fn main() {
    assert_eq!(AddPonkaToImage::NAME, "AddPonkaToImage");
    assert_eq!(AddPonkaToImage::VERSION, 3);
    assert_eq!(
        AddPonkaToImage::ALIASES,
        &["AddPonka", "Ponka", "add-ponka.v0"]
    );
    assert!(NoAliases::ALIASES.is_empty());
}
