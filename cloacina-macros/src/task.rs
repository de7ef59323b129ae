//! One `#[task]` function: what its attributes and signature say, and the
//! code that turns it into a `TaskSpec`.

use std::time::Duration;

use cloacina_core::{TriggerRule, ValueCondition};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use sha2::{Digest, Sha256};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, ItemFn, Result, ReturnType, Type};

use crate::attrs::{self, DepRef, Retry};

/// The arguments `#[task(...)]` takes.
pub(crate) const TASK_ARGS: &[&str] = &["id", "depends_on", "retry", "timeout", "trigger"];

/// How the body takes the context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextMode {
    /// `ctx: &mut Context`, returning `Result<(), E>`.
    ByRef,
    /// `ctx: Context`, returning `Result<Context, E>`.
    ByValue,
}

/// A parameter after the context.
pub(crate) enum Extra {
    /// `run: &TaskRun`.
    Run,
    /// Shared state `&T`; the type `T` and where it was written.
    State(Box<Type>),
}

/// A parsed `#[task]` function.
pub(crate) struct TaskDef {
    pub(crate) func: ItemFn,
    pub(crate) id: String,
    pub(crate) id_span: Span,
    pub(crate) deps: Vec<DepRef>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<(Duration, Span)>,
    pub(crate) trigger: Option<(TriggerRule, Span)>,
    pub(crate) ctx: ContextMode,
    pub(crate) extras: Vec<Extra>,
    pub(crate) code: String,
}

impl TaskDef {
    /// The shared-state type this task takes, if any.
    pub(crate) fn state_type(&self) -> Option<&Type> {
        self.extras.iter().find_map(|e| match e {
            Extra::State(t) => Some(&**t),
            Extra::Run => None,
        })
    }

    fn struct_name(&self) -> Ident {
        format_ident!("__cloacina_task_{}", self.func.sig.ident)
    }
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == name),
        Type::Group(g) => last_segment_is(&g.elem, name),
        Type::Paren(p) => last_segment_is(&p.elem, name),
        _ => false,
    }
}

const SIGNATURE: &str = "a task is `async fn name(ctx: &mut Context, …) -> Result<(), TaskError>` \
                         or `async fn name(ctx: Context, …) -> Result<Context, TaskError>`; after the context it may \
                         take `run: &TaskRun` and shared state `state: &YourState`";

/// Reads `#[task(args)]` on `func`.
pub(crate) fn analyze(args: Vec<attrs::Arg>, func: ItemFn) -> Result<TaskDef> {
    let mut id = func.sig.ident.unraw().to_string();
    let mut id_span = func.sig.ident.span();
    let mut deps = Vec::new();
    let (mut retry, mut timeout, mut trigger) = (None, None, None);
    for arg in args {
        match arg.key.to_string().as_str() {
            "id" => {
                let lit = attrs::lit_str(&arg)?;
                id = lit.value();
                id_span = lit.span();
            }
            "depends_on" => deps = attrs::dependencies(&arg)?,
            "retry" => retry = Some(attrs::retry(&arg)?),
            "timeout" => timeout = Some((attrs::duration(&arg)?, arg.value_span())),
            "trigger" => trigger = Some((attrs::trigger(&arg)?, arg.value_span())),
            other => return Err(Error::new(arg.key.span(), format!("`{other}` is not a task argument here"))),
        }
    }
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(sig.fn_token.span(), format!("a task must be an `async fn`; {SIGNATURE}")));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(sig.generics.span(), "a task cannot be generic: the runner calls it with one type"));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(v.span(), SIGNATURE));
    }
    let mut inputs = sig.inputs.iter();
    let ctx = match inputs.next() {
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                format!("a task takes the context as its first parameter; {SIGNATURE}"),
            ));
        }
        Some(FnArg::Receiver(r)) => {
            return Err(Error::new(r.span(), format!("a task is a free function, not a method; {SIGNATURE}")));
        }
        Some(FnArg::Typed(p)) => match &*p.ty {
            Type::Reference(r) if last_segment_is(&r.elem, "Context") => {
                if r.mutability.is_none() {
                    return Err(Error::new(
                        p.ty.span(),
                        "take the context as `&mut Context` (what the task leaves there is its output) or by value",
                    ));
                }
                ContextMode::ByRef
            }
            ty if last_segment_is(ty, "Context") => ContextMode::ByValue,
            _ => {
                return Err(Error::new(
                    p.ty.span(),
                    format!("a task takes the context as its first parameter; {SIGNATURE}"),
                ));
            }
        },
    };
    let mut extras = Vec::new();
    for input in inputs {
        let FnArg::Typed(p) = input else { unreachable!("a receiver comes first") };
        let extra = match &*p.ty {
            Type::Reference(r) if r.mutability.is_some() => {
                return Err(Error::new(
                    p.ty.span(),
                    "shared state is passed as `&T` to every attempt; for state that changes, \
                     put a `Mutex` or an atomic inside it",
                ));
            }
            Type::Reference(r) if last_segment_is(&r.elem, "TaskRun") => Extra::Run,
            Type::Reference(r) => Extra::State(r.elem.clone()),
            _ => return Err(Error::new(p.ty.span(), format!("not a parameter a task can take; {SIGNATURE}"))),
        };
        if matches!(extra, Extra::Run) && extras.iter().any(|e| matches!(e, Extra::Run)) {
            return Err(Error::new(p.ty.span(), "`&TaskRun` is taken twice"));
        }
        if matches!(extra, Extra::State(_)) && extras.iter().any(|e| matches!(e, Extra::State(_))) {
            return Err(Error::new(
                p.ty.span(),
                "a task takes at most one shared state; put what it needs in one struct",
            ));
        }
        extras.push(extra);
    }
    if let ReturnType::Default = sig.output {
        return Err(Error::new(sig.paren_token.span.join(), format!("a task returns a `Result`; {SIGNATURE}")));
    }
    let code = fingerprint(&func);
    Ok(TaskDef { func, id, id_span, deps, retry, timeout, trigger, ctx, extras, code })
}

