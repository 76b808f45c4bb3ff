//! Specification of layers 9-12: the host-DMA domain is a set of page frames the host's
//! devices may reach, and the SMMU may remember a translation it walked until KCore removes
//! it. A page joins the set when it becomes the host's and leaves it when it stops being the
//! host's; `unmap` is complete only when the SMMU remembers nothing of the page ("TLB-clean").
//! A device's access succeeds exactly when the page is in the set or (the hazard this rules
//! out) still remembered.

use std::collections::BTreeSet;

/// The abstract host-DMA domain and SMMU TLB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbsHostDma {
    /// Pages mapped for the host's devices.
    pub mapped: BTreeSet<u64>,
    /// Pages whose translation the SMMU may have cached.
    pub cached: BTreeSet<u64>,
}

impl AbsHostDma {
    /// The page is the host's again.
    pub fn map(&self, pfn: u64) -> AbsHostDma {
        let mut s = self.clone();
        s.mapped.insert(pfn);
        s
    }

    /// The page stops being the host's: gone from the table and from the SMMU's TLB.
    pub fn unmap(&self, pfn: u64) -> AbsHostDma {
        let mut s = self.clone();
        s.mapped.remove(&pfn);
        s.cached.remove(&pfn);
        s
    }

    /// A device accesses the page: allowed, and cached, when mapped; refused otherwise (a
    /// cached translation of an unmapped page would be the bug).
    pub fn dma(&self, pfn: u64) -> (bool, AbsHostDma) {
        let mut s = self.clone();
        let ok = self.mapped.contains(&pfn) || self.cached.contains(&pfn);
        if ok {
            s.cached.insert(pfn);
        }
        (ok, s)
    }

    /// No cached translation outlives its page's removal.
    pub fn tlb_clean(&self) -> bool {
        self.cached.is_subset(&self.mapped)
    }
}
