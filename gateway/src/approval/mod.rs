//! Approvals: the pod-wide decision [`hub`], and the [`hold`] of one call until a person decides.

pub mod hold;
pub mod hub;

pub use hold::{Cleared, HeldCalls, Holds};
pub use hub::{Hub, Registration};
