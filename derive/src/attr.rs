//! Reading the `#[message(...)]` attributes of an item.
//!
//! This phase checks the shape of each entry: a known key, given once, with a value of the
//! right kind. What the values mean (a version of at least 1, a name that is not empty, ...)
//! is checked in `valid`.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, ExprUnary, Ident, Lit, Meta, Token, UnOp};

use crate::{Errors, Order};

/// The keys of every `#[message(...)]` attribute of an item, merged.
#[derive(Default)]
pub struct Attrs {
    /// The span of the first attribute's `message` path; `None` when the item has none.
    pub first: Option<Span>,
    /// Every known key that was written, even with a bad value, once each.
    pub written: Vec<Key>,
    /// Whether an attribute could not be read to its end, so keys may be missing from it.
    pub malformed: bool,
    /// Whether an unknown key was written: perhaps a typo of a missing one.
    pub unknown_keys: bool,
    /// `name = "..."`.
    pub name: Option<Str>,
    /// `version = N`.
    pub version: Option<Version>,
    /// The string literals of `aliases = [...]`, in the order written.
    pub aliases: Vec<Str>,
    /// `previous = Path`.
    pub previous: Option<Previous>,
    /// `crate = "path"`: where upcaster is, for facades and renamed dependencies.
    pub krate: Option<syn::Path>,
}

/// The keys that `#[message(...)]` accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Name,
    Version,
    Aliases,
    Previous,
    Crate,
}

impl Key {
    const ALL: [Key; 5] = [
        Key::Name,
        Key::Version,
        Key::Aliases,
        Key::Previous,
        Key::Crate,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Key::Name => "name",
            Key::Version => "version",
            Key::Aliases => "aliases",
            Key::Previous => "previous",
            Key::Crate => "crate",
        }
    }

    /// How the key is written, for error messages.
    fn example(self) -> &'static str {
        match self {
            Key::Name => "`name = \"AddPonkaToImage\"`",
            Key::Version => "`version = 2`",
            Key::Aliases => "`aliases = [\"AddPonka\"]`",
            Key::Previous => "`previous = AddPonkaToImageV1`",
            Key::Crate => "`crate = \"my_facade::upcaster\"`",
        }
    }
}

const KEYS: &str = "`name`, `version`, `aliases`, `previous`, `crate`";

/// A string literal's value, the span of the literal and its place in the source.
pub struct Str {
    pub value: String,
    pub span: Span,
    pub order: Order,
}

/// An integer literal, not yet known to fit a `u32`.
pub struct Version {
    /// The literal's digits in base 10, without suffix.
    pub digits: String,
    pub span: Span,
    pub order: Order,
}

/// The type path of `previous = ...`.
pub struct Previous {
    pub path: syn::Path,
    pub order: Order,
}

/// Whether `attr` is a `#[message...]` attribute.
pub fn is_message(attr: &Attribute) -> bool {
    attr.path().is_ident("message")
}

/// The span of the attribute's path, `message`.
pub fn path_span(attr: &Attribute) -> Span {
    attr.path().span()
}

/// Reads and merges every `#[message(...)]` attribute in `attrs`, recording each mistake in
/// `errors`.
pub fn read(attrs: &[Attribute], errors: &mut Errors) -> Attrs {
    let mut reader = Reader {
        attrs: Attrs::default(),
        entries: 0,
        errors,
    };
    for attr in attrs.iter().filter(|attr| is_message(attr)) {
        reader.attrs.first.get_or_insert_with(|| path_span(attr));
        match &attr.meta {
            // `#[message]` with no entries: only "missing key `version`" applies, from `valid`.
            Meta::Path(_) => {}
            Meta::List(list) => {
                if let Err(error) = list.parse_args_with(|input: ParseStream| reader.entries(input))
                {
                    let order = Order::entry(reader.entries);
                    reader.errors.push(order, error);
                    reader.attrs.malformed = true;
                }
            }
            Meta::NameValue(meta) => {
                reader.attrs.malformed = true;
                reader.entries += 1;
                reader.errors.spanned(
                    Order::entry(reader.entries),
                    &meta.value,
                    "expected `#[message(key = value, ...)]`, not `#[message = ...]`",
                );
            }
        }
    }
    reader.attrs
}

