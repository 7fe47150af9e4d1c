//! What `whopgate mock-whop` and `whopgate mock-whop token USER` run; the binary only parses
//! the arguments.

use std::net::SocketAddr;
use std::path::Path;

use super::MockWhop;
use super::error::MockError;
use super::keys::TokenOptions;
use super::state::MockState;

fn load(state_file: Option<&Path>) -> Result<MockState, MockError> {
    match state_file {
        Some(p) => MockState::load(p),
        None => Ok(MockState::default()),
    }
}

/// Serves the mock on `listen` with the state file (or the built-in state) until Ctrl-C or
/// SIGTERM. Prints one line on stdout when ready:
/// `mock Whop API listening on http://ADDR (api key: mock_api_key, app id: app_…)`.
pub async fn run_cli(listen: SocketAddr, state_file: Option<&Path>) -> Result<(), MockError> {
    let state = load(state_file)?;
    let mock = MockWhop::start(listen, state)
        .map_err(|source| MockError::Io { context: format!("listening on {listen}"), source })?;
    println!("mock Whop API listening on {} (api key: {}, app id: {})", mock.base_url(), mock.api_key(), mock.app_id());
    let signal = wait_for_signal().await;
    mock.shutdown().await;
    signal.map_err(|source| MockError::Io { context: "waiting for Ctrl-C/SIGTERM".into(), source })
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// A user token that a mock started with the same state file (or the built-in state) accepts,
/// valid for one hour. Refuses a state whose signing key is generated at start: such a token
/// could only verify against this very process.
pub fn token_cli(user: &str, state_file: Option<&Path>) -> Result<String, MockError> {
    if let Some(path) = state_file {
        let raw = MockState::read_unresolved(path)?;
        let kid = raw.signing_kid().to_owned();
        if raw.keys.iter().any(|k| k.kid == kid && k.generate) {
            return Err(MockError::InvalidState(format!(
                "state file {}: the signing key {kid:?} has generate = true, so each mock \
                 process makes its own and a token minted here would not verify; give it a \
                 private_key, or ask the running mock: curl -X POST \
                 http://127.0.0.1:12312/_mock/token -d '{{\"user_id\":\"{user}\"}}'",
                path.display()
            )));
        }
    }
    load(state_file)?.mint_token(user, &TokenOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_cli_fails_clearly_before_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[[users]]\nid = \"user_a\"\nfavourite = 1\n").unwrap();
        let e = run_cli("127.0.0.1:0".parse().unwrap(), Some(&path)).await.unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("favourite"), "{e}");

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = run_cli(addr, None).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("listening on {addr}")), "{e}");
    }

    #[test]
    fn token_cli_uses_the_fixed_key() {
        let t = token_cli("user_alice", None).unwrap();
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.kid.as_deref(), Some("mock-key-1"));
    }

    #[test]
    fn token_cli_refuses_generated_signing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[[keys]]\nkid = \"k\"\ngenerate = true\n").unwrap();
        let e = token_cli("user_alice", Some(&path)).unwrap_err().to_string();
        assert!(e.contains("generate = true"), "{e}");
        std::fs::write(&path, "app_id = \"app_other\"\n").unwrap();
        let t = token_cli("user_alice", Some(&path)).unwrap();
        let c = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&t).unwrap().claims;
        assert_eq!(c["aud"], "app_other");
    }
}
