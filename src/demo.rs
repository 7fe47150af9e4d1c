//! `whopgate demo`: the gate working on this machine with no Whop account. It starts the mock
//! Whop API, a tiny app that shows the identity headers it receives, and the real sidecar in
//! front of the app, then prints curl commands to try.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::sidecar::{RunError, Sidecar};
use whopgate_mock::{MockState, MockWhop};

/// The demo's product, company and users (the mock's built-in state).
const PRODUCT: &str = "prod_mockproduct1";
const COMPANY: &str = "biz_mockcompany01";

/// Why the demo could not start.
#[derive(Debug)]
pub enum DemoError {
    /// A local port could not be bound.
    Io(std::io::Error),
    /// The demo's generated config did not load (a bug).
    Config(String),
    /// The mock could not mint a token.
    Token(String),
    /// The sidecar did not start.
    Run(RunError),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Io(e) => write!(f, "could not open a local port: {e}"),
            DemoError::Config(e) => write!(f, "the demo config did not load: {e}"),
            DemoError::Token(e) => write!(f, "could not mint a demo token: {e}"),
            DemoError::Run(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DemoError {}

/// Runs the demo until Ctrl-C. `listen` is where the gate listens (port 0: any free port).
pub async fn run(listen: SocketAddr) -> Result<(), DemoError> {
    let mock =
        MockWhop::start("127.0.0.1:0".parse().map_err(|_| DemoError::Config("address".into()))?, MockState::default())
            .map_err(DemoError::Io)?;
    let app = TcpListener::bind("127.0.0.1:0").await.map_err(DemoError::Io)?;
    let app_addr = app.local_addr().map_err(DemoError::Io)?;
    tokio::spawn(serve_app(app));

    let config = Config::from_toml(&demo_config(listen, app_addr, &mock), "demo.toml")
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let sidecar = Sidecar::start(config).await.map_err(DemoError::Run)?;
    let gate = format!("http://{}", sidecar.local_addr());
    let token = |user: &str| {
        mock.mint_token_with(user, whopgate_mock::TokenOptions::ttl(std::time::Duration::from_secs(24 * 3600)))
    };
    let alice = token("user_alice").map_err(|e| DemoError::Token(e.to_string()))?;
    let bob = token("user_bob").map_err(|e| DemoError::Token(e.to_string()))?;
    let carol = token("user_carol").map_err(|e| DemoError::Token(e.to_string()))?;
    let admin = sidecar.admin_addr().map_or_else(String::new, |a| format!("\nMetrics:  curl http://{a}/metrics\n"));

    println!(
        r#"
whopgate demo: the gate runs on {gate} in front of a tiny app ({app_addr}),
asking a local stand-in for the Whop API ({mock_url}): no Whop account needed.

Routes: /public is open to anyone; / needs {PRODUCT}; /admin needs the team of {COMPANY}.
The app answers with the identity headers the gate forwarded to it.

Whop user tokens for three users (valid 24 h); paste these into another shell:
  ALICE={alice}
  BOB={bob}
  CAROL={carol}

Then:
  curl -H "x-whop-user-token: $ALICE" {gate}/        # Alice bought the product: 200, with her identity
  curl -H "x-whop-user-token: $BOB" {gate}/          # Bob did not: 403 (a browser goes to checkout)
  curl -H "x-whop-user-token: $CAROL" {gate}/admin   # Carol is on the company's team: 200
  curl -H "x-whop-user-token: $ALICE" {gate}/admin   # a customer is not an admin: 403
  curl {gate}/                                       # no token: 401
  curl -H "x-whop-user-id: user_carol" {gate}/public # forged identity headers never reach the app
{admin}
Ctrl-C stops the demo.
"#,
        mock_url = mock.base_url(),
    );
    sidecar.run_until_signal().await;
    mock.shutdown().await;
    Ok(())
}

fn demo_config(listen: SocketAddr, app: SocketAddr, mock: &MockWhop) -> String {
    format!(
        r#"
listen = "{listen}"
upstream = "http://{app}"
admin_listen = "127.0.0.1:0"

[whop]
api_key = "{key}"
app_id = "{app_id}"
api_base = "{base}"

[[route]]
path = "/public"
public = true

[[route]]
path = "/admin"
require = ["{COMPANY}"]
access_level = "admin"

[[route]]
path = "/"
require = ["{PRODUCT}"]
checkout_url = "https://whop.com/checkout/plan_demo"
"#,
        key = mock.api_key(),
        app_id = mock.app_id(),
        base = mock.base_url(),
    )
}

/// The demo app: answers every request with what the gate told it about the caller.
async fn serve_app(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(describe(&req)) });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn describe(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let greeting = match req.headers().get("x-whop-user-id").and_then(|v| v.to_str().ok()) {
        Some(user) => format!("hello {user}"),
        None => "hello, anonymous visitor".to_owned(),
    };
    let body = format!(
        "{greeting}: the app got {} {}\n  x-whop-user-id:      {}\n  x-whop-access-level: {}\n  x-whop-resource-id:  {}\n  x-whopgate-source:   {}\n",
        req.method(),
        req.uri(),
        header("x-whop-user-id"),
        header("x-whop-access-level"),
        header("x-whop-resource-id"),
        header("x-whopgate-source"),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
