//! Layer 8 (NPTOps): stage-2 table operations under the table's `pt(vmid)` lock, each one
//! descriptor write followed (for removals) by TLB invalidation before the lock is released.

use super::nptwalk::{Leaf, Npt};
use super::ptalloc::PagePool;
use crate::error::{Error, Result};
use crate::locks::{LockId, Locks};
use crate::machine::Machine;
use crate::{PAGE_SHIFT, PAGE_SIZE, Pfn};
use core::sync::atomic::{AtomicU64, Ordering};

/// One vmid's stage-2 table and the pool its table pages come from.
#[derive(Debug)]
pub struct S2Table {
    /// The owner's vmid (0 = host).
    pub vmid: u16,
    /// Root table, 0 until [`S2Table::init_root`].
    root: AtomicU64,
    /// Input (IPA) size in bits.
    pub ia_bits: u32,
    /// Pool for the root and intermediate tables.
    pub pool: PagePool,
}

impl S2Table {
    /// A table with no root yet, drawing pages from `pool`.
    pub const fn new(vmid: u16, ia_bits: u32, pool: PagePool) -> Self {
        S2Table { vmid, root: AtomicU64::new(0), ia_bits, pool }
    }

    /// Pages a root of this table takes ([`crate::arch::s2_root_pages`]).
    pub const fn root_pages(&self) -> u64 {
        crate::arch::s2_root_pages(self.ia_bits)
    }

