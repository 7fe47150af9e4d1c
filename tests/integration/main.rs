//! Integration tests: the real `whopgate` binary over real sockets, with real upstream servers.

mod support;

mod access_backends;
mod app_websocket;
mod browser;
mod cli;
mod decisions;
mod deploy_files;
mod failures;
mod forward_auth;
mod forwarding;
mod identity_sources;
mod library_build;
mod open_streams;
mod paths;
mod replicas;
mod signin;
mod streaming;
mod tls;
mod tokens;
mod upstream;
mod webhooks;
mod whop_api;
