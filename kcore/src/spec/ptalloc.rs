//! Specification of layer 5: a pool is a set of pages it may hand out; a page handed out is
//! zero and not handed out again until returned.

use crate::error::{Error, Result};
use std::collections::BTreeSet;

/// One pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbsPool {
    /// Pages the pool may hand out.
    pub free: BTreeSet<u64>,
    /// Pages handed out.
    pub in_use: BTreeSet<u64>,
}

impl AbsPool {
    /// Allocation: fails exactly when nothing is free; the page (chosen by the implementation)
    /// must be one of the free ones. Returns the new state.
    pub fn alloc(&self, chosen: Result<u64>) -> Result<AbsPool> {
        match chosen {
            Err(Error::NoMemory) if self.free.is_empty() => Ok(self.clone()),
            Ok(p) if self.free.contains(&p) => {
                let mut s = self.clone();
                s.free.remove(&p);
                s.in_use.insert(p);
                Ok(s)
            }
            _ => Err(Error::BadState),
        }
    }
    /// Allocation of `pages` contiguous pages (a concatenated stage-2 root): on success they
    /// were all free and the first is aligned to their total size; they are handed out
    /// together. A refusal (the implementation takes them from its never-used range only)
    /// must be [`Error::NoMemory`] and change nothing.
    pub fn alloc_contiguous(&self, pages: u64, chosen: Result<u64>) -> Result<AbsPool> {
        let bytes = pages * crate::PAGE_SIZE;
        match chosen {
            Err(Error::NoMemory) => Ok(self.clone()),
            Ok(p)
                if p.is_multiple_of(bytes)
                    && (p..p + bytes).step_by(crate::PAGE_SIZE as usize).all(|q| self.free.contains(&q)) =>
            {
                let mut s = self.clone();
                for q in (p..p + bytes).step_by(crate::PAGE_SIZE as usize) {
                    s.free.remove(&q);
                    s.in_use.insert(q);
                }
                Ok(s)
            }
            _ => Err(Error::BadState),
        }
    }

    /// Returning a handed-out page, or adding a new one.
    pub fn give(&self, page: u64) -> AbsPool {
        let mut s = self.clone();
        s.in_use.remove(&page);
        s.free.insert(page);
        s
    }
}
