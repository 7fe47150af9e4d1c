//! A minimal axum app behind `GateLayer`, answering `ok` on every path it lets through: row (g)
//! of the benchmark in `bench/` (the gate inside an app instead of in front of one).
//!
//! ```sh
//! cargo run --release --example axum_gated -- whopgate.toml
//! ```
//!
//! It listens on the config's `listen` address and uses its routes and `[whop]` settings.

use axum::Router;
use axum::routing::any;
use whopgate::{Config, Gate};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: axum_gated CONFIG")?;
    let config = Config::load(path.as_ref())?;
    let gate = Gate::from_config(&config).await?;
    gate.keys_loaded().await;
    let app = Router::new().fallback(any(|| async { "ok\n" })).layer(gate.layer());
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("axum_gated ready on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
