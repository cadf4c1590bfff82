//! `#[derive(ShmSafe)]`: the marker of types that may live in a shared
//! segment. Use it through `matrix-handler`, which re-exports it next to the
//! trait (`use matrix_handler::ShmSafe;`); the trait's documentation says
//! what the marker promises.
//!
//! The derive refuses, at compile time:
//! - enums and unions (a discriminant or a variant written by another
//!   process could be invalid);
//! - a struct without `#[repr(C)]` or `#[repr(transparent)]` (its layout
//!   would not be the same in every build), or with `repr(packed)` (its
//!   fields could be misaligned for atomics);
//! - lifetimes (a reference cannot live in a segment);
//! - a field whose type is not `ShmSafe` (pointers, references, `String`,
//!   `Vec`, `bool`, `usize`, …);
//! - a struct that implements `Drop` (nothing runs it when the block is
//!   freed by another process or by recovery).
//!
//! Type parameters get a `ShmSafe` bound. `#[shm_safe(crate = "path")]`
//! names the crate that exports the trait when it is not reachable as
//! `::matrix_handler` (e.g. a re-export).

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Error, Fields, GenericParam, LitStr, Path};

/// Derives `matrix_internals::OwnsBlocks` for a struct: `free_blocks`
/// frees every field's blocks, in declaration order, stopping at the first
/// error; `visit_blocks` visits every field's blocks in the same order.
/// Every field must implement `OwnsBlocks` (plain numbers do, and own
/// nothing); type parameters get the bound.
/// `#[owns_blocks(crate = "path")]` names the crate exporting the trait
/// when it is not reachable as `::matrix_internals`.
#[proc_macro_derive(OwnsBlocks, attributes(owns_blocks))]
pub fn derive_owns_blocks(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand_owns_blocks(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_owns_blocks(input: DeriveInput) -> Result<proc_macro2::TokenStream, Error> {
    let mut krate: Path = syn::parse_quote!(::matrix_internals);
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("owns_blocks"))
    {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                krate = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error("expected `crate = \"path\"`"))
            }
        })?;
    }
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(
            input.ident.span(),
            "OwnsBlocks can be derived for structs only",
        ));
    };
    let members: Vec<syn::Member> = data
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.ident {
            Some(id) => syn::Member::Named(id.clone()),
            None => syn::Member::Unnamed(i.into()),
        })
        .collect();
    let dynamic = quote!(#krate::dynamic);
    let mut generics = input.generics.clone();
    for param in &mut generics.params {
        if let GenericParam::Type(t) = param {
            t.bounds.push(syn::parse_quote!(#dynamic::OwnsBlocks));
        }
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::WhereClause {
        where_token: Default::default(),
        predicates: Default::default(),
    });
    for f in data.fields.iter() {
        let ty = &f.ty;
        where_clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: #dynamic::OwnsBlocks));
    }
    Ok(quote! {
        impl #impl_generics #dynamic::OwnsBlocks for #name #ty_generics #where_clause {
            fn free_blocks<__H: #dynamic::HandlerFunctions>(
                &mut self,
                h: &__H,
            ) -> ::core::result::Result<(), #dynamic::DynError> {
                #( #dynamic::OwnsBlocks::free_blocks(&mut self.#members, h)?; )*
                ::core::result::Result::Ok(())
            }
            fn visit_blocks<__H: #dynamic::HandlerFunctions>(
                &self,
                h: &__H,
                visit: &mut dyn ::core::ops::FnMut(#dynamic::BlockToken),
            ) {
                #( #dynamic::OwnsBlocks::visit_blocks(&self.#members, h, visit); )*
            }
        }
    })
}

/// Derives `matrix_handler::ShmSafe` after checking the type (see the crate
/// documentation for what is refused).
#[proc_macro_derive(ShmSafe, attributes(shm_safe))]
pub fn derive_shm_safe(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: DeriveInput) -> Result<proc_macro2::TokenStream, Error> {
    let krate = crate_path(&input)?;
    check_repr(&input)?;
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span(),
                "ShmSafe cannot be derived for an enum: another process can \
                 write a discriminant that is not a variant; store an integer \
                 and convert it when you read it",
            ))
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span(),
                "ShmSafe cannot be derived for a union",
            ))
        }
    };
    let field_types: Vec<&syn::Type> = match fields {
        Fields::Named(f) => f.named.iter().map(|f| &f.ty).collect(),
        Fields::Unnamed(f) => f.unnamed.iter().map(|f| &f.ty).collect(),
        Fields::Unit => Vec::new(),
    };

    let mut generics = input.generics.clone();
    for param in &mut generics.params {
        match param {
            GenericParam::Lifetime(l) => {
                return Err(Error::new(
                    l.span(),
                    "ShmSafe types cannot borrow: a reference cannot live in a \
                     shared segment",
                ))
            }
            GenericParam::Type(t) => t.bounds.push(syn::parse_quote!(#krate::ShmSafe)),
            GenericParam::Const(_) => {}
        }
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::WhereClause {
        where_token: Default::default(),
        predicates: Default::default(),
    });
    for ty in &field_types {
        where_clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: #krate::ShmSafe));
    }

    Ok(quote! {
        // SAFETY: the derive checked that the struct is repr(C) or
        // repr(transparent), not packed, borrows nothing, and (by the where
        // clause) that every field is ShmSafe — so every bit pattern of the
        // struct is a valid value and it holds no pointer; the block below
        // refuses a Drop impl.
        unsafe impl #impl_generics #krate::ShmSafe for #name #ty_generics #where_clause {}

        // A type that implements Drop makes these two impls overlap (E0119).
        const _: () = {
            trait MustNotImplementDrop {}
            #[allow(drop_bounds)]
            impl<T: ::core::ops::Drop> MustNotImplementDrop for T {}
            impl #impl_generics MustNotImplementDrop for #name #ty_generics {}
        };
    })
}

fn crate_path(input: &DeriveInput) -> Result<Path, Error> {
    let mut path: Path = syn::parse_quote!(::matrix_handler);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("shm_safe")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                path = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error("expected `crate = \"path\"`"))
            }
        })?;
    }
    Ok(path)
}

fn check_repr(input: &DeriveInput) -> Result<(), Error> {
    let mut stable = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") || meta.path.is_ident("transparent") {
                stable = true;
            } else if meta.path.is_ident("packed") {
                return Err(meta.error(
                    "ShmSafe types cannot be packed: atomics and references to \
                     fields need their natural alignment",
                ));
            } else if meta.path.is_ident("align") {
                // `align(N)`: consume the parenthesized argument.
                let content;
                syn::parenthesized!(content in meta.input);
                let _: syn::LitInt = content.parse()?;
            }
            Ok(())
        })?;
    }
    if stable {
        Ok(())
    } else {
        Err(Error::new(
            input.ident.span(),
            "ShmSafe types need #[repr(C)] (or #[repr(transparent)]): every \
             process that maps the segment must agree on the layout",
        ))
    }
}
