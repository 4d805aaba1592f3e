//! The registry: every message type a program reads or writes, with the chains that bring
//! old versions up to date.

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rustc_hash::FxHashMap;

use crate::chain::StepError;
use crate::chain::{ChainFailure, Input};
use crate::codec::{self, Format, PayloadRef};
use crate::envelope::{self, Decoded, Header, Malformed, Raw, RawEnvelope, Split};
use crate::error::{
    EncodeError, EncodeErrorKind, Error, ErrorKind, Malformation, RegistryError, RegistryProblem,
};
use crate::headers::Headers;
use crate::message::TypedVersion;
use crate::migration::{Migration, Migrations, Plan};
use crate::upcast::Upcaster;
use crate::Message;

/// Hashes a `TypeId`, which is already a hash, by keeping its bits: the lookup on every
/// encode then costs next to nothing.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type ByType = HashMap<TypeId, usize, BuildHasherDefault<TypeIdHasher>>;

/// A failed attempt on an envelope, handed back so the caller can build the error.
pub(crate) type Failed<'a> = Box<(ErrorKind, RawEnvelope<'a>)>;

/// The message types a program knows, with their upcaster chains, checked once at build time.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use upcaster::{Format, Message, Registry, Upcaster};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
/// #[serde(rename_all = "camelCase")]
/// #[message(name = "AddPonkaToImage", version = 2)]
/// struct AddPonkaToImage {
///     image_post: u64,
/// }
///
/// let registry = Registry::builder()
///     .register::<AddPonkaToImage>()
///     .upcaster::<AddPonkaToImage>(Upcaster::new(1, 2, |p| {
///         let o = p.as_object_mut().ok_or("not an object")?;
///         let id = o.remove("imagePostId").ok_or("`imagePostId` is missing")?;
///         o.insert("imagePost".into(), id);
///         Ok(())
///     }))
///     .build()?;
///
/// let old = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":7}}"#;
/// let decoded = registry.decode::<AddPonkaToImage>(old)?;
/// assert_eq!(decoded.message, AddPonkaToImage { image_post: 7 });
/// assert_eq!(decoded.arrived_version(), 1);
///
/// let bytes = registry.encode(&decoded.message, Format::Json)?;
/// assert_eq!(bytes, br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":7}}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Registry {
    pub(crate) entries: Vec<Entry>,
    pub(crate) by_name: FxHashMap<Box<str>, usize>,
    by_type: ByType,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) current: u32,
    pub(crate) type_id: TypeId,
    /// The oldest version a chain starts from.
    pub(crate) oldest: u32,
    /// From this version up, the derive's typed links carry the message without a tree.
    pub(crate) typed_floor: u32,
    /// `steps[k]` takes version `oldest + k` to the next, up to `typed_floor`.
    pub(crate) steps: Vec<Upcaster>,
    /// The older version to write, if one is configured.
    write: Option<Write>,
    /// `plans[k]`: when the steps from `oldest + k` up are renames only, those renames,
    /// applied while reading with no object tree.
    plans: Vec<Option<Plan>>,
    /// Its other names: aliases and former names.
    pub(crate) aliases: Vec<String>,
    /// About how many bytes its last encoded message took.
    size_hint: std::sync::atomic::AtomicUsize,
}

/// An older version that [`Registry::encode`] writes instead of the current one.
#[derive(Debug)]
struct Write {
    version: u32,
    /// The type name at that version.
    name: String,
}

impl Entry {
    /// The step from `from` to `from + 1`, if the chain has one.
    fn step(&self, from: u32) -> Option<&Upcaster> {
        let k = from.checked_sub(self.oldest)?;
        self.steps.get(usize::try_from(k).ok()?)
    }
}

/// Collects message types, upcasters and migrations; [`RegistryBuilder::build`] checks
/// them all.
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    types: Vec<TypeInfo>,
    steps: Vec<(Named, Upcaster)>,
    migrations: Vec<Migration>,
    write_versions: Vec<(Named, u32)>,
}

#[derive(Debug)]
struct TypeInfo {
    name: &'static str,
    current: u32,
    type_id: TypeId,
    aliases: &'static [&'static str],
    /// Each struct linked by `previous`, oldest first, ending at current.
    typed: Vec<TypedVersion>,
}

impl TypeInfo {
    /// Every name this type is known by: its own, its aliases, and those of the structs its
    /// `previous` links reach.
    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.name)
            .chain(self.aliases.iter().copied())
            .chain(
                self.typed
                    .iter()
                    .flat_map(|(n, _, aliases)| std::iter::once(*n).chain(aliases.iter().copied())),
            )
    }
}

