//! The item that `#[derive(Message)]` is applied to, as a small model.

use proc_macro2::Span;
use syn::{Attribute, Data, DeriveInput, Fields, Generics, Ident};

use crate::attr::{self, Attrs};
use crate::Errors;

/// A struct, enum or union with its `#[message(...)]` attributes read.
pub struct Input<'a> {
    /// The type's identifier.
    pub ident: &'a Ident,
    /// What kind of item it is.
    pub kind: Kind,
    /// The item's generic parameters; a message type must have none.
    pub generics: &'a Generics,
    /// The keys of every `#[message(...)]` attribute on the item.
    pub attrs: Attrs,
    /// The `message` paths of `#[message(...)]` attributes on fields or variants, where they
    /// have no meaning.
    pub misplaced: Vec<Misplaced>,
}

/// The kind of item.
pub enum Kind {
    Struct,
    Enum,
    /// A union, with the span of its `union` keyword.
    Union(Span),
}

/// A `#[message(...)]` attribute in a place where it has no meaning.
pub struct Misplaced {
    /// The span of the attribute's `message` path.
    pub span: Span,
    /// Where it was found: `"field"` or `"variant"`.
    pub place: &'static str,
}

impl<'a> Input<'a> {
    /// Reads `node`, recording every mistake in its attributes in `errors`.
    pub fn from_syn(node: &'a DeriveInput, errors: &mut Errors) -> Self {
        let attrs = attr::read(&node.attrs, errors);
        let mut misplaced = Vec::new();
        let kind = match &node.data {
            Data::Struct(data) => {
                misplaced_in_fields(&data.fields, &mut misplaced);
                Kind::Struct
            }
            Data::Enum(data) => {
                for variant in &data.variants {
                    misplaced_in(&variant.attrs, "variant", &mut misplaced);
                    misplaced_in_fields(&variant.fields, &mut misplaced);
                }
                Kind::Enum
            }
            Data::Union(data) => {
                for field in &data.fields.named {
                    misplaced_in(&field.attrs, "field", &mut misplaced);
                }
                Kind::Union(data.union_token.span)
            }
        };
        Input {
            ident: &node.ident,
            kind,
            generics: &node.generics,
            attrs,
            misplaced,
        }
    }
}

fn misplaced_in_fields(fields: &Fields, out: &mut Vec<Misplaced>) {
    for field in fields {
        misplaced_in(&field.attrs, "field", out);
    }
}

fn misplaced_in(attrs: &[Attribute], place: &'static str, out: &mut Vec<Misplaced>) {
    for attr in attrs.iter().filter(|attr| attr::is_message(attr)) {
        out.push(Misplaced {
            span: attr::path_span(attr),
            place,
        });
    }
}
