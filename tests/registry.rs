//! Upcaster chains: typed, untyped and mixed, and the checks a registry makes when built.

mod common;

use serde::{Deserialize, Serialize};
use serde_json::json;
use upcaster::{
    Decoded, Dispatcher, ErrorKind, Format, Message, Registry, RegistryProblem, Upcaster, Value,
};

// A typed chain: three structs linked by `previous`.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Shipment", version = 1)]
struct ShipmentV1 {
    weight_grams: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Shipment", version = 2, previous = ShipmentV1)]
struct ShipmentV2 {
    weight_kg: f64,
}

impl From<ShipmentV1> for ShipmentV2 {
    fn from(v1: ShipmentV1) -> Self {
        ShipmentV2 {
            weight_kg: f64::from(v1.weight_grams) / 1000.0,
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(version = 3, previous = ShipmentV2, aliases = ["Parcel"])]
struct Shipment {
    weight_kg: f64,
    carrier: String,
}

impl TryFrom<ShipmentV2> for Shipment {
    type Error = String;
    fn try_from(v2: ShipmentV2) -> Result<Self, String> {
        if v2.weight_kg > 1000.0 {
            return Err(format!("{} kg is too heavy for any carrier", v2.weight_kg));
        }
        Ok(Shipment {
            weight_kg: v2.weight_kg,
            carrier: "post".into(),
        })
    }
}

fn json(type_name: &str, version: u32, payload: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": type_name, "version": version, "payload": payload})).unwrap()
}

#[test]
fn typed_chain_reads_every_version() {
    let registry = Registry::builder().register::<Shipment>().build().unwrap();
    let expected = Shipment {
        weight_kg: 1.5,
        carrier: "post".into(),
    };
    let v1 = json("Shipment", 1, json!({"weight_grams": 1500}));
    let v2 = json("Shipment", 2, json!({"weight_kg": 1.5}));
    let v3 = json("Shipment", 3, json!({"weight_kg": 1.5, "carrier": "post"}));
    for (bytes, version) in [(v1, 1), (v2, 2), (v3, 3)] {
        let d: Decoded<Shipment> = registry.decode(&bytes).unwrap();
        assert_eq!(d.message, expected);
        assert_eq!(d.arrived_version(), version);
        assert_eq!(d.was_upcast(), version != 3);
    }
    // Old structs encode old messages, as yesterday's code did, in both codecs.
    let old = Registry::builder()
        .register::<ShipmentV1>()
        .build()
        .unwrap();
    for format in [Format::Json, Format::MessagePack] {
        let bytes = old
            .encode(&ShipmentV1 { weight_grams: 1500 }, format)
            .unwrap();
        assert_eq!(
            registry.decode::<Shipment>(&bytes).unwrap().message,
            expected
        );
    }
}

#[test]
fn typed_chain_works_without_registering() {
    let registry = Registry::builder().build().unwrap();
    let bytes = json("Parcel", 1, json!({"weight_grams": 10}));
    let d: Decoded<Shipment> = registry.decode(&bytes).unwrap();
    assert_eq!(d.message.weight_kg, 0.01);
    assert_eq!(d.header.type_name, "Parcel", "read under its alias");
}

#[test]
fn try_from_failure_is_an_upcast_failure() {
    let registry = Registry::builder().register::<Shipment>().build().unwrap();
    let e = registry
        .decode::<Shipment>(&json("Shipment", 2, json!({"weight_kg": 5000.0})))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "upcasting `Shipment` v2→v3 failed: 5000 kg is too heavy for any carrier"
    );
    let e = registry
        .decode::<Shipment>(&json("Shipment", 1, json!({"weight_grams": "heavy"})))
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::PayloadInvalid { version: 1, pointer, .. } if pointer == "/weight_grams"),
        "{e}"
    );
}