impl RegistryBuilder {
    /// Registers `T` as the current version of its message type, with the typed steps its
    /// `previous` links declare.
    pub fn register<T: Message>(mut self) -> Self {
        let mut typed = Vec::new();
        crate::message::typed_versions::<T>(&mut typed);
        self.types.push(TypeInfo {
            name: T::NAME,
            current: T::VERSION,
            type_id: TypeId::of::<T>(),
            aliases: T::ALIASES,
            typed,
        });
        self
    }

    /// Adds a step to the chain of `T`, which must be registered.
    pub fn upcaster<T: Message>(mut self, step: Upcaster) -> Self {
        self.steps.push((Named::of::<T>(), step));
        self
    }

    /// Adds declarative migration steps, each to the registered type its directory names
    /// (by name, alias or former name).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, upcaster::Message)]
    /// # #[serde(rename_all = "camelCase")]
    /// # #[message(version = 2)]
    /// # struct AddPonkaToImage { image_post: u64 }
    /// use upcaster::{Migration, Migrations, Registry};
    ///
    /// let mut migrations = Migrations::new();
    /// migrations.push(Migration::parse(
    ///     "AddPonkaToImage/v1-to-v2.json",
    ///     r#"{"ops": [{"op": "move", "from": "/imagePostId", "path": "/imagePost"}]}"#,
    /// )?);
    /// let registry = Registry::builder()
    ///     .register::<AddPonkaToImage>()
    ///     .migrations(migrations)
    ///     .build()?;
    /// let old = br#"{"type":"AddPonkaToImage","version":1,"payload":{"imagePostId":3}}"#;
    /// assert_eq!(registry.decode::<AddPonkaToImage>(old)?.message.image_post, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations.extend(migrations);
        self
    }

    /// Makes [`Registry::encode`] write `T` as `version`, older than current, by running
    /// the chain backwards. Producers deployed before their consumers keep writing what the
    /// old consumers read. `build` fails unless every step down to `version` has an inverse.
    pub fn write_version<T: Message>(mut self, version: u32) -> Self {
        self.write_versions.push((Named::of::<T>(), version));
        self
    }

    /// Checks every type and chain, and reports all problems at once.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut problems = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut infos: Vec<&TypeInfo> = Vec::new();
        for info in &self.types {
            let entry = Entry {
                name: info.name,
                current: info.current,
                type_id: info.type_id,
                oldest: info.current,
                typed_floor: typed_floor(info),
                steps: Vec::new(),
                write: None,
                plans: Vec::new(),
                aliases: Vec::new(),
                size_hint: std::sync::atomic::AtomicUsize::new(0),
            };
            let Some(k) = entries
                .iter()
                .position(|e| e.name == info.name || e.type_id == info.type_id)
            else {
                entries.push(entry);
                infos.push(info);
                continue;
            };
            let kept = entries[k].current;
            if entries[k].type_id == info.type_id || kept == info.current {
                problems.push(RegistryProblem::DuplicateName {
                    name: info.name.to_owned(),
                });
                continue;
            }
            problems.push(RegistryProblem::SeveralVersions {
                name: info.name.to_owned(),
                older: kept.min(info.current),
                newer: kept.max(info.current),
            });
            // Keep the newer, so that the problems that follow speak of the right one.
            if info.current > kept {
                entries[k] = entry;
                infos[k] = info;
            }
        }

        // Migration files name their type by directory.
        let mut steps = self.steps;
        for migration in self.migrations {
            let owner = infos.iter().position(|info| {
                let name = migration.type_name();
                info.names().any(|n| n == name)
            });
            match owner {
                Some(i) => steps.push((
                    Named {
                        type_id: entries[i].type_id,
                        name: entries[i].name,
                        version: entries[i].current,
                    },
                    Upcaster::migration(migration),
                )),
                None => problems.push(RegistryProblem::MigrationUnknownType {
                    file: migration.file().to_owned(),
                    type_name: migration.type_name().to_owned(),
                }),
            }
        }

        // Steps, sorted into each type's chain.
        let mut chains: Vec<Vec<Upcaster>> = entries.iter().map(|_| Vec::new()).collect();
        for (named, step) in steps {
            let Some(i) = entries.iter().position(|e| e.type_id == named.type_id) else {
                problems.push(named.unregistered(&entries));
                continue;
            };
            match check_step(&entries[i], &chains[i], &step) {
                Some(p) => problems.push(p),
                None => chains[i].push(step),
            }
        }
        for (entry, mut chain) in entries.iter_mut().zip(chains) {
            chain.sort_by_key(|s| s.from);
            // Walk down from the typed floor; the chain must be unbroken to its oldest step.
            let mut oldest = entry.typed_floor;
            for step in chain.iter().rev() {
                if step.to != oldest {
                    problems.extend((step.to..oldest).map(|from| RegistryProblem::Gap {
                        type_name: entry.name.to_owned(),
                        from,
                        to: from + 1,
                        current: entry.current,
                    }));
                }
                oldest = step.from;
            }
            entry.oldest = oldest;
            entry.plans = (0..chain.len())
                .map(|k| {
                    let files: Option<Vec<&Migration>> =
                        chain[k..].iter().map(Upcaster::as_migration).collect();
                    Plan::compose(files?)
                })
                .collect();
            entry.steps = chain;
        }

        // Every name that resolves to a type: its name, aliases, and former names.
        let mut by_name: FxHashMap<Box<str>, usize> = FxHashMap::default();
        for (i, entry) in entries.iter().enumerate() {
            by_name.insert(entry.name.into(), i);
        }
        let mut all_aliases: Vec<Vec<String>> = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let mut names: Vec<&str> = info.names().collect();
            names.extend(
                entries[i]
                    .steps
                    .iter()
                    .filter_map(|s| s.renamed_from.as_deref()),
            );
            names.sort_unstable();
            names.dedup();
            all_aliases.push(
                names
                    .iter()
                    .filter(|n| **n != info.name)
                    .map(|n| (*n).to_owned())
                    .collect(),
            );
            for name in names {
                match by_name.get(name) {
                    Some(&j) if j == i => {}
                    Some(&j) => problems.push(RegistryProblem::AliasCollision {
                        alias: name.to_owned(),
                        owner: info.name.to_owned(),
                        other: entries[j].name.to_owned(),
                    }),
                    None => {
                        by_name.insert(name.into(), i);
                    }
                }
            }
        }

        for (entry, aliases) in entries.iter_mut().zip(all_aliases) {
            entry.aliases = aliases;
        }

        for (named, version) in self.write_versions {
            let Some(i) = entries.iter().position(|e| e.type_id == named.type_id) else {
                problems.push(named.unregistered(&entries));
                continue;
            };
            match plan_write(&entries[i], infos[i], version) {
                Ok(write) => entries[i].write = write,
                Err(found) => problems.extend(found),
            }
        }

        if !problems.is_empty() {
            return Err(RegistryError { problems });
        }
        let by_type = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.type_id, i))
            .collect();
        Ok(Registry {
            entries,
            by_name,
            by_type,
        })
    }
}

