//! Declarative migrations: steps vN → vN+1 written as data in `migrations/<TypeName>/`.
//!
//! A step file `migrations/AddPonkaToImage/v1-to-v2.json` holds a list of operations on the
//! payload, addressed by JSON Pointers:
//!
//! ```json
//! {
//!   "description": "imagePostId is now imagePost",
//!   "ops": [{ "op": "move", "from": "/imagePostId", "path": "/imagePost" }]
//! }
//! ```
//!
//! See [`Op`] for every operation. The registry loads a directory at startup
//! ([`Migrations::load`]) or embeds it in the binary ([`crate::embed_migrations!`]), checks it
//! before any message is read, and runs the steps with the Rust ones in one chain. Most
//! operations have an inverse, so a registry can also write an older version
//! ([`crate::RegistryBuilder::write_version`]).

mod op;
mod pointer;
mod stream;

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub use op::{Op, OP_NAMES};
pub use pointer::Pointer;
pub(crate) use stream::Plan;

/// One step of one message type, read from a migration file.
#[derive(Clone, Debug, PartialEq)]
pub struct Migration {
    type_name: String,
    from: u32,
    to: u32,
    file: String,
    description: Option<String>,
    ops: Vec<Op>,
}

impl Migration {
    /// Parses the text of a step file. `file` is its path below the migrations directory,
    /// `<TypeName>/v<N>-to-v<N+1>.json`, which gives the type and the versions.
    pub fn parse(file: &str, text: &str) -> Result<Migration, MigrationError> {
        let at = |pointer: &str, op: Option<usize>, problem| MigrationError {
            file: file.to_owned(),
            op,
            pointer: pointer.to_owned(),
            problem,
        };
        let (type_name, from, to) = parse_file_name(file).map_err(|p| at("", None, p))?;
        let root: Value = serde_json::from_str(text).map_err(|e| {
            at(
                "",
                None,
                MigrationProblem::Syntax {
                    line: e.line(),
                    column: e.column(),
                    message: crate::codec::json_message(&e),
                },
            )
        })?;
        let Value::Object(root) = root else {
            return Err(at("", None, MigrationProblem::NotAnObject));
        };
        if let Some(key) = root
            .keys()
            .find(|k| !matches!(k.as_str(), "ops" | "description" | "$schema"))
        {
            let mut pointer = String::new();
            crate::codec::push_token(&mut pointer, key);
            return Err(at(
                &pointer,
                None,
                MigrationProblem::Invalid(format!(
                    "unknown key `{key}`; expected `ops`, `description`"
                )),
            ));
        }
        let description = match root.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(at(
                    "/description",
                    None,
                    MigrationProblem::Invalid("`description` must be a string".into()),
                ))
            }
        };
        let Some(Value::Array(list)) = root.get("ops") else {
            return Err(at(
                "/ops",
                None,
                MigrationProblem::Invalid("`ops` must be an array of operations".into()),
            ));
        };
        let mut ops = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let op = Op::from_json(v).map_err(|(inner, message)| {
                at(
                    &format!("/ops/{i}{inner}"),
                    Some(i),
                    MigrationProblem::Invalid(message),
                )
            })?;
            ops.push(op);
        }
        Ok(Migration {
            type_name,
            from,
            to,
            file: file.to_owned(),
            description,
            ops,
        })
    }

    /// The message type this step belongs to, from its directory.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The version the step reads.
    pub fn from_version(&self) -> u32 {
        self.from
    }

    /// The version the step writes.
    pub fn to_version(&self) -> u32 {
        self.to
    }

    /// The file the step came from, below the migrations directory.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The file's `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The type's former name, if the step has a `rename-type`.
    pub fn renamed_from(&self) -> Option<&str> {
        self.ops.iter().find_map(|op| match op {
            Op::RenameType { from } => Some(from.as_str()),
            _ => None,
        })
    }

    /// Applies the operations in order to a payload of version `from`.
    pub fn apply(&self, payload: &mut Value) -> Result<(), OpFailure> {
        for (index, op) in self.ops.iter().enumerate() {
            op.apply(payload)
                .map_err(|message| self.failure(index, false, message))?;
        }
        Ok(())
    }

    fn failure(&self, index: usize, downcast: bool, message: String) -> OpFailure {
        OpFailure {
            file: self.file.clone(),
            index,
            op: self
                .ops
                .get(index)
                .map(ToString::to_string)
                .unwrap_or_default(),
            downcast,
            message,
        }
    }

    /// The operations that take a payload of version `to` back to `from`, or why there are
    /// none: the first operation without an inverse.
    pub fn inverse(&self) -> Result<Inverse, Irreversible> {
        let mut ops = Vec::with_capacity(self.ops.len());
        for (index, op) in self.ops.iter().enumerate().rev() {
            match op.inverse() {
                Ok(Some(inverse)) => ops.push((index, inverse)),
                Ok(None) => {}
                Err(reason) => {
                    return Err(Irreversible {
                        file: self.file.clone(),
                        index,
                        op: op.to_string(),
                        reason,
                    })
                }
            }
        }
        Ok(Inverse {
            step: self.clone(),
            ops,
        })
    }
}

