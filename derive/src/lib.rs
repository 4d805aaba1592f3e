//! The `#[derive(Message)]` macro of `upcaster`.
//!
//! Depend on `upcaster`, which re-exports this derive; this crate is not meant to be used on
//! its own. The macro works in four phases, one file each:
//!
//! - `ast` turns the `syn` input into a small model of the item;
//! - `attr` reads the `#[message(...)]` attributes into that model;
//! - `valid` checks the model and reports every mistake with the span of its token;
//! - `expand` writes the `impl ::upcaster::Message` (the only phase that uses `quote!`).
#![forbid(unsafe_code)]

mod ast;
mod attr;
mod embed;
mod expand;
mod serde_facts;
mod valid;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput, LitStr};

/// Implements `upcaster::Message` for a struct or an enum: one version of one named message
/// type.
///
/// The item carries one or more `#[message(...)]` attributes. Several attributes are read as
/// if they were one, so a key may appear only once across all of them. The keys are:
///
/// - `version = 2`: required. An integer literal from 1 to 4294967295 (`u32::MAX`): the
///   version of the message type that this Rust type represents. The first version is 1.
/// - `name = "AddPonkaToImage"`: optional. A string literal, the type name written into
///   every envelope. Defaults to the name of the `previous` version when there is one (the
///   versions of one message type share a name), else to the Rust type's identifier. It must
///   not be empty and must not contain control characters.
/// - `aliases = ["AddPonka", "Ponka"]`: optional, empty by default. An array of string
///   literals: older names that still resolve to this type when reading. The same rules as
///   for `name` apply; an alias must differ from the name and from every other alias.
/// - `previous = AddPonkaToImageV1`: optional. The path of the type that is version
///   `version - 1` of this message. This type must then implement `From<Previous>` or
///   `TryFrom<Previous>` (with an error that converts into
///   `Box<dyn std::error::Error + Send + Sync>`), and reading an older version upcasts
///   through those conversions. A `previous` whose version is not exactly one below is a
///   compile error, as is a missing conversion. It must not name the type itself.
///
/// The type must also implement `serde::Serialize` and `serde::Deserialize`. It cannot be
/// generic or have lifetime parameters (one name and version describe one wire shape), and
/// it cannot be a union.
///
/// ```text
/// use serde::{Deserialize, Serialize};
/// use upcaster::Message;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "AddPonkaToImage", version = 1)]
/// struct AddPonkaToImageV1 {
///     image_id: u64,
/// }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(version = 2, aliases = ["AddPonka"], previous = AddPonkaToImageV1)]
/// struct AddPonkaToImage {
///     image_post: u64,
/// }
///
/// impl From<AddPonkaToImageV1> for AddPonkaToImage {
///     fn from(v1: AddPonkaToImageV1) -> Self {
///         AddPonkaToImage { image_post: v1.image_id }
///     }
/// }
///
/// assert_eq!(AddPonkaToImage::NAME, "AddPonkaToImage");
/// assert_eq!(AddPonkaToImage::VERSION, 2);
/// assert_eq!(AddPonkaToImage::ALIASES, &["AddPonka"]);
/// ```
///
/// Every mistake in the attributes is reported at once, each at the token that causes it.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Embeds a migrations directory in the binary, for deploys that ship one file.
///
/// `embed_migrations!("migrations")` reads every `<TypeName>/v<N>-to-v<N+1>.json` below that
/// directory (relative to the crate's `Cargo.toml`) at compile time and evaluates to
/// `Result<upcaster::Migrations, upcaster::migration::MigrationErrors>`, exactly as
/// `Migrations::load` would at run time. Each file is included with `include_str!`, so
/// editing one rebuilds; a new file is seen on the next build of the crate (add
/// `println!("cargo:rerun-if-changed=migrations")` to a build script to make that automatic).
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    let dir = parse_macro_input!(input as LitStr);
    embed::expand(&dir)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Every mistake found in an item, reported together in the order they appear in the source.
struct Errors {
    found: Vec<(Order, syn::Error)>,
}

/// Where a mistake sits in the source, to report mistakes in reading order.
///
/// The `key = value` entries of the `#[message(...)]` attributes are numbered from 1 in the
/// order written, across all attributes; `element` orders mistakes inside one value (the
/// aliases of an array). Mistakes in the item itself come after every entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    entry: usize,
    element: usize,
}

impl Order {
    /// The path of the first `#[message]` attribute, before every entry.
    const ATTRIBUTE: Order = Order::entry(0);
    /// The item after its attributes: its keyword, identifier, generics and fields.
    const ITEM: Order = Order::entry(usize::MAX);

    const fn entry(entry: usize) -> Order {
        Order { entry, element: 0 }
    }

    const fn element(self, element: usize) -> Order {
        Order {
            entry: self.entry,
            element,
        }
    }
}

impl Errors {
    fn new() -> Self {
        Errors { found: Vec::new() }
    }

    /// Records a mistake at `span`.
    fn at(&mut self, order: Order, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.found.push((order, syn::Error::new(span, message)));
    }

    /// Records a mistake that covers every token of `tokens`.
    fn spanned(
        &mut self,
        order: Order,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.found
            .push((order, syn::Error::new_spanned(tokens, message)));
    }

    /// Records an error from `syn` itself, such as a syntax error inside the parentheses.
    fn push(&mut self, order: Order, error: syn::Error) {
        self.found.push((order, error));
    }

    fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Every mistake combined into one error, in source order; `None` when there was none.
    fn into_error(mut self) -> Option<syn::Error> {
        // A stable sort: mistakes at the same place keep the order they were found in.
        self.found.sort_by_key(|(order, _)| *order);
        self.found
            .into_iter()
            .map(|(_, error)| error)
            .reduce(|mut all, next| {
                all.combine(next);
                all
            })
    }
}
