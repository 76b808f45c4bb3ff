//! Layer 16 (MemAux): the checked ownership transitions. This part is the host's
//! side: marking KCore's memory as KCore's before the host runs, and the lazy identity map of
//! the host (`map_page_host`), run on every host stage-2 translation fault.

use super::memblock::MemBlocks;
use super::pagemgmt::{CHUNK_PAGES, Owner, PageInfo, PageMeta};
use crate::arch::{self, level_size};
use crate::error::{Error, Result};
use crate::locks::{LockId, Locks};
use crate::machine::Machine;
use crate::pt::nptops::S2Table;
use crate::{BLOCK_2M, PAGE_SHIFT, PAGE_SIZE, align_down};

/// What a successful host fault mapping installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMapping {
    /// First IPA (= PA) of the mapping.
    pub base: u64,
    /// Level of the leaf (1: 1 GiB, 2: 2 MiB, 3: 4 KiB).
    pub level: u8,
    /// Device memory (vs RAM).
    pub device: bool,
    /// Another CPU had mapped it already.
    pub already: bool,
}

/// The memory state MemAux works on.
pub struct MemAux<'a, M: Machine> {
    /// The machine.
    pub m: &'a M,
    /// KCore's locks.
    pub locks: &'a Locks,
    /// RAM regions.
    pub mb: &'a MemBlocks,
    /// Ownership records.
    pub meta: &'a PageMeta,
    /// The host's stage-2 table.
    pub host: &'a S2Table,
}

impl<M: Machine> MemAux<'_, M> {
    /// Mark every RAM page of `[start, end)` as KCore's and make sure the host does not map
    /// it. Used at boot for KCore's image, stacks, metadata and table pools.
    pub fn protect_kcore(&self, start: u64, end: u64) -> Result<()> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end < start {
            return Err(Error::InvalidParameter);
        }
        let cpu = self.m.cpu_index();
        let _s2 = self.locks.acquire(LockId::S2Page, cpu);
        let mut pa = start;
        while pa < end {
            let pfn = pa >> PAGE_SHIFT;
            if self.meta.get(self.m, self.mb, pfn).is_some() {
                self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
                self.host.clear_pfn_host(self.m, self.locks, pfn);
            }
            pa += PAGE_SIZE;
        }
        Ok(())
    }

    /// `map_page_host`: resolve a host stage-2 translation fault at `ipa` by identity-mapping
    /// the largest block around it that stays inside one kind of memory: RAM the host may map
    /// (host-owned, or a VM page shared with the host, page by page), or device memory (any
    /// range with no RAM in it). RAM the host may not touch gives [`Error::Denied`].
    pub fn map_page_host(&self, ipa: u64) -> Result<HostMapping> {
        if !self.host.npt.covers(ipa) {
            return Err(Error::InvalidParameter);
        }
        let cpu = self.m.cpu_index();
        // s2page stays held while the table is updated, so the page cannot change hands
        // between the ownership check and the mapping (lock order s2page -> pt).
        let _s2 = self.locks.acquire(LockId::S2Page, cpu);
        let _pt = self.locks.acquire(LockId::Pt(self.host.vmid), cpu);
        let min_level = self.host.npt.first_non_table_level(self.m, ipa).max(1);
        let pfn = ipa >> PAGE_SHIFT;
        let (level, device) = match self.meta.get(self.m, self.mb, pfn) {
            Some(info) => {
                let shared = matches!(info.owner, Owner::Vm(_)) && info.count > 0;
                if info.owner != Owner::Host && !shared {
                    return Err(Error::Denied);
                }
                let level = if shared { 3 } else { self.largest_host_ram_level(ipa, min_level) };
                (level, false)
            }
            None => (self.largest_device_level(ipa, min_level), true),
        };
        let base = align_down(ipa, level_size(level));
        if let Some(leaf) = self.host.npt.walk(self.m, ipa) {
            // Resolved by another CPU between the fault and now.
            return Ok(HostMapping { base: align_down(ipa, leaf.size()), level: leaf.level, device, already: true });
        }
        let d = if device { arch::s2_device_leaf(base, level) } else { arch::s2_normal_leaf(base, level) };
        self.host.map_locked(self.m, base, level, d)?;
        Ok(HostMapping { base, level, device, already: false })
    }

    /// The largest level (>= `min_level`) whose block around `ipa` is RAM of one region with
    /// every page plainly host-owned.
    fn largest_host_ram_level(&self, ipa: u64, min_level: u8) -> u8 {
        let region = self.mb.search(ipa).expect("caller checked RAM");
        for level in min_level..3 {
            let size = level_size(level);
            let base = align_down(ipa, size);
            if base < region.base || base + size > region.end() {
                continue;
            }
            let chunks = size / BLOCK_2M;
            let first = base >> PAGE_SHIFT;
            let clear =
                (0..chunks).all(|c| self.meta.chunk_blockers(self.m, self.mb, first + c * CHUNK_PAGES) == Some(0));
            if clear {
                return level;
            }
        }
        3
    }

    /// The largest level (>= `min_level`) whose block around `ipa` holds no RAM.
    fn largest_device_level(&self, ipa: u64, min_level: u8) -> u8 {
        for level in min_level..3 {
            let size = level_size(level);
            let base = align_down(ipa, size);
            if !self.mb.intersects(base, base + size) {
                return level;
            }
        }
        3
    }
}
