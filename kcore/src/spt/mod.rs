//! The SMMU's translation tables (layers 9-12): the host-DMA stage-2 table every stream of
//! the host's devices goes through. It maps exactly the pages the host owns (identity, 4 KiB
//! leaves, filled at boot and kept in step with every ownership change) and the MSI doorbell
//! page(s), and nothing else. It is separate from the host's CPU stage-2, which KCore fills
//! lazily on faults: device DMA cannot fault and retry.

pub mod mmioptalloc;
pub mod mmioptwalk;
pub mod mmiosptops;
pub mod mmiosptwalk;
