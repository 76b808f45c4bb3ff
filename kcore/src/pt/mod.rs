//! Layers 5-8: stage-2 (and KCore's EL2 stage-1) page tables.

pub mod nptops;
pub mod nptwalk;
pub mod ptalloc;
pub mod ptwalk;
