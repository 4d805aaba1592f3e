use serde::{Deserialize, Serialize};

// Every mistake is reported, not only the first.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(nmae = "AddPonkaToImage", version = 0, aliases = ["Ponka", "", "Ponka"])]
#[message(version = 2, aliases = ["Batch"], previous = Self)]
struct Batch<T> {
    items: Vec<T>,
}

fn main() {}
