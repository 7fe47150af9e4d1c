//! The security suite: ways around the gate, each tried against the real `whopgate` binary over
//! real sockets, with the raw bytes the attacker sends and what the app behind it received.
//!
//! Read it as a list of attacks, one module a class:
//!
//! | module | the attacker tries to |
//! | --- | --- |
//! | [`host`] | be judged under one host and served by the app under another |
//! | [`upgrade`] | turn a judged request into a tunnel that carries requests never judged |
//! | [`overrides`] | have the app run another method or path than the one judged |
//! | [`smuggling`] | hide a second request inside the first, or frame the body two ways |
//! | [`identity`] | tell the app who they are themselves |
//! | [`paths`] | spell a protected path so the gate reads another one |
//!
//! Every test names the answer the attacker gets and asserts what reached the app: for an attack
//! that must not pass, nothing did, or only the request that was judged.

#[path = "../integration/support/mod.rs"]
mod support;

mod app;
mod client;

mod host;
mod identity;
mod overrides;
mod paths;
mod smuggling;
mod upgrade;
