//! Ratio benchmarks: every figure is upcaster's cost over bare serde's (or another
//! baseline's), measured side by side in the same run.
//!
//! ```text
//! cargo bench --bench ratios              # the full run (a few minutes)
//! cargo bench --bench ratios -- --quick   # under a minute
//! cargo bench --bench ratios -- "JSON text" dispatch   # only cases whose name has these
//! ```
//!
//! Each case times its baseline and upcaster in alternating batches, so that a noisy
//! neighbour slows both alike, and reports the median of the per-round ratios. See
//! BENCHMARKS.md.

use std::hint::black_box;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use upcaster::{Decoded, Dispatcher, Format, Migration, Migrations, Registry};

#[path = "common/alloc.rs"]
mod alloc;

/// Counts allocations, to show that decoding the current version allocates what bare serde
/// does and no more.
#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn allocations(f: impl Fn()) -> usize {
    let before = alloc::count();
    f();
    alloc::count() - before
}

#[path = "common/order.rs"]
mod order;
use order::{order, Customer, Item, Order};

/// Typed chain: six structs linked by `previous`, each `From` the one before.
macro_rules! typed_chain {
    ($($v:ident = $n:literal $(<- $prev:ident)?;)*) => {
        $(
            #[derive(Clone, Serialize, Deserialize, upcaster::Message)]
            #[serde(rename_all = "camelCase")]
            #[message(name = "Chained", version = $n $(, previous = $prev)?)]
            struct $v {
                order_id: u64,
                customer: Customer,
                items: Vec<Item>,
                total_cents: u64,
                note: Option<String>,
            }
            $(
                impl From<$prev> for $v {
                    fn from(o: $prev) -> Self {
                        $v { order_id: o.order_id, customer: o.customer, items: o.items, total_cents: o.total_cents, note: o.note }
                    }
                }
            )?
        )*
    };
}

typed_chain! {
    C1 = 1;
    C2 = 2 <- C1;
    C3 = 3 <- C2;
    C4 = 4 <- C3;
    C5 = 5 <- C4;
    C6 = 6 <- C5;
}

/// The peer: native_model, which versions a message by its Rust struct and upgrades through
/// `From`, here with rmp-serde.
mod peer {
    use super::{Customer, Item};
    use native_model::native_model;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Serialize, Deserialize)]
    #[native_model(id = 1, version = 1, with = native_model::rmp_serde_1_3::RmpSerde)]
    pub struct OrderV1 {
        pub order_id: u64,
        pub customer: Customer,
        pub items: Vec<Item>,
        pub total: u64,
        pub note: Option<String>,
    }

    #[derive(Clone, Serialize, Deserialize)]
    #[native_model(id = 1, version = 2, with = native_model::rmp_serde_1_3::RmpSerde, from = OrderV1)]
    pub struct OrderV2 {
        pub order_id: u64,
        pub customer: Customer,
        pub items: Vec<Item>,
        pub total_cents: u64,
        pub note: Option<String>,
    }

    impl From<OrderV1> for OrderV2 {
        fn from(o: OrderV1) -> Self {
            OrderV2 {
                order_id: o.order_id,
                customer: o.customer,
                items: o.items,
                total_cents: o.total,
                note: o.note,
            }
        }
    }

    impl From<OrderV2> for OrderV1 {
        fn from(o: OrderV2) -> Self {
            OrderV1 {
                order_id: o.order_id,
                customer: o.customer,
                items: o.items,
                total: o.total_cents,
                note: o.note,
            }
        }
    }
}

/// Version 1 of `Order` as a struct, linked to the current one for a typed step.
#[derive(Clone, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "TypedOrder", version = 1)]
struct TypedV1 {
    order_id: u64,
    customer: Customer,
    items: Vec<Item>,
    total: u64,
    note: Option<String>,
}

#[derive(Clone, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(version = 2, previous = TypedV1)]
struct TypedV2 {
    order_id: u64,
    customer: Customer,
    items: Vec<Item>,
    total_cents: u64,
    note: Option<String>,
}

impl From<TypedV1> for TypedV2 {
    fn from(o: TypedV1) -> Self {
        TypedV2 {
            order_id: o.order_id,
            customer: o.customer,
            items: o.items,
            total_cents: o.total,
            note: o.note,
        }
    }
}

