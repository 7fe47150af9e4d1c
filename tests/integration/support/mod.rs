//! Shared test support: the real whopgate process and a real upstream app.
#![allow(dead_code)]

pub mod front;
pub mod process;
pub mod redis;
pub mod upstream;

pub use process::Whopgate;
pub use upstream::Upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends raw bytes on a fresh connection and returns everything read until the server closes
/// (or 5 s pass). For requests a client library would "fix" before sending.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A config with the given upstream and extra TOML (routes etc.), listening on free ports.
/// Top-level keys in `rest` must come before its tables. A `[whop]` table is added when `rest`
/// has none; nothing in these tests reaches Whop.
pub fn config(upstream: &str, rest: &str) -> String {
    let whop = if rest.contains("[whop]") {
        ""
    } else {
        "\n[whop]\napi_key = \"test-key\"\napp_id = \"app_testapp0000001\"\napi_base = \"http://127.0.0.1:9\"\n"
    };
    format!("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{rest}\n{whop}")
}

/// The session cookie secret of [`session_config`].
pub const SESSION_SECRET: &str = "a-test-cookie-secret-that-is-long-enough-0123456789";

/// A gate on `port` whose `/` needs the mock's product, with Sign in with Whop on
/// (`SESSION_SECRET` as the cookie secret, `session_extra` added to `[identity.session]`).
pub fn session_config(up: &Upstream, mock: &whopgate_mock::MockWhop, port: u16, session_extra: &str) -> String {
    let routes = format!(
        r#"
public_url = "http://localhost:{port}"

[[route]]
path = "/"
require = ["prod_mockproduct1"]

[identity]
sources = ["user_token", "session"]

[identity.session]
client_id = "{app}"
cookie_secret = "{SESSION_SECRET}"
{session_extra}
"#,
        app = mock.app_id()
    );
    gated_config(&up.url(), mock, "", &routes).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    )
}

/// A config for a gated app: `rest` (top-level keys first, then tables) plus a `[whop]` table
/// pointing at `mock`. Add `[whop]` keys through `whop_extra` (e.g. `timeout = "1s"`).
pub fn gated_config(upstream: &str, mock: &whopgate_mock::MockWhop, whop_extra: &str, rest: &str) -> String {
    let whop = format!(
        "[whop]\napi_key = \"{}\"\napp_id = \"{}\"\napi_base = \"{}\"\n{whop_extra}\n",
        mock.api_key(),
        mock.app_id(),
        mock.base_url()
    );
    config(upstream, &format!("{rest}\n{whop}"))
}

/// The mock's default state plus `n` users (`user_load0000`…) who each hold an active
/// membership on `prod_mockproduct1`.
pub fn state_with_customers(n: usize) -> whopgate_mock::MockState {
    use whopgate_mock::{MembershipStatus, MockState};
    let mut state = MockState::default();
    for i in 0..n {
        let id = format!("user_load{i:04}");
        state.users.push(whopgate_mock::User { id: id.clone(), username: String::new(), name: None, email: None });
        state.memberships.push(whopgate_mock::Membership::new(
            format!("mem_load{i:08}"),
            id,
            "prod_mockproduct1",
            MembershipStatus::Active,
        ));
    }
    state
}

/// A port that was free a moment ago (for configs that must name their own port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Is the external tool `name` installed? Without it the test is skipped with a note, unless
/// `WHOPGATE_TEST_REQUIRE_TOOLS=1` (set by `scripts/test`) makes that a failure.
pub fn require_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("WHOPGATE_TEST_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{name} is not installed; scripts/test installs it");
        }
        eprintln!("skipped: {name} is not installed (scripts/test installs it)");
    }
    found
}
