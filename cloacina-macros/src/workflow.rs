//! `#[workflow]` on a module: its `#[task]` functions become one
//! `Workflow`, validated here by the same `WorkflowBuilder::build` the
//! runtime uses, with each error put on the token that caused it.

use cloacina_core::{Context, TaskError, TaskSpec, Workflow, WorkflowError, task_fn};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::spanned::Spanned;
use syn::{Attribute, Error, Item, ItemMod, Meta, Path, Result, Type};

use crate::attrs;
use crate::task::{self, TaskDef};

/// The arguments `#[workflow(...)]` takes.
const WORKFLOW_ARGS: &[&str] = &["name", "version", "state", "crate"];

/// Whether `attr` is `#[task]`, `#[cloacina_runner::task]`,
/// `#[cloacina_macros::task]` or `#[<crate>::task]` (another crate's
/// `task` attribute, e.g. an executor's, is left alone).
fn is_task_attr(attr: &Attribute, krate: Option<&Path>) -> bool {
    let text = |p: &Path| p.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::");
    let path = text(attr.path());
    path == "task"
        || path == "cloacina_runner::task"
        || path == "cloacina_macros::task"
        || krate.is_some_and(|k| path == format!("{}::task", text(k)))
}

fn task_args(attr: &Attribute) -> Result<TokenStream> {
    match &attr.meta {
        Meta::Path(_) => Ok(TokenStream::new()),
        Meta::List(l) => Ok(l.tokens.clone()),
        Meta::NameValue(nv) => Err(Error::new(nv.span(), "write `#[task(id = \"...\", ...)]`")),
    }
}