/// A Rust type named by a step, a handler or a write version.
#[derive(Debug)]
pub(crate) struct Named {
    type_id: TypeId,
    name: &'static str,
    version: u32,
}

impl Named {
    pub(crate) fn of<T: Message>() -> Self {
        Named {
            type_id: TypeId::of::<T>(),
            name: T::NAME,
            version: T::VERSION,
        }
    }

    /// The problem with naming a type that `entries` lack: unknown, or an older struct.
    pub(crate) fn unregistered(&self, entries: &[Entry]) -> RegistryProblem {
        match entries.iter().find(|e| e.name == self.name) {
            Some(e) => RegistryProblem::NotCurrent {
                type_name: self.name.to_owned(),
                version: self.version,
                current: e.current,
            },
            None => RegistryProblem::NotRegistered {
                type_name: self.name.to_owned(),
            },
        }
    }
}

/// What is wrong with adding `step` to the chain of `entry`, if anything.
fn check_step(entry: &Entry, chain: &[Upcaster], step: &Upcaster) -> Option<RegistryProblem> {
    let (from, to) = (step.from, step.to);
    let type_name = entry.name.to_owned();
    if from == 0 || to == 0 {
        return Some(RegistryProblem::VersionZero {
            type_name,
            from,
            to,
        });
    }
    if to <= from {
        return Some(RegistryProblem::Cycle {
            type_name,
            from,
            to,
        });
    }
    if to - from > 1 {
        return Some(RegistryProblem::NotAdjacent {
            type_name,
            from,
            to,
        });
    }
    if to > entry.current {
        let current = entry.current;
        return Some(match step.file() {
            Some(file) => RegistryProblem::MigrationVersion {
                file: file.to_owned(),
                type_name,
                from,
                to,
                current,
            },
            None => RegistryProblem::BeyondCurrent {
                type_name,
                from,
                to,
                current,
            },
        });
    }
    // At or above the typed floor, a `previous` link already serves the pair.
    let (other, other_file) = if from >= entry.typed_floor {
        ("the typed link `previous`".to_owned(), None)
    } else {
        let other = chain.iter().find(|s| s.from == from)?;
        (other.origin(), other.file())
    };
    Some(match (step.file(), other_file) {
        (Some(file), _) => RegistryProblem::MigrationConflict {
            file: file.to_owned(),
            type_name,
            from,
            to,
            other,
        },
        (None, Some(file)) => RegistryProblem::MigrationConflict {
            file: file.to_owned(),
            type_name,
            from,
            to,
            other: step.origin(),
        },
        (None, None) => RegistryProblem::DuplicateStep {
            type_name,
            from,
            to,
        },
    })
}