/// The downcast of a [`Migration`]: its inverse operations, last first.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Inverse {
    step: Migration,
    /// `(index of the original operation, its inverse)`.
    ops: Vec<(usize, Op)>,
}

impl Inverse {
    /// Takes a payload of version `to` back to version `from`.
    pub fn apply(&self, payload: &mut Value) -> Result<(), OpFailure> {
        for (index, op) in &self.ops {
            op.apply(payload)
                .map_err(|message| self.step.failure(*index, true, message))?;
        }
        Ok(())
    }
}

/// A migration step that refused a payload: which operation, and what was wrong where.
///
/// Shown as `op 0 (move /imagePostId → /imagePost): /imagePostId not found`; the registry
/// adds the type and the step in front.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpFailure {
    /// The step file, below the migrations directory.
    pub file: String,
    /// The operation's index in `ops`.
    pub index: usize,
    /// The operation, as `move /a → /b`.
    pub op: String,
    /// True when it failed undoing the operation for a downcast.
    pub downcast: bool,
    /// What was wrong, with the JSON Pointer into the payload.
    pub message: String,
}

impl fmt::Display for OpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let undo = if self.downcast { "undoing " } else { "" };
        write!(f, "{undo}op {} ({}): {}", self.index, self.op, self.message)
    }
}

impl std::error::Error for OpFailure {}

/// Why a step cannot be undone for a downcast.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: op {index} ({op}) cannot be undone: {reason}")]
#[non_exhaustive]
pub struct Irreversible {
    /// The step file.
    pub file: String,
    /// The operation's index.
    pub index: usize,
    /// The operation.
    pub op: String,
    /// Why.
    pub reason: &'static str,
}

/// Every step file of a migrations directory, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Migrations {
    steps: Vec<Migration>,
}

