//! The compile errors a user sees for each mistake in `#[derive(Message)]`, and the
//! expansions that must compile.
//!
//! The expected compiler output is pinned in `tests/ui/fail/*.stderr`. After a deliberate
//! change to a message, re-pin with `TRYBUILD=overwrite cargo test --test derive_ui` and read
//! the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