/// How `entry` writes `version`: every step down to it must have an inverse.
fn plan_write(
    entry: &Entry,
    info: &TypeInfo,
    version: u32,
) -> Result<Option<Write>, Vec<RegistryProblem>> {
    let type_name = entry.name.to_owned();
    if version == 0 || version < entry.oldest || version > entry.current {
        return Err(vec![RegistryProblem::WriteVersionOutOfRange {
            type_name,
            version,
            oldest: entry.oldest,
            current: entry.current,
        }]);
    }
    if version == entry.current {
        return Ok(None);
    }
    let problems: Vec<_> = (version..entry.current)
        .filter_map(|from| {
            let reason = if from >= entry.typed_floor {
                Some("a typed `previous` link has no inverse".to_owned())
            } else {
                entry.step(from).and_then(Upcaster::irreversible)
            }?;
            Some(RegistryProblem::NotReversible {
                type_name: type_name.clone(),
                from,
                to: from + 1,
                reason,
            })
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    // The name at `version`: the lowest rename at or above it, else the current name.
    let renamed = (version..entry.typed_floor)
        .filter_map(|from| entry.step(from)?.renamed_from.clone())
        .next();
    let typed = info.typed.iter().find(|(_, v, _)| *v == version);
    let name = renamed
        .or_else(|| typed.map(|(n, ..)| (*n).to_owned()))
        .unwrap_or_else(|| entry.name.to_owned());
    Ok(Some(Write { version, name }))
}

/// True when `name` is a name of `T` or of a struct its `previous` links reach.
fn own_name<T: Message>(name: &str) -> bool {
    let mut typed = Vec::new();
    crate::message::typed_versions::<T>(&mut typed);
    typed
        .iter()
        .any(|(n, _, aliases)| *n == name || aliases.contains(&name))
}

/// The lowest version from which `previous` links reach the current version unbroken.
fn typed_floor(info: &TypeInfo) -> u32 {
    let mut floor = info.current;
    for &(_, v, _) in info.typed.iter().rev().skip(1) {
        if v.checked_add(1) != Some(floor) {
            break;
        }
        floor = v;
    }
    floor
}

impl Registry {
    /// Starts a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Decodes an envelope (JSON or MessagePack, detected from the first byte) into the
    /// current version of `T`, running the chain if it arrived older.
    pub fn decode<'a, T: Message>(&self, bytes: &'a [u8]) -> Result<Decoded<'a, T>, Error> {
        self.decode_raw(Raw::Bytes(bytes))
    }

    /// [`Registry::decode`] for JSON held as text, which skips UTF-8 checks.
    pub fn decode_str<'a, T: Message>(&self, text: &'a str) -> Result<Decoded<'a, T>, Error> {
        self.decode_raw(Raw::Str(text))
    }

    #[inline]
    fn decode_raw<'a, T: Message>(&self, raw: Raw<'a>) -> Result<Decoded<'a, T>, Error> {
        let raw = raw.text();
        match self.decode_exact::<T>(raw) {
            Some(decoded) => Ok(decoded),
            None => self.decode_general(raw),
        }
    }

    /// The writer's own form of `T`'s current version, known by its exact prefix, read with
    /// nothing between the bytes and `T`. `None` sends the input to the general path.
    #[inline]
    pub(crate) fn decode_exact<'a, T: Message>(&self, raw: Raw<'a>) -> Option<Decoded<'a, T>> {
        let (format, payload) = envelope::exact::<T>(raw)?;
        if !self.knows::<T>() {
            return None;
        }
        Some(Decoded {
            message: codec::read_current::<T>(payload)?,
            header: Header::current::<T>(format),
        })
    }

    /// Everything but the writer's form of the current version.
    #[inline(never)]
    fn decode_general<'a, T: Message>(&self, raw: Raw<'a>) -> Result<Decoded<'a, T>, Error> {
        let expected = const {
            if envelope::is_plain_name(T::NAME) {
                Some(T::NAME)
            } else {
                None
            }
        };
        if let Some(env) = envelope::fast(raw, expected) {
            // The writer's own form of the current version: nothing between bytes and `T`.
            let name = &*env.header.type_name;
            // `fast_json` hands back `T::NAME` itself when it matched, so a pointer test
            // usually settles the name.
            let is_t = std::ptr::eq(name, T::NAME) || name == T::NAME;
            let message = if env.header.version == T::VERSION && is_t && self.knows::<T>() {
                codec::read_current::<T>(env.payload)
            } else {
                self.convert::<T>(&env.header, env.payload).ok()
            };
            if let Some(message) = message {
                return Ok(Decoded {
                    message,
                    header: env.header,
                });
            }
        }
        self.parse_and(raw, expected, |env| {
            match self.convert::<T>(&env.header, env.payload) {
                Ok(message) => Ok(Decoded {
                    message,
                    header: env.header,
                }),
                Err(kind) => Err(Box::new((kind, env))),
            }
        })
    }

    /// Reads the envelope with the full parser and hands it to `attempt`. Used for whatever
    /// the fast path could not settle; `expected` is the type name most likely to be found.
    pub(crate) fn parse_and<'a, R>(
        &self,
        raw: Raw<'a>,
        expected: Option<&'static str>,
        attempt: impl FnOnce(RawEnvelope<'a>) -> Result<R, Failed<'a>>,
    ) -> Result<R, Error> {
        let env = envelope::parse(raw, expected).map_err(|m| malformed(m, raw.bytes()))?;
        attempt(env).map_err(|failed| {
            let (kind, env) = *failed;
            Error::new(kind, env.header.to_partial(), raw.bytes())
        })
    }

    /// Decodes a split-form message: `type_name` and `version` as the broker's headers hold
    /// them, and the bare payload `body` in `format`.
    pub fn decode_split<'a, T: Message>(
        &self,
        type_name: &'a str,
        version: &str,
        body: &'a [u8],
        format: Format,
    ) -> Result<Decoded<'a, T>, Error> {
        let env = split_envelope(type_name, version, body, format)?;
        match self.convert::<T>(&env.header, env.payload) {
            Ok(message) => Ok(Decoded {
                message,
                header: env.header,
            }),
            Err(kind) => Err(Error::new(kind, env.header.to_partial(), body)),
        }
    }

    /// Turns a located payload into the current `T`.
    pub(crate) fn convert<T: Message>(
        &self,
        header: &Header<'_>,
        payload: PayloadRef<'_>,
    ) -> Result<T, ErrorKind> {
        let version = header.version;
        if header.type_name == T::NAME && version == T::VERSION && self.knows::<T>() {
            return Input::payload(payload, false)
                .read::<T>(version)
                .map_err(|f| self.locate::<T>(f, header, payload));
        }
        let entry = self.resolve::<T>(&header.type_name)?;
        if version > T::VERSION {
            return Err(ErrorKind::FutureVersion {
                type_name: T::NAME,
                version,
                current: T::VERSION,
            });
        }
        self.upcast::<T>(entry, version, payload, false)
            .map_err(|f| self.locate::<T>(f, header, payload))
    }

    /// The registry entry of `T`, after checking that `name` belongs to it.
    fn resolve<T: Message>(&self, name: &str) -> Result<Option<&Entry>, ErrorKind> {
        let entry = self
            .by_type
            .get(&TypeId::of::<T>())
            .map(|&i| &self.entries[i]);
        if entry.is_some() && name == T::NAME {
            return Ok(entry);
        }
        match self.by_name.get(name) {
            Some(&i) if self.entries[i].type_id == TypeId::of::<T>() => Ok(entry),
            // An older struct of a registered type: decode into the current one.
            Some(&i) if self.entries[i].name == T::NAME => Err(ErrorKind::NotCurrent {
                type_name: T::NAME,
                version: T::VERSION,
                current: self.entries[i].current,
            }),
            Some(_) => Err(ErrorKind::UnexpectedType {
                expected: T::NAME,
                found: name.to_owned(),
            }),
            // An unregistered `T` still reads its own names through its typed links.
            None if entry.is_none() && own_name::<T>(name) => Ok(None),
            None => Err(ErrorKind::UnknownType {
                type_name: name.to_owned(),
            }),
        }
    }

    /// True unless `T` is an older struct of a registered type, which must not be decoded
    /// into: handlers see the current version.
    #[inline]
    fn knows<T: Message>(&self) -> bool {
        let id = TypeId::of::<T>();
        // A short scan beats hashing for the few types most registries hold.
        if self.entries.len() <= 8 {
            let named = |e: &Entry| e.name == T::NAME || e.aliases.iter().any(|a| a == T::NAME);
            return self.entries.iter().all(|e| e.type_id == id || !named(e));
        }
        self.by_type.contains_key(&id) || !self.by_name.contains_key(T::NAME)
    }

    fn upcast<T: Message>(
        &self,
        entry: Option<&Entry>,
        version: u32,
        payload: PayloadRef<'_>,
        locate: bool,
    ) -> Result<T, ChainFailure> {
        let missing = || ChainFailure::Missing { version };
        let found = match entry {
            Some(e) if version < e.typed_floor => {
                let first = version.checked_sub(e.oldest).ok_or_else(missing)? as usize;
                // Renames only: read through them, and take the tree only if that fails.
                if let Some(Some(plan)) = e.plans.get(first).filter(|_| !locate) {
                    let input = Input::renamed(payload, plan);
                    if let Some(Ok(message)) = (T::__META.upcast_from)(e.typed_floor, input) {
                        return Ok(message);
                    }
                }
                let mut tree = Input::payload(payload, locate).into_tree(version)?;
                for step in e.steps.get(first..).unwrap_or_default() {
                    step.apply(&mut tree, locate)?;
                }
                (T::__META.upcast_from)(e.typed_floor, Input::tree(tree, locate))
            }
            _ => (T::__META.upcast_from)(version, Input::payload(payload, locate)),
        };
        found.unwrap_or_else(|| Err(missing()))
    }

    /// Names a chain failure; a payload error is re-read once to find its JSON Pointer.
    fn locate<T: Message>(
        &self,
        failure: ChainFailure,
        header: &Header<'_>,
        payload: PayloadRef<'_>,
    ) -> ErrorKind {
        let failure = match failure {
            ChainFailure::Payload { pointer: None, .. } => {
                let entry = self
                    .by_type
                    .get(&TypeId::of::<T>())
                    .map(|&i| &self.entries[i]);
                let again = if header.version == T::VERSION {
                    Input::payload(payload, true).read::<T>(header.version)
                } else {
                    self.upcast::<T>(entry, header.version, payload, true)
                };
                match again {
                    Err(located) => located,
                    Ok(_) => failure,
                }
            }
            other => other,
        };
        match failure {
            ChainFailure::Payload {
                version,
                pointer,
                message,
            } => ErrorKind::PayloadInvalid {
                type_name: T::NAME,
                version,
                pointer: pointer.unwrap_or_default(),
                message,
            },
            ChainFailure::Step { from, to, reason } => ErrorKind::UpcastFailed {
                type_name: T::NAME,
                from,
                to,
                reason,
            },
            ChainFailure::Missing { version } => ErrorKind::MissingUpcaster {
                type_name: T::NAME,
                version,
                current: T::VERSION,
            },
        }
    }

    /// Encodes `message` as the current version of its type.
    pub fn encode<T: Message>(&self, message: &T, format: Format) -> Result<Vec<u8>, EncodeError> {
        self.encode_with_headers(message, &Headers::new(), format)
    }

    /// Encodes `message` with envelope headers.
    pub fn encode_with_headers<T: Message>(
        &self,
        message: &T,
        headers: &Headers,
        format: Format,
    ) -> Result<Vec<u8>, EncodeError> {
        // Start at the size this type's last message took: one allocation, no regrowth.
        let entry = self
            .by_type
            .get(&TypeId::of::<T>())
            .map(|&i| &self.entries[i]);
        let hint = entry.map_or(0, |e| {
            e.size_hint.load(std::sync::atomic::Ordering::Relaxed)
        });
        let mut out = Vec::with_capacity(hint.max(128));
        let failed = envelope::encode_error(T::NAME, T::VERSION, format);
        let written: Result<(), StepError> = match self.downcast(message, format)? {
            Some((name, version, tree)) => match format {
                Format::Json => envelope::write_json(&mut out, &name, version, headers, &tree)
                    .map_err(Into::into),
                Format::MessagePack => {
                    envelope::write_msgpack(&mut out, &name, version, headers, &tree)
                        .map_err(Into::into)
                }
            },
            None => match format {
                Format::Json => {
                    envelope::write_json(&mut out, T::NAME, T::VERSION, headers, message)
                        .map_err(Into::into)
                }
                Format::MessagePack => {
                    envelope::write_msgpack(&mut out, T::NAME, T::VERSION, headers, message)
                        .map_err(Into::into)
                }
            },
        };
        written.map_err(failed)?;
        if let Some(e) = entry {
            e.size_hint.store(
                out.len() + out.len() / 8,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(out)
    }

    /// Encodes `message` in split form: type and version for the broker's headers, and the
    /// bare payload as the body.
    pub fn encode_split<T: Message>(
        &self,
        message: &T,
        format: Format,
    ) -> Result<Split, EncodeError> {
        let failed = envelope::encode_error(T::NAME, T::VERSION, format);
        Ok(match self.downcast(message, format)? {
            Some((name, version, tree)) => Split {
                type_name: Cow::Owned(name),
                version,
                body: envelope::write_body(format, &tree).map_err(failed)?,
            },
            None => Split {
                type_name: Cow::Borrowed(T::NAME),
                version: T::VERSION,
                body: envelope::write_body(format, message).map_err(failed)?,
            },
        })
    }

    /// The version `T` is written as: the current one, or the configured older one.
    pub fn write_version<T: Message>(&self) -> u32 {
        match self.by_type.get(&TypeId::of::<T>()) {
            Some(&i) => self.entries[i]
                .write
                .as_ref()
                .map_or(T::VERSION, |w| w.version),
            None => T::VERSION,
        }
    }

    /// The entry of `T` and its write version, if it writes an older one. Encoding an older
    /// struct of a registered type is refused: `encode` writes the current version.
    fn writes<T: Message>(&self, format: Format) -> Result<Option<(&Entry, &Write)>, EncodeError> {
        match self.by_type.get(&TypeId::of::<T>()) {
            Some(&i) => {
                let entry = &self.entries[i];
                Ok(entry.write.as_ref().map(|w| (entry, w)))
            }
            None => match self.by_name.get(T::NAME) {
                Some(&i) => Err(EncodeError::new(
                    T::NAME,
                    T::VERSION,
                    format,
                    EncodeErrorKind::NotCurrent {
                        current: self.entries[i].current,
                    },
                    None,
                )),
                None => Ok(None),
            },
        }
    }

    /// `message` taken back to its configured write version, as (name, version, payload);
    /// `None` when `T` is written as current.
    fn downcast<T: Message>(
        &self,
        message: &T,
        format: Format,
    ) -> Result<Option<(String, u32, serde_json::Value)>, EncodeError> {
        let Some((entry, write)) = self.writes::<T>(format)? else {
            return Ok(None);
        };
        let failed = |kind, source| EncodeError::new(T::NAME, write.version, format, kind, source);
        let mut tree = serde_json::to_value(message)
            .map_err(|e| failed(EncodeErrorKind::Serialize, Some(e.into())))?;
        for from in (write.version..entry.current).rev() {
            let kind = EncodeErrorKind::Downcast {
                from: from + 1,
                to: from,
            };
            // `build` checked every step on the way: none is missing.
            let step = entry.step(from).ok_or_else(|| failed(kind.clone(), None))?;
            step.downcast(&mut tree)
                .map_err(|e| failed(kind, Some(e)))?;
        }
        Ok(Some((write.name.clone(), write.version, tree)))
    }

    /// The current version of a registered type, by its name or any alias.
    pub fn current_version(&self, type_name: &str) -> Option<u32> {
        self.by_name
            .get(type_name)
            .map(|&i| self.entries[i].current)
    }

    /// The registered name of the type `name` (a name, alias or former name) belongs to.
    pub fn canonical_name(&self, name: &str) -> Option<&'static str> {
        self.by_name.get(name).map(|&i| self.entries[i].name)
    }

    /// The names of the registered types.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.name)
    }
}

