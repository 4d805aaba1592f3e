#[derive(upcaster::Message)]
#[message(version = 1)]
union ImageId {
    small: u32,
    large: u64,
}

fn main() {}
