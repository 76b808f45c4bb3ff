//! Layer 10 (MmioPTWalk): walks of an SMMU stage-2 table. SMMUv3 stage-2 tables use the
//! VMSAv8-64 stage-2 format (IHI 0070 3.4, with the STE's VTCR and S2TTB in place of
//! VTCR_EL2 and VTTBR_EL2), so this is layer 7's walker over the SMMU's pool, restricted to
//! 4 KiB leaves: a block would have to be split, break-before-make, while devices use it.

use super::mmioptalloc::SptPool;
use crate::error::Result;
use crate::machine::Machine;
use crate::pt::nptwalk::Npt;

/// An SMMU stage-2 table: its root and input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SptWalk {
    /// The walker (root, input bits).
    pub npt: Npt,
}

impl SptWalk {
    /// The descriptor of the 4 KiB leaf mapping `ipa`, if any.
    pub fn leaf<M: Machine>(&self, m: &M, ipa: u64) -> Option<u64> {
        self.npt.walk(m, ipa).filter(|l| l.level == 3).map(|l| l.desc)
    }

    /// Write 4 KiB leaf `d` for `ipa`, allocating tables from `pool`; the entry must be
    /// invalid ([`crate::Error::Exists`] otherwise).
    pub fn set_leaf<M: Machine>(&self, m: &M, pool: &SptPool, ipa: u64, d: u64) -> Result<()> {
        self.npt.set(m, pool.pages(), ipa, 3, d)
    }

    /// Invalidate the leaf for `ipa`; whether there was one. The caller invalidates the
    /// SMMU's TLB.
    pub fn clear_leaf<M: Machine>(&self, m: &M, ipa: u64) -> bool {
        self.npt.clear(m, ipa).is_some()
    }

    /// Visit every leaf as `(ipa, descriptor)`.
    pub fn for_each_leaf<M: Machine>(&self, m: &M, mut f: impl FnMut(u64, u64)) {
        self.npt.for_each_leaf(m, |ipa, l| f(ipa, l.desc));
    }
}