/// Reads an envelope's header (type name as written, version, headers, codec) without
/// decoding its payload and without a registry: what a router or a log line needs.
///
/// ```
/// let header = upcaster::peek(br#"{"type":"Ping","version":3,"payload":{}}"#)?;
/// assert_eq!((header.type_name.as_ref(), header.version), ("Ping", 3));
/// # Ok::<(), upcaster::Error>(())
/// ```
pub fn peek(bytes: &[u8]) -> Result<Header<'_>, Error> {
    envelope::parse(Raw::Bytes(bytes), None)
        .map(|env| env.header)
        .map_err(|m| malformed(m, bytes))
}

/// Reads a whole envelope of any type, without a registry: its header and its payload as a
/// JSON value, by the same rules as every decode. For tools that look at messages of any
/// type (`schema-check`, a dead-letter browser); a service decodes through a [`Registry`].
///
/// ```
/// let (header, payload) = upcaster::read_untyped(br#"{"type":"Ping","version":1,"payload":{"n":2}}"#)?;
/// assert_eq!((header.version, &payload["n"]), (1, &serde_json::json!(2)));
/// # Ok::<(), upcaster::Error>(())
/// ```
pub fn read_untyped(bytes: &[u8]) -> Result<(Header<'_>, serde_json::Value), Error> {
    let env = envelope::parse(Raw::Bytes(bytes), None).map_err(|m| malformed(m, bytes))?;
    match Input::payload(env.payload, false).read::<serde_json::Value>(env.header.version) {
        Ok(payload) => Ok((env.header, payload)),
        Err(failure) => Err(Error::new(
            ErrorKind::Malformed {
                format: env.header.format,
                offset: 0,
                problem: Malformation::Syntax(format!("the payload cannot be read: {failure:?}")),
            },
            env.header.to_partial(),
            bytes,
        )),
    }
}

