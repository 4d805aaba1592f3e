use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
struct Batch<T> {
    items: Vec<T>,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
struct Borrowed<'a> {
    caption: &'a str,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 1)]
struct Fixed<const N: usize> {
    image_post: u64,
}

fn main() {}
