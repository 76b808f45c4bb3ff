//! KCore's own EL2 stage-1 identity map, built once at boot before the EL2 MMU is turned on
//! and never changed afterwards (Write-Once-Kernel-Mapping). Built with the same walker
//! (layers 6-7) as the stage-2 tables.

use crate::PAGE_SIZE;
use crate::arch::{desc, level_size, mair};
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pt::nptwalk::Npt;
use crate::pt::ptalloc::PagePool;

/// How a range is mapped at EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// KCore's code: read-only, executable.
    Text,
    /// Read-only data, never executable.
    ReadOnly,
    /// Read/write data, never executable.
    ReadWrite,
    /// Device registers (Device-nGnRE), never executable.
    Device,
}

/// One identity-mapped range `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Permissions and memory type.
    pub kind: Kind,
}

/// The EL2 stage-1 leaf for `pa` at `level` (Arm ARM D8.3: AttrIndx, AP, SH, AF, XN).
pub const fn el2_leaf(pa: u64, level: u8, kind: Kind) -> u64 {
    let base = crate::arch::leaf_type(level) | (pa & desc::ADDR_MASK) | desc::AF;
    match kind {
        Kind::Text => base | desc::s1_attr_index(mair::NORMAL) | desc::SH_INNER | desc::S1_AP_RO,
        Kind::ReadOnly => base | desc::s1_attr_index(mair::NORMAL) | desc::SH_INNER | desc::S1_AP_RO | desc::S1_XN,
        Kind::ReadWrite => base | desc::s1_attr_index(mair::NORMAL) | desc::SH_INNER | desc::S1_XN,
        Kind::Device => base | desc::s1_attr_index(mair::DEVICE) | desc::S1_XN,
    }
}

/// Identity-map every segment into `npt` with the largest blocks alignment allows. Segments
/// must be page aligned and must not overlap.
pub fn build<M: Machine>(m: &M, pool: &PagePool, npt: &Npt, segments: &[Segment]) -> Result<()> {
    for (i, s) in segments.iter().enumerate() {
        if s.start % PAGE_SIZE != 0 || s.end % PAGE_SIZE != 0 || s.end < s.start {
            return Err(Error::InvalidParameter);
        }
        if segments[..i].iter().any(|o| o.start < s.end && s.start < o.end) {
            return Err(Error::InvalidParameter);
        }
    }
    for s in segments {
        let mut pa = s.start;
        while pa < s.end {
            let level = (1..=3u8)
                .find(|&l| pa % level_size(l) == 0 && pa + level_size(l) <= s.end)
                .expect("level 3 always fits a page-aligned range");
            npt.set(m, pool, pa, level, el2_leaf(pa, level, s.kind))?;
            pa += level_size(level);
        }
    }
    m.publish_table_writes();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;
    use crate::{BLOCK_1G, BLOCK_2M};

    #[test]
    fn builds_mixed_granularity_identity_map() {
        let m = SimMachine::new(0x1000_0000, 32 * PAGE_SIZE);
        let pool = PagePool::new(0x1000_1000, 0x1000_0000 + 32 * PAGE_SIZE);
        let npt = Npt { root: 0x1000_0000, ia_bits: 48 };
        let segs = [
            Segment { start: 0x4000_0000, end: 0x4020_0000, kind: Kind::ReadWrite },
            Segment { start: 0x4020_0000, end: 0x4020_3000, kind: Kind::Text },
            Segment { start: 0x4020_3000, end: 0x8000_0000, kind: Kind::ReadWrite },
            Segment { start: 0x0900_0000, end: 0x0900_1000, kind: Kind::Device },
        ];
        build(&m, &pool, &npt, &segs).unwrap();
        let text = npt.walk(&m, 0x4020_1000).unwrap();
        assert_eq!((text.level, text.desc & desc::S1_XN), (3, 0));
        assert_eq!(text.output(0x4020_1234), 0x4020_1234);
        assert_eq!(npt.walk(&m, 0x4000_0000).unwrap().level, 2);
        assert_eq!(npt.walk(&m, 0x4040_0000).unwrap().level, 2);
        assert_eq!(npt.walk(&m, 0x7fff_f000).unwrap().level, 2);
        assert_ne!(npt.walk(&m, 0x0900_0000).unwrap().desc & desc::S1_XN, 0);
        assert!(npt.walk(&m, 0x0900_1000).is_none());
        assert!(npt.walk(&m, BLOCK_1G * 2).is_none());
        let _ = BLOCK_2M;
        let bad = [
            Segment { start: 0, end: 0x2000, kind: Kind::Text },
            Segment { start: 0x1000, end: 0x3000, kind: Kind::Text },
        ];
        assert_eq!(build(&m, &pool, &npt, &bad), Err(Error::InvalidParameter));
    }
}
