//! The compile errors a user sees for each mistake in `#[derive(Message)]`, and the
//! expansions that must compile.
//!
//! The expected compiler output is pinned in `derive/tests/ui/fail/*.stderr`. They run here, in
//! the macro's crate, so trybuild compiles only what a user's crate needs, not the
//! workspace's test dependencies. After a deliberate
//! change to a message, re-pin with `TRYBUILD=overwrite cargo test -p upcaster-derive --test ui` and read
//! the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
