use serde::{Deserialize, Serialize};
use upcaster::Message;

#[derive(Serialize, Deserialize, Message)]
#[message(crate = "not a path!", version = 1)]
struct BadPath {
    id: u64,
}

#[derive(Serialize, Deserialize, Message)]
#[message(crate = upcaster, version = 1)]
struct NotAString {
    id: u64,
}

fn main() {}
