use serde::{Deserialize, Serialize};
use upcaster::Message;

// Values passed through `macro_rules!` fragments arrive wrapped in invisible groups.
macro_rules! message {
    ($ty:ident, $name:expr, $version:expr, $alias:expr) => {
        #[derive(Serialize, Deserialize, Message)]
        #[message(name = $name, version = $version, aliases = [$alias])]
        struct $ty {
            image_post: u64,
        }
    };
}

message!(AddPonkaToImage, "AddPonkaToImage", 3, "AddPonka");

// A `u32` suffix is allowed.
#[derive(Serialize, Deserialize, Message)]
#[message(version = 2u32)]
struct DeleteImagePost {
    image_post: u64,
}

fn main() {
    assert_eq!(AddPonkaToImage::NAME, "AddPonkaToImage");
    assert_eq!(AddPonkaToImage::VERSION, 3);
    assert_eq!(AddPonkaToImage::ALIASES, &["AddPonka"]);
    assert_eq!(DeleteImagePost::VERSION, 2);
}