/// The code fingerprint: a hash of the function's signature and body
/// tokens (not its attributes, so a changed policy is not a changed body),
/// printed in one fixed form so a compiler upgrade does not change it.
fn fingerprint(func: &ItemFn) -> String {
    let mut h = Sha256::new();
    h.update(attrs::tokens_text(func.sig.to_token_stream()));
    h.update("\n");
    h.update(attrs::tokens_text(func.block.to_token_stream()));
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The struct implementing `Task` for this function, holding the shared
/// state (`Arc<state>`) when the task takes some.
pub(crate) fn task_impl(def: &TaskDef, ms: &TokenStream, state: Option<&Type>) -> TokenStream {
    let name = def.struct_name();
    let func = &def.func.sig.ident;
    // Unusual names: the user's function may be called `run` or `input`.
    let args = def.extras.iter().map(|e| match e {
        Extra::Run => quote!(__cloacina_run),
        Extra::State(t) => quote_spanned!(t.span()=> &*self.state),
    });
    let ret_span = match &def.func.sig.output {
        ReturnType::Type(_, t) => t.span(),
        ReturnType::Default => def.func.sig.ident.span(),
    };
    let call = quote_spanned!(ret_span=> #func(__cloacina_input, #(#args),*).await.map_err(#ms::into_task_error));
    let body = match def.ctx {
        ContextMode::ByRef => quote! {
            let __cloacina_input = __cloacina_ctx;
            #call
        },
        ContextMode::ByValue => quote! {
            let __cloacina_input = ::std::mem::take(__cloacina_ctx);
            *__cloacina_ctx = #call?;
            ::core::result::Result::Ok(())
        },
    };
    let cfg = def.func.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let cfg2 = cfg.clone();
    let field = state.map(|t| quote!(state: #ms::Arc<#t>,));
    let doc = format!("The task `{}` (`#[task]` on `{}`).", def.id, func);
    quote! {
        #(#cfg)*
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #name { #field }

        // In a block of its own: `async_trait` names `Box` unqualified,
        // and the user's scope may hold another `Box`.
        #(#cfg2)*
        const _: () = {
            use ::std::boxed::Box;

            #[#ms::async_trait]
            impl #ms::Task for #name {
                async fn execute(
                    &self,
                    __cloacina_ctx: &mut #ms::Context,
                    __cloacina_run: &#ms::TaskRun,
                ) -> ::core::result::Result<(), #ms::TaskError> {
                    let _ = __cloacina_run;
                    #body
                }
            }
        };
    }
}

/// A `TaskSpec` expression for this task; `state` is an expression of
/// type `Arc<state>` when the task struct holds one.
pub(crate) fn spec_expr(def: &TaskDef, ms: &TokenStream, state: Option<&TokenStream>) -> TokenStream {
    let name = def.struct_name();
    let id = &def.id;
    let init = match state {
        Some(s) => quote!(#name { state: ::std::clone::Clone::clone(#s) }),
        None => quote!(#name {}),
    };
    let mut spec = quote!(#ms::TaskSpec::new(#id, #ms::Arc::new(#init)));
    if !def.deps.is_empty() {
        let deps = def.deps.iter().map(|d| &d.id);
        spec = quote!(#spec.depends_on([#(#deps),*]));
    }
    match &def.retry {
        Some(Retry::Checked(p)) => {
            let text = p.to_string();
            spec = quote!(#spec.retry(#ms::retry(#text)));
        }
        Some(Retry::Function(path)) => spec = quote_spanned!(path.span()=> #spec.retry(#path())),
        None => {}
    }
    if let Some((d, _)) = def.timeout {
        // Exactly the duration validated at compile time.
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        spec = quote!(#spec.timeout(#ms::Duration::new(#secs, #nanos)));
    }
    if let Some((rule, _)) = &def.trigger {
        let rule = trigger_tokens(rule, ms);
        spec = quote!(#spec.trigger(#rule));
    }
    let code = &def.code;
    quote!(#spec.code_fingerprint(#code))
}

/// Code that constructs `rule` (not its text: ids and keys may hold
/// anything).
fn trigger_tokens(rule: &TriggerRule, ms: &TokenStream) -> TokenStream {
    let string = |s: &str| quote!(::std::string::String::from(#s));
    let list = |rs: &[TriggerRule]| {
        let items = rs.iter().map(|r| trigger_tokens(r, ms));
        quote!(::std::vec![#(#items),*])
    };
    // (variant, its one argument if any)
    let (variant, arg) = match rule {
        TriggerRule::AllSuccess => ("AllSuccess", None),
        TriggerRule::AllDone => ("AllDone", None),
        TriggerRule::OneSuccess => ("OneSuccess", None),
        TriggerRule::OneFailed => ("OneFailed", None),
        TriggerRule::NoneFailed => ("NoneFailed", None),
        TriggerRule::TaskSuccess(t) => ("TaskSuccess", Some(string(t))),
        TriggerRule::TaskFailed(t) => ("TaskFailed", Some(string(t))),
        TriggerRule::TaskSkipped(t) => ("TaskSkipped", Some(string(t))),
        TriggerRule::All(rs) => ("All", Some(list(rs))),
        TriggerRule::Any(rs) => ("Any", Some(list(rs))),
        TriggerRule::None(rs) => ("None", Some(list(rs))),
        TriggerRule::ContextValue { key, condition } => {
            let key = string(key);
            let (cond, value) = match condition {
                ValueCondition::Equals(v) => ("Equals", Some(v)),
                ValueCondition::NotEquals(v) => ("NotEquals", Some(v)),
                ValueCondition::GreaterThan(v) => ("GreaterThan", Some(v)),
                ValueCondition::LessThan(v) => ("LessThan", Some(v)),
                ValueCondition::Contains(v) => ("Contains", Some(v)),
                ValueCondition::NotContains(v) => ("NotContains", Some(v)),
                ValueCondition::Exists => ("Exists", None),
                ValueCondition::NotExists => ("NotExists", None),
            };
            let cond = format_ident!("{cond}");
            let condition = match value {
                Some(v) => {
                    let text = v.to_string();
                    quote!(#ms::ValueCondition::#cond(#ms::json(#text)))
                }
                None => quote!(#ms::ValueCondition::#cond),
            };
            return quote!(#ms::TriggerRule::ContextValue { key: #key, condition: #condition });
        }
    };
    let variant = format_ident!("{variant}");
    match arg {
        Some(a) => quote!(#ms::TriggerRule::#variant(#a)),
        None => quote!(#ms::TriggerRule::#variant),
    }
}

/// `#[task]` outside a `#[workflow]` module: the function, and beside it
/// `fn <name>_task(…) -> TaskSpec` for the runtime builder.
pub(crate) fn expand_standalone(def: TaskDef, ms: &TokenStream) -> TokenStream {
    let state = def.state_type().cloned();
    let imp = task_impl(&def, ms, state.as_ref());
    let ctor = format_ident!("{}_task", def.func.sig.ident);
    let vis = &def.func.vis;
    let doc =
        format!("The `TaskSpec` of `#[task]` `{}` (id `{}`), for `Workflow::builder`.", def.func.sig.ident, def.id);
    let (param, spec) = match &state {
        Some(t) => {
            let s = quote!(&state);
            (quote!(state: impl ::core::convert::Into<#ms::Arc<#t>>), {
                let e = spec_expr(&def, ms, Some(&s));
                quote! {
                    let state: #ms::Arc<#t> = state.into();
                    #e
                }
            })
        }
        None => (quote!(), spec_expr(&def, ms, None)),
    };
    let func = &def.func;
    let cfg = def.func.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    quote! {
        #func

        #imp

        #(#cfg)*
        #[doc = #doc]
        #vis fn #ctor(#param) -> #ms::TaskSpec {
            #spec
        }
    }
}
