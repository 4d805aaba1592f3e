//! Dispatch by type name: one queue, many message types, one handler each.

use std::any::TypeId;

use crate::codec::Format;
use crate::envelope::{self, Decoded, Raw, RawEnvelope};
use crate::error::{Error, ErrorKind, RegistryError};
use crate::registry::{self, Failed, Named, Registry};
use crate::Message;

type Handler<'r, Out> = dyn for<'a> Fn(&Registry, RawEnvelope<'a>) -> Result<Out, Failed<'a>> + 'r;

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
    registry: &'r Registry,
    handlers: Vec<Option<Box<Handler<'r, Out>>>>,
}

impl<'r, Out> Dispatcher<'r, Out> {
    /// A dispatcher with no handlers yet.
    pub fn new(registry: &'r Registry) -> Self {
        Dispatcher {
            registry,
            handlers: registry.entries.iter().map(|_| None).collect(),
        }
    }

    /// Sets the handler of `T`, which must be registered; a second call replaces the first.
    pub fn on<T, F>(mut self, handler: F) -> Result<Self, RegistryError>
    where
        T: Message,
        F: for<'a> Fn(Decoded<'a, T>) -> Out + 'r,
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
        self.handlers[i] = Some(Box::new(
            move |registry: &Registry, env: RawEnvelope<'_>| match registry
                .convert::<T>(&env.header, env.payload)
            {
                Ok(message) => Ok(handler(Decoded {
                    message,
                    header: env.header,
                })),
                Err(kind) => Err(Box::new((kind, env))),
            },
        ));
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
        if let Some(env) = envelope::fast(raw, None) {
            // A handler runs only after its message decoded, so retrying is safe.
            if let Ok(out) = self.route(env) {
                return Ok(out);
            }
        }
        self.registry.parse_and(raw, None, |env| self.route(env))
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
            Some(handler) => handler(self.registry, env),
            None => Err(Box::new((
                ErrorKind::Unhandled {
                    type_name: self.registry.entries[i].name,
                },
                env,
            ))),
        }
    }
}
