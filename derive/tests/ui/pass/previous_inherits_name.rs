use serde::{Deserialize, Serialize};
use upcaster::Message;

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "OrderPlaced", version = 1)]
struct OrderPlacedV1 {
    total: u64,
}

// No `name`: the versions of one message type share the name of the first.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(version = 2, previous = OrderPlacedV1)]
struct OrderPlacedV2 {
    total_cents: u64,
}

impl From<OrderPlacedV1> for OrderPlacedV2 {
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlacedV2 {
            total_cents: v1.total,
        }
    }
}

// An explicit name still renames the type.
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "OrderSubmitted", version = 3, previous = OrderPlacedV2)]
struct OrderSubmitted {
    total_cents: u64,
}

impl From<OrderPlacedV2> for OrderSubmitted {
    fn from(v2: OrderPlacedV2) -> Self {
        OrderSubmitted {
            total_cents: v2.total_cents,
        }
    }
}

fn main() {
    assert_eq!(OrderPlacedV2::NAME, "OrderPlaced");
    assert_eq!(OrderSubmitted::NAME, "OrderSubmitted");
}