// Here rather than beside `Split::to_envelope`: reading an envelope reports through the
// registry's error constructor, and the envelope module does not import the registry.
impl Split {
    /// Takes an envelope apart for a broker with headers: its type and version, its bare
    /// payload as the body, its codec and its headers. The inverse of
    /// [`Split::to_envelope`]; an envelope that cannot be read is the error it would be
    /// on decode.
    pub fn from_envelope(bytes: &[u8]) -> Result<(Split, Format, crate::Headers), Error> {
        let env = envelope::parse(Raw::Bytes(bytes), None).map_err(|m| malformed(m, bytes))?;
        let body = match env.payload {
            crate::codec::PayloadRef::JsonStr(s) => s.as_bytes().to_vec(),
            crate::codec::PayloadRef::JsonBytes(b) | crate::codec::PayloadRef::MessagePack(b) => {
                b.to_vec()
            }
        };
        let header = env.header;
        Ok((
            Split {
                type_name: Cow::Owned(header.type_name.into_owned()),
                version: header.version,
                body,
            },
            header.format,
            header.headers,
        ))
    }
}

pub(crate) fn malformed(m: Malformed, raw: &[u8]) -> Error {
    Error::new(
        ErrorKind::Malformed {
            format: m.format,
            offset: m.offset,
            problem: m.problem,
        },
        m.header,
        raw,
    )
}