struct Reader<'e> {
    attrs: Attrs,
    /// How many entries were read so far, across all attributes.
    entries: usize,
    errors: &'e mut Errors,
}

impl Reader<'_> {
    /// Reads `key = value, ...` up to the end of one attribute's parentheses.
    ///
    /// Each entry is cut at the next top-level comma before it is looked at, so a bad entry
    /// does not hide the mistakes in the entries after it.
    fn entries(&mut self, input: ParseStream) -> syn::Result<()> {
        while !input.is_empty() {
            self.entries += 1;
            let order = Order::entry(self.entries);
            if input.peek(Ident::peek_any) {
                let key = input.call(Ident::parse_any)?;
                let eq: Option<Token![=]> = input.parse()?;
                let value = until_comma(input)?;
                self.entry(order, &key, eq, value);
            } else {
                let next = input.span();
                let junk = until_comma(input)?;
                let message = format!("expected a key: one of {KEYS}");
                if junk.is_empty() {
                    self.errors.at(order, next, message);
                } else {
                    self.errors.spanned(order, junk, message);
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, order: Order, key: &Ident, eq: Option<Token![=]>, value: TokenStream) {
        let written = key.unraw().to_string();
        let Some(known) = Key::ALL.into_iter().find(|known| known.as_str() == written) else {
            let guess = Key::ALL
                .into_iter()
                .find(|known| close(known.as_str(), &written))
                .map(|known| format!("did you mean `{}`? ", known.as_str()))
                .unwrap_or_default();
            let message = format!("unknown key `{written}`; {guess}expected one of {KEYS}");
            self.errors.at(order, key.span(), message);
            self.attrs.unknown_keys = true;
            return;
        };
        let duplicate = self.attrs.written.contains(&known);
        if duplicate {
            let message = format!("duplicate key `{}`", known.as_str());
            self.errors.at(order, key.span(), message);
        } else {
            self.attrs.written.push(known);
        }
        let Some(eq) = eq else {
            let message = format!(
                "expected `=` and a value after `{}`, like {}",
                known.as_str(),
                known.example()
            );
            self.errors.at(order, key.span(), message);
            return;
        };
        if value.is_empty() {
            let message = format!(
                "expected a value after `{} =`, like {}",
                known.as_str(),
                known.example()
            );
            self.errors.at(order, eq.span, message);
            return;
        }
        // A duplicate's value is checked too, but only the first occurrence is kept.
        match known {
            Key::Name => {
                let name = self.name(order, value);
                if !duplicate {
                    self.attrs.name = name;
                }
            }
            Key::Version => {
                let version = self.version(order, value);
                if !duplicate {
                    self.attrs.version = version;
                }
            }
            Key::Aliases => {
                let aliases = self.aliases(order, value);
                if !duplicate {
                    self.attrs.aliases = aliases;
                }
            }
            Key::Previous => {
                let previous = self.previous(order, value);
                if !duplicate {
                    self.attrs.previous = previous;
                }
            }
            Key::Crate => {
                let krate = self.krate(order, value);
                if !duplicate {
                    self.attrs.krate = krate;
                }
            }
        }
    }

    fn name(&mut self, order: Order, value: TokenStream) -> Option<Str> {
        let message = format!(
            "name must be a string literal, like {}",
            Key::Name.example()
        );
        match syn::parse2::<Expr>(value.clone()).as_ref().map(ungroup) {
            Ok(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) => {
                return Some(Str {
                    value: lit.value(),
                    span: lit.span(),
                    order,
                })
            }
            Ok(expr) => self.errors.spanned(order, expr, message),
            Err(_) => self.errors.spanned(order, value, message),
        }
        None
    }

    fn version(&mut self, order: Order, value: TokenStream) -> Option<Version> {
        let example = Key::Version.example();
        match syn::parse2::<Expr>(value.clone()).as_ref().map(ungroup) {
            Ok(Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            })) => match lit.suffix() {
                "" | "u32" => {
                    return Some(Version {
                        digits: lit.base10_digits().to_owned(),
                        span: lit.span(),
                        order,
                    })
                }
                suffix => self.errors.at(
                    order,
                    lit.span(),
                    format!(
                        "version must be a plain integer literal; remove the suffix `{suffix}`"
                    ),
                ),
            },
            Ok(
                expr @ Expr::Unary(ExprUnary {
                    op: UnOp::Neg(_), ..
                }),
            ) => self.errors.spanned(
                order,
                expr,
                format!("version must be a positive integer literal, like {example}"),
            ),
            Ok(expr) => self.errors.spanned(
                order,
                expr,
                format!("version must be an integer literal, like {example}"),
            ),
            Err(_) => self.errors.spanned(
                order,
                value,
                format!("version must be an integer literal, like {example}"),
            ),
        }
        None
    }

    /// The string literals of the array. A mistake in one element does not drop the others,
    /// so that their own mistakes are reported too.
    fn aliases(&mut self, order: Order, value: TokenStream) -> Vec<Str> {
        let not_array = format!(
            "aliases must be an array of string literals, like {}",
            Key::Aliases.example()
        );
        let array = match syn::parse2::<Expr>(value.clone()).as_ref().map(ungroup) {
            Ok(Expr::Array(array)) => array.clone(),
            Ok(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) => {
                let message = format!(
                    "aliases must be an array of string literals; write `aliases = [{}]`",
                    lit.token()
                );
                self.errors.at(order, lit.span(), message);
                return Vec::new();
            }
            Ok(expr) => {
                self.errors.spanned(order, expr, not_array);
                return Vec::new();
            }
            Err(_) => {
                self.errors.spanned(order, value, not_array);
                return Vec::new();
            }
        };
        let mut aliases = Vec::new();
        for (index, element) in array.elems.iter().enumerate() {
            let order = order.element(index + 1);
            match ungroup(element) {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) => aliases.push(Str {
                    value: lit.value(),
                    span: lit.span(),
                    order,
                }),
                other => self
                    .errors
                    .spanned(order, other, "each alias must be a string literal"),
            }
        }
        aliases
    }

    fn krate(&mut self, order: Order, value: TokenStream) -> Option<syn::Path> {
        let message = format!(
            "crate must be a string literal holding a path, like {}",
            Key::Crate.example()
        );
        match syn::parse2::<Expr>(value.clone()).as_ref().map(ungroup) {
            Ok(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) => match lit.parse::<syn::Path>() {
                Ok(path) => return Some(path),
                Err(_) => self.errors.at(
                    order,
                    lit.span(),
                    format!("`{}` is not a path; {message}", lit.value().escape_debug()),
                ),
            },
            Ok(expr) => self.errors.spanned(order, expr, message),
            Err(_) => self.errors.spanned(order, value, message),
        }
        None
    }

    fn previous(&mut self, order: Order, value: TokenStream) -> Option<Previous> {
        match syn::parse2::<syn::Path>(value.clone()) {
            Ok(path) => Some(Previous { path, order }),
            Err(_) => {
                let message = format!(
                    "previous must be a type path, like {}",
                    Key::Previous.example()
                );
                self.errors.spanned(order, value, message);
                None
            }
        }
    }
}

/// The tokens up to the next top-level comma or the end; commas inside brackets stay.
fn until_comma(input: ParseStream) -> syn::Result<TokenStream> {
    let mut tokens = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        tokens.extend([input.parse::<TokenTree>()?]);
    }
    Ok(tokens)
}

/// Looks through the invisible groups that `macro_rules!` puts around `$x:expr` fragments.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        other => other,
    }
}

/// True when `a` and `b` differ by at most two edits (a typo, not another word).
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()] <= 2
}
