//! docs/TOUR.md names functions, with links to the files they live in.
//! This test keeps it true: every `[`Type::function`](../src/…rs)` link
//! must point at a file that defines that function (and that type, when
//! one is named). Rename a function without updating the tour and this
//! fails, saying which link broke.

use std::path::Path;

/// Every `(text, target)` of a markdown link in `doc` whose text is code.
fn code_links(doc: &str) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut rest = doc;
    while let Some(open) = rest.find("[`") {
        rest = &rest[open + 2..];
        let Some(close) = rest.find("`](") else { break };
        let text = rest[..close].to_string();
        let after = &rest[close + 3..];
        let Some(end) = after.find(')') else { break };
        links.push((text, after[..end].to_string()));
        rest = &after[end..];
    }
    links
}

/// Whether `source` defines `fn name` (any visibility, any generics) in
/// the code a reader runs: not in its tests, not only under
/// `#[cfg(test)]`.
fn defines_fn(source: &str, name: &str) -> bool {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let lines: Vec<&str> = code.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let line = line.trim_start();
        let defines = ["fn ", "pub fn ", "pub(crate) fn ", "pub(super) fn "]
            .iter()
            .any(|head| {
                line.strip_prefix(head).is_some_and(|rest| {
                    rest.strip_prefix(name)
                        .is_some_and(|after| after.starts_with('(') || after.starts_with('<'))
                })
            });
        // The attributes and docs above it, nearest first.
        let test_only = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim_start())
            .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
            .any(|l| l == "#[cfg(test)]");
        defines && !test_only
    })
}

/// Whether `source` defines or implements the type `name`.
fn defines_type(source: &str, name: &str) -> bool {
    ["struct ", "enum ", "impl ", "impl<"].iter().any(|prefix| {
        source.match_indices(prefix).any(|(i, _)| {
            let after = &source[i + prefix.len()..];
            // `impl<R: Read> FrameReader<R>`: skip the generics.
            let after = if prefix.ends_with('<') {
                after.split_once("> ").map_or(after, |(_, t)| t)
            } else {
                after
            };
            after.starts_with(name)
                && !after[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

#[test]
fn every_function_the_tour_names_exists_where_it_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/TOUR.md")).unwrap();
    let links: Vec<_> = code_links(&doc)
        .into_iter()
        .filter(|(_, target)| target.starts_with("../src/"))
        .collect();
    assert!(links.len() > 30, "the tour links its stops: {links:?}");
    let mut broken = Vec::new();
    for (text, target) in &links {
        let file = root.join("docs").join(target);
        let Ok(source) = std::fs::read_to_string(&file) else {
            broken.push(format!("{text}: no file {target}"));
            continue;
        };
        let (owner, function) = match text.rsplit_once("::") {
            Some((owner, function)) => (Some(owner), function),
            None => (None, text.as_str()),
        };
        if !defines_fn(&source, function) {
            broken.push(format!("{text}: no fn {function} in {target}"));
        }
        // `Type::function` names a type; `module::function` a module.
        if let Some(owner) = owner.filter(|o| o.starts_with(char::is_uppercase))
            && !defines_type(&source, owner)
        {
            broken.push(format!("{text}: no type {owner} in {target}"));
        }
    }
    assert!(
        broken.is_empty(),
        "docs/TOUR.md is out of date:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_catches_a_renamed_function() {
    let source = "impl<R: Read> FrameReader<R> {\n    pub fn read_line(&mut self) {}\n\
                  /// Tests only.\n    #[cfg(test)]\n    pub(crate) fn since(&self) {}\n}";
    assert!(defines_fn(source, "read_line"));
    assert!(!defines_fn(source, "read_lines"));
    assert!(
        !defines_fn(source, "since"),
        "a test-only fn does not count"
    );
    assert!(defines_type(source, "FrameReader"));
    assert!(!defines_type(source, "Frame"));
    let links = code_links("see [`A::b`](../src/x.rs) and [`c`](../src/y.rs).");
    assert_eq!(
        links,
        [
            ("A::b".to_string(), "../src/x.rs".to_string()),
            ("c".to_string(), "../src/y.rs".to_string())
        ]
    );
}
