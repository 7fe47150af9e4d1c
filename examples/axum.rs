//! whopgate as a tower layer inside an axum app.
//!
//! ```sh
//! cargo run --example axum
//! ```
//!
//! To stay self-contained the example starts whopgate's local Whop stand-in (the `whopgate-mock` crate)
//! and points the gate at it; a real app loads its `whopgate.toml` with `Config::load` instead.

use axum::Router;
use axum::routing::get;
use whopgate::{Config, Gate, WhopUser};
use whopgate_mock::{MockState, MockWhop};

/// A handler behind the gate: it only runs for users with access, and knows who they are.
async fn dashboard(user: WhopUser) -> String {
    format!("hi {}, you have {} access\n", user.id, user.access_level.map_or("no", |a| a.as_str()))
}

/// A public page: the identity is there only when the caller sent a valid token.
async fn home(user: Option<WhopUser>) -> String {
    match user {
        Some(user) => format!("welcome back, {}\n", user.id),
        None => "welcome, visitor\n".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockWhop::start("127.0.0.1:0".parse()?, MockState::default())?;
    let config = Config::from_toml(
        &format!(
            r#"
            [whop]
            api_key = "{key}"
            app_id = "{app}"
            api_base = "{base}"

            [[route]]
            path = "/dashboard"
            require = ["prod_mockproduct1"]

            [[route]]
            path = "/"
            public = true
            "#,
            key = mock.api_key(),
            app = mock.app_id(),
            base = mock.base_url(),
        ),
        "example.toml",
    )?;

    let gate = Gate::from_config(&config).await?;
    let app = Router::new()
        .route("/", get(home))
        .route("/dashboard", get(dashboard))
        .merge(gate.endpoints()) // /.whopgate/me (and sign-in, when sessions are configured)
        .layer(gate.layer());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let token = mock.mint_token("user_alice")?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("try: curl -H 'x-whop-user-token: {token}' http://{}/dashboard", listener.local_addr()?);
    println!("and: curl -H 'x-whop-user-token: {token}' http://{}/.whopgate/me", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
