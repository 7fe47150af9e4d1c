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
//! | accepted (listeners, limits, shutdown) | [`server`] |
//! | host settled, path normalised | [`authority`], [`path`] |
//! | matched to a rule | [`route`] |
//! | judged, answered if denied | [`gate`] |
//! | forwarded to the upstream | [`proxy`] |
//! | measured | [`metrics`], [`admin`] |
//!
//! Beside the request path: who may be asked about access is [`access`] (a backend per Whop
//! API, behind one cache, over [`whop`]); how identity is found is [`identity`]; Whop's
//! webhooks, which make the cache forget, are [`webhook`].
//!
//! The configuration is [`config`]; the sidecar binary wires it all in [`sidecar`].
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod authority;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
#[cfg(feature = "cli")]
pub mod demo;
pub mod endpoints;
pub mod gate;
pub mod identity;
#[cfg(feature = "cli")]
pub mod log;
pub mod metrics;
pub mod path;
pub mod per_core;
pub mod proxy;
pub mod response;
pub mod route;
pub mod server;
pub mod sidecar;
pub mod webhook;
pub mod whop;

pub use config::Config;
pub use gate::{Gate, GateBuilder, GateLayer, GateService, WhopUser};
