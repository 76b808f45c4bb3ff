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
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How many recent changes [`HostDma`] remembers for the invariant check of debug builds.
pub const RECENT: usize = 64;

/// The host's DMA: KCore's SMMU and the host-DMA stage-2 table its streams go through.
#[derive(Debug)]
pub struct HostDma {
    /// The device.
    pub dev: SmmuDev,
    /// The table.
    pub table: HostDmaTable,
    /// The last [`RECENT`] pages whose mapping changed (a ring indexed by `changes`): the
    /// invariant check after each host trap in debug builds re-examines these rather than
    /// every page of RAM.
    recent: [AtomicU64; RECENT],
    changes: AtomicU64,
    /// `changes` when the invariants last examined the table (`u64::MAX`: never).
    checked: AtomicU64,
}

impl Default for HostDma {
    fn default() -> Self {
        Self::new()
    }
}

impl HostDma {
    /// No SMMU yet: boot gives the table its pool and takes the device.
    pub const fn new() -> Self {
        HostDma {
            dev: SmmuDev::new(),
            table: HostDmaTable::new(crate::spt::mmioptalloc::SptPool::new(0, 0)),
            recent: [const { AtomicU64::new(0) }; RECENT],
            changes: AtomicU64::new(0),
            checked: AtomicU64::new(u64::MAX),
        }
    }

    fn note_change(&self, pfn: Pfn) {
        let n = self.changes.load(Relaxed);
        self.recent[n as usize % RECENT].store(pfn, Relaxed);
        self.changes.store(n + 1, Relaxed);
    }

    /// The pages whose mapping changed since the last call, or `None` when the table was never
    /// examined or more than [`RECENT`] changed (then the caller examines all of it). Call
    /// with the ownership records quiescent (`s2page` held).
    pub fn changed_since_checked(&self) -> Option<impl Iterator<Item = Pfn> + '_> {
        let (now, then) = (self.changes.load(Relaxed), self.checked.swap(self.changes.load(Relaxed), Relaxed));
        (then != u64::MAX && now - then <= RECENT as u64)
            .then(|| (then..now).map(|i| self.recent[i as usize % RECENT].load(Relaxed)))
    }

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
                self.note_change(pfn);
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
            self.note_change(pfn);
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
