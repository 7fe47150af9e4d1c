//! License keys and the dev identity, end to end through the sidecar.

use whopgate_mock::{EndpointKind, MockState, MockWhop};

use crate::support::{Upstream, Whopgate, gated_config};

const ROUTES: &str = r#"
[[route]]
path = "/"
require = ["prod_mockproduct1"]
mode = "api"
"#;

fn license_sources(bearer: bool) -> String {
    format!(
        "{ROUTES}\n[identity]\nsources = [\"user_token\", \"license_key\"]\n\n[identity.license_key]\nbearer = {bearer}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_keys_identify_the_membership_user() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", &license_sources(true)));
    let client = reqwest::Client::new();
    let with_key = |key: &str| client.get(gate.url("/api/v1/thing")).header("x-whop-license-key", key).send();

    // Valid: the membership's user, identified by license key.
    let r = with_key("MOCK-ALICE-LICENSE").await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    seen.assert_identity("user_alice", "license_key", "customer");

    // Canceled: 403 naming the status.
    let r = with_key("MOCK-DAVE-LICENSE").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("canceled"), "{body}");

    // Unknown: 401.
    let r = with_key("NOT-A-REAL-KEY").await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_credentials");

    // Bearer form.
    let r = client.get(gate.url("/x")).bearer_auth("MOCK-ALICE-LICENSE").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-whopgate-source"), ["license_key"]);

    // A repeated key makes no second Whop call within the ttl.
    let membership_calls = mock.calls(EndpointKind::Membership);
    let access_calls = mock.calls(EndpointKind::Access);
    for _ in 0..20 {
        assert_eq!(with_key("MOCK-ALICE-LICENSE").await.unwrap().status(), 200);
        assert_eq!(with_key("NOT-A-REAL-KEY").await.unwrap().status(), 401);
    }
    assert_eq!(mock.calls(EndpointKind::Membership), membership_calls);
    assert_eq!(mock.calls(EndpointKind::Access), access_calls);
    // The key never appears in the logs.
    for line in gate.logs() {
        assert!(!line.contains("MOCK-ALICE-LICENSE"), "a license key in the log: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_is_only_read_when_enabled() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", &license_sources(false)));
    let r = reqwest::Client::new().get(gate.url("/x")).bearer_auth("MOCK-ALICE-LICENSE").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
}

const DEV: &str = "\n[identity]\nsources = [\"user_token\", \"dev\"]\n\n[identity.dev]\nuser_id = \"user_devperson\"\naccess_level = \"customer\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_identity_makes_no_whop_calls() {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let admin_route = "[[route]]\npath = \"/admin\"\nrequire = [\"biz_mockcompany01\"]\naccess_level = \"admin\"\n";
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", &format!("{admin_route}{ROUTES}{DEV}")));
    let r = reqwest::get(gate.url("/anything")).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    seen.assert_identity("user_devperson", "dev", "customer");
    assert_eq!(reqwest::get(gate.url("/admin")).await.unwrap().status(), 403, "a customer dev identity is no admin");
    // A real token still comes first.
    let carol = mock.mint_token("user_carol").unwrap();
    let r = reqwest::Client::new().get(gate.url("/admin")).header("x-whop-user-token", carol).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.calls(EndpointKind::Access), 1, "only the real user's decision asked Whop");
}

#[test]
fn the_dev_identity_refuses_a_non_loopback_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listen = \"0.0.0.0:0\"\nupstream = \"http://127.0.0.1:9\"\n{ROUTES}\n[whop]\napi_key = \"k\"\napp_id = \"app_x\"\napi_base = \"http://127.0.0.1:9\"\n{DEV}"
    );
    let path = dir.path().join("whopgate.toml");
    std::fs::write(&path, config).unwrap();
    let check = std::process::Command::new(crate::support::process::binary())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "check accepts it: the refusal is at start");
    let out = std::process::Command::new(crate::support::process::binary())
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("dev identity") && text.contains("loopback") && text.contains("0.0.0.0"), "{text}");
}
