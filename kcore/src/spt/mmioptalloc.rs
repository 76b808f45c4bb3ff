//! Layer 9 (MmioPTAlloc): the pool of KCore pages the SMMU's tables come from (its stream
//! table, queues, and the host-DMA stage-2 table). The same free-list pool as layer 5, over a
//! range of KCore's memory of its own, so the SMMU's tables never compete with the CPU's
//! stage-2 tables: exhaustion is an error, never a panic, and a page handed out is zero.

use crate::error::Result;
use crate::machine::Machine;
use crate::pt::ptalloc::PagePool;

/// The SMMU's page-table pool.
#[derive(Debug)]
pub struct SptPool {
    pool: PagePool,
}

impl SptPool {
    /// A pool over KCore-owned `[start, end)` (page aligned; empty when both are 0).
    pub const fn new(start: u64, end: u64) -> Self {
        SptPool { pool: PagePool::new(start, end) }
    }

    /// Give an empty pool its range (boot).
    pub fn set_range(&self, start: u64, end: u64) {
        self.pool.set_range(start, end)
    }

    /// A zeroed page, or [`crate::Error::NoMemory`].
    pub fn alloc<M: Machine>(&self, m: &M) -> Result<u64> {
        self.pool.alloc(m)
    }

    /// The pool as layer 5 sees it (for walks that allocate tables on the way down).
    pub fn pages(&self) -> &PagePool {
        &self.pool
    }

    /// Pages still free.
    pub fn available(&self) -> u64 {
        self.pool.available()
    }
}
