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
    /// Returning a handed-out page, or adding a new one.
    pub fn give(&self, page: u64) -> AbsPool {
        let mut s = self.clone();
        s.in_use.remove(&page);
        s.free.insert(page);
        s
    }
}
