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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcore::KCore;
    use crate::machine::sim::SimMachine;
    use crate::pt::ptalloc::PagePool;
    use crate::{BLOCK_1G, BLOCK_2M};

    const RAM: u64 = 0x4000_0000;
    /// KCore's own memory in these tests: metadata and tables at the top of a 2 GiB machine.
    const KMEM: u64 = 0xbf00_0000;

    /// A machine with RAM [1 GiB, 3 GiB); KCore's metadata and pool in its last 16 MiB.
    fn kcore() -> KCore<SimMachine> {
        let m = SimMachine::new(KMEM, 16 << 20);
        let mb = MemBlocks::new(&[(RAM, 2 * BLOCK_1G)]).unwrap();
        let pool = PagePool::new(KMEM + (8 << 20), KMEM + (16 << 20));
        let k = KCore::new(m, mb, KMEM, pool, 40).unwrap();
        k.mem().protect_kcore(KMEM, KMEM + (16 << 20)).unwrap();
        k
    }

    #[test]
    fn host_ram_gets_the_largest_block_that_holds_only_host_pages() {
        let k = kcore();
        // The first GiB holds no KCore page: one 1 GiB block.
        let m = k.mem().map_page_host(RAM + 0x1234).unwrap();
        assert_eq!((m.base, m.level, m.device, m.already), (RAM, 1, false, false));
        // The second GiB holds KCore's memory at its top: 2 MiB blocks below it.
        let m = k.mem().map_page_host(RAM + BLOCK_1G + 5 * BLOCK_2M + 8).unwrap();
        assert_eq!((m.base, m.level), (RAM + BLOCK_1G + 5 * BLOCK_2M, 2));
        let leaf = k.host.npt.walk(&k.m, RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000).unwrap();
        assert_eq!(leaf.output(RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000), RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000);
        // Mapping again is recognised as done.
        assert!(k.mem().map_page_host(RAM + 0x5000).unwrap().already);
    }

    #[test]
    fn kcore_pages_are_refused_and_never_mapped() {
        let k = kcore();
        for pa in [KMEM, KMEM + 0x1000, KMEM + (16 << 20) - 8] {
            assert_eq!(k.mem().map_page_host(pa), Err(Error::Denied));
            assert!(k.host.npt.walk(&k.m, pa).is_none());
        }
    }

    #[test]
    fn a_page_next_to_kcore_is_mapped_alone() {
        let k = kcore();
        // Protect one page in the middle of the first GiB: its 2 MiB chunk and its GiB can no
        // longer be block-mapped, so the neighbours map as 4 KiB pages and 2 MiB blocks.
        let hole = RAM + 3 * BLOCK_2M + 0x7000;
        k.mem().protect_kcore(hole, hole + PAGE_SIZE).unwrap();
        let m = k.mem().map_page_host(hole + PAGE_SIZE).unwrap();
        assert_eq!((m.base, m.level), (hole + PAGE_SIZE, 3));
        let m = k.mem().map_page_host(RAM).unwrap();
        assert_eq!((m.base, m.level), (RAM, 2));
        assert_eq!(k.mem().map_page_host(hole), Err(Error::Denied));
    }

    #[test]
    fn protecting_a_mapped_page_unmaps_it_with_tlb_invalidation() {
        let k = kcore();
        k.mem().map_page_host(RAM).unwrap();
        k.m.take_tlb_log();
        k.mem().protect_kcore(RAM + BLOCK_2M, RAM + BLOCK_2M + PAGE_SIZE).unwrap();
        assert!(k.host.npt.walk(&k.m, RAM).is_none(), "the 1 GiB block around it is gone");
        assert_eq!(k.m.take_tlb_log(), vec![crate::machine::sim::TlbOp::Ipa { vmid: 0, ipa: RAM }]);
        assert_eq!(k.mem().map_page_host(RAM + BLOCK_2M), Err(Error::Denied));
        assert_eq!(k.mem().map_page_host(RAM).unwrap().level, 2);
    }

    #[test]
    fn device_memory_is_mapped_as_device_in_blocks_that_avoid_ram() {
        let k = kcore();
        let uart = 0x0900_0000;
        let m = k.mem().map_page_host(uart).unwrap();
        assert_eq!((m.base, m.level, m.device), (0, 1, true));
        let leaf = k.host.npt.walk(&k.m, uart).unwrap();
        assert_eq!(leaf.desc & crate::arch::desc::S2_MEMATTR_DEVICE, crate::arch::desc::S2_MEMATTR_DEVICE);
        assert_ne!(leaf.desc & crate::arch::desc::S2_XN, 0);
        // High PCIe space far above RAM.
        let m = k.mem().map_page_host(0x80_0000_0000 + 0x10).unwrap();
        assert_eq!((m.level, m.device), (1, true));
    }

    #[test]
    fn addresses_outside_the_ipa_space_are_invalid() {
        let k = kcore();
        assert_eq!(k.mem().map_page_host(1 << 40), Err(Error::InvalidParameter));
        assert_eq!(k.mem().map_page_host(u64::MAX), Err(Error::InvalidParameter));
    }

    #[test]
    fn shared_vm_pages_map_one_page_at_a_time() {
        let k = kcore();
        let pfn = (RAM + 0x10_0000) >> PAGE_SHIFT;
        let mine = PageInfo { owner: Owner::Vm(3), count: 0, gfn: 0x10 };
        k.meta.set(&k.m, &k.mb, pfn, mine);
        assert_eq!(k.mem().map_page_host(pfn << PAGE_SHIFT), Err(Error::Denied));
        k.meta.set(&k.m, &k.mb, pfn, PageInfo { count: 1, ..mine });
        let m = k.mem().map_page_host(pfn << PAGE_SHIFT).unwrap();
        assert_eq!((m.base, m.level), (pfn << PAGE_SHIFT, 3));
    }

    #[test]
    fn concurrent_faults_on_the_same_range_map_once() {
        let k = std::sync::Arc::new(kcore());
        let threads: Vec<_> = (0..4)
            .map(|cpu| {
                let k = k.clone();
                std::thread::spawn(move || {
                    SimMachine::set_cpu(cpu);
                    (0..64u64)
                        .map(|i| k.mem().map_page_host(RAM + BLOCK_1G + i * BLOCK_2M).unwrap().already)
                        .filter(|&a| !a)
                        .count()
                })
            })
            .collect();
        let fresh: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(fresh, 64, "each 2 MiB block is installed exactly once");
    }
}
