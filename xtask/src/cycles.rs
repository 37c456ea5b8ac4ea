//! `cargo xtask cycles`: import cycles between the files of a crate, which `cargo xtask test`
//! refuses. A file depends on another when it names something in it (`use` or a path in the
//! code, `crate::`, `super::`, `self::` or a child module's name), resolved to the deepest
//! module that has a file. A module naming its own ancestors is Rust's normal shape (a child
//! takes its parent's types) and is not counted; a parent naming its children is. Code under
//! `#[cfg(test)]` is left out: tests may reach anywhere.
//!
//! Two files that name each other, however indirectly, cannot be read or changed one at a
//! time; the check keeps the modules layered.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

/// The crates checked by `cargo xtask test`.
pub const CRATES: [&str; 4] = [
    "tracking-agent/src",
    "tracking-common/src",
    "tracking-ebpf/src",
    "tests/src",
];

pub fn run() -> anyhow::Result<()> {
    let mut found = Vec::new();
    for dir in CRATES {
        for cycle in find(&crate::process::workspace_root().join(dir))? {
            found.push(format!("{dir}: {}", cycle.join(" -> ")));
        }
    }
    if !found.is_empty() {
        bail!(
            "import cycles between files (each names the next, the last names the first):\n  {}",
            found.join("\n  ")
        );
    }
    println!("no import cycles in {}", CRATES.join(", "));
    Ok(())
}

/// A module, as the path of segments below the crate root (`[]` is the root).
type Module = Vec<String>;

/// The import cycles among the files of the crate whose sources are under `src` (with
/// `lib.rs` or `main.rs` as its root): each cycle as its files, relative to `src`.
pub fn find(src: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let files = modules(src)?;
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut names = Names::default();
        names.visit_file(&file);
        let children: BTreeSet<String> = names.children.iter().cloned().collect();
        let targets = edges.entry(module.clone()).or_default();
        for name in names.paths {
            let Some(target) = resolve(module, &children, &name, &files) else {
                continue;
            };
            // `module` itself and its ancestors are prefixes of its path.
            if !module.starts_with(&target) {
                targets.insert(target);
            }
        }
    }
    let shown = |m: &Module| {
        files[m]
            .strip_prefix(src)
            .unwrap_or(&files[m])
            .display()
            .to_string()
    };
    Ok(strongly_connected(&edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| component.iter().map(shown).collect())
        .collect())
}

/// Every module of the crate that has a file of its own, with that file.
fn modules(src: &Path) -> anyhow::Result<BTreeMap<Module, PathBuf>> {
    let root = ["lib.rs", "main.rs"]
        .map(|name| src.join(name))
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| format!("no lib.rs or main.rs in {}", src.display()))?;
    let mut found = BTreeMap::new();
    let mut pending = vec![(Vec::new(), root)];
    while let Some((module, path)) = pending.pop() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        // The children of `a.rs` and of `a/mod.rs` are both in `a/`; the root's are beside it.
        let dir = if module.is_empty() || path.file_name().is_some_and(|n| n == "mod.rs") {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for item in &file.items {
            let syn::Item::Mod(declared) = item else {
                continue;
            };
            if declared.content.is_some() || is_test(&declared.attrs) {
                continue;
            }
            let name = declared.ident.to_string();
            let child = [
                dir.join(format!("{name}.rs")),
                dir.join(&name).join("mod.rs"),
            ]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{}: no file for `mod {name}`", path.display()))?;
            let mut path = module.clone();
            path.push(name);
            pending.push((path, child));
        }
        found.insert(module, path);
    }
    Ok(found)
}

/// The module a path names, when it names one of this crate's files.
fn resolve(
    from: &Module,
    children: &BTreeSet<String>,
    path: &[String],
    files: &BTreeMap<Module, PathBuf>,
) -> Option<Module> {
    let (mut base, rest) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            (base, rest)
        }
        first if children.contains(first) => (from.clone(), path),
        _ => return None,
    };
    let mut deepest = files.contains_key(&base).then(|| base.clone());
    for segment in rest {
        base.push(segment.clone());
        if files.contains_key(&base) {
            deepest = Some(base.clone());
        }
    }
    deepest
}

/// What a file names: the paths of its `use` items and of its code, and its child modules.
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
    children: Vec<String>,
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_test(&item.attrs) {
            return;
        }
        if item.content.is_none() {
            self.children.push(item.ident.to_string());
        } else {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test(&item.attrs) {
            let mut prefix = Vec::new();
            use_paths(&item.tree, &mut prefix, &mut self.paths);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
}

/// The full paths of a `use` tree (`a::{b, c::d}` is `a::b` and `a::c::d`).
fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push(with(prefix, &n.ident)),
        syn::UseTree::Rename(r) => out.push(with(prefix, &r.ident)),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_paths(tree, prefix, out);
            }
        }
    }
}

fn with(prefix: &[String], last: &syn::Ident) -> Vec<String> {
    let mut path = prefix.to_vec();
    if last != "self" {
        path.push(last.to_string());
    }
    path
}

/// `#[cfg(test)]`, alone: what only the crate's own tests compile.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// Tarjan's strongly connected components of the graph.
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }

    fn connect<'a>(state: &mut State<'a>, node: &'a Module) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.edges.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                connect(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            loop {
                let member = state.stack.pop().unwrap();
                state.on_stack.remove(member);
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            component.sort();
            state.found.push(component);
        }
    }

    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node) {
            connect(&mut state, node);
        }
    }
    state.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn two_siblings_that_name_each_other_are_a_cycle() {
        let dir = crate_of(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            (
                "b.rs",
                "pub struct B; fn f() -> crate::a::A { crate::a::A }",
            ),
        ]);
        assert_eq!(find(dir.path()).unwrap(), [vec!["a.rs", "b.rs"]]);
    }

    #[test]
    fn a_cycle_through_a_parent_and_a_child_of_another_module_counts() {
        let dir = crate_of(&[
            ("lib.rs", "mod control; mod web;"),
            (
                "control/mod.rs",
                "mod routes; pub struct App; fn r() { crate::web::pages::p() }",
            ),
            ("control/routes.rs", "use super::App;"),
            ("web/mod.rs", "pub mod pages;"),
            ("web/pages.rs", "use crate::control::App; pub fn p() {}"),
        ]);
        assert_eq!(
            find(dir.path()).unwrap(),
            [vec!["control/mod.rs", "web/pages.rs"]]
        );
    }

    #[test]
    fn children_naming_their_parents_and_tests_reaching_anywhere_are_no_cycle() {
        let dir = crate_of(&[
            ("lib.rs", "mod control; mod config;"),
            (
                "control/mod.rs",
                "mod serve; pub struct App; use serve::Peer;",
            ),
            (
                "control/serve.rs",
                "use super::App; use crate::config::Limits; pub struct Peer;",
            ),
            (
                "config.rs",
                "pub struct Limits;\n#[cfg(test)]\nmod tests { use crate::control::App; }",
            ),
        ]);
        assert_eq!(find(dir.path()).unwrap(), Vec::<Vec<String>>::new());
    }

    #[test]
    fn the_workspace_has_no_import_cycles() {
        for dir in CRATES {
            let cycles = find(&crate::process::workspace_root().join(dir)).unwrap();
            assert!(cycles.is_empty(), "{dir}: {cycles:?}");
        }
    }
}
