//! Checking what the item and its attributes mean, each mistake at its offending token.

use syn::ext::IdentExt;
use syn::{GenericParam, Ident};

use crate::ast::{Input, Kind};
use crate::attr::{Key, Str, Version};
use crate::{Errors, Order};

/// A message type that passed every check: all that `expand` needs.
pub struct Message<'a> {
    pub ident: &'a Ident,
    /// `None`: the name of the `previous` version, which links the same message type.
    pub name: Option<String>,
    pub version: u32,
    pub aliases: Vec<String>,
    pub previous: Option<&'a syn::Path>,
    /// The path of the upcaster crate in generated code: `::upcaster` unless `crate = "..."`.
    pub krate: syn::Path,
}

/// Checks `input`, recording every mistake in `errors`.
///
/// Returns the message only when `errors` is still empty afterwards, so that nothing is
/// generated from an item with a mistake in it, even one found by an earlier phase.
pub fn check<'a>(input: &'a Input<'a>, errors: &mut Errors) -> Option<Message<'a>> {
    let attrs = &input.attrs;

    let version = match (attrs.first, &attrs.version) {
        (_, Some(version)) => check_version(version, errors),
        // No attribute at all: reported at the identifier, with the item's mistakes.
        (None, None) => None,
        // A `version` with a bad value, an attribute that could not be read to its end, or
        // an unknown key (likely `verison`) was already reported by `attr`.
        (Some(_), None)
            if attrs.malformed || attrs.unknown_keys || attrs.written.contains(&Key::Version) =>
        {
            None
        }
        (Some(path), None) => {
            errors.at(
                Order::ATTRIBUTE,
                path,
                "missing key `version`, like `version = 1`",
            );
            None
        }
    };

    // `Some(None)`: inherited from `previous`, so unknown here.
    let name = match &attrs.name {
        Some(name) => {
            check_text(name, "message name", errors);
            Some(Some(name.value.clone()))
        }
        None if attrs.written.contains(&Key::Name) => None,
        None if attrs.previous.is_some() => Some(None),
        None => Some(Some(input.ident.unraw().to_string())),
    };

    let mut aliases: Vec<String> = Vec::new();
    for alias in &attrs.aliases {
        check_text(alias, "alias", errors);
        let shown = alias.value.escape_debug();
        if name.as_ref().and_then(Option::as_ref) == Some(&alias.value) {
            let why = if attrs.name.is_none() {
                ", which defaults to the type's identifier"
            } else {
                ""
            };
            let message = format!("alias `{shown}` equals the message name{why}");
            errors.at(alias.order, alias.span, message);
        } else if aliases.contains(&alias.value) {
            errors.at(
                alias.order,
                alias.span,
                format!("duplicate alias `{shown}`"),
            );
        }
        aliases.push(alias.value.clone());
    }

    if let Some(previous) = &attrs.previous {
        if names_itself(&previous.path, input.ident) {
            errors.spanned(
                previous.order,
                &previous.path,
                "previous names this type itself; it must name the type of the version just below",
            );
        } else if version == Some(1) {
            errors.spanned(
                previous.order,
                &previous.path,
                "version 1 has no previous version; remove `previous` or raise `version`",
            );
        }
    }

    // The item itself, in source order: keyword, identifier, generics, fields.
    if let Kind::Union(union_token) = input.kind {
        errors.at(
            Order::ITEM,
            union_token,
            "`Message` cannot be derived for a union; use a struct or an enum",
        );
    }
    if attrs.first.is_none() {
        errors.at(
            Order::ITEM,
            input.ident.span(),
            "missing `#[message(...)]` attribute; add at least `#[message(version = 1)]`",
        );
    }
    for param in &input.generics.params {
        match param {
            GenericParam::Lifetime(param) => errors.spanned(
                Order::ITEM,
                &param.lifetime,
                "message types cannot have lifetime parameters: a message owns its data \
                 (`Message` requires `DeserializeOwned + 'static`)",
            ),
            GenericParam::Type(param) => errors.spanned(Order::ITEM, &param.ident, GENERIC),
            GenericParam::Const(param) => errors.spanned(Order::ITEM, &param.ident, GENERIC),
        }
    }
    for place in &input.misplaced {
        let message = format!(
            "`#[message(...)]` belongs on the type, not on a {}",
            place.place
        );
        errors.at(Order::ITEM, place.span, message);
    }

    let (Some(name), Some(version)) = (name, version) else {
        return None;
    };
    errors.is_empty().then_some(Message {
        ident: input.ident,
        name,
        version,
        aliases,
        previous: attrs.previous.as_ref().map(|previous| &previous.path),
        krate: attrs
            .krate
            .clone()
            .unwrap_or_else(|| syn::parse_quote!(::upcaster)),
    })
}

const GENERIC: &str =
    "message types cannot be generic: one name and version must describe one wire shape";

fn check_version(version: &Version, errors: &mut Errors) -> Option<u32> {
    match version.digits.parse::<u32>() {
        Ok(0) => errors.at(version.order, version.span, "version must be at least 1"),
        Ok(value) => return Some(value),
        // The digits of an integer literal: anything that does not parse is too large.
        Err(_) => errors.at(
            version.order,
            version.span,
            format!("version must be at most {} (`u32::MAX`)", u32::MAX),
        ),
    }
    None
}

/// The rules shared by the name and the aliases: not empty, no control characters.
fn check_text(text: &Str, what: &str, errors: &mut Errors) {
    if text.value.is_empty() {
        errors.at(text.order, text.span, format!("{what} must not be empty"));
    } else if let Some(control) = text.value.chars().find(|c| c.is_control()) {
        let message = format!("{what} must not contain control characters, found {control:?}");
        errors.at(text.order, text.span, message);
    }
}

/// Whether `path` is `Self`, `Ident` or `self::Ident` for the item's own `ident`.
fn names_itself(path: &syn::Path, ident: &Ident) -> bool {
    let segments: Vec<&syn::PathSegment> = path.segments.iter().collect();
    let last = match segments.as_slice() {
        [last] if path.leading_colon.is_none() => last,
        [first, last] if path.leading_colon.is_none() && first.ident == "self" => last,
        _ => return false,
    };
    last.arguments.is_none() && (last.ident == "Self" || last.ident.unraw() == ident.unraw())
}
