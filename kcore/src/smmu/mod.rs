//! KCore's SMMUv3 (layers 22-26). Layer 22, [`raw`], holds the architecture's encodings;
//! [`queue`] is KCore's own use of the device (boot takeover, its command and event queues).

pub mod queue;
pub mod raw;
