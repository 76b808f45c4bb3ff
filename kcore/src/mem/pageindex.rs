//! Layer 14 (PageIndex): from a physical address to the index of its ownership record.

use super::memblock::MemBlocks;
use crate::PAGE_SHIFT;

/// `get_s2_page_index`: the metadata index of the page holding `pa`, or `None` if `pa` is not
/// RAM (device memory has no owner record).
pub fn page_index(mb: &MemBlocks, pa: u64) -> Option<u64> {
    let r = mb.search(pa)?;
    Some(r.first_index + ((pa - r.base) >> PAGE_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_across_regions() {
        let mb = MemBlocks::new(&[(0x4000_0000, 0x3000), (0x9000_0000, 0x2000)]).unwrap();
        assert_eq!(page_index(&mb, 0x4000_0000), Some(0));
        assert_eq!(page_index(&mb, 0x4000_2fff), Some(2));
        assert_eq!(page_index(&mb, 0x9000_1000), Some(4));
        assert_eq!(page_index(&mb, 0x4000_3000), None);
    }
}
