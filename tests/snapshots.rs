//! Every stored sample through today's chain, compared with its snapshot: the test a user
//! writes, in one line. Review changes with `cargo insta review`.

mod common;

use common::ponka::{self, AddPonkaToImage, DeleteImagePost, ImagePostDeletedEvent};
use upcaster::{Format, Registry, Upcaster};
use upcaster_testing::{store_sample, Samples};

fn samples(registry: &Registry) -> Samples<'_> {
    Samples::new(registry)
        .message::<AddPonkaToImage>()
        .message::<DeleteImagePost>()
        .message::<ImagePostDeletedEvent>()
}

#[test]
fn every_sample_comes_out_as_its_snapshot() {
    let registry = ponka::registry().unwrap();
    upcaster_testing::assert_samples!(samples(&registry), "tests/samples");
}

#[test]
fn generated_payloads_of_every_version_reach_the_current_one() {
    let registry = ponka::registry().unwrap();
    samples(&registry).check_generated("schemas", 64).unwrap();
}

#[test]
fn current_samples_round_trip_to_the_same_bytes() {
    let registry = ponka::registry().unwrap();
    let results = samples(&registry).run("tests/samples");
    assert_eq!(results.len(), 4);
    for r in results {
        let content = r.outcome.unwrap();
        match content["arrived_version"].as_u64() {
            Some(2) => assert_eq!(content["round_trip"], "bytes", "{}", r.path.display()),
            _ => assert!(content.get("round_trip").is_none()),
        }
    }
}

#[test]
fn a_changed_migration_changes_what_old_samples_become() {
    // The ponka step, but writing the id into another field: the v1 snapshots would differ.
    let changed = Registry::builder()
        .register::<AddPonkaToImage>()
        .register::<DeleteImagePost>()
        .register::<ImagePostDeletedEvent>()
        .upcaster::<AddPonkaToImage>(Upcaster::new(1, 2, |p| {
            let o = p.as_object_mut().ok_or("not an object")?;
            let id = o.remove("imagePostId").ok_or("missing")?;
            o.insert(
                "imagePost".into(),
                serde_json::json!(id.as_u64().unwrap_or(0) + 1),
            );
            Ok(())
        }))
        .build()
        .unwrap();
    let today = ponka::registry().unwrap();
    let before = samples(&today).run("tests/samples");
    let after = samples(&changed).run("tests/samples");
    let differ: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.outcome.as_ref().ok() != b.outcome.as_ref().ok())
        .map(|(a, _)| a.snapshot_name.clone())
        .collect();
    assert_eq!(
        differ,
        [
            "AddPonkaToImage-v1-image-post-10.json",
            "AddPonkaToImage-v1-image-post-11.msgpack"
        ]
    );
}

#[test]
fn a_failing_sample_names_its_file_and_step() {
    let dir = std::env::temp_dir().join(format!("upcaster-samples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = ponka::registry().unwrap();
    let v1 = ponka::registry_v1().unwrap();
    // A v1 message the rename cannot take: stored as yesterday's producer wrote it.
    let odd = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostID":3}}"#;
    let stored = store_sample(&registry, &dir, "odd-case", odd).unwrap();
    assert!(stored.ends_with("AddPonkaToImage/v1/odd-case.json"));
    assert!(
        store_sample(&registry, &dir, "odd-case", odd).is_err(),
        "samples are never overwritten"
    );
    let good = v1
        .encode(
            &ponka::v1::AddPonkaToImage { image_post_id: 1 },
            Format::MessagePack,
        )
        .unwrap();
    let stored_good = store_sample(&registry, &dir, "good", &good).unwrap();
    assert!(stored_good.ends_with("AddPonkaToImage/v1/good.msgpack"));
    // Only the failing one stays: a passing one would want a snapshot of its own.
    std::fs::remove_file(stored_good).unwrap();

    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        upcaster_testing::assert_samples!(samples(&registry), dir.to_str().unwrap());
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.starts_with("1 sample(s) failed"), "{message}");
    assert!(message.contains("odd-case.json: upcasting `AddPonkaToImage` v1→v2 failed: op 0 (move /imagePostId → /imagePost): /imagePostId not found"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generated_failure_is_shrunk_to_the_smallest_payload() {
    // A step that refuses ids above 1000: proptest finds one and shrinks it to 1001.
    let registry = Registry::builder()
        .register::<AddPonkaToImage>()
        .upcaster::<AddPonkaToImage>(Upcaster::new(1, 2, |p| {
            let o = p.as_object_mut().ok_or("not an object")?;
            let id = o.remove("imagePostId").ok_or("missing")?;
            if id.as_u64().is_some_and(|n| n > 1000) {
                return Err(format!("id {id} is too big").into());
            }
            o.insert("imagePost".into(), id);
            Ok(())
        }))
        .build()
        .unwrap();
    let e = Samples::new(&registry)
        .message::<AddPonkaToImage>()
        .check_generated("schemas", 256)
        .unwrap_err();
    assert!(e.contains("`AddPonkaToImage` v1"), "{e}");
    assert!(
        e.contains("id 1001 is too big"),
        "shrunk to the boundary: {e}"
    );
}
