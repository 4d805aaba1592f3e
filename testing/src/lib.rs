#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Test helpers for upcaster, for `[dev-dependencies]` only: every stored sample through
//! today's chain, as insta snapshots, and payloads generated from each version's schema.
//!
//! ```text
//! #[test]
//! fn samples() {
//!     upcaster_testing::assert_samples!(Samples::new(&registry()).message::<AddPonkaToImage>(), "tests/samples");
//! }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use upcaster::{Error, Message, Registry};

pub mod generate;

type Reader = fn(&Registry, &[u8]) -> Result<Replayed, Error>;

/// What a sample came out as.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Replayed {
    /// The version it arrived in.
    pub arrived: u32,
    /// The current message it became, as JSON.
    pub message: Value,
    /// How a current-version sample re-encodes, if it is one.
    pub round_trip: Option<RoundTrip>,
}

/// How a sample of the current version re-encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoundTrip {
    /// To the same bytes: the sample is in the writer's own layout.
    Bytes,
    /// To the same message, laid out by the writer (another producer wrote the sample).
    Semantic,
}

/// One stored sample and what became of it.
#[derive(Debug)]
#[non_exhaustive]
pub struct SampleResult {
    /// The sample file.
    pub path: PathBuf,
    /// Its snapshot's name: type, version and file.
    pub snapshot_name: String,
    /// The snapshot's content, or why the sample failed.
    pub outcome: Result<Value, String>,
}

/// The message types whose samples are replayed, by name.
pub struct Samples<'r> {
    registry: &'r Registry,
    readers: BTreeMap<&'static str, Reader>,
}

