//! Upcasters: the steps that carry a payload from version N to N+1.
//!
//! A step is either *untyped*, a function over the payload's object tree (renames, defaults,
//! moves; one function serves JSON and MessagePack alike), or *typed*, a `From`/`TryFrom`
//! between the Rust structs of two versions.

use std::fmt;

use serde_json::Value;

use crate::chain::{ChainFailure, Input, StepError};
use crate::migration::{Inverse, Irreversible, Migration};
use crate::Message;

type TreeFn = dyn Fn(&mut Value) -> Result<(), StepError> + Send + Sync;

/// One step vN → vN+1 of a message type's chain.
///
/// ```
/// use upcaster::{Upcaster, Value};
///
/// // v1 called the field `imagePostId`; v2 calls it `imagePost`.
/// let step = Upcaster::new(1, 2, |payload: &mut Value| {
///     let object = payload.as_object_mut().ok_or("payload is not an object")?;
///     let id = object.remove("imagePostId").ok_or("`imagePostId` is missing")?;
///     object.insert("imagePost".into(), id);
///     Ok(())
/// });
/// assert_eq!((step.from_version(), step.to_version()), (1, 2));
/// ```
pub struct Upcaster {
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) renamed_from: Option<String>,
    pub(crate) run: StepFn,
    inverse: Option<Box<TreeFn>>,
}

pub(crate) enum StepFn {
    Tree(Box<TreeFn>),
    Typed(fn(&mut Value, u32, u32, bool) -> Result<(), ChainFailure>),
    Migration(Box<(Migration, Result<Inverse, Irreversible>)>),
}

impl Upcaster {
    /// An untyped step from version `from` to `to` (which must be `from + 1`), editing the
    /// payload's object tree in place.
    pub fn new<F>(from: u32, to: u32, step: F) -> Self
    where
        F: Fn(&mut Value) -> Result<(), StepError> + Send + Sync + 'static,
    {
        Upcaster {
            from,
            to,
            renamed_from: None,
            run: StepFn::Tree(Box::new(step)),
            inverse: None,
        }
    }

    /// The step of a declarative migration file, whose inverse is derived from its
    /// operations.
    pub fn migration(step: Migration) -> Self {
        let inverse = step.inverse();
        Upcaster {
            from: step.from_version(),
            to: step.to_version(),
            renamed_from: step.renamed_from().map(str::to_owned),
            run: StepFn::Migration(Box::new((step, inverse))),
            inverse: None,
        }
    }

    /// Gives an untyped step its inverse (version `to` back to `from`), so that a registry
    /// can write an older version for consumers not yet upgraded.
    pub fn with_inverse<F>(mut self, inverse: F) -> Self
    where
        F: Fn(&mut Value) -> Result<(), StepError> + Send + Sync + 'static,
    {
        self.inverse = Some(Box::new(inverse));
        self
    }

    /// The migration file this step came from, if any.
    pub fn file(&self) -> Option<&str> {
        match &self.run {
            StepFn::Migration(m) => Some(m.0.file()),
            _ => None,
        }
    }

    /// The migration file's step, if this step is one.
    pub(crate) fn as_migration(&self) -> Option<&Migration> {
        match &self.run {
            StepFn::Migration(m) => Some(&m.0),
            _ => None,
        }
    }

    /// What serves this step, for messages: the file, or Rust code.
    pub(crate) fn origin(&self) -> String {
        match self.file() {
            Some(file) => file.to_owned(),
            None => "a Rust upcaster".to_owned(),
        }
    }

    /// Why the step cannot be undone, if it cannot.
    pub(crate) fn irreversible(&self) -> Option<String> {
        match (&self.run, &self.inverse) {
            (_, Some(_)) => None,
            (StepFn::Migration(m), None) => m.1.as_ref().err().map(ToString::to_string),
            (StepFn::Tree(_), None) => {
                Some("its Rust upcaster has no inverse; add one with `with_inverse`".into())
            }
            (StepFn::Typed(_), None) => {
                Some("a typed step has no inverse; use an untyped step with `with_inverse`".into())
            }
        }
    }

    /// Takes a payload of version `to` back to `from`.
    pub(crate) fn downcast(&self, tree: &mut Value) -> Result<(), StepError> {
        match (&self.run, &self.inverse) {
            (_, Some(f)) => f(tree),
            (StepFn::Migration(m), None) => match &m.1 {
                Ok(inverse) => inverse.apply(tree).map_err(Into::into),
                Err(e) => Err(e.clone().into()),
            },
            _ => Err(self.irreversible().unwrap_or_default().into()),
        }
    }

    /// A typed step `Old` → `New` through `New: TryFrom<Old>` (any `From` impl gives one),
    /// for chains that also hold untyped steps. Versions and any type rename come from the
    /// two types. To link structs without untyped steps between them, prefer the derive's
    /// `previous = Old`, which avoids the object tree entirely.
    pub fn typed<Old, New>() -> Self
    where
        Old: Message,
        New: Message + TryFrom<Old>,
        <New as TryFrom<Old>>::Error: Into<StepError>,
    {
        Upcaster {
            from: Old::VERSION,
            to: New::VERSION,
            renamed_from: (Old::NAME != New::NAME).then(|| Old::NAME.to_owned()),
            run: StepFn::Typed(typed_tree_step::<Old, New>),
            inverse: None,
        }
    }

    /// Declares that the message type was called `old_name` up to this step's source
    /// version. Downcasts to those versions write it; readers accept it as a name of the type
    /// (at any version, like an alias, so that a message's name and version need not agree
    /// with history for it to be read).
    pub fn renamed_from(mut self, old_name: impl Into<String>) -> Self {
        self.renamed_from = Some(old_name.into());
        self
    }

    /// The version this step reads.
    pub fn from_version(&self) -> u32 {
        self.from
    }

    /// The version this step writes.
    pub fn to_version(&self) -> u32 {
        self.to
    }

    /// Runs the step; `locate` asks a typed step to find the JSON Pointer of a payload error.
    pub(crate) fn apply(&self, tree: &mut Value, locate: bool) -> Result<(), ChainFailure> {
        match &self.run {
            StepFn::Tree(f) => f(tree).map_err(|reason| ChainFailure::Step {
                from: self.from,
                to: self.to,
                reason,
            }),
            StepFn::Typed(f) => f(tree, self.from, self.to, locate),
            StepFn::Migration(m) => m.0.apply(tree).map_err(|failure| ChainFailure::Step {
                from: self.from,
                to: self.to,
                reason: Box::new(failure),
            }),
        }
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upcaster")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("renamed_from", &self.renamed_from)
            .field(
                "kind",
                &match &self.run {
                    StepFn::Tree(_) => "tree".to_owned(),
                    StepFn::Typed(_) => "typed".to_owned(),
                    StepFn::Migration(m) => m.0.file().to_owned(),
                },
            )
            .finish()
    }
}

fn typed_tree_step<Old, New>(
    tree: &mut Value,
    from: u32,
    to: u32,
    locate: bool,
) -> Result<(), ChainFailure>
where
    Old: Message,
    New: Message + TryFrom<Old>,
    <New as TryFrom<Old>>::Error: Into<StepError>,
{
    let old: Old = Input::tree(tree.take(), locate).read(from)?;
    let new = New::try_from(old).map_err(|e| ChainFailure::Step {
        from,
        to,
        reason: e.into(),
    })?;
    *tree = serde_json::to_value(&new).map_err(|e| ChainFailure::Step {
        from,
        to,
        reason: format!("v{to} value does not serialize: {e}").into(),
    })?;
    Ok(())
}
