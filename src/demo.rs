//! `whopgate demo`: the gate working on this machine with no Whop account. It starts the mock
//! Whop API (with its sign-in page on, so a person picks a demo user), a tiny app that shows
//! whom the gate let in and why, and the real sidecar in front of the app; then it prints the
//! address to open in a browser and curl commands to try.

use std::convert::Infallible;
use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::response::escape_html as escape;
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
    let mut state = MockState::default();
    // A browser signs in through the mock's page, choosing the user; curl uses tokens.
    state.oauth.login_page = true;
    let mock = MockWhop::start("127.0.0.1:0".parse().map_err(|_| DemoError::Config("address".into()))?, state)
        .map_err(DemoError::Io)?;
    let app = TcpListener::bind("127.0.0.1:0").await.map_err(DemoError::Io)?;
    let app_addr = app.local_addr().map_err(DemoError::Io)?;
    // The sign-in callback must name the port the gate really listens on.
    let listen = concrete(listen)?;
    let site = format!("http://localhost:{}", listen.port());
    tokio::spawn(serve_app(app, site.clone()));

    let config = Config::from_toml(&demo_config(listen, &site, app_addr, &mock), "demo.toml")
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
The app answers with whom the gate let in, and why.

In a browser, open {site}/
  "Sign in with Whop" shows the stand-in's page: pick Alice (bought the product: let in),
  Bob (holds nothing: sent to checkout) or Carol (on the company's team: /admin too).
  {site}/.whopgate/logout signs you out.

With curl, Whop user tokens for the same three users (valid 24 h); paste these into another shell:
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

/// `listen` with its port chosen, when it was 0. The port is free again when the gate binds
/// it a moment later (nothing else is racing for it on a developer's machine).
fn concrete(listen: SocketAddr) -> Result<SocketAddr, DemoError> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    std::net::TcpListener::bind(listen).and_then(|l| l.local_addr()).map_err(DemoError::Io)
}

/// A fresh cookie secret per demo run: sessions end with the demo.
fn cookie_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn demo_config(listen: SocketAddr, site: &str, app: SocketAddr, mock: &MockWhop) -> String {
    format!(
        r#"
listen = "{listen}"
upstream = "http://{app}"
admin_listen = "127.0.0.1:0"
public_url = "{site}"

[whop]
api_key = "{key}"
app_id = "{app_id}"
api_base = "{base}"

[identity]
sources = ["user_token", "session"]

[identity.session]
client_id = "{app_id}"
cookie_secret = "{secret}"

[[route]]
path = "/public"
public = true

[[route]]
path = "/checkout"
public = true

[[route]]
path = "/admin"
require = ["{COMPANY}"]
access_level = "admin"

[[route]]
path = "/"
require = ["{PRODUCT}"]
checkout_url = "{site}/checkout"
"#,
        key = mock.api_key(),
        app_id = mock.app_id(),
        base = mock.base_url(),
        secret = cookie_secret(),
    )
}

/// The demo app: answers every request with what the gate told it about the caller, as a
/// page for a browser and as text for curl.
async fn serve_app(listener: TcpListener, site: String) {
    let site: std::sync::Arc<str> = site.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let site = site.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(describe(&req, &site)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// What the gate forwarded about the caller, read from the identity headers.
struct Caller {
    user: Option<String>,
    level: Option<String>,
    resource: Option<String>,
    source: Option<String>,
}

impl Caller {
    fn of(req: &Request<Incoming>) -> Caller {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Caller {
            user: header("x-whop-user-id"),
            level: header("x-whop-access-level"),
            resource: header("x-whop-resource-id"),
            source: header("x-whopgate-source"),
        }
    }

    /// Why the gate let this request in, in words.
    fn why(&self) -> String {
        let how = match self.source.as_deref() {
            Some("session") => "signed in with Whop",
            Some("user_token") => "by a Whop user token",
            Some("license_key") => "by a license key",
            Some(_) => "by a credential",
            None => "",
        };
        match (&self.user, &self.level, &self.resource) {
            (Some(user), Some(level), Some(resource)) => {
                format!("the gate let {user} in ({how}): Whop says they are {level} of {resource}")
            }
            (Some(user), _, _) => format!("the gate let {user} in ({how}) on a public route"),
            (None, _, _) => "a public route: the gate let an anonymous visitor in".to_owned(),
        }
    }
}

fn describe(req: &Request<Incoming>, site: &str) -> Response<Full<Bytes>> {
    let caller = Caller::of(req);
    let browser = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let (body, content_type) = if req.uri().path() == "/checkout" {
        checkout(browser)
    } else if browser {
        (page(req, &caller, site), "text/html; charset=utf-8")
    } else {
        (text(req, &caller), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

fn text(req: &Request<Incoming>, caller: &Caller) -> String {
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let greeting = caller.user.as_ref().map_or_else(|| "hello, anonymous visitor".to_owned(), |u| format!("hello {u}"));
    format!(
        "{greeting}: the app got {} {}\n  {}\n  x-whop-user-id:      {}\n  x-whop-access-level: {}\n  x-whop-resource-id:  {}\n  x-whopgate-source:   {}\n",
        req.method(),
        req.uri(),
        caller.why(),
        shown(&caller.user),
        shown(&caller.level),
        shown(&caller.resource),
        shown(&caller.source),
    )
}

fn page(req: &Request<Incoming>, caller: &Caller, site: &str) -> String {
    let row = |name: &str, value: &Option<String>| {
        format!("<tr><th>{name}</th><td id=\"{name}\">{}</td></tr>\n", escape(value.as_deref().unwrap_or("-")))
    };
    let who = caller.user.as_deref().map_or_else(|| "anonymous visitor".to_owned(), escape);
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>whopgate demo</title></head>\n<body>\n\
         <h1>Hello, <span id=\"user\">{who}</span></h1>\n<p id=\"why\">{why}.</p>\n\
         <p>The app got <code>{method} {path}</code> with these headers from the gate:</p>\n<table>\n{rows}</table>\n\
         <p><a href=\"{site}/\">/</a> (needs {PRODUCT}) · <a href=\"{site}/admin\">/admin</a> (the team of {COMPANY}) · \
         <a href=\"{site}/public\">/public</a> · <a id=\"logout\" href=\"{site}/.whopgate/logout\">sign out</a></p>\n\
         </body></html>\n",
        why = escape(&caller.why()),
        method = escape(req.method().as_str()),
        path = escape(&req.uri().to_string()),
        rows = [
            row("x-whop-user-id", &caller.user),
            row("x-whop-access-level", &caller.level),
            row("x-whop-resource-id", &caller.resource),
            row("x-whopgate-source", &caller.source),
        ]
        .concat(),
    )
}

/// The demo's stand-in for Whop's checkout, where the gate sends a signed-in user without
/// access.
fn checkout(browser: bool) -> (String, &'static str) {
    let line = format!("Checkout (demo): here a buyer would pay on Whop for {PRODUCT}, then come back and be let in.");
    if browser {
        (
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Checkout (demo)</title></head>\n\
                 <body><h1 id=\"checkout\">Checkout</h1><p>{line}</p></body></html>\n"
            ),
            "text/html; charset=utf-8",
        )
    } else {
        (format!("{line}\n"), "text/plain; charset=utf-8")
    }
}
