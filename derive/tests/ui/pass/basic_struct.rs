use serde::{Deserialize, Serialize};
use upcaster::Message;

#[derive(Serialize, Deserialize, Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "AddPonkaToImage", version = 2, aliases = ["AddPonka"])]
struct AddPonkaToImage {
    image_post: u64,
}

fn main() {
    assert_eq!(AddPonkaToImage::NAME, "AddPonkaToImage");
    assert_eq!(AddPonkaToImage::VERSION, 2);
    assert_eq!(AddPonkaToImage::ALIASES, &["AddPonka"]);

    let mut versions = Vec::new();
    upcaster::__private::typed_versions::<AddPonkaToImage>(&mut versions);
    let aliases: &[&str] = &["AddPonka"];
    assert_eq!(versions, [("AddPonkaToImage", 2, aliases)]);
}
