//! Layer 12 (MmioSPTOps): the host-DMA table's locked operations, with the invalidation the
//! SMMU needs. Removing a page is complete only when no device can reach it any more, so
//! `unmap` returns after the leaf is gone, the write is visible to the SMMU's walker, and a
//! CMD_TLBI_S12_VMALL of VMID 0 followed by a CMD_SYNC has completed. The whole-VMID
//! invalidation is the one that also removes combined stage-1+2 entries; an invalidation by
//! IPA was measured on QEMU to leave a nested translation live (reference: smmuv3.md 2.7).
//! Adding a page needs no invalidation: an invalid entry is not cached.

use super::mmiosptwalk::HostDmaTable;
use crate::Pfn;
use crate::error::Result;
use crate::locks::{LockId, Locks};
use crate::machine::{HOST_VMID, Machine};
use crate::smmu::queue::SmmuDev;
use crate::smmu::raw::{self, Ste};

/// The host's DMA: KCore's SMMU and the host-DMA stage-2 table its streams go through.
#[derive(Debug)]
pub struct HostDma {
    /// The device.
    pub dev: SmmuDev,
    /// The table.
    pub table: HostDmaTable,
}

impl HostDma {
    /// Is the host's DMA under KCore's control (an SMMU taken at boot)?
    pub fn active(&self) -> bool {
        self.dev.present()
    }

    /// The STE every host stream gets while the host cannot program the SMMU: stage 2 only,
    /// through the host-DMA table, VMID 0.
    pub fn stream_ste(&self) -> Option<Ste> {
        let w = self.table.walker()?;
        Some(raw::ste_s2_only(HOST_VMID, crate::arch::vtcr_el2(w.npt.ia_bits, false), w.npt.root))
    }

    /// Map page `pfn` (host-owned RAM, or with `device` a doorbell page) for the host's
    /// devices. Boot, or an ownership change back to the host.
    pub fn map<M: Machine>(&self, m: &M, locks: &Locks, pfn: Pfn, device: bool) -> Result<()> {
        if self.table.walker().is_none() {
            return Ok(());
        }
        let _spt = locks.acquire(LockId::Spt, m.cpu_index());
        match self.table.set(m, pfn, device) {
            Err(crate::Error::Exists) => Ok(()),
            r => {
                m.publish_table_writes();
                r
            }
        }
    }

    /// Unmap page `pfn` from the host's devices and wait until no device can reach it.
    pub fn unmap<M: Machine>(&self, m: &M, locks: &Locks, pfn: Pfn) {
        if self.table.walker().is_none() {
            return;
        }
        let _spt = locks.acquire(LockId::Spt, m.cpu_index());
        if self.table.clear(m, pfn) {
            m.publish_table_writes();
            if self.active() {
                self.dev.invalidate_vmid(m, locks, HOST_VMID);
            }
        }
    }

    /// Is `pfn` reachable by the host's devices?
    pub fn maps<M: Machine>(&self, m: &M, pfn: Pfn) -> bool {
        self.table.translate(m, pfn) == Some(pfn)
    }
}
