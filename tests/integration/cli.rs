//! `whopgate check`, `whopgate explain`, `--help` and `--version`, as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::process::binary;

const EXAMPLE_ENV: [(&str, &str); 4] = [
    ("WHOP_API_KEY", "test-api-key"),
    ("WHOP_CLIENT_SECRET", "test-client-secret"),
    ("WHOPGATE_COOKIE_SECRET", "0123456789abcdef0123456789abcdef-test"),
    ("WHOP_WEBHOOK_SECRET", "ws_test"),
];

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
}

fn whopgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.args(args).env_remove("WHOPGATE_CONFIG");
    for (name, _) in EXAMPLE_ENV {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run whopgate")
}

fn with_config(text: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whopgate.toml");
    std::fs::write(&path, text).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    let path = path.to_str().unwrap().to_owned();
    all.extend(["--config", &path]);
    whopgate(&all, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const VALID: &str = r#"listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:3000"

[whop]
api_key = "k"
app_id = "app_xxxxxxxxxxxxxx"

[[route]]
path = "/assets"
public = true

[[route]]
path = "/"
require = ["prod_aaaaaaaaaaaaaa"]
"#;

#[test]
fn check_accepts_the_example_config_and_prints_the_route_table() {
    let out = whopgate(&["check", "--config", example().to_str().unwrap()], &EXAMPLE_ENV);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "config.example.toml: ok",
        "/assets",
        "public",
        "admin of biz_xxxxxxxxxxxxxx",
        "GET,POST",
        "customer of any of prod_aaaaaaaaaaaaaa, prod_bbbbbbbbbbbbbb",
        "anything else",
        "denied (403)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Match order is file order.
    let table = &text[text.find("routes (first match wins)").unwrap()..];
    let order: Vec<usize> =
        ["  /assets ", "  /admin ", "  /api ", "  / "].iter().map(|p| table.find(p).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn check_without_the_example_env_names_each_unset_variable() {
    let out = whopgate(&["check", "--config", example().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for name in ["WHOP_API_KEY", "WHOP_CLIENT_SECRET", "WHOPGATE_COOKIE_SECRET", "WHOP_WEBHOOK_SECRET"] {
        assert!(err.contains(name), "{name} not named in:\n{err}");
    }
}

/// Each broken config exits 2 and names the problem and its line.
#[test]
fn check_rejects_broken_configs_naming_problem_and_line() {
    let cases: [(&str, String, &str, &str); 5] = [
        ("misspelt key", VALID.replace("upstream =", "upsteam ="), ":2:", "did you mean `upstream`"),
        (
            "bad duration",
            VALID.replace(
                "upstream = \"http://127.0.0.1:3000\"",
                "upstream = \"http://127.0.0.1:3000\"\nupstream_timeout = \"30 parsecs\"",
            ),
            ":3:",
            "upstream_timeout",
        ),
        (
            "unset variable",
            VALID.replace("api_key = \"k\"", "api_key = \"${WHOPGATE_TEST_SURELY_UNSET}\""),
            ":5:",
            "WHOPGATE_TEST_SURELY_UNSET",
        ),
        (
            "invalid CIDR",
            VALID.replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\ntrusted_proxies = [\"10.0.0.0/33\"]",
            ),
            ":2:",
            "10.0.0.0/33",
        ),
        ("no route", VALID[..VALID.find("[[route]]").unwrap()].to_owned(), ":", "[[route]]"),
    ];
    for (what, text, line, needle) in cases {
        let out = with_config(&text, &["check"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} not in:\n{err}");
        assert!(err.contains(&format!("whopgate.toml{line}")), "{what}: line {line} not in:\n{err}");
        assert!(stdout(&out).is_empty(), "{what}: printed a route table for a broken config");
    }
}

#[test]
fn check_reports_every_problem_at_once() {
    let text = VALID
        .replace("upstream =", "upsteam =")
        .replace("api_key = \"k\"", "api_key = \"k\"\ntimeout = \"soon\"")
        .replace("public = true", "public = true\nmethods = [\"G ET\"]");
    let out = with_config(&text, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains("error:")).count(), 3, "{err}");
}

#[test]
fn check_warns_about_shadowed_rules() {
    let text = format!("{VALID}\n[[route]]\npath = \"/late\"\npublic = true\n");
    let out = with_config(&text, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("warning: route 3 (/late) never matches: route 2 (/"), "{text}");
    assert!(stdout(&out).contains("/late"), "the table still lists the rule");
}

/// A rule that splits a path by method makes form POSTs there refusable (a `_method` body field
/// could make the app run one as the other method); `check` says where, and why.
#[test]
fn check_warns_where_form_posts_are_refused() {
    let quiet = with_config(VALID, &["check"]);
    assert!(!stderr(&quiet).contains("form POSTs"), "{}", stderr(&quiet));
    let reads_public = VALID.replace("path = \"/assets\"", "path = \"/assets\"\nmethods = [\"GET\", \"HEAD\"]");
    let out = with_config(&reads_public, &["check"]);
    assert!(!stderr(&out).contains("form POSTs"), "POST and DELETE both fall under route 2:\n{}", stderr(&out));
    let posts_public = VALID.replace("path = \"/assets\"", "path = \"/comments\"\nmethods = [\"POST\"]");
    let out = with_config(&posts_public, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            ":8: warning: form POSTs to /comments are refused (400): POST falls under route 1 and PUT under route 2"
        ),
        "{err}"
    );
}

/// Keys whose feature this build lacks are accepted (the schema is final) but never silently: a
/// user who sets one is told what they will not get.
#[test]
fn check_warns_about_settings_not_acted_on_yet() {
    let quiet = with_config(VALID, &["check"]);
    assert!(!stderr(&quiet).contains("not acted on"), "{}", stderr(&quiet));
    let text = VALID.replace(
        "[whop]",
        "[cache]\nredis_url = \"redis://127.0.0.1:6379\"\n\n[mirror]\nenabled = true\n\n[webhook]\nsecret = \"ws_x\"\n\n[whop]",
    );
    let out = with_config(&text, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: mirror.enabled ("), "mirror.enabled not warned about in:\n{err}");
    // Webhooks and the Redis store are built: their keys are acted on, so nothing warns.
    assert!(!err.contains("warning: webhook.secret") && !err.contains("warning: cache.redis_url"), "{err}");
    assert!(err.contains("not acted on by this version"), "{err}");
}

#[test]
fn explain_names_the_matching_rule() {
    let cases = [
        (["GET", "/assets/app.js"].as_slice(), "rule      1 (/assets", "public"),
        (&["POST", "/anything"], "rule      2 (/", "customer of prod_aaaaaaaaaaaaaa"),
        (&["GET", "/assets/../secret"], "normalised to /secret", "customer of prod_aaaaaaaaaaaaaa"),
        (&["GET", "/a%2Fb"], "rejected: the request path contains an encoded slash", "400 bad request"),
    ];
    for (args, first, second) in cases {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        let out = with_config(VALID, &all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(first) && text.contains(second), "{args:?}:\n{text}");
    }
    let only_api = VALID.replace("path = \"/\"", "path = \"/api\"");
    let out = with_config(&only_api, &["explain", "GET", "/other", "--host", "app.example.com"]);
    let text = stdout(&out);
    assert!(text.contains("none matches") && text.contains("403"), "{text}");
}

#[test]
fn help_version_and_usage_errors() {
    let out = whopgate(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    for word in ["check", "explain", "--config"] {
        assert!(stdout(&out).contains(word), "{word} missing from --help");
    }
    let out = whopgate(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("whopgate "));
    let out = whopgate(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = whopgate(&["explain", "GET"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_with_a_missing_config_exits_2() {
    let out = whopgate(&["--config", "/nonexistent/whopgate.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/whopgate.toml"), "{}", stderr(&out));
}

/// `whopgate demo` prints commands that do what it says they do.
#[test]
fn the_demo_commands_work_as_printed() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let mut tokens = std::collections::HashMap::new();
    let mut gate = None;
    for line in lines.by_ref() {
        if let Some((name, token)) = line.trim().split_once('=') {
            if ["ALICE", "BOB", "CAROL"].contains(&name) {
                tokens.insert(name.to_owned(), token.to_owned());
            }
        }
        if line.contains("whopgate demo: the gate runs on ") {
            gate = line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned);
        }
        if line.contains("Ctrl-C stops the demo") {
            break;
        }
    }
    let gate = gate.expect("the demo names its address");
    let client = reqwest::blocking::Client::new();
    let status = |path: &str, user: Option<&str>| {
        let mut request = client.get(format!("{gate}{path}"));
        if let Some(user) = user {
            request = request.header("x-whop-user-token", &tokens[user]);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(status("/", Some("ALICE")), 200);
    assert_eq!(status("/", Some("BOB")), 403);
    assert_eq!(status("/admin", Some("CAROL")), 200);
    assert_eq!(status("/admin", Some("ALICE")), 403);
    assert_eq!(status("/", None), 401);
    let body =
        client.get(format!("{gate}/")).header("x-whop-user-token", &tokens["ALICE"]).send().unwrap().text().unwrap();
    assert!(body.contains("hello user_alice") && body.contains("x-whop-access-level: customer"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `whopgate mock-whop` as a process, and a token from `whopgate mock-whop token` that a gate
/// pointed at it accepts — the way a user's own CI would use them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_whop_process_and_its_tokens_work_with_a_gate() {
    use std::io::{BufRead, BufReader};
    let mut mock = Command::new(binary())
        .args(["mock-whop", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(mock.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let base =
        line.split_whitespace().find(|w| w.starts_with("http://")).expect("the mock names its address").to_owned();
    let token = whopgate(&["mock-whop", "token", "user_alice"], &[]);
    assert_eq!(token.status.code(), Some(0));
    let token = stdout(&token).trim().to_owned();
    assert!(token.starts_with("eyJ"));

    let up = crate::support::Upstream::start().await;
    let config = crate::support::config(
        &up.url(),
        &format!(
            "[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\n\n[whop]\napi_key = \"mock_api_key\"\napp_id = \"app_mockapp000001\"\napi_base = \"{base}\"\n"
        ),
    );
    let gate = crate::support::Whopgate::start(&config);
    let r = reqwest::Client::new().get(gate.url("/")).header("x-whop-user-token", &token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-whop-user-id"), ["user_alice"]);
    // The mock saw the documented API version header.
    let calls: serde_json::Value = reqwest::get(format!("{base}/_mock/calls")).await.unwrap().json().await.unwrap();
    assert_eq!(calls["last_api_version_date"], "2026-09-15", "{calls}");
    let _ = mock.kill();
    let _ = mock.wait();
}

/// A config with `access_api` and one gated rule on `resource` (at `level`, when given).
fn backend_config(api: &str, resource: &str, level: Option<&str>) -> String {
    let level = level.map(|l| format!("access_level = \"{l}\"\n")).unwrap_or_default();
    format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:3000\"\n\n[whop]\napi_key = \"k\"\napp_id = \"app_xxxxxxxxxxxxxx\"\naccess_api = \"{api}\"\n\n[[route]]\npath = \"/\"\nrequire = [\"{resource}\"]\n{level}"
    )
}

/// `check` refuses a rule its backend cannot judge (exit 2, file:line:column, why, what would
/// work), and start-up refuses it with the same words.
fn refuses_pair(api: &str, resource: &str, level: Option<&str>, at: &str, why: &str, instead: &str) {
    let text = backend_config(api, resource, level);
    let out = with_config(&text, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("whopgate.toml{at}")), "{at} not in:\n{err}");
    assert!(err.contains(why), "{why:?} not in:\n{err}");
    assert!(err.contains(instead), "{instead:?} not in:\n{err}");
    assert!(stdout(&out).is_empty(), "a route table for a config that cannot be judged");
    let run = with_config(&text, &[]);
    assert_eq!(run.status.code(), Some(2), "start-up: {}", stderr(&run));
    let started = stderr(&run);
    // The words after the file name: each run has its own temporary directory.
    let line = |s: &str| {
        s.lines().find(|l| l.contains(why)).and_then(|l| l.split_once("whopgate.toml")).map(|(_, rest)| rest.to_owned())
    };
    assert_eq!(line(&started), line(&err), "start-up says what check says");
}

#[test]
fn check_refuses_members_on_a_product() {
    refuses_pair(
        "members",
        "prod_a",
        None,
        ":11:12:",
        "`prod_a` cannot be judged with `whop.access_api = \"members\"`: a member record is per company",
        "require the company (`biz_…`) instead",
    );
}

#[test]
fn check_refuses_members_on_an_experience() {
    refuses_pair(
        "members",
        "exp_a",
        None,
        ":11:12:",
        "says nothing about experiences",
        "require the company (`biz_…`) instead",
    );
}

#[test]
fn check_refuses_memberships_v2_on_a_company() {
    refuses_pair(
        "memberships_v2",
        "biz_a",
        None,
        ":11:12:",
        "`biz_a` cannot be judged with `whop.access_api = \"memberships_v2\"`: a membership list answers per product",
        "require the company's products (`prod_…`) instead",
    );
}

#[test]
fn check_refuses_memberships_v2_on_an_experience() {
    refuses_pair(
        "memberships_v2",
        "exp_a",
        None,
        ":11:12:",
        "a membership list knows products, not experiences",
        "require the products (`prod_…`) that grant the experience",
    );
}

#[test]
fn check_refuses_memberships_v2_for_admins() {
    refuses_pair(
        "memberships_v2",
        "prod_a",
        Some("admin"),
        ":12:16:",
        "`access_level = \"admin\"` cannot be judged with `whop.access_api = \"memberships_v2\"`: membership lists do not say who is a team member",
        "use `access_api = \"members\"`",
    );
}

#[test]
fn check_refuses_memberships_v5_on_a_company() {
    refuses_pair(
        "memberships_v5",
        "biz_a",
        None,
        ":11:12:",
        "`biz_a` cannot be judged with `whop.access_api = \"memberships_v5\"`: a membership list answers per product",
        "require the company's products (`prod_…`) instead",
    );
}

#[test]
fn check_refuses_memberships_v5_on_an_experience() {
    refuses_pair(
        "memberships_v5",
        "exp_a",
        None,
        ":11:12:",
        "a membership list knows products, not experiences",
        "or use `access_api = \"check_access\"`",
    );
}

#[test]
fn check_refuses_memberships_v5_for_admins() {
    refuses_pair(
        "memberships_v5",
        "prod_a",
        Some("admin"),
        ":12:16:",
        "`access_level = \"admin\"` cannot be judged with `whop.access_api = \"memberships_v5\"`",
        "use `access_api = \"members\"`",
    );
}

#[test]
fn check_accepts_what_each_backend_can_judge() {
    let judgeable = [
        ("check_access", "prod_a", Some("admin")),
        ("check_access", "exp_a", None),
        ("check_access", "biz_a", None),
        ("members", "biz_a", Some("admin")),
        ("members", "biz_a", None),
        ("memberships_v2", "prod_a", None),
        ("memberships_v5", "prod_a", Some("customer")),
    ];
    for (api, resource, level) in judgeable {
        let out = with_config(&backend_config(api, resource, level), &["check"]);
        assert_eq!(out.status.code(), Some(0), "{api} {resource} {level:?}: {}", stderr(&out));
        assert!(stdout(&out).contains(&format!("({api})")), "{}", stdout(&out));
    }
}