impl Migrations {
    /// No migrations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every `<TypeName>/v<N>-to-v<N+1>.json` below `dir`. Files that are not JSON
    /// (a README, say) are skipped; every problem is reported, not just the first.
    pub fn load(dir: impl AsRef<Path>) -> Result<Migrations, MigrationErrors> {
        let dir = dir.as_ref();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        let io = |file: String, e: std::io::Error| MigrationError {
            file,
            op: None,
            pointer: String::new(),
            problem: MigrationProblem::Io(e.to_string()),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(MigrationErrors {
                    errors: vec![io(dir.display().to_string(), e)],
                })
            }
        };
        for entry in entries.flatten() {
            let type_dir = entry.path();
            let type_name = entry.file_name().to_string_lossy().into_owned();
            if !type_dir.is_dir() {
                if type_name.ends_with(".json") {
                    errors.push(MigrationError {
                        file: type_name,
                        op: None,
                        pointer: String::new(),
                        problem: MigrationProblem::FileName(
                            "a step file belongs in a directory named after its type".into(),
                        ),
                    });
                }
                continue;
            }
            let inner = match std::fs::read_dir(&type_dir) {
                Ok(inner) => inner,
                Err(e) => {
                    errors.push(io(type_name, e));
                    continue;
                }
            };
            for file in inner.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".json") {
                    continue;
                }
                let rel = format!("{type_name}/{name}");
                match std::fs::read_to_string(file.path()) {
                    Ok(text) => files.push((rel, text)),
                    Err(e) => errors.push(io(rel, e)),
                }
            }
        }
        files.sort();
        let parsed = Self::from_files(files.iter().map(|(f, t)| (f.as_str(), t.as_str())));
        match parsed {
            Ok(migrations) if errors.is_empty() => Ok(migrations),
            Ok(_) => Err(MigrationErrors { errors }),
            Err(mut found) => {
                errors.append(&mut found.errors);
                Err(MigrationErrors { errors })
            }
        }
    }

    /// Parses files embedded at compile time, as `(path below the directory, text)` pairs.
    /// [`crate::embed_migrations!`] calls this.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Migrations, MigrationErrors> {
        let mut migrations = Migrations::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            match Migration::parse(file, text) {
                Ok(m) => migrations.steps.push(m),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(migrations)
        } else {
            Err(MigrationErrors { errors })
        }
    }

    /// Adds one step.
    pub fn push(&mut self, step: Migration) {
        self.steps.push(step);
    }

    /// The steps, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.steps.iter()
    }

    /// How many steps there are.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl IntoIterator for Migrations {
    type Item = Migration;
    type IntoIter = std::vec::IntoIter<Migration>;
    fn into_iter(self) -> Self::IntoIter {
        self.steps.into_iter()
    }
}

/// `AddPonkaToImage/v1-to-v2.json` → `("AddPonkaToImage", 1, 2)`.
fn parse_file_name(file: &str) -> Result<(String, u32, u32), MigrationProblem> {
    let bad = |why: &str| {
        Err(MigrationProblem::FileName(format!(
            "{why}; name step files `<TypeName>/v<N>-to-v<N+1>.json`"
        )))
    };
    let Some((type_name, name)) = file.rsplit_once('/') else {
        return bad("no type directory");
    };
    let type_name = type_name.rsplit('/').next().unwrap_or(type_name);
    let Some(stem) = name.strip_suffix(".json") else {
        return bad("not a .json file");
    };
    let Some((from, to)) = stem.split_once("-to-") else {
        return bad("no `-to-` in the name");
    };
    let version = |s: &str| {
        s.strip_prefix('v')
            .filter(|d| !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
    };
    let (Some(from), Some(to)) = (version(from), version(to)) else {
        return bad("versions must be `v` and a number from 1");
    };
    if from.checked_add(1) != Some(to) {
        return bad(&format!("v{from} to v{to} is not one step up"));
    }
    if type_name.is_empty() {
        return bad("empty type directory");
    }
    Ok((type_name.to_owned(), from, to))
}

/// A problem in a migration file: the file, the operation's index, and the JSON Pointer
/// into the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {problem}", location(*.op, .pointer))]
#[non_exhaustive]
pub struct MigrationError {
    /// The file, below the migrations directory.
    pub file: String,
    /// The operation's index, when the problem is in one.
    pub op: Option<usize>,
    /// JSON Pointer into the file (`/ops/0/from`); empty for the file as a whole.
    pub pointer: String,
    /// What is wrong.
    pub problem: MigrationProblem,
}

fn location(op: Option<usize>, pointer: &str) -> String {
    match (op, pointer) {
        (Some(i), p) => format!(", op {i} at {p}"),
        (None, "") => String::new(),
        (None, p) => format!(" at {p}"),
    }
}

/// What is wrong with a migration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationProblem {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// The file name does not say the type and step.
    #[error("bad file name: {0}")]
    FileName(String),
    /// Not JSON.
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// The file is not a JSON object.
    #[error("a step file must be a JSON object with `ops`")]
    NotAnObject,
    /// A key, operation or field is wrong: an unknown operation, a malformed pointer, a
    /// missing or unknown field.
    #[error("{0}")]
    Invalid(String),
}

/// Every problem found loading migrations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct MigrationErrors {
    /// The problems, by file.
    pub errors: Vec<MigrationError>,
}

impl fmt::Display for MigrationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid migrations:")?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}
