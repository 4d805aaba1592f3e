//! Writing the `impl ::upcaster::Message`. The only phase that knows `quote!`.

use proc_macro2::{Literal, Span, TokenStream};
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

fn expand(message: &valid::Message, facts: &serde_facts::Facts) -> TokenStream {
    let ident = message.ident;
    let krate = &message.krate;
    // Without a `name`, a linked version keeps the name of the one before it.
    let name = match (&message.name, message.previous) {
        (Some(name), _) => quote!(#name),
        (None, Some(previous)) => quote!(<#previous as #krate::Message>::NAME),
        (None, None) => {
            let ident = message.ident.to_string();
            quote!(#ident)
        }
    };
    let version = Literal::u32_unsuffixed(message.version);
    let aliases = &message.aliases;
    let serde = serde_facts(krate, facts);
    let (previous, upcast_from, assertion) = match message.previous {
        Some(previous) => {
            let (previous, upcast_from, assertion) =
                typed_link(krate, ident, previous, message.version);
            (
                quote!(::core::option::Option::Some(#previous)),
                upcast_from,
                assertion,
            )
        }
        None => (
            quote!(::core::option::Option::None),
            quote!(#krate::__private::read_own::<Self>),
            TokenStream::new(),
        ),
    };

    quote! {
        #[automatically_derived]
        impl #krate::Message for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
            const __META: #krate::__private::Meta<Self> = #krate::__private::Meta {
                prefixes: &#krate::__private::Prefixes::of(
                    <Self as #krate::Message>::NAME,
                    <Self as #krate::Message>::VERSION,
                ),
                previous: #previous,
                upcast_from: #upcast_from,
                serde: #serde,
            };
        }
        #assertion
    }
}

fn serde_facts(krate: &syn::Path, facts: &serde_facts::Facts) -> TokenStream {
    let aliases = facts
        .aliases
        .iter()
        .map(|(wire, names)| quote!((#wire, &[#(#names),*])));
    let other = match &facts.other {
        Some(other) => quote!(::core::option::Option::Some(#other)),
        None => quote!(::core::option::Option::None),
    };
    let required = &facts.required;
    quote! {
        #krate::__private::SerdeFacts {
            aliases: &[#(#aliases),*],
            other: #other,
            required: &[#(#required),*],
        }
    }
}

/// The link to `previous`'s versions, the reader through it, and the assertion that
/// `previous` is the version just below. Each carries the span of the `previous` path, so
/// that a wrong version or a missing `From`/`TryFrom` is reported at the attribute.
fn typed_link(
    krate: &syn::Path,
    ident: &syn::Ident,
    previous: &syn::Path,
    message_version: u32,
) -> (TokenStream, TokenStream, TokenStream) {
    let span = Span::call_site().located_at(previous.span());
    let versions = quote_spanned! {span=>
        #krate::__private::typed_versions::<#previous>
    };
    // A call in a function body, so that a missing `From`/`TryFrom` is reported at the path.
    let out = quote!(::core::option::Option<::core::result::Result<#ident, #krate::__private::ChainFailure>>);
    // Every token of the call at the path: a span joined from the derive's would cover the
    // whole item.
    let (krate_at, ident_at) = (respan(quote!(#krate), span), respan(quote!(#ident), span));
    let call = quote_spanned! {span=>
        #krate_at::__private::upcast_via::<#previous, #ident_at>(__upcaster_version, __upcaster_input)
    };
    let upcast = quote! {{
        fn __upcaster_upcast(
            __upcaster_version: u32,
            __upcaster_input: #krate::__private::Input<'_>,
        ) -> #out {
            #call
        }
        __upcaster_upcast
    }};
    let below = Literal::u32_unsuffixed(message_version.saturating_sub(1));
    let text = format!(
        "`previous` must name version {} of this message, the version just below {}",
        message_version.saturating_sub(1),
        message_version
    );
    let assertion = quote_spanned! {span=>
        const _: () = ::core::assert!(
            <#previous as #krate::Message>::VERSION == #below,
            #text
        );
    };
    (versions, upcast, assertion)
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = proc_macro2::TokenTree::Group(inner);
            }
            token.set_span(span);
            token
        })
        .collect()
}
