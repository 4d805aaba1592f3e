//! `embed_migrations!("migrations")`: the step files of a directory, compiled into the binary.

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::LitStr;

/// Expands to `::upcaster::Migrations::from_files([(path, include_str!(file)), …])`.
pub fn expand(dir: &LitStr) -> syn::Result<TokenStream> {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| syn::Error::new(dir.span(), "CARGO_MANIFEST_DIR is not set"))?;
    let base = root.join(dir.value());
    let files = step_files(&base).map_err(|e| {
        syn::Error::new(
            dir.span(),
            format!("cannot read migrations from `{}`: {e}", base.display()),
        )
    })?;
    let entries = files.iter().map(|(rel, abs)| {
        let rel = LitStr::new(rel, Span::call_site());
        let abs = LitStr::new(&abs.to_string_lossy(), Span::call_site());
        quote! { (#rel, ::core::include_str!(#abs)) }
    });
    Ok(quote! {
        ::upcaster::Migrations::from_files([#(#entries),*])
    })
}

/// Every `<TypeName>/<file>.json` below `base`, sorted, as (relative, absolute) paths.
fn step_files(base: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(base)? {
        let entry = entry?;
        let type_dir = entry.path();
        let type_name = entry.file_name().to_string_lossy().into_owned();
        if !type_dir.is_dir() {
            if type_name.ends_with(".json") {
                // Kept so that `from_files` reports it as misplaced, as `load` would.
                files.push((type_name, type_dir));
            }
            continue;
        }
        for file in std::fs::read_dir(&type_dir)? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                files.push((format!("{type_name}/{name}"), file.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}
