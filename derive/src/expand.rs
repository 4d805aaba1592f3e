//! Writing the `impl ::upcaster::Message`. The only phase that knows `quote!`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::{ast, serde_facts, valid, Errors};

/// Runs every phase on `node`: the generated impl, or every mistake found, combined.
pub fn derive(node: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::new();
    let input = ast::Input::from_syn(node, &mut errors);
    let message = valid::check(&input, &mut errors);
    match (message, errors.into_error()) {
        (_, Some(error)) => Err(error),
        (Some(message), None) => Ok(expand(&message, &serde_facts::facts(node))),
        (None, None) => Err(syn::Error::new(
            node.ident.span(),
            "internal error in upcaster-derive: the input was rejected without a reason; \
             please report this",
        )),
    }
}

fn expand(message: &valid::Message, facts: &str) -> TokenStream {
    let ident = message.ident;
    // Without a `name`, a linked version keeps the name of the one before it.
    let name = match (&message.name, message.previous) {
        (Some(name), _) => quote!(#name),
        (None, Some(previous)) => quote!(<#previous as ::upcaster::Message>::NAME),
        (None, None) => {
            let ident = message.ident.to_string();
            quote!(#ident)
        }
    };
    let version = Literal::u32_unsuffixed(message.version);
    let aliases = &message.aliases;
    let typed = message
        .previous
        .map(|previous| typed_link(previous, message.version));
    let (methods, assertion) = typed.unzip();

    quote! {
        #[automatically_derived]
        impl ::upcaster::Message for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
            fn __serde_facts() -> &'static str {
                #facts
            }
            #methods
        }
        #assertion
    }
}

/// The methods that follow a `previous` link, and the assertion that `previous` is the
/// version just below. Both carry the span of the `previous` path, so that a wrong version
/// or a missing `From`/`TryFrom` is reported at the attribute.
fn typed_link(previous: &syn::Path, message_version: u32) -> (TokenStream, TokenStream) {
    let span = Span::call_site().located_at(previous.span());
    // A parameter whose name is a constant in scope would be read as a constant pattern, and
    // hygiene does not prevent that: use names that no user writes.
    let out = Ident::new("__upcaster_out", Span::call_site());
    let written = Ident::new("__upcaster_version", Span::call_site());
    let input = Ident::new("__upcaster_input", Span::call_site());

    let typed_versions = quote_spanned! {span=>
        <#previous as ::upcaster::Message>::__typed_versions(#out);
    };
    let upcast = quote_spanned! {span=>
        ::upcaster::__private::upcast_via::<#previous, Self>(#written, #input)
    };
    let methods = quote! {
        fn __typed_versions(#out: &mut ::std::vec::Vec<::upcaster::__private::TypedVersion>) {
            #typed_versions
            #out.push((
                <Self as ::upcaster::Message>::NAME,
                <Self as ::upcaster::Message>::VERSION,
                <Self as ::upcaster::Message>::ALIASES,
            ));
        }

        fn __upcast_from(
            #written: u32,
            #input: ::upcaster::__private::Input<'_>,
        ) -> ::std::option::Option<
            ::std::result::Result<Self, ::upcaster::__private::ChainFailure>,
        > {
            #upcast
        }
    };
    let below = Literal::u32_unsuffixed(message_version.saturating_sub(1));
    let text = format!(
        "`previous` must name version {} of this message, the version just below {}",
        message_version.saturating_sub(1),
        message_version
    );
    let assertion = quote_spanned! {span=>
        const _: () = ::core::assert!(
            <#previous as ::upcaster::Message>::VERSION == #below,
            #text
        );
    };
    (methods, assertion)
}