// A mixed chain: v1 → v2 untyped, v2 → v3 typed, v3 → v4 untyped.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Profile", version = 2)]
struct ProfileV2 {
    name: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Profile", version = 3)]
struct ProfileV3 {
    first: String,
    last: String,
}

impl From<ProfileV2> for ProfileV3 {
    fn from(v2: ProfileV2) -> Self {
        let (first, last) = v2.name.split_once(' ').unwrap_or((&v2.name, ""));
        ProfileV3 {
            first: first.into(),
            last: last.into(),
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Profile", version = 4)]
struct Profile {
    first: String,
    last: String,
    locale: String,
}

fn rename(from: u32, old: &'static str, new: &'static str) -> Upcaster {
    Upcaster::new(from, from + 1, move |p| {
        let o = p.as_object_mut().ok_or("not an object")?;
        let v = o.remove(old).ok_or_else(|| format!("`{old}` is missing"))?;
        o.insert(new.into(), v);
        Ok(())
    })
}

fn profile_registry() -> Registry {
    Registry::builder()
        .register::<Profile>()
        .upcaster::<Profile>(rename(1, "fullName", "name"))
        .upcaster::<Profile>(Upcaster::typed::<ProfileV2, ProfileV3>())
        .upcaster::<Profile>(Upcaster::new(3, 4, |p| {
            let o = p.as_object_mut().ok_or("not an object")?;
            o.entry("locale").or_insert_with(|| json!("en"));
            Ok(())
        }))
        .build()
        .unwrap()
}

#[test]
fn mixed_chain_of_untyped_and_typed_steps() {
    let registry = profile_registry();
    let expected = Profile {
        first: "Ada".into(),
        last: "Lovelace".into(),
        locale: "en".into(),
    };
    let cases = [
        json("Profile", 1, json!({"fullName": "Ada Lovelace"})),
        json("Profile", 2, json!({"name": "Ada Lovelace"})),
        json("Profile", 3, json!({"first": "Ada", "last": "Lovelace"})),
        json(
            "Profile",
            4,
            json!({"first": "Ada", "last": "Lovelace", "locale": "en"}),
        ),
    ];
    for bytes in cases {
        assert_eq!(
            registry.decode::<Profile>(&bytes).unwrap().message,
            expected
        );
        // The same payload in MessagePack takes the same chain.
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let packed = rmp_serde::to_vec_named(&value).unwrap();
        assert_eq!(
            registry.decode::<Profile>(&packed).unwrap().message,
            expected
        );
    }
    let e = registry
        .decode::<Profile>(&json("Profile", 2, json!({"name": 5})))
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::PayloadInvalid { version: 2, pointer, .. } if pointer == "/name"),
        "a typed step reports its own version: {e}"
    );
}

// Untyped steps below a typed link.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Ticket", version = 2)]
struct TicketV2 {
    title: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Ticket", version = 3, previous = TicketV2)]
struct Ticket {
    title: String,
    open: bool,
}

impl From<TicketV2> for Ticket {
    fn from(v2: TicketV2) -> Self {
        Ticket {
            title: v2.title,
            open: true,
        }
    }
}

#[test]
fn untyped_steps_hand_over_to_typed_links() {
    let registry = Registry::builder()
        .register::<Ticket>()
        .upcaster::<Ticket>(rename(1, "subject", "title").renamed_from("Issue"))
        .build()
        .unwrap();
    let expected = Ticket {
        title: "crash".into(),
        open: true,
    };
    for bytes in [
        json("Issue", 1, json!({"subject": "crash"})),
        json("Ticket", 2, json!({"title": "crash"})),
    ] {
        assert_eq!(registry.decode::<Ticket>(&bytes).unwrap().message, expected);
    }
    let dispatcher = Dispatcher::new(&registry)
        .on(|d: Decoded<Ticket>| (d.header.type_name.into_owned(), d.message))
        .unwrap();
    let (name, ticket) = dispatcher
        .dispatch(&json("Issue", 1, json!({"subject": "crash"})))
        .unwrap();
    assert_eq!((name.as_str(), ticket), ("Issue", expected));
}

// A type renamed through its typed link.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Bill", version = 1)]
struct BillV1 {
    cents: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Invoice", version = 2, previous = BillV1)]
struct Invoice {
    cents: u64,
}

impl From<BillV1> for Invoice {
    fn from(b: BillV1) -> Self {
        Invoice { cents: b.cents }
    }
}

#[test]
fn a_typed_link_may_rename_the_type() {
    let registry = Registry::builder().register::<Invoice>().build().unwrap();
    let bytes = json("Bill", 1, json!({"cents": 250}));
    let d: Decoded<Invoice> = registry.decode(&bytes).unwrap();
    assert_eq!(d.message, Invoice { cents: 250 });
    assert_eq!(registry.current_version("Bill"), Some(2));
}

// Registry checks.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "A", version = 4)]
struct A {}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "B", version = 1, aliases = ["A"])]
struct B {}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "A", version = 1)]
struct AlsoA {}