/// The same order at version 6 of a type whose five steps rename one field each.
#[derive(Clone, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "Renamed", version = 6)]
struct Renamed {
    order_id: u64,
    customer: Customer,
    items: Vec<Item>,
    total_cents: u64,
    note: Option<String>,
}

#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind000", version = 1)]
struct Kind000(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind001", version = 1)]
struct Kind001(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind002", version = 1)]
struct Kind002(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind003", version = 1)]
struct Kind003(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind004", version = 1)]
struct Kind004(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind005", version = 1)]
struct Kind005(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind006", version = 1)]
struct Kind006(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind007", version = 1)]
struct Kind007(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind008", version = 1)]
struct Kind008(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind009", version = 1)]
struct Kind009(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind010", version = 1)]
struct Kind010(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind011", version = 1)]
struct Kind011(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind012", version = 1)]
struct Kind012(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind013", version = 1)]
struct Kind013(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind014", version = 1)]
struct Kind014(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind015", version = 1)]
struct Kind015(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind016", version = 1)]
struct Kind016(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind017", version = 1)]
struct Kind017(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind018", version = 1)]
struct Kind018(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind019", version = 1)]
struct Kind019(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind020", version = 1)]
struct Kind020(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind021", version = 1)]
struct Kind021(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind022", version = 1)]
struct Kind022(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind023", version = 1)]
struct Kind023(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind024", version = 1)]
struct Kind024(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind025", version = 1)]
struct Kind025(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind026", version = 1)]
struct Kind026(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind027", version = 1)]
struct Kind027(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind028", version = 1)]
struct Kind028(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind029", version = 1)]
struct Kind029(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind030", version = 1)]
struct Kind030(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind031", version = 1)]
struct Kind031(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind032", version = 1)]
struct Kind032(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind033", version = 1)]
struct Kind033(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind034", version = 1)]
struct Kind034(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind035", version = 1)]
struct Kind035(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind036", version = 1)]
struct Kind036(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind037", version = 1)]
struct Kind037(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind038", version = 1)]
struct Kind038(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind039", version = 1)]
struct Kind039(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind040", version = 1)]
struct Kind040(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind041", version = 1)]
struct Kind041(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind042", version = 1)]
struct Kind042(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind043", version = 1)]
struct Kind043(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind044", version = 1)]
struct Kind044(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind045", version = 1)]
struct Kind045(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind046", version = 1)]
struct Kind046(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind047", version = 1)]
struct Kind047(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind048", version = 1)]
struct Kind048(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind049", version = 1)]
struct Kind049(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind050", version = 1)]
struct Kind050(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind051", version = 1)]
struct Kind051(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind052", version = 1)]
struct Kind052(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind053", version = 1)]
struct Kind053(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind054", version = 1)]
struct Kind054(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind055", version = 1)]
struct Kind055(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind056", version = 1)]
struct Kind056(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind057", version = 1)]
struct Kind057(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind058", version = 1)]
struct Kind058(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind059", version = 1)]
struct Kind059(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind060", version = 1)]
struct Kind060(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind061", version = 1)]
struct Kind061(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind062", version = 1)]
struct Kind062(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind063", version = 1)]
struct Kind063(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind064", version = 1)]
struct Kind064(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind065", version = 1)]
struct Kind065(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind066", version = 1)]
struct Kind066(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind067", version = 1)]
struct Kind067(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind068", version = 1)]
struct Kind068(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind069", version = 1)]
struct Kind069(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind070", version = 1)]
struct Kind070(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind071", version = 1)]
struct Kind071(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind072", version = 1)]
struct Kind072(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind073", version = 1)]
struct Kind073(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind074", version = 1)]
struct Kind074(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind075", version = 1)]
struct Kind075(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind076", version = 1)]
struct Kind076(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind077", version = 1)]
struct Kind077(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind078", version = 1)]
struct Kind078(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind079", version = 1)]
struct Kind079(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind080", version = 1)]
struct Kind080(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind081", version = 1)]
struct Kind081(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind082", version = 1)]
struct Kind082(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind083", version = 1)]
struct Kind083(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind084", version = 1)]
struct Kind084(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind085", version = 1)]
struct Kind085(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind086", version = 1)]
struct Kind086(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind087", version = 1)]
struct Kind087(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind088", version = 1)]
struct Kind088(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind089", version = 1)]
struct Kind089(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind090", version = 1)]
struct Kind090(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind091", version = 1)]
struct Kind091(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind092", version = 1)]
struct Kind092(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind093", version = 1)]
struct Kind093(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind094", version = 1)]
struct Kind094(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind095", version = 1)]
struct Kind095(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind096", version = 1)]
struct Kind096(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind097", version = 1)]
struct Kind097(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind098", version = 1)]
struct Kind098(Order);
#[derive(Serialize, Deserialize, upcaster::Message)]
#[message(name = "Kind099", version = 1)]
struct Kind099(Order);
fn hundred() -> Registry {
    Registry::builder()
        .register::<Kind000>()
        .register::<Kind001>()
        .register::<Kind002>()
        .register::<Kind003>()
        .register::<Kind004>()
        .register::<Kind005>()
        .register::<Kind006>()
        .register::<Kind007>()
        .register::<Kind008>()
        .register::<Kind009>()
        .register::<Kind010>()
        .register::<Kind011>()
        .register::<Kind012>()
        .register::<Kind013>()
        .register::<Kind014>()
        .register::<Kind015>()
        .register::<Kind016>()
        .register::<Kind017>()
        .register::<Kind018>()
        .register::<Kind019>()
        .register::<Kind020>()
        .register::<Kind021>()
        .register::<Kind022>()
        .register::<Kind023>()
        .register::<Kind024>()
        .register::<Kind025>()
        .register::<Kind026>()
        .register::<Kind027>()
        .register::<Kind028>()
        .register::<Kind029>()
        .register::<Kind030>()
        .register::<Kind031>()
        .register::<Kind032>()
        .register::<Kind033>()
        .register::<Kind034>()
        .register::<Kind035>()
        .register::<Kind036>()
        .register::<Kind037>()
        .register::<Kind038>()
        .register::<Kind039>()
        .register::<Kind040>()
        .register::<Kind041>()
        .register::<Kind042>()
        .register::<Kind043>()
        .register::<Kind044>()
        .register::<Kind045>()
        .register::<Kind046>()
        .register::<Kind047>()
        .register::<Kind048>()
        .register::<Kind049>()
        .register::<Kind050>()
        .register::<Kind051>()
        .register::<Kind052>()
        .register::<Kind053>()
        .register::<Kind054>()
        .register::<Kind055>()
        .register::<Kind056>()
        .register::<Kind057>()
        .register::<Kind058>()
        .register::<Kind059>()
        .register::<Kind060>()
        .register::<Kind061>()
        .register::<Kind062>()
        .register::<Kind063>()
        .register::<Kind064>()
        .register::<Kind065>()
        .register::<Kind066>()
        .register::<Kind067>()
        .register::<Kind068>()
        .register::<Kind069>()
        .register::<Kind070>()
        .register::<Kind071>()
        .register::<Kind072>()
        .register::<Kind073>()
        .register::<Kind074>()
        .register::<Kind075>()
        .register::<Kind076>()
        .register::<Kind077>()
        .register::<Kind078>()
        .register::<Kind079>()
        .register::<Kind080>()
        .register::<Kind081>()
        .register::<Kind082>()
        .register::<Kind083>()
        .register::<Kind084>()
        .register::<Kind085>()
        .register::<Kind086>()
        .register::<Kind087>()
        .register::<Kind088>()
        .register::<Kind089>()
        .register::<Kind090>()
        .register::<Kind091>()
        .register::<Kind092>()
        .register::<Kind093>()
        .register::<Kind094>()
        .register::<Kind095>()
        .register::<Kind096>()
        .register::<Kind097>()
        .register::<Kind098>()
        .register::<Kind099>()
        .build()
        .expect("registry")
}

fn handlers(registry: &Registry) -> Dispatcher<'_, usize> {
    Dispatcher::new(registry)
        .on(|m: Decoded<Kind000>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind001>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind002>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind003>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind004>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind005>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind006>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind007>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind008>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind009>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind010>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind011>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind012>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind013>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind014>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind015>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind016>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind017>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind018>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind019>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind020>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind021>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind022>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind023>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind024>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind025>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind026>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind027>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind028>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind029>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind030>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind031>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind032>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind033>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind034>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind035>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind036>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind037>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind038>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind039>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind040>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind041>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind042>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind043>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind044>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind045>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind046>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind047>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind048>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind049>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind050>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind051>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind052>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind053>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind054>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind055>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind056>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind057>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind058>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind059>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind060>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind061>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind062>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind063>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind064>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind065>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind066>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind067>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind068>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind069>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind070>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind071>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind072>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind073>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind074>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind075>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind076>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind077>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind078>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind079>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind080>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind081>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind082>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind083>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind084>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind085>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind086>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind087>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind088>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind089>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind090>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind091>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind092>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind093>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind094>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind095>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind096>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind097>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind098>| m.message.0.items.len())
        .expect("registered")
        .on(|m: Decoded<Kind099>| m.message.0.items.len())
        .expect("registered")
}

fn migration(file: &str, ops: &str) -> Migration {
    Migration::parse(file, &format!(r#"{{"ops": {ops}}}"#)).expect("a valid migration")
}

/// One step: v1 called `totalCents` `total`.
fn one_step() -> Registry {
    let mut m = Migrations::new();
    m.push(migration(
        "OrderPlaced/v1-to-v2.json",
        r#"[{"op":"move","from":"/total","path":"/totalCents"}]"#,
    ));
    Registry::builder()
        .register::<Order>()
        .migrations(m)
        .build()
        .expect("registry")
}

/// Five steps renaming `total` → `t2` → … → `totalCents`.
fn five_steps(streaming: bool) -> Registry {
    let names = ["total", "t2", "t3", "t4", "t5", "totalCents"];
    let mut m = Migrations::new();
    for v in 1..6 {
        let mut ops = format!(
            r#"[{{"op":"move","from":"/{}","path":"/{}"}}"#,
            names[v - 1],
            names[v]
        );
        if !streaming {
            // A `test` keeps the chain on the object tree: the general path.
            ops.push_str(r#",{"op":"test","path":"/orderId","value":47110815}"#);
        }
        ops.push(']');
        m.push(migration(&format!("Renamed/v{v}-to-v{}.json", v + 1), &ops));
    }
    Registry::builder()
        .register::<Renamed>()
        .migrations(m)
        .build()
        .expect("registry")
}

/// `order` at `version` of `type_name`, with the total under `total_name`, as the old
/// code's writer laid it out.
fn old_json(order: &Order, type_name: &str, version: u32, total_name: &str) -> Vec<u8> {
    let mut payload = serde_json::to_value(order).expect("json");
    let total = payload
        .as_object_mut()
        .and_then(|o| o.remove("totalCents"))
        .expect("total");
    payload[total_name] = total;
    format!(r#"{{"type":"{type_name}","version":{version},"payload":{payload}}}"#).into_bytes()
}

struct Case {
    target: f64,
    ratio: f64,
}

/// Times `base` and `ours` in alternating batches and returns median ns and the median of
/// the per-round ratios.
fn measure(rounds: usize, budget_ns: f64, base: &dyn Fn(), ours: &dyn Fn()) -> (f64, f64, f64) {
    let time = |f: &dyn Fn(), n: usize| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    // Batch size: about `budget_ns` per batch.
    let once = time(base, 3).max(1.0);
    let n = ((budget_ns / once) as usize).clamp(1, 1_000_000);
    time(base, n);
    time(ours, n);
    let (mut bases, mut ourss, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (b, o) = if round % 2 == 0 {
            let b = time(base, n);
            (b, time(ours, n))
        } else {
            let o = time(ours, n);
            (time(base, n), o)
        };
        bases.push(b);
        ourss.push(o);
        ratios.push(o / b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut bases), median(&mut ourss), median(&mut ratios))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Other words select the cases whose name contains one of them.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (rounds, budget) = if quick { (9, 2e6) } else { (31, 1e7) };
    let mut cases: Vec<Case> = Vec::new();
    let mut run = |name: String, target: f64, base: &dyn Fn(), ours: &dyn Fn()| {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            return;
        }
        let (base_ns, ours_ns, ratio) = measure(rounds, budget, base, ours);
        let within = match (target.is_finite(), ratio <= target) {
            (false, _) => "-",
            (true, true) => "yes",
            (true, false) => "NO",
        };
        let shown = if target.is_finite() {
            format!("<= {target}")
        } else {
            "-".to_owned()
        };
        println!("{name:<52} {base_ns:>12.0} {ours_ns:>12.0} {ratio:>7.3}x  {shown:<8} {within}");
        cases.push(Case { target, ratio });
    };
    println!(
        "{:<52} {:>12} {:>12} {:>8}  {:<8} within",
        "case", "baseline ns", "ours ns", "ratio", "target"
    );

    let sizes = [("200 B", 1usize), ("5 KB", 50), ("100 KB", 1000)];
    let current = Registry::builder()
        .register::<Order>()
        .build()
        .expect("registry");
    for (label, items) in sizes {
        let o = order(items);
        let env_json = current.encode(&o, Format::Json).expect("encode");
        let env_text = String::from_utf8(env_json.clone()).expect("utf8");
        let bare_json = serde_json::to_vec(&o).expect("json");
        let bare_text = String::from_utf8(bare_json.clone()).expect("utf8");
        let env_pack = current.encode(&o, Format::MessagePack).expect("encode");
        let bare_pack = rmp_serde::to_vec_named(&o).expect("msgpack");
        let size = bare_json.len();
        run(
            format!("decode current, JSON bytes ({label}, {size} B)"),
            1.05,
            &|| {
                black_box(serde_json::from_slice::<Order>(black_box(&bare_json)).expect("decode"));
            },
            &|| {
                black_box(
                    current
                        .decode::<Order>(black_box(&env_json))
                        .expect("decode"),
                );
            },
        );
        run(
            format!("decode current, JSON text ({label})"),
            1.05,
            &|| {
                black_box(serde_json::from_str::<Order>(black_box(&bare_text)).expect("decode"));
            },
            &|| {
                black_box(
                    current
                        .decode_str::<Order>(black_box(&env_text))
                        .expect("decode"),
                );
            },
        );
        run(
            format!("decode current, MessagePack ({label})"),
            1.10,
            &|| {
                black_box(rmp_serde::from_slice::<Order>(black_box(&bare_pack)).expect("decode"));
            },
            &|| {
                black_box(
                    current
                        .decode::<Order>(black_box(&env_pack))
                        .expect("decode"),
                );
            },
        );
        run(
            format!("encode, JSON ({label})"),
            1.05,
            &|| {
                black_box(serde_json::to_string(black_box(&o)).expect("encode"));
            },
            &|| {
                black_box(current.encode(black_box(&o), Format::Json).expect("encode"));
            },
        );
        run(
            format!("encode, MessagePack ({label})"),
            1.05,
            &|| {
                black_box(rmp_serde::to_vec_named(black_box(&o)).expect("encode"));
            },
            &|| {
                black_box(
                    current
                        .encode(black_box(&o), Format::MessagePack)
                        .expect("encode"),
                );
            },
        );
        if items <= 50 {
            let one = one_step();
            let v1 = old_json(&o, "OrderPlaced", 1, "total");
            let target = if items == 1 { 2.0 } else { 1.3 };
            run(
                format!("decode through a 1-step rename migration ({label})"),
                target,
                &|| {
                    black_box(
                        serde_json::from_slice::<Order>(black_box(&bare_json)).expect("decode"),
                    );
                },
                &|| {
                    black_box(one.decode::<Order>(black_box(&v1)).expect("decode"));
                },
            );
            let five = five_steps(true);
            let v1 = old_json(&o, "Renamed", 1, "total");
            let target = if items == 1 { 2.5 } else { 1.5 };
            run(
                format!("decode through a 5-step rename chain ({label})"),
                target,
                &|| {
                    black_box(
                        serde_json::from_slice::<Order>(black_box(&bare_json)).expect("decode"),
                    );
                },
                &|| {
                    black_box(five.decode::<Renamed>(black_box(&v1)).expect("decode"));
                },
            );
            let tree = five_steps(false);
            // Informational: the same chain kept on the object tree (no target of its own).
            run(
                format!("(info) 5-step chain on the object tree ({label})"),
                f64::INFINITY,
                &|| {
                    black_box(
                        serde_json::from_slice::<Order>(black_box(&bare_json)).expect("decode"),
                    );
                },
                &|| {
                    black_box(tree.decode::<Renamed>(black_box(&v1)).expect("decode"));
                },
            );
        }
        if items == 1 {
            let chained = Registry::builder()
                .register::<C6>()
                .build()
                .expect("registry");
            let payload = serde_json::to_string(&o).expect("json");
            let v1 =
                format!(r#"{{"type":"Chained","version":1,"payload":{payload}}}"#).into_bytes();
            run(
                format!("decode through a typed From chain of 5 steps ({label})"),
                1.25,
                &|| {
                    black_box(
                        serde_json::from_slice::<Order>(black_box(&bare_json)).expect("decode"),
                    );
                },
                &|| {
                    black_box(chained.decode::<C6>(black_box(&v1)).expect("decode"));
                },
            );
            let many = hundred();
            let dispatcher = handlers(&many);
            let msg = many
                .encode(&Kind057(o.clone()), Format::Json)
                .expect("encode");
            run(
                format!("dispatch by type name among 100 types ({label})"),
                1.05,
                &|| {
                    black_box(
                        many.decode::<Kind057>(black_box(&msg))
                            .expect("decode")
                            .message
                            .0
                            .items
                            .len(),
                    );
                },
                &|| {
                    black_box(dispatcher.dispatch(black_box(&msg)).expect("dispatch"));
                },
            );
            // Allocations of one current-version decode, ours against bare serde.
            let ours = allocations(|| {
                black_box(current.decode::<Order>(&env_json).expect("decode"));
            });
            let bare = allocations(|| {
                black_box(serde_json::from_slice::<Order>(&bare_json).expect("decode"));
            });
            let ours_pack = allocations(|| {
                black_box(current.decode::<Order>(&env_pack).expect("decode"));
            });
            let bare_pack_n = allocations(|| {
                black_box(rmp_serde::from_slice::<Order>(&bare_pack).expect("decode"));
            });
            println!("allocations per current-version decode ({label}): JSON {ours} vs bare {bare}, MessagePack {ours_pack} vs bare {bare_pack_n}: {}",
                if ours == bare && ours_pack == bare_pack_n { "equal" } else { "DIFFERENT" });
        }
    }
    // Against a peer: native_model's versioned decode, both fed an owned copy of the bytes
    // (native_model takes a `Vec<u8>`), MessagePack on both sides. Informational.
    for (label, items) in [("200 B", 1usize), ("5 KB", 50)] {
        let o = order(items);
        let theirs_v2 = peer::OrderV2 {
            order_id: o.order_id,
            customer: o.customer.clone(),
            items: o.items.clone(),
            total_cents: o.total_cents,
            note: o.note.clone(),
        };
        let theirs_bytes = native_model::encode(&theirs_v2).expect("encode");
        let ours_bytes = current.encode(&o, Format::MessagePack).expect("encode");
        run(
            format!("(peer) native_model decode, current ({label})"),
            f64::INFINITY,
            &|| {
                black_box(
                    native_model::decode::<peer::OrderV2>(black_box(theirs_bytes.clone()))
                        .expect("decode"),
                );
            },
            &|| {
                black_box(
                    current
                        .decode::<Order>(black_box(&ours_bytes.clone()))
                        .expect("decode")
                        .message,
                );
            },
        );
        let theirs_v1 =
            native_model::encode(&peer::OrderV1::from(theirs_v2.clone())).expect("encode");
        let typed = Registry::builder()
            .register::<TypedV2>()
            .build()
            .expect("registry");
        let old = Registry::builder()
            .register::<TypedV1>()
            .build()
            .expect("registry");
        let ours_v1 = old
            .encode(
                &TypedV1 {
                    order_id: o.order_id,
                    customer: o.customer.clone(),
                    items: o.items.clone(),
                    total: o.total_cents,
                    note: o.note.clone(),
                },
                Format::MessagePack,
            )
            .expect("encode");
        run(
            format!("(peer) native_model decode, 1 typed step ({label})"),
            f64::INFINITY,
            &|| {
                black_box(
                    native_model::decode::<peer::OrderV2>(black_box(theirs_v1.clone()))
                        .expect("decode"),
                );
            },
            &|| {
                black_box(
                    typed
                        .decode::<TypedV2>(black_box(&ours_v1.clone()))
                        .expect("decode")
                        .message,
                );
            },
        );
    }
    let targeted: Vec<&Case> = cases.iter().filter(|c| c.target.is_finite()).collect();
    let within = targeted.iter().filter(|c| c.ratio <= c.target).count();
    println!("{within} of {} cases within target", targeted.len());
}
