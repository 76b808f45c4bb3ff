//! Layers 1-4: KCore's locks.
//!
//! SeKVM verifies its ticket lock in four views, and so we build it: the ticket primitive
//! ([`lockops`]), the same lock seen as a FIFO queue of waiters ([`lockopsq`]), seen as atomic
//! hold/release events with an owner ([`lockopsh`]), and the named locks KCore uses with
//! their fixed acquisition order ([`locks`]).

pub mod lockops;
pub mod lockopsh;
pub mod lockopsq;
#[allow(clippy::module_inception)]
pub mod locks;

pub use locks::{LockGuard, LockId, Locks};
