//! Dispatch by type name: one queue, many message types, one handler each.

use std::any::TypeId;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::codec::Format;
use crate::envelope::{self, Decoded, Raw, RawEnvelope};
use crate::error::{Error, ErrorKind, RegistryError};
use crate::registry::{self, Failed, Named, Registry};
use crate::Message;

/// One type's handler, reached either straight from the writer's own bytes or through a
/// read envelope.
trait Route<Out>: Send + Sync {
    /// Runs the handler when `raw` is the writer's form of the current version and reads;
    /// `None` (handler not run) otherwise.
    fn exact(&self, registry: &Registry, raw: Raw<'_>) -> Option<Out>;
    /// Upcasts the envelope's payload and runs the handler.
    fn general<'a>(&self, registry: &Registry, env: RawEnvelope<'a>) -> Result<Out, Failed<'a>>;
    /// Upcasts the envelope's payload without running the handler.
    fn check<'a>(&self, registry: &Registry, env: RawEnvelope<'a>) -> Result<(), Failed<'a>>;
}

struct Typed<T, F>(F, PhantomData<fn() -> T>);

impl<T, F, Out> Route<Out> for Typed<T, F>
where
    T: Message,
    F: for<'a> Fn(Decoded<'a, T>) -> Out + Send + Sync,
{
    #[inline]
    fn exact(&self, registry: &Registry, raw: Raw<'_>) -> Option<Out> {
        registry.decode_exact::<T>(raw).map(&self.0)
    }

    fn general<'a>(&self, registry: &Registry, env: RawEnvelope<'a>) -> Result<Out, Failed<'a>> {
        match registry.convert::<T>(&env.header, env.payload) {
            Ok(message) => Ok((self.0)(Decoded {
                message,
                header: env.header,
            })),
            Err(kind) => Err(Box::new((kind, env))),
        }
    }

    fn check<'a>(&self, registry: &Registry, env: RawEnvelope<'a>) -> Result<(), Failed<'a>> {
        match registry.convert::<T>(&env.header, env.payload) {
            Ok(_) => Ok(()),
            Err(kind) => Err(Box::new((kind, env))),
        }
    }
}

/// Routes each message of a mixed queue to the handler of its type, upcast to the current
/// version. Every handler returns the same `Out`.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use upcaster::{Dispatcher, Format, Message, Registry};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(version = 1)]
/// struct DeleteImagePost { id: u64 }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(version = 1)]
/// struct ImagePostDeletedEvent { id: u64 }
///
/// let registry = Registry::builder()
///     .register::<DeleteImagePost>()
///     .register::<ImagePostDeletedEvent>()
///     .build()?;
/// let dispatcher = Dispatcher::new(&registry)
///     .on(|m: upcaster::Decoded<DeleteImagePost>| format!("delete {}", m.message.id))?
///     .on(|m: upcaster::Decoded<ImagePostDeletedEvent>| format!("deleted {}", m.message.id))?;
///
/// let bytes = registry.encode(&ImagePostDeletedEvent { id: 4 }, Format::MessagePack)?;
/// assert_eq!(dispatcher.dispatch(&bytes)?, "deleted 4");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher<'r, Out> {
    registry: Held<'r>,
    handlers: Vec<Option<Box<dyn Route<Out> + 'r>>>,
}

/// The registry a dispatcher reads with: borrowed, or shared so the dispatcher is `'static`.
enum Held<'r> {
    Borrowed(&'r Registry),
    Shared(Arc<Registry>),
}

impl Deref for Held<'_> {
    type Target = Registry;

    #[inline]
    fn deref(&self) -> &Registry {
        match self {
            Held::Borrowed(r) => r,
            Held::Shared(r) => r,
        }
    }
}

impl<Out> Dispatcher<'static, Out> {
    /// A dispatcher that shares `registry`, with no handlers yet. It borrows nothing, so it
    /// can be moved into a spawned task or kept in an `Arc` in a service's state (its
    /// handlers must then be `'static` too).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use serde::{Deserialize, Serialize};
    /// use upcaster::{Decoded, Dispatcher, Format, Message, Registry};
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(version = 1)]
    /// struct Ping { n: u32 }
    ///
    /// let registry = Arc::new(Registry::builder().register::<Ping>().build()?);
    /// let dispatcher = Arc::new(Dispatcher::shared(registry.clone()).on(|m: Decoded<Ping>| m.message.n)?);
    /// let bytes = registry.encode(&Ping { n: 3 }, Format::Json)?;
    /// let n = std::thread::spawn(move || dispatcher.dispatch(&bytes)).join().unwrap()?;
    /// assert_eq!(n, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shared(registry: Arc<Registry>) -> Self {
        Dispatcher {
            handlers: registry.entries.iter().map(|_| None).collect(),
            registry: Held::Shared(registry),
        }
    }
}

