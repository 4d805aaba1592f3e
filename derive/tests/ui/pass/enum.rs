use serde::{Deserialize, Serialize};
use upcaster::Message;

#[derive(Serialize, Deserialize, Message)]
#[serde(tag = "kind")]
#[message(name = "ImageEvent", version = 1)]
enum ImageEvent {
    Uploaded { id: u64 },
    Deleted { id: u64, reason: String },
    Cleared,
}

fn main() {
    assert_eq!(ImageEvent::NAME, "ImageEvent");
    assert_eq!(ImageEvent::VERSION, 1);
    assert!(ImageEvent::ALIASES.is_empty());
}
