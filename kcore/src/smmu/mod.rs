//! KCore's SMMUv3 (layers 22-26). Layer 22, [`raw`], holds the architecture's encodings.

pub mod aux;
pub mod core;
pub mod coreaux;
pub mod raw;
