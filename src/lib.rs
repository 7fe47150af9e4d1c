//! whopgate: the gate in front of an app sold on Whop.

pub mod mock;