    /// Allocate the root table from the pool's never-used range (KCore's reserve for the
    /// host). [`Error::Exists`] if there is one already, [`Error::NoMemory`] if the pool has
    /// no room for it.
    pub fn init_root<M: Machine>(&self, m: &M, locks: &Locks) -> Result<()> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        if self.root.load(Ordering::Acquire) != 0 {
            return Err(Error::Exists);
        }
        let root = self.pool.alloc_contiguous(m, self.root_pages())?;
        self.root.store(root, Ordering::Release);
        Ok(())
    }

    /// Make the [`S2Table::root_pages`] KCore-owned pages from `root` (aligned to their
    /// size) the root, zeroing them. [`Error::Exists`] if there is one already. The caller
    /// checked the pages and holds `s2page`.
    pub fn init_root_at<M: Machine>(&self, m: &M, locks: &Locks, root: u64) -> Result<()> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        if self.root.load(Ordering::Acquire) != 0 {
            return Err(Error::Exists);
        }
        if !root.is_multiple_of(self.root_pages() * PAGE_SIZE) {
            return Err(Error::InvalidParameter);
        }
        for n in 0..self.root_pages() {
            m.zero_page(root + n * PAGE_SIZE);
        }
        // The zeroed root is visible to the walker before the table can be installed.
        m.publish_table_writes();
        self.root.store(root, Ordering::Release);
        Ok(())
    }

    /// The table, if it has a root.
    pub fn npt(&self) -> Option<Npt> {
        match self.root.load(Ordering::Acquire) {
            0 => None,
            root => Some(Npt { root, ia_bits: self.ia_bits }),
        }
    }

    /// The table; callers have checked it exists (a missing host table is a KCore bug).
    pub fn expect_npt(&self) -> Npt {
        self.npt().expect("stage-2 table has a root")
    }

    /// The leaf mapping `ipa`, if any.
    pub fn walk<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64) -> Option<Leaf> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        self.npt()?.walk(m, ipa)
    }

    /// Install leaf `d` for `ipa` at `level`. An existing mapping gives `Err(Exists)`.
    pub fn map<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64, level: u8, d: u64) -> Result<()> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        self.map_locked(m, ipa, level, d)
    }

    /// [`S2Table::map`] for a caller that holds `pt(vmid)` already.
    pub fn map_locked<M: Machine>(&self, m: &M, ipa: u64, level: u8, d: u64) -> Result<()> {
        self.npt().ok_or(Error::NotFound)?.set(m, &self.pool, ipa, level, d)?;
        m.publish_table_writes();
        Ok(())
    }

    /// Remove the leaf mapping `ipa` (whatever its size) and invalidate the TLBs for it.
    /// Returns the removed leaf.
    pub fn unmap<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64) -> Option<Leaf> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        let leaf = self.npt()?.clear(m, ipa)?;
        // The TLBI must complete before the lock is released: the next holder may hand the
        // page to someone else (Transactional-Page-Table, Weak-Memory-Isolation).
        m.tlb_flush_ipa(self.vmid, ipa & !(leaf.size() - 1));
        Some(leaf)
    }

    /// Remove the host's mapping of `pfn` (the host stage-2 is an identity map, so the IPA is
    /// the PA). A block mapping around it is removed whole; the host refaults the rest of the
    /// block at a granularity that excludes `pfn`. Returns whether anything was mapped.
    pub fn clear_pfn_host<M: Machine>(&self, m: &M, locks: &Locks, pfn: Pfn) -> bool {
        debug_assert_eq!(self.vmid, crate::machine::HOST_VMID);
        self.unmap(m, locks, pfn << PAGE_SHIFT).is_some()
    }

    /// Remove every leaf for which `drop(input address, leaf)` holds, then invalidate this
    /// VMID's TLB entries if any went (before the lock is released, as for [`S2Table::unmap`]).
    pub fn clear_leaves<M: Machine>(&self, m: &M, locks: &Locks, drop: impl FnMut(u64, Leaf) -> bool) -> u64 {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        let Some(npt) = self.npt() else { return 0 };
        let cleared = npt.clear_leaves(m, drop);
        if cleared > 0 {
            m.tlb_flush_vmid(self.vmid);
        }
        cleared
    }

    /// Tear the table down: every table page (root included) and every page left in the pool
    /// goes to `give_back`, the TLBs of this VMID are invalidated, and the table has no root
    /// any more. Caller holds `s2page` (the pages change owner).
    pub fn release<M: Machine>(&self, m: &M, locks: &Locks, mut give_back: impl FnMut(u64)) {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        if let Some(npt) = self.npt() {
            npt.release_tables(m, &mut give_back);
            self.root.store(0, Ordering::Release);
            m.tlb_flush_vmid(self.vmid);
            for n in 0..npt.root_pages() {
                give_back(npt.root + n * PAGE_SIZE);
            }
        }
        self.pool.drain(m, give_back);
    }

    /// How many new table pages mapping a leaf at `ipa`/`level` would take (0..=3), so a
    /// transition can check the pool before it changes anything. Caller holds `pt(vmid)`.
    pub fn tables_needed<M: Machine>(&self, m: &M, ipa: u64, level: u8) -> u64 {
        match self.npt() {
            Some(npt) => level.saturating_sub(npt.first_non_table_level(m, ipa)) as u64,
            None => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch;
    use crate::machine::sim::{SimMachine, TlbOp};
    use crate::{BLOCK_2M, PAGE_SIZE};

    #[test]
    fn unmapping_a_page_inside_a_block_flushes_the_block() {
        for ia_bits in [40, 44] {
            unmap_in_block(ia_bits);
        }
    }

    fn unmap_in_block(ia_bits: u32) {
        let base = 0x4000_0000;
        let m = SimMachine::new(base, 16 * PAGE_SIZE);
        let locks = Locks::new();
        let t = S2Table::new(0, ia_bits, PagePool::new(base + PAGE_SIZE, base + 16 * PAGE_SIZE));
        t.init_root(&m, &locks).unwrap();
        // A two-page root is aligned to 8 KiB: the pool's first page is skipped.
        let root = if t.root_pages() == 2 { base + 2 * PAGE_SIZE } else { base + PAGE_SIZE };
        assert_eq!(t.expect_npt().root, root);
        assert_eq!(t.init_root(&m, &locks), Err(Error::Exists));
        let block = 0x8000_0000;
        // Level 2 under a level-1 root needs its level-2 table; under a level-0 root, a level-1 one too.
        assert_eq!(t.tables_needed(&m, block, 2), 2 - arch::s2_start_level(ia_bits) as u64);
        t.map(&m, &locks, block, 2, arch::s2_normal_leaf(block, 2)).unwrap();
        assert_eq!(t.tables_needed(&m, block + BLOCK_2M, 3), 1);
        assert!(m.take_tlb_log().is_empty(), "mapping into an invalid entry needs no TLBI");
        assert!(t.clear_pfn_host(&m, &locks, (block + 5 * PAGE_SIZE) >> 12));
        assert_eq!(m.take_tlb_log(), vec![TlbOp::Ipa { vmid: 0, ipa: block }]);
        assert!(t.walk(&m, &locks, block + BLOCK_2M - 1).is_none());
        assert!(!t.clear_pfn_host(&m, &locks, block >> 12));
        assert!(m.take_tlb_log().is_empty(), "nothing mapped, nothing flushed");
    }

    #[test]
    fn a_table_without_root_maps_nothing() {
        let m = SimMachine::new(0x4000_0000, PAGE_SIZE);
        let t = S2Table::new(3, 40, PagePool::new(0, 0));
        let locks = Locks::new();
        assert_eq!(t.map(&m, &locks, 0, 3, 3), Err(Error::NotFound));
        assert_eq!(t.init_root(&m, &locks), Err(Error::NoMemory));
        assert!(t.unmap(&m, &locks, 0).is_none());
    }
}