fn noop(from: u32, to: u32) -> Upcaster {
    Upcaster::new(from, to, |_| Ok(()))
}

fn problems(builder: upcaster::RegistryBuilder) -> Vec<RegistryProblem> {
    builder.build().unwrap_err().problems
}

#[test]
fn a_gap_is_reported_at_build() {
    let found = problems(
        Registry::builder()
            .register::<A>()
            .upcaster::<A>(noop(1, 2))
            .upcaster::<A>(noop(3, 4)),
    );
    assert_eq!(
        found,
        [RegistryProblem::Gap {
            type_name: "A".into(),
            from: 2,
            to: 3,
            current: 4
        }]
    );
}

#[test]
fn a_chain_that_stops_below_the_current_version_is_a_gap() {
    let found = problems(
        Registry::builder()
            .register::<A>()
            .upcaster::<A>(noop(1, 2))
            .upcaster::<A>(noop(2, 3)),
    );
    assert_eq!(
        found,
        [RegistryProblem::Gap {
            type_name: "A".into(),
            from: 3,
            to: 4,
            current: 4
        }]
    );
}

#[test]
fn duplicate_steps_are_reported() {
    let found = problems(
        Registry::builder()
            .register::<A>()
            .upcaster::<A>(noop(3, 4))
            .upcaster::<A>(noop(3, 4)),
    );
    assert_eq!(
        found,
        [RegistryProblem::DuplicateStep {
            type_name: "A".into(),
            from: 3,
            to: 4
        }]
    );
    // A step for a pair that a `previous` link already serves.
    let found = problems(
        Registry::builder()
            .register::<Shipment>()
            .upcaster::<Shipment>(noop(1, 2)),
    );
    assert_eq!(
        found,
        [RegistryProblem::DuplicateStep {
            type_name: "Shipment".into(),
            from: 1,
            to: 2
        }]
    );
}

#[test]
fn steps_that_go_down_skip_or_overshoot_are_reported() {
    let found = problems(
        Registry::builder()
            .register::<A>()
            .upcaster::<A>(noop(3, 4))
            .upcaster::<A>(noop(4, 3))
            .upcaster::<A>(noop(2, 2))
            .upcaster::<A>(noop(1, 3))
            .upcaster::<A>(noop(4, 5))
            .upcaster::<A>(noop(0, 1)),
    );
    let a = || "A".to_owned();
    assert_eq!(
        found,
        [
            RegistryProblem::Cycle {
                type_name: a(),
                from: 4,
                to: 3
            },
            RegistryProblem::Cycle {
                type_name: a(),
                from: 2,
                to: 2
            },
            RegistryProblem::NotAdjacent {
                type_name: a(),
                from: 1,
                to: 3
            },
            RegistryProblem::BeyondCurrent {
                type_name: a(),
                from: 4,
                to: 5,
                current: 4
            },
            RegistryProblem::VersionZero {
                type_name: a(),
                from: 0,
                to: 1
            },
        ]
    );
}

#[test]
fn names_must_be_unique() {
    assert_eq!(
        problems(Registry::builder().register::<A>().register::<A>()),
        [RegistryProblem::DuplicateName { name: "A".into() }]
    );
    assert_eq!(
        problems(Registry::builder().register::<A>().register::<AlsoA>()),
        [RegistryProblem::SeveralVersions {
            name: "A".into(),
            older: 1,
            newer: 4
        }]
    );
    assert_eq!(
        problems(Registry::builder().register::<A>().register::<B>()),
        [RegistryProblem::AliasCollision {
            alias: "A".into(),
            owner: "B".into(),
            other: "A".into()
        }]
    );
    // A former name counts too.
    assert_eq!(
        problems(
            Registry::builder()
                .register::<A>()
                .upcaster::<A>(noop(3, 4).renamed_from("Invoice"))
                .upcaster::<A>(noop(2, 3))
                .upcaster::<A>(noop(1, 2))
                .register::<Invoice>()
        ),
        [RegistryProblem::AliasCollision {
            alias: "Invoice".into(),
            owner: "A".into(),
            other: "Invoice".into()
        }]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = Registry::builder()
        .register::<A>()
        .upcaster::<A>(noop(1, 2))
        .upcaster::<B>(noop(1, 2))
        .register::<A>()
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid registry:
  - message type `A` is registered twice
  - `B` is not registered
  - `A` has no step v2→v3, so older versions cannot reach v4
  - `A` has no step v3→v4, so older versions cannot reach v4"
    );
}

