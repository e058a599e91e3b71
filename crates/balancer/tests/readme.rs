//! The README's policy and orchestrator tables are generated from the
//! registries; this test fails when they drift. `UPDATE_README=1 cargo test
//! -p balancer --test readme` rewrites them.

use std::path::PathBuf;

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

fn table(rows: impl Iterator<Item = (&'static str, &'static str)>) -> String {
    let mut out = String::from("| name | what it does |\n|---|---|\n");
    for (name, about) in rows {
        out.push_str(&format!("| `{name}` | {about} |\n"));
    }
    out
}

/// Replaces the table between the `<!-- NAME: ... -->` line and
/// `<!-- end NAME -->` with `body`.
fn splice(text: &str, name: &str, body: &str) -> String {
    let start = text
        .find(&format!("<!-- {name}: "))
        .unwrap_or_else(|| panic!("README has no '<!-- {name}: ' marker"));
    let after_marker = start + text[start..].find('\n').expect("marker line") + 1;
    let end = text
        .find(&format!("<!-- end {name} -->"))
        .unwrap_or_else(|| panic!("README has no '<!-- end {name} -->' marker"));
    format!("{}{}{}", &text[..after_marker], body, &text[end..])
}

#[test]
fn readme_tables_match_the_registries() {
    let path = readme();
    let text = std::fs::read_to_string(&path).expect("README.md");
    let policies = table(
        balancer::policy::REGISTRY
            .iter()
            .map(|(name, about, _)| (*name, *about)),
    );
    let orchestrators = table(
        balancer::orchestrator::REGISTRY
            .iter()
            .map(|(name, about, _)| (*name, *about)),
    );
    let want = splice(
        &splice(&text, "policies", &policies),
        "orchestrators",
        &orchestrators,
    );
    if want != text {
        if std::env::var_os("UPDATE_README").is_some() {
            std::fs::write(&path, want).expect("write README.md");
        } else {
            panic!(
                "README.md's policy or orchestrator table differs from the registry; \
                 run UPDATE_README=1 cargo test -p balancer --test readme\n\
                 policies:\n{policies}\norchestrators:\n{orchestrators}"
            );
        }
    }
}
