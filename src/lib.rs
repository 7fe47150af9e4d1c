//! whopgate: the gate in front of an app sold on Whop.
//!
//! For every request whopgate finds out who is calling, finds the route rule the request falls
//! under, decides whether that user has the access the rule requires, and then forwards the request
//! with identity headers the app can trust, or answers with a denial.
//!
//! Where things happen, in the order a request meets them:
//!
//! | step | module |
//! | --- | --- |
//! | accepted (listeners, limits, shutdown) | `server` |
//! | host settled, path normalised | `authority`, `path` |
//! | matched to a rule | `route` |
//! | judged, answered if denied | `gate` |
//! | forwarded to the upstream | `proxy` |
//! | measured | `metrics`, `admin` |
//!
//! Beside the request path: who may be asked about access is `access` (a backend per Whop
//! API, behind one cache, over `whop`); how identity is found is `identity`; Whop's webhooks,
//! which make the cache forget, are `webhook`. The configuration is [`config`]; the sidecar
//! binary wires it all in `sidecar`, and its command line is `cli` (feature `cli`).
//!
//! # As a library
//!
//! In an axum or any tower service, the gate is a layer: describe it ([`Config`] from a file
//! or [`GateBuilder`] in code), build a [`Gate`], and wrap the app in [`Gate::layer`]. The app
//! then reads the caller from the identity headers ([`X_WHOP_USER_ID`] and the others) or the
//! [`WhopUser`] in the request's extensions. A library build needs none of the command line:
//!
//! ```toml
//! whopgate = { version = "0.1", default-features = false, features = ["axum"] }
//! ```
//!
//! Only what that use needs is public; everything else is the sidecar's and may change.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// The sidecar's parts (proxy, server, admin) are built only with the `cli` feature; what only
// they use is not dead in a library build.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]

mod access;
mod authority;
mod endpoints;
mod gate;
mod identity;
mod metrics;
mod path;
mod per_core;
mod per_thread;
mod response;
mod route;
mod webhook;
mod whop;

pub mod config;

#[cfg(feature = "cli")]
mod admin;
#[cfg(feature = "cli")]
mod check;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
mod demo;
#[cfg(feature = "cli")]
mod log;
#[cfg(feature = "cli")]
mod proxy;
#[cfg(feature = "cli")]
mod server;
#[cfg(feature = "cli")]
mod sidecar;

pub use config::{Config, ConfigErrors};
#[cfg(feature = "axum")]
pub use gate::MissingWhopUser;
pub use gate::{
    Cleared, Gate, GateBody, GateBuilder, GateError, GateLayer, GateService, Handoff, IdentityHeaders, InsertIdentity,
    RequestBody, ResponseFuture, StreamControl, StreamEnd, WhopUser, X_WHOP_ACCESS_LEVEL, X_WHOP_RESOURCE_ID,
    X_WHOP_USER_ID, X_WHOPGATE_SOURCE,
};
pub use identity::Source;
pub use whop::Access;

/// The access cache, for `examples/decision_memory.rs` (the benchmark's memory row): not an API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::access::{AccessCache, CacheSettings, CheckAccess};
    pub use crate::config::WhopConfig;
    pub use crate::metrics::Metrics;
    pub use crate::whop::{Access, WhopClient};
}
