//! Layer 13 (MemBlock): the RAM regions of the machine, from the firmware's device tree.

use crate::error::{Error, Result};
use crate::{PAGE_SIZE, align_down, align_up};

/// Most RAM regions KCore tracks.
pub const MAX_REGIONS: usize = 32;

/// One RAM region, page aligned, with the metadata index of its first page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Index of the region's first page in the ownership metadata.
    pub first_index: u64,
}

impl Region {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    /// Does the region contain `pa`?
    pub const fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa < self.end()
    }
}

/// The RAM regions, sorted by address and disjoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemBlocks {
    regions: [Region; MAX_REGIONS],
    count: usize,
}

impl MemBlocks {
    /// Build from `(base, size)` ranges in any order. Ranges are shrunk to whole pages; empty
    /// ones are dropped. Overlapping ranges, ranges past the 48-bit PA space, page 0 inside RAM
    /// or more than [`MAX_REGIONS`] ranges are refused.
    pub fn new(ranges: &[(u64, u64)]) -> Result<Self> {
        let mut mb = MemBlocks::default();
        for &(base, size) in ranges {
            let end = base.checked_add(size).ok_or(Error::InvalidParameter)?;
            let (b, e) = (align_up(base, PAGE_SIZE), align_down(end, PAGE_SIZE));
            if e <= b {
                continue;
            }
            if e > 1 << 48 || b == 0 {
                return Err(Error::InvalidParameter);
            }
            if mb.count == MAX_REGIONS {
                return Err(Error::NoMemory);
            }
            mb.regions[mb.count] = Region { base: b, size: e - b, first_index: 0 };
            mb.count += 1;
        }
        mb.regions[..mb.count].sort_unstable_by_key(|r| r.base);
        let mut index = 0;
        for i in 0..mb.count {
            if i > 0 && mb.regions[i - 1].end() > mb.regions[i].base {
                return Err(Error::InvalidParameter);
            }
            mb.regions[i].first_index = index;
            index += mb.regions[i].size / PAGE_SIZE;
        }
        Ok(mb)
    }

    /// The regions, in address order.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.count]
    }

    /// `mem_region_search`: the region containing `pa`.
    pub fn search(&self, pa: u64) -> Option<&Region> {
        // Few regions: a linear scan is both fast and obviously right.
        self.regions().iter().find(|r| r.contains(pa))
    }

    /// Does `[start, end)` intersect any RAM?
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.regions().iter().any(|r| r.base < end && start < r.end())
    }

    /// Total pages of RAM.
    pub fn total_pages(&self) -> u64 {
        self.regions().iter().map(|r| r.size / PAGE_SIZE).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_sorted_aligned_and_indexed() {
        let mb = MemBlocks::new(&[(0x8000_0000, 0x10_0000), (0x4000_0800, 0x2000)]).unwrap();
        let r = mb.regions();
        assert_eq!(r[0], Region { base: 0x4000_1000, size: 0x1000, first_index: 0 });
        assert_eq!(r[1], Region { base: 0x8000_0000, size: 0x10_0000, first_index: 1 });
        assert_eq!(mb.search(0x8000_0fff).unwrap().base, 0x8000_0000);
        assert!(mb.search(0x4000_0000).is_none());
        assert!(mb.intersects(0x3000_0000, 0x4000_2000));
        assert!(!mb.intersects(0x4000_2000, 0x8000_0000));
        assert_eq!(mb.total_pages(), 257);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(MemBlocks::new(&[(0x4000_0000, 0x2000), (0x4000_1000, 0x2000)]).is_err());
        assert!(MemBlocks::new(&[(0, 0x2000)]).is_err(), "page 0 is never RAM");
        assert!(MemBlocks::new(&[(u64::MAX - 10, 100)]).is_err());
        assert!(MemBlocks::new(&[(1 << 48, 0x1000)]).is_err());
    }
}
