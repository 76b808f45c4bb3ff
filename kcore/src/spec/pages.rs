//! Specification of layers 13-15: RAM is a set of page frames in address order; the record
//! index of a page is how many RAM pages lie below it; the records are a map.

use crate::mem::pagemgmt::{CHUNK_PAGES, Owner, PageInfo};
use crate::{PAGE_SHIFT, Pfn};
use std::collections::BTreeMap;

/// RAM and its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsPages {
    /// RAM as `[first pfn, end pfn)` ranges.
    pub ram: Vec<(Pfn, Pfn)>,
    /// Every RAM page's record.
    pub records: BTreeMap<Pfn, PageInfo>,
}

impl AbsPages {
    /// Page-aligned RAM from byte ranges (whole pages only), all pages host-owned.
    pub fn new(ranges: &[(u64, u64)]) -> AbsPages {
        let mut ram: Vec<(Pfn, Pfn)> =
            ranges.iter().map(|&(b, s)| (b.div_ceil(4096), (b + s) >> PAGE_SHIFT)).filter(|(a, e)| e > a).collect();
        ram.sort();
        let records = ram
            .iter()
            .flat_map(|&(a, e)| a..e)
            .map(|p| (p, PageInfo { owner: Owner::Host, count: 0, gfn: 0 }))
            .collect();
        AbsPages { ram, records }
    }

    /// `mem_region_search`: the range holding byte address `pa`.
    pub fn search(&self, pa: u64) -> Option<(Pfn, Pfn)> {
        self.ram.iter().copied().find(|&(a, e)| (a..e).contains(&(pa >> PAGE_SHIFT)))
    }

    /// `get_s2_page_index`: RAM pages below `pa`'s page.
    pub fn page_index(&self, pa: u64) -> Option<u64> {
        self.search(pa)?;
        let pfn = pa >> PAGE_SHIFT;
        Some(self.ram.iter().map(|&(a, e)| e.min(pfn).saturating_sub(a)).sum())
    }

    /// Pages of the chunk at `chunk` (aligned pfn, in the same range as its pages) not plainly
    /// the host's.
    pub fn chunk_blockers(&self, chunk: Pfn) -> Option<u64> {
        let (_, end) = self.search(chunk << PAGE_SHIFT)?;
        Some(
            (chunk..(chunk + CHUNK_PAGES).min(end))
                .filter(|p| self.records.get(p).is_some_and(|i| i.owner != Owner::Host || i.count != 0))
                .count() as u64,
        )
    }
}