/// Builds the envelope of a split-form message from the broker's headers and body.
pub(crate) fn split_envelope<'a>(
    type_name: &'a str,
    version: &str,
    body: &'a [u8],
    format: Format,
) -> Result<RawEnvelope<'a>, Error> {
    let mut partial = crate::error::PartialHeader {
        format: Some(format),
        ..Default::default()
    };
    let fail = |partial, offset, problem| {
        Err(malformed(
            Malformed {
                format,
                offset,
                problem,
                header: partial,
            },
            body,
        ))
    };
    if type_name.is_empty() {
        return fail(
            partial,
            0,
            Malformation::InvalidType("an empty string".to_owned()),
        );
    }
    partial.type_name = Some(type_name.to_owned());
    let version = match crate::version::parse_version(version) {
        Ok(v) => v,
        Err(problem) => return fail(partial, 0, problem),
    };
    Ok(RawEnvelope {
        header: Header {
            format,
            type_name: Cow::Borrowed(type_name),
            version,
            headers: Headers::new(),
        },
        payload: match format {
            Format::Json => match std::str::from_utf8(body) {
                Ok(text) => PayloadRef::JsonStr(text),
                Err(e) => {
                    partial.version = Some(version);
                    let problem = Malformation::Syntax("invalid UTF-8".to_owned());
                    return fail(partial, e.valid_up_to(), problem);
                }
            },
            Format::MessagePack => PayloadRef::MessagePack(body),
        },
    })
}
