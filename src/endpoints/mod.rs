//! whopgate's own endpoints under `prefix` (SPEC §5), and what they share.

pub mod redirect;
