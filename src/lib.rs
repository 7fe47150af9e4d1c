//! whopgate: the gate in front of an app sold on Whop.
#![warn(missing_docs)]

pub mod config;