impl<'r, Out> Dispatcher<'r, Out> {
    /// A dispatcher with no handlers yet.
    pub fn new(registry: &'r Registry) -> Self {
        Dispatcher {
            handlers: registry.entries.iter().map(|_| None).collect(),
            registry: Held::Borrowed(registry),
        }
    }

    /// The registry it decodes with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the handler of `T`, which must be registered; a second call replaces the first.
    pub fn on<T, F>(mut self, handler: F) -> Result<Self, RegistryError>
    where
        T: Message,
        F: for<'a> Fn(Decoded<'a, T>) -> Out + Send + Sync + 'r,
    {
        let Some(i) = self
            .registry
            .entries
            .iter()
            .position(|e| e.type_id == TypeId::of::<T>())
        else {
            return Err(RegistryError {
                problems: vec![Named::of::<T>().unregistered(&self.registry.entries)],
            });
        };
        self.handlers[i] = Some(Box::new(Typed(handler, PhantomData)));
        Ok(self)
    }

    /// Decodes an envelope (JSON or MessagePack) and calls its type's handler. The handler
    /// runs only for a message that decoded; every failure returns the original bytes.
    pub fn dispatch(&self, bytes: &[u8]) -> Result<Out, Error> {
        self.dispatch_raw(Raw::Bytes(bytes))
    }

    /// [`Dispatcher::dispatch`] for JSON held as text.
    pub fn dispatch_str(&self, text: &str) -> Result<Out, Error> {
        self.dispatch_raw(Raw::Str(text))
    }

    fn dispatch_raw(&self, raw: Raw<'_>) -> Result<Out, Error> {
        let raw = raw.text();
        // The writer's own form of a current version: the name picks the handler, which
        // then needs only its type's exact prefix.
        let handler = envelope::peek_name(raw)
            .and_then(|name| self.registry.by_name.get(name))
            .and_then(|&i| self.handlers.get(i)?.as_ref());
        if let Some(out) = handler.and_then(|h| h.exact(&self.registry, raw)) {
            return Ok(out);
        }
        if let Some(env) = envelope::fast(raw, None) {
            // A handler runs only after its message decoded, so retrying is safe.
            if let Ok(out) = self.route(env) {
                return Ok(out);
            }
        }
        self.registry.parse_and(raw, None, |env| self.route(env))
    }

    /// Decodes and upcasts a message as [`Dispatcher::dispatch`] would, without running its
    /// handler: the type's current name and the version the message arrived in. For
    /// checking stored messages against new code before sending them again.
    pub fn check(&self, bytes: &[u8]) -> Result<(&'static str, u32), Error> {
        let raw = Raw::Bytes(bytes).text();
        if let Some(env) = envelope::fast(raw, None) {
            if let Ok(found) = self.check_env(env) {
                return Ok(found);
            }
        }
        self.registry
            .parse_and(raw, None, |env| self.check_env(env))
    }

    fn check_env<'a>(&self, env: RawEnvelope<'a>) -> Result<(&'static str, u32), Failed<'a>> {
        let Some(&i) = self.registry.by_name.get(&*env.header.type_name) else {
            let type_name = env.header.type_name.to_string();
            return Err(Box::new((ErrorKind::UnknownType { type_name }, env)));
        };
        let name = self.registry.entries[i].name;
        let version = env.header.version;
        match self.handlers.get(i).and_then(Option::as_ref) {
            Some(handler) => handler.check(&self.registry, env).map(|()| (name, version)),
            None => Err(Box::new((ErrorKind::Unhandled { type_name: name }, env))),
        }
    }

    /// Dispatches a split-form message: type and version from the broker's headers, and the
    /// bare payload body.
    pub fn dispatch_split(
        &self,
        type_name: &str,
        version: &str,
        body: &[u8],
        format: Format,
    ) -> Result<Out, Error> {
        let env = registry::split_envelope(type_name, version, body, format)?;
        self.route(env).map_err(|failed| {
            let (kind, env) = *failed;
            Error::new(kind, env.header.to_partial(), body)
        })
    }

    fn route<'a>(&self, env: RawEnvelope<'a>) -> Result<Out, Failed<'a>> {
        let Some(&i) = self.registry.by_name.get(&*env.header.type_name) else {
            let type_name = env.header.type_name.to_string();
            return Err(Box::new((ErrorKind::UnknownType { type_name }, env)));
        };
        match self.handlers.get(i).and_then(Option::as_ref) {
            Some(handler) => handler.general(&self.registry, env),
            None => Err(Box::new((
                ErrorKind::Unhandled {
                    type_name: self.registry.entries[i].name,
                },
                env,
            ))),
        }
    }
}
