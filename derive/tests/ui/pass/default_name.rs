use serde::{Deserialize, Serialize};
use upcaster::Message;

// No `name`: the type's identifier is the message name.
#[derive(Serialize, Deserialize, Message)]
#[message(version = 4)]
struct DeleteImagePost {
    image_post: u64,
}

// A raw identifier gives the name without `r#`.
#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Message)]
#[message(version = 1)]
struct r#match {
    id: u64,
}

fn main() {
    assert_eq!(DeleteImagePost::NAME, "DeleteImagePost");
    assert_eq!(DeleteImagePost::VERSION, 4);
    assert_eq!(r#match::NAME, "match");
}
