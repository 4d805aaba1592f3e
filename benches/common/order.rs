//! The message both benchmarks decode: an order with a nested customer, items with strings,
//! numbers and tag lists.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub price_cents: u64,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: u64,
    pub name: String,
    pub email: String,
}

/// A realistic message: nested structs, strings, arrays, numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "OrderPlaced", version = 2)]
pub struct Order {
    pub order_id: u64,
    pub customer: Customer,
    pub items: Vec<Item>,
    pub total_cents: u64,
    pub note: Option<String>,
}

/// An order with `items` items: 1 makes about 200 B of JSON, 50 about 5 KB.
pub fn order(items: usize) -> Order {
    Order {
        order_id: 47_110_815,
        customer: Customer {
            id: 42,
            name: "Ryan Weaver".into(),
            email: "ryan@example.com".into(),
        },
        items: (0..items)
            .map(|i| Item {
                sku: format!("SKU-{i:05}"),
                quantity: (i % 7 + 1) as u32,
                price_cents: 1999 + i as u64,
                tags: vec!["ponka".into(), "print".into()],
            })
            .collect(),
        total_cents: 123_456,
        note: Some("leave at the door".into()),
    }
}
