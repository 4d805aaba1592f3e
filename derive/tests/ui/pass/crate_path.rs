// `crate = "..."` points the generated code at upcaster through a facade, as a crate that
// re-exports upcaster under another name would.
use serde::{Deserialize, Serialize};

mod facade {
    pub mod messaging {
        pub use upcaster::*;
    }
}

#[derive(Serialize, Deserialize)]
struct OldPing {
    n: u32,
}

#[derive(Serialize, Deserialize, facade::messaging::Message)]
#[message(crate = "facade::messaging", name = "Ping", version = 1)]
struct PingV1 {
    n: u32,
}

#[derive(Serialize, Deserialize, facade::messaging::Message)]
#[message(crate = "crate::facade::messaging", version = 2, previous = PingV1)]
struct Ping {
    count: u32,
}

impl From<PingV1> for Ping {
    fn from(old: PingV1) -> Self {
        Ping { count: old.n }
    }
}

fn main() {
    use facade::messaging::{Message, Registry};
    let _ = OldPing { n: 0 }.n;
    assert_eq!((Ping::NAME, Ping::VERSION), ("Ping", 2));
    let registry = Registry::builder().register::<Ping>().build().unwrap();
    let old = br#"{"type":"Ping","version":1,"payload":{"n":3}}"#;
    assert_eq!(registry.decode::<Ping>(old).unwrap().message.count, 3);
}