#[test]
fn a_handler_for_an_unregistered_type_is_refused() {
    let registry = Registry::builder().register::<A>().build().unwrap();
    let e = Dispatcher::new(&registry)
        .on(|_: Decoded<B>| ())
        .err()
        .unwrap();
    assert_eq!(
        e.problems,
        [RegistryProblem::NotRegistered {
            type_name: "B".into()
        }]
    );
}

#[test]
fn dispatch_routes_a_mixed_queue_by_type_name() {
    let registry = Registry::builder()
        .register::<Shipment>()
        .register::<Invoice>()
        .register::<Profile>()
        .upcaster::<Profile>(rename(1, "fullName", "name"))
        .upcaster::<Profile>(Upcaster::typed::<ProfileV2, ProfileV3>())
        .upcaster::<Profile>(noop(3, 4))
        .build()
        .unwrap();
    let dispatcher = Dispatcher::new(&registry)
        .on(|d: Decoded<Shipment>| format!("shipment {} kg", d.message.weight_kg))
        .unwrap()
        .on(|d: Decoded<Invoice>| format!("invoice {} cents", d.message.cents))
        .unwrap();
    let queue = [
        json("Shipment", 1, json!({"weight_grams": 2000})),
        json("Bill", 1, json!({"cents": 9})),
        json("Parcel", 3, json!({"weight_kg": 1.0, "carrier": "x"})),
    ];
    let out: Vec<String> = queue
        .iter()
        .map(|b| dispatcher.dispatch(b).unwrap())
        .collect();
    assert_eq!(out, ["shipment 2 kg", "invoice 9 cents", "shipment 1 kg"]);
    let e = dispatcher
        .dispatch(&json("Profile", 4, json!({})))
        .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::Unhandled {
            type_name: "Profile"
        }
    ));
}

#[test]
fn registering_two_versions_of_one_type_keeps_the_newer_and_says_why() {
    let found = problems(
        Registry::builder()
            .register::<ShipmentV1>()
            .register::<Shipment>()
            .upcaster::<Shipment>(noop(1, 2)),
    );
    assert_eq!(
        found,
        [
            RegistryProblem::SeveralVersions {
                name: "Shipment".into(),
                older: 1,
                newer: 3
            },
            RegistryProblem::DuplicateStep {
                type_name: "Shipment".into(),
                from: 1,
                to: 2
            },
        ]
    );
    let found = problems(
        Registry::builder()
            .register::<Shipment>()
            .upcaster::<ShipmentV2>(noop(1, 2)),
    );
    assert_eq!(
        found[0].to_string(),
        "`Shipment` v2 is not the registered current version v3: use the current struct"
    );
}

#[test]
fn a_handler_for_an_older_struct_is_refused_with_the_reason() {
    let registry = Registry::builder().register::<Shipment>().build().unwrap();
    let e = Dispatcher::new(&registry)
        .on(|_: Decoded<ShipmentV1>| ())
        .err()
        .unwrap();
    assert_eq!(
        e.problems,
        [RegistryProblem::NotCurrent {
            type_name: "Shipment".into(),
            version: 1,
            current: 3
        }]
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Old", version = 1, aliases = ["Older"])]
struct NoteV1 {
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Note", version = 2, previous = NoteV1)]
struct Note {
    text: String,
}

impl From<NoteV1> for Note {
    fn from(v1: NoteV1) -> Self {
        Note { text: v1.text }
    }
}

#[test]
fn names_and_aliases_of_linked_structs_resolve_registered_or_not() {
    let bytes = json("Older", 1, json!({"text": "hi"}));
    let registered = Registry::builder().register::<Note>().build().unwrap();
    let unregistered = Registry::builder().build().unwrap();
    for registry in [registered, unregistered] {
        let d: Decoded<Note> = registry.decode(&bytes).unwrap();
        assert_eq!(d.message.text, "hi");
        let old = json("Old", 1, json!({"text": "hi"}));
        assert_eq!(registry.decode::<Note>(&old).unwrap().message.text, "hi");
    }
}
