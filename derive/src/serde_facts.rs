//! What serde does that schemars's schema does not show, read from `#[serde(...)]`: field
//! aliases (a renamed field that keeps its old name still reads old messages) and the
//! `#[serde(other)]` catch-all variant (old readers accept new variants). `schema-check`
//! reads them from the committed schema.
//!
//! serde_derive validates these attributes; here anything unreadable is simply skipped.

use syn::ext::IdentExt;
use syn::{Attribute, Data, DeriveInput, Expr, ExprLit, Lit};

/// What serde reads beyond the schema: plain data, turned into code by `expand`.
#[derive(Default)]
pub struct Facts {
    /// Wire names with the other names serde also reads for them.
    pub aliases: Vec<(String, Vec<String>)>,
    /// The `#[serde(other)]` variant.
    pub other: Option<String>,
    /// Fields a writer may omit but a reader cannot do without.
    pub required: Vec<String>,
}

/// The facts of `node`.
pub fn facts(node: &DeriveInput) -> Facts {
    let container = read(&node.attrs);
    let mut aliases: Vec<(String, Vec<String>)> = Vec::new();
    let mut other = None;
    // Fields a writer may omit but a reader cannot do without: schemars calls them
    // optional, serde fails on a message without them.
    let mut required = Vec::new();
    match &node.data {
        Data::Struct(data) => {
            for field in &data.fields {
                let Some(ident) = &field.ident else { continue };
                let own = read(&field.attrs);
                let wire = own.rename.clone().unwrap_or_else(|| {
                    field_case(&ident.unraw().to_string(), container.rename_all.as_deref())
                });
                if own.skip_if && !own.default && !container.default && !is_option(&field.ty) {
                    required.push(wire.clone());
                }
                if !own.aliases.is_empty() {
                    aliases.push((wire, own.aliases));
                }
            }
        }
        Data::Enum(data) => {
            for variant in &data.variants {
                let own = read(&variant.attrs);
                let wire = own.rename.clone().unwrap_or_else(|| {
                    variant_case(
                        &variant.ident.unraw().to_string(),
                        container.rename_all.as_deref(),
                    )
                });
                if own.other {
                    other = Some(wire.clone());
                }
                if !own.aliases.is_empty() {
                    aliases.push((wire, own.aliases));
                }
            }
        }
        Data::Union(_) => {}
    }
    Facts {
        aliases,
        other,
        required,
    }
}

#[derive(Default)]
struct SerdeAttrs {
    rename: Option<String>,
    rename_all: Option<String>,
    aliases: Vec<String>,
    other: bool,
    /// `skip_serializing_if`: the writer may leave the field out.
    skip_if: bool,
    /// `default` (on a field or the container): a reader fills a missing field.
    default: bool,
}

fn read(attrs: &[Attribute]) -> SerdeAttrs {
    let mut found = SerdeAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            if meta.input.peek(syn::Token![=]) {
                let value: Expr = meta.value()?.parse()?;
                let text = match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => Some(s.value()),
                    _ => None,
                };
                match (key.as_str(), text) {
                    ("rename", Some(t)) => found.rename = Some(t),
                    ("rename_all", Some(t)) => found.rename_all = Some(t),
                    ("alias", Some(t)) => found.aliases.push(t),
                    ("skip_serializing_if", _) => found.skip_if = true,
                    ("default", _) => found.default = true,
                    _ => {}
                }
            } else if meta.input.peek(syn::token::Paren) {
                // `rename(deserialize = "…")`: reading is what matters here.
                let is_rename = key == "rename" || key == "rename_all";
                meta.parse_nested_meta(|inner| {
                    let value: Expr = inner.value()?.parse()?;
                    if is_rename && inner.path.is_ident("deserialize") {
                        if let Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) = value
                        {
                            if key == "rename" {
                                found.rename = Some(s.value());
                            } else {
                                found.rename_all = Some(s.value());
                            }
                        }
                    }
                    Ok(())
                })?;
            } else if key == "other" {
                found.other = true;
            } else if key == "default" {
                found.default = true;
            }
            Ok(())
        });
    }
    found
}

/// `Option<…>`, as serde_derive itself recognises it: by the last path segment.
fn is_option(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Option"),
        _ => false,
    }
}

/// serde's `rename_all` applied to a field name (snake_case in Rust).
fn field_case(name: &str, rule: Option<&str>) -> String {
    let pascal = || {
        name.split('_')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                    None => String::new(),
                }
            })
            .collect::<String>()
    };
    match rule {
        Some("UPPERCASE") | Some("SCREAMING_SNAKE_CASE") => name.to_uppercase(),
        Some("PascalCase") => pascal(),
        Some("camelCase") => {
            let p = pascal();
            let mut chars = p.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => p,
            }
        }
        Some("kebab-case") => name.replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => name.to_uppercase().replace('_', "-"),
        _ => name.to_owned(),
    }
}

/// serde's `rename_all` applied to a variant name (PascalCase in Rust).
fn variant_case(name: &str, rule: Option<&str>) -> String {
    let snake = || {
        let mut out = String::new();
        for (i, c) in name.char_indices() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        }
        out
    };
    match rule {
        Some("lowercase") => name.to_lowercase(),
        Some("UPPERCASE") => name.to_uppercase(),
        Some("camelCase") => {
            let mut chars = name.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            }
        }
        Some("snake_case") => snake(),
        Some("SCREAMING_SNAKE_CASE") => snake().to_uppercase(),
        Some("kebab-case") => snake().replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => snake().to_uppercase().replace('_', "-"),
        _ => name.to_owned(),
    }
}
