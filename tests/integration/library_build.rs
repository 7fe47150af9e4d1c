//! What a library user (the tower layer, `default-features = false`) compiles: none of the
//! command line, the mock Whop API or the binary's allocator, as `cargo tree` resolves it.

use std::process::Command;

/// The normal (non-dev) dependencies of `whopgate` with `features`, by crate name.
fn dependencies(features: &[&str]) -> Vec<String> {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "-p", "whopgate", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .arg("--no-default-features");
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let out = command.output().expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn a_library_build_has_no_mock_and_no_command_line() {
    for features in [&[][..], &["axum"][..]] {
        let deps = dependencies(features);
        assert!(deps.iter().any(|d| d == "hyper"), "cargo tree listed the real tree: {deps:?}");
        for absent in ["whopgate-mock", "clap", "mimalloc", "tracing-subscriber"] {
            assert!(!deps.iter().any(|d| d == absent), "{absent} is in a library build with features {features:?}");
        }
    }
}

#[test]
fn the_command_line_build_has_the_mock() {
    let deps = dependencies(&["cli"]);
    assert!(deps.iter().any(|d| d == "whopgate-mock"), "the binary's demo and mock-whop need it: {deps:?}");
}
