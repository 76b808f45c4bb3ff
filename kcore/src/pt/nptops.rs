//! Layer 8 (NPTOps): stage-2 table operations under the table's `pt(vmid)` lock, each one
//! descriptor write followed (for removals) by TLB invalidation before the lock is released.

use super::nptwalk::{Leaf, Npt};
use super::ptalloc::PagePool;
use crate::error::Result;
use crate::locks::{LockId, Locks};
use crate::machine::Machine;
use crate::{PAGE_SHIFT, Pfn};

/// One vmid's stage-2 table and the pool its table pages come from.
#[derive(Debug)]
pub struct S2Table {
    /// The owner's vmid (0 = host).
    pub vmid: u16,
    /// The table.
    pub npt: Npt,
    /// Pool for intermediate tables.
    pub pool: PagePool,
}

impl S2Table {
    /// The leaf mapping `ipa`, if any.
    pub fn walk<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64) -> Option<Leaf> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        self.npt.walk(m, ipa)
    }

    /// Install leaf `d` for `ipa` at `level`. An existing mapping gives `Err(Exists)`.
    pub fn map<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64, level: u8, d: u64) -> Result<()> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        self.map_locked(m, ipa, level, d)
    }

    /// [`S2Table::map`] for a caller that holds `pt(vmid)` already.
    pub fn map_locked<M: Machine>(&self, m: &M, ipa: u64, level: u8, d: u64) -> Result<()> {
        self.npt.set(m, &self.pool, ipa, level, d)?;
        m.publish_table_writes();
        Ok(())
    }

    /// Remove the leaf mapping `ipa` (whatever its size) and invalidate the TLBs for it.
    /// Returns the removed leaf.
    pub fn unmap<M: Machine>(&self, m: &M, locks: &Locks, ipa: u64) -> Option<Leaf> {
        let _pt = locks.acquire(LockId::Pt(self.vmid), m.cpu_index());
        let leaf = self.npt.clear(m, ipa)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch;
    use crate::machine::sim::{SimMachine, TlbOp};
    use crate::{BLOCK_2M, PAGE_SIZE};

    #[test]
    fn unmapping_a_page_inside_a_block_flushes_the_block() {
        let base = 0x4000_0000;
        let m = SimMachine::new(base, 16 * PAGE_SIZE);
        let locks = Locks::new();
        let t = S2Table {
            vmid: 0,
            npt: Npt { root: base, ia_bits: 40 },
            pool: PagePool::new(base + PAGE_SIZE, base + 16 * PAGE_SIZE),
        };
        let block = 0x8000_0000;
        t.map(&m, &locks, block, 2, arch::s2_normal_leaf(block, 2)).unwrap();
        assert!(m.take_tlb_log().is_empty(), "mapping into an invalid entry needs no TLBI");
        assert!(t.clear_pfn_host(&m, &locks, (block + 5 * PAGE_SIZE) >> 12));
        assert_eq!(m.take_tlb_log(), vec![TlbOp::Ipa { vmid: 0, ipa: block }]);
        assert!(t.walk(&m, &locks, block + BLOCK_2M - 1).is_none());
        assert!(!t.clear_pfn_host(&m, &locks, block >> 12));
        assert!(m.take_tlb_log().is_empty(), "nothing mapped, nothing flushed");
    }
}