/// The module as written, without its `#[task]` attributes: emitted beside
/// a compile error, so the error is the only one (no unresolved `task`
/// attribute, no unused imports).
pub(crate) fn fallback(mut module: ItemMod) -> TokenStream {
    if let Some((_, items)) = module.content.as_mut() {
        for item in items.iter_mut() {
            if let Item::Fn(f) = item {
                f.attrs.retain(|a| !is_task_attr(a, None));
            }
        }
    }
    module.attrs.push(syn::parse_quote!(#[allow(dead_code)]));
    module.into_token_stream()
}

pub(crate) fn expand(args: TokenStream, mut module: ItemMod) -> Result<TokenStream> {
    let mut name = (module.ident.to_string(), module.ident.span());
    let mut label = None;
    let mut state_decl: Option<Type> = None;
    let mut krate: Option<Path> = None;
    for arg in attrs::parse_args(args, WORKFLOW_ARGS)? {
        match arg.key.to_string().as_str() {
            "name" => {
                let l = attrs::lit_str(&arg)?;
                name = (l.value(), l.span());
            }
            "version" => {
                let l = attrs::lit_str(&arg)?;
                label = Some((l.value(), l.span()));
            }
            "state" => state_decl = Some(syn::parse2(arg.value.clone())?),
            "crate" => krate = Some(attrs::path(&arg)?),
            _ => unreachable!("parse_args admits only WORKFLOW_ARGS"),
        }
    }
    let ms = match &krate {
        Some(p) => quote!(#p::__macro_support),
        None => quote!(::cloacina_runner::__macro_support),
    };
    let Some((_, items)) = module.content.as_mut() else {
        return Err(Error::new(
            module.ident.span(),
            "#[workflow] needs the module's items inline: `mod etl { #[task] async fn ... }`",
        ));
    };

    let mut tasks: Vec<TaskDef> = Vec::new();
    let mut rest: Vec<Item> = Vec::new();
    for item in std::mem::take(items) {
        match item {
            Item::Fn(mut f) if f.attrs.iter().any(|a| is_task_attr(a, krate.as_ref())) => {
                let pos = f.attrs.iter().position(|a| is_task_attr(a, krate.as_ref())).expect("checked above");
                let attr = f.attrs.remove(pos);
                if f.attrs.iter().any(|a| is_task_attr(a, krate.as_ref())) {
                    return Err(Error::new(f.sig.ident.span(), "`#[task]` is given twice"));
                }
                if let Some(cfg) = f.attrs.iter().find(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr")) {
                    return Err(Error::new_spanned(
                        cfg,
                        "a task of a #[workflow] module cannot be conditional: the workflow's shape would differ \
                         between builds; decide in the task's body or with a trigger rule, or assemble such a \
                         workflow at run time with `Workflow::builder`",
                    ));
                }
                tasks.push(task::analyze(attrs::parse_args(task_args(&attr)?, task::TASK_ARGS)?, f)?);
            }
            other => {
                if let Some(ident) = generated_name(&other) {
                    return Err(Error::new(
                        ident.span(),
                        format!(
                            "`{ident}` is what #[workflow] adds to the module (`pub fn workflow`, \
                             `pub const WORKFLOW_NAME`); rename this item"
                        ),
                    ));
                }
                rest.push(other)
            }
        }
    }

    if let Some(t) = tasks.iter().find(|t| t.func.sig.ident == "workflow") {
        return Err(Error::new(
            t.func.sig.ident.span(),
            "a task function cannot be called `workflow`: #[workflow] adds `pub fn workflow` to the module; \
             rename the function and keep the id with `#[task(id = \"workflow\")]`",
        ));
    }
    validate(&name, label.as_ref(), &tasks, module.ident.span())?;
    let state = state_type(state_decl, &tasks)?;

    let impls = tasks.iter().map(|t| task::task_impl(t, &ms, state.as_ref().filter(|_| t.state_type().is_some())));
    let state_expr = quote!(&state);
    let specs = tasks.iter().map(|t| task::spec_expr(t, &ms, t.state_type().map(|_| &state_expr)));
    let wf_name = &name.0;
    let version = label.as_ref().map(|(l, _)| quote!(.version(#l)));
    let order = workflow_for_docs(&name.0, &tasks);
    let doc = format!(
        "The workflow `{wf_name}` (tasks in order: {order}), from this module's `#[task]` functions; \
         its DAG was checked when it was compiled."
    );
    let (param, prelude) = match &state {
        Some(t) => (
            quote!(state: impl ::core::convert::Into<#ms::Arc<#t>>),
            quote!(let state: #ms::Arc<#t> = ::core::convert::Into::into(state);),
        ),
        None => (quote!(), quote!()),
    };
    // Declared with `state = T` while no task takes it: still accepted.
    let prelude = if state.is_some() { quote!(#prelude let _ = &state;) } else { prelude };
    let funcs = tasks.iter().map(|t| &t.func);
    let name_doc = format!("The workflow's name, `{wf_name}`.");
    let generated: Vec<Item> = vec![syn::parse_quote! {
        #[doc = #doc]
        pub fn workflow(#param) -> #ms::Workflow {
            #prelude
            #ms::build(#ms::Workflow::builder(#wf_name) #version #(.task(#specs))*)
        }
    }];
    let name_const: Item = syn::parse_quote! {
        #[doc = #name_doc]
        pub const WORKFLOW_NAME: &str = #wf_name;
    };
    let mut out_items: Vec<Item> = rest;
    for f in funcs {
        out_items.push(Item::Fn(f.clone()));
    }
    for imp in impls {
        let file: syn::File = syn::parse2(imp)?;
        out_items.extend(file.items);
    }
    out_items.extend(generated);
    out_items.push(name_const);
    if let Some((_, items)) = module.content.as_mut() {
        *items = out_items;
    }
    Ok(module.into_token_stream())
}

/// The name of an item that would clash with what the macro adds.
fn generated_name(item: &Item) -> Option<&syn::Ident> {
    let ident = match item {
        Item::Fn(f) => &f.sig.ident,
        Item::Const(c) => &c.ident,
        Item::Static(s) => &s.ident,
        _ => return None,
    };
    (ident == "workflow" || ident == "WORKFLOW_NAME").then_some(ident)
}

/// The shared-state type: the one declared with `state = T`, else the one
/// the tasks take (they must agree).
fn state_type(declared: Option<Type>, tasks: &[TaskDef]) -> Result<Option<Type>> {
    if declared.is_some() {
        return Ok(declared);
    }
    let mut found: Option<&Type> = None;
    for t in tasks {
        if let Some(ty) = t.state_type() {
            match found {
                None => found = Some(ty),
                Some(f) if f.to_token_stream().to_string() == ty.to_token_stream().to_string() => {}
                Some(f) => {
                    return Err(Error::new(
                        ty.span(),
                        format!(
                            "tasks of one workflow share one state type: this one takes `&{}`, another `&{}`; \
                             put both in one struct (or write the type the same way), or declare it with \
                             #[workflow(state = ...)]",
                            ty.to_token_stream(),
                            f.to_token_stream()
                        ),
                    ));
                }
            }
        }
    }
    Ok(found.cloned())
}

fn workflow_for_docs(name: &str, tasks: &[TaskDef]) -> String {
    match build(name, None, tasks) {
        Ok(wf) => wf.topological_order().iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
        Err(_) => String::new(),
    }
}

/// The workflow as the runtime builder sees it, with no-op bodies.
fn build(name: &str, label: Option<&str>, tasks: &[TaskDef]) -> std::result::Result<Workflow, WorkflowError> {
    let mut b = Workflow::builder(name);
    if let Some(l) = label {
        b = b.version(l);
    }
    for t in tasks {
        let mut spec = TaskSpec::new(t.id.clone(), task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) }))
            .depends_on(t.deps.iter().map(|d| d.id.clone()));
        if let Some((d, _)) = t.timeout {
            spec = spec.timeout(d);
        }
        if let Some((rule, _)) = &t.trigger {
            spec = spec.trigger(rule.clone());
        }
        b = b.task(spec);
    }
    b.build()
}

/// Builds the workflow as the runtime would, and turns its first error
/// into a compile error on the token that caused it.
fn validate(name: &(String, Span), label: Option<&(String, Span)>, tasks: &[TaskDef], module_span: Span) -> Result<()> {
    let err = match build(&name.0, label.map(|(l, _)| l.as_str()), tasks) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let by_id = |id: &str| tasks.iter().find(|t| t.id == id);
    let dep_span =
        |task: &str, dep: &str| by_id(task).and_then(|t| t.deps.iter().find(|d| d.id == dep)).map(|d| d.span);
    let span = match &err {
        WorkflowError::InvalidName { .. } => Some(name.1),
        WorkflowError::InvalidLabel { .. } => label.map(|(_, s)| *s),
        WorkflowError::Empty { .. } => None,
        WorkflowError::InvalidTaskId { id, .. } => by_id(id).map(|t| t.id_span),
        // The builder reports the second task with the id.
        WorkflowError::DuplicateTask { id, .. } => tasks.iter().filter(|t| &t.id == id).nth(1).map(|t| t.id_span),
        WorkflowError::ZeroTimeout { task } => by_id(task).and_then(|t| t.timeout.map(|(_, s)| s)),
        WorkflowError::MissingDependency { task, dependency, .. } => dep_span(task, dependency),
        WorkflowError::TriggerReferencesNonDependency { task, .. } => {
            by_id(task).and_then(|t| t.trigger.as_ref().map(|(_, s)| *s))
        }
        // `a -> b -> a`: `b` depends on `a`; point at that dependency.
        WorkflowError::Cycle { path, .. } => path.windows(2).next().and_then(|w| dep_span(&w[1], &w[0])),
        _ => None,
    };
    let message = match &err {
        WorkflowError::Empty { .. } => format!("{err}: mark its async fns with #[task]"),
        _ => err.to_string(),
    };
    Err(Error::new(span.unwrap_or(module_span), message))
}
