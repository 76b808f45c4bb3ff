//! Layer 11 (MmioSPTWalk): the host-DMA domain, an identity map of page frames in one SMMU
//! stage-2 table (VMID 0): `pfn` is either mapped to itself (RAM as Normal write-back, the
//! MSI doorbell as Device memory) or absent.

use super::mmioptalloc::SptPool;
use super::mmioptwalk::SptWalk;
use crate::arch;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pt::nptwalk::Npt;
use crate::{PAGE_SHIFT, Pfn};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The host-DMA table: root and input size, set once at boot.
#[derive(Debug)]
pub struct HostDmaTable {
    root: AtomicU64,
    ia_bits: AtomicU32,
    /// Where its pages come from.
    pub pool: SptPool,
}

impl HostDmaTable {
    /// A table that does not exist yet, over the SMMU pool `pool`.
    pub const fn new(pool: SptPool) -> Self {
        HostDmaTable { root: AtomicU64::new(0), ia_bits: AtomicU32::new(0), pool }
    }

    /// Allocate the root for an `ia_bits` input space (boot).
    pub fn init<M: Machine>(&self, m: &M, ia_bits: u32) -> Result<()> {
        let pages = arch::s2_root_pages(ia_bits);
        let root = if pages == 1 { self.pool.alloc(m)? } else { self.pool.pages().alloc_contiguous(m, pages)? };
        self.ia_bits.store(ia_bits, Relaxed);
        self.root.store(root, Relaxed);
        Ok(())
    }

    /// The walker, once the table exists.
    pub fn walker(&self) -> Option<SptWalk> {
        let root = self.root.load(Relaxed);
        (root != 0).then(|| SptWalk { npt: Npt { root, ia_bits: self.ia_bits.load(Relaxed) } })
    }

    /// Where a device's access to page `pfn` goes: `Some(pfn)` when mapped.
    pub fn translate<M: Machine>(&self, m: &M, pfn: Pfn) -> Option<Pfn> {
        let w = self.walker()?;
        let ipa = pfn.checked_mul(1 << PAGE_SHIFT).filter(|&a| w.npt.covers(a))?;
        w.leaf(m, ipa).map(|d| (d & arch::desc::ADDR_MASK) >> PAGE_SHIFT)
    }

    /// Map `pfn` to itself: RAM, or (`device`) a doorbell page.
    pub fn set<M: Machine>(&self, m: &M, pfn: Pfn, device: bool) -> Result<()> {
        let w = self.walker().ok_or(Error::BadState)?;
        let pa = pfn << PAGE_SHIFT;
        if !w.npt.covers(pa) {
            return Err(Error::InvalidParameter);
        }
        let d = if device { arch::s2_device_leaf(pa, 3) } else { arch::s2_normal_leaf(pa, 3) };
        w.set_leaf(m, &self.pool, pa, d)
    }

    /// Unmap `pfn`; whether it was mapped.
    pub fn clear<M: Machine>(&self, m: &M, pfn: Pfn) -> bool {
        self.walker().is_some_and(|w| w.npt.covers(pfn << PAGE_SHIFT) && w.clear_leaf(m, pfn << PAGE_SHIFT))
    }
}