fn read<T: Message>(registry: &Registry, bytes: &[u8]) -> Result<Replayed, Error> {
    let decoded = registry.decode::<T>(bytes)?;
    let arrived = decoded.header.version;
    let message = serde_json::to_value(&decoded.message).unwrap_or(Value::Null);
    let round_trip = (arrived == T::VERSION).then(|| {
        let headers = &decoded.header.headers;
        let written =
            registry.encode_with_headers(&decoded.message, headers, decoded.header.format);
        let ours = upcaster::__private::writer_layout(bytes);
        match written {
            Ok(again) if again == bytes => Ok(RoundTrip::Bytes),
            Ok(_) if ours => {
                Err("re-encodes to other bytes, though it is in the writer's own layout".to_owned())
            }
            Ok(again) => match registry.decode::<T>(&again) {
                Ok(d) if serde_json::to_value(&d.message).ok().as_ref() == Some(&message) => {
                    Ok(RoundTrip::Semantic)
                }
                _ => Err("re-encodes to another message".to_owned()),
            },
            Err(e) => Err(format!("does not re-encode: {e}")),
        }
    });
    let round_trip = match round_trip {
        Some(Err(why)) => {
            return Err(upcaster::__private::round_trip_failed(
                &decoded.header,
                T::NAME,
                why,
                bytes,
            ))
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    Ok(Replayed {
        arrived,
        message,
        round_trip,
    })
}

impl<'r> Samples<'r> {
    /// Samples of `registry`'s types; add each with [`Samples::message`].
    pub fn new(registry: &'r Registry) -> Self {
        Samples {
            registry,
            readers: BTreeMap::new(),
        }
    }

    /// Replays the samples of `T`, decoding them into `T`.
    pub fn message<T: Message>(mut self) -> Self {
        self.readers.insert(T::NAME, read::<T>);
        self
    }

    /// Every sample below `dir` (`<TypeName>/v<N>/<name>.json|.msgpack`), read through
    /// the chain. The snapshot content holds the version it arrived in and the message.
    pub fn run(&self, dir: impl AsRef<Path>) -> Vec<SampleResult> {
        let mut results = Vec::new();
        for (type_dir, version, path) in sample_files(dir.as_ref()) {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let snapshot_name = format!("{type_dir}-v{version}-{file}");
            let outcome = self.replay(&type_dir, version, &path);
            results.push(SampleResult {
                path,
                snapshot_name,
                outcome,
            });
        }
        results
    }

    fn replay(&self, type_dir: &str, version: u32, path: &Path) -> Result<Value, String> {
        let name = self
            .registry
            .canonical_name(type_dir)
            .ok_or_else(|| format!("`{type_dir}` is not a registered type"))?;
        let reader = self
            .readers
            .get(name)
            .ok_or_else(|| format!("add `.message::<{name}>()` to replay it"))?;
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let read = reader(self.registry, &bytes).map_err(|e| e.to_string())?;
        if read.arrived != version {
            return Err(format!(
                "stored under v{version} but arrived as v{}",
                read.arrived
            ));
        }
        let mut content = json!({ "arrived_version": read.arrived, "message": read.message });
        if let Some(r) = read.round_trip {
            content["round_trip"] = json!(match r {
                RoundTrip::Bytes => "bytes",
                RoundTrip::Semantic => "semantic",
            });
        }
        Ok(content)
    }

    /// A property check: payloads generated from each version's schema in `schemas` must
    /// reach the current version and decode into the current type, which must fit the
    /// current schema. Fails with the smallest payload proptest finds.
    pub fn check_generated(&self, schemas: impl AsRef<Path>, cases: u32) -> Result<(), String> {
        let schemas = schemas.as_ref();
        for (&name, reader) in &self.readers {
            let current = self.registry.current_version(name).unwrap_or(0);
            let current_schema =
                load_schema(&upcaster::schema::schema_path(schemas, name, current))?;
            let validator = jsonschema::validator_for(&current_schema)
                .map_err(|e| format!("`{name}` v{current}'s schema: {e}"))?;
            for version in 1..=current {
                let path = upcaster::schema::schema_path(schemas, name, version);
                if !path.exists() {
                    continue;
                }
                let schema = load_schema(&path)?;
                let own = jsonschema::validator_for(&schema)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut runner = TestRunner::new(Config {
                    cases,
                    failure_persistence: None,
                    ..Config::default()
                });
                let outcome = runner.run(&generate::strategy(&schema), |payload| {
                    if !own.is_valid(&payload) {
                        return Err(TestCaseError::reject("beyond what the generator covers"));
                    }
                    let envelope = json!({"type": name, "version": version, "payload": payload});
                    let bytes = serde_json::to_vec(&envelope)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let read = reader(self.registry, &bytes)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if let Some(error) = validator.iter_errors(&read.message).next() {
                        return Err(TestCaseError::fail(format!(
                            "the v{current} message does not fit its schema at `{}`: {error}",
                            error.instance_path()
                        )));
                    }
                    Ok(())
                });
                if let Err(e) = outcome {
                    return Err(format!("`{name}` v{version} ({}): {e}", path.display()));
                }
            }
        }
        Ok(())
    }
}

fn load_schema(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `(type directory, version, file)` for every sample below `dir`, sorted.
fn sample_files(dir: &Path) -> Vec<(String, u32, PathBuf)> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for type_dir in list(dir) {
        let Some(type_name) = type_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        for version_dir in list(&type_dir) {
            let version = version_dir
                .file_name()
                .and_then(|n| upcaster::envelope::version_of_dir(&n.to_string_lossy()));
            let Some(version) = version else { continue };
            for file in list(&version_dir) {
                let ext = file.extension().and_then(|e| e.to_str());
                if matches!(ext, Some("json" | "msgpack")) {
                    out.push((type_name.clone(), version, file));
                }
            }
        }
    }
    out
}

pub use upcaster::schema::store_sample;

/// Replays every sample below a directory and compares each with its insta snapshot (one
/// per sample, named by type, version and file). All samples run; the failures are then
/// listed together, each with its file (and for a failing chain, the step). Review changed
/// snapshots with `cargo insta review`.
///
/// ```text
/// upcaster_testing::assert_samples!(Samples::new(&registry).message::<AddPonkaToImage>(), "tests/samples");
/// ```
#[macro_export]
macro_rules! assert_samples {
    ($samples:expr, $dir:expr $(,)?) => {{
        let mut __failures: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::new();
        let __results = $samples.run($dir);
        if __results.is_empty() {
            __failures.push(::std::format!("no samples below {}", ::std::path::Path::new($dir).display()));
        }
        for __result in __results {
            match __result.outcome {
                ::std::result::Result::Ok(__content) => {
                    let mut __settings = $crate::__private::insta::Settings::clone_current();
                    __settings.set_prepend_module_to_snapshot(false);
                    __settings.set_omit_expression(true);
                    __settings.set_input_file(&__result.path);
                    let __name = __result.snapshot_name.clone();
                    let __same = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| {
                        __settings.bind(|| {
                            $crate::__private::insta::assert_json_snapshot!(__name, __content);
                        })
                    }));
                    if __same.is_err() {
                        __failures.push(::std::format!(
                            "{}: comes out differently than its snapshot `{}` (review with `cargo insta review`)",
                            __result.path.display(),
                            __result.snapshot_name
                        ));
                    }
                }
                ::std::result::Result::Err(__why) => {
                    __failures.push(::std::format!("{}: {}", __result.path.display(), __why));
                }
            }
        }
        if !__failures.is_empty() {
            ::std::panic!("{} sample(s) failed:\n  {}", __failures.len(), __failures.join("\n  "));
        }
    }};
}

/// Items `assert_samples!` expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use insta;
}
