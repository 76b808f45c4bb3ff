//! Specification of layers 6-8: a translation table as its leaves and its present tables.
//! Tables are created on the way down to a new leaf and never freed, as in the code.

use crate::arch::{level_size, s2_root_pages, s2_start_level};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Bytes a table at `level` spans (level 0: 256 TiB, 1: 512 GiB, 2: 1 GiB, 3: 2 MiB).
pub const fn table_span(level: u8) -> u64 {
    1 << (12 + 9 * (4 - level as u32))
}

/// One table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbsNpt {
    /// Input-address bits.
    pub ia_bits: u32,
    /// Leaves by first input address: (level, descriptor).
    pub leaves: BTreeMap<u64, (u8, u64)>,
    /// Present tables (level, first input address); the root's always are: (0, 0), or
    /// (1, n * 512 GiB) for each concatenated level-1 root table.
    pub tables: BTreeSet<(u8, u64)>,
    /// Pool pages left for new tables.
    pub pool: u64,
}

impl AbsNpt {
    /// A table with only its root.
    pub fn new(ia_bits: u32, pool: u64) -> AbsNpt {
        let start = s2_start_level(ia_bits);
        let tables = (0..s2_root_pages(ia_bits)).map(|n| (start, n * table_span(start))).collect();
        AbsNpt { ia_bits, leaves: BTreeMap::new(), tables, pool }
    }

    /// The leaf covering `addr`.
    pub fn walk(&self, addr: u64) -> Option<(u64, u8, u64)> {
        if addr >> self.ia_bits != 0 {
            return None;
        }
        let (&base, &(level, d)) = self.leaves.range(..=addr).next_back()?;
        (addr < base + level_size(level)).then_some((base, level, d))
    }

    /// `set`: the result and the state after (tables allocated before a failure stay).
    pub fn set(&self, addr: u64, level: u8, d: u64) -> (Result<()>, AbsNpt) {
        let mut s = self.clone();
        if !(1..=3).contains(&level) || addr >> self.ia_bits != 0 || !addr.is_multiple_of(level_size(level)) {
            return (Err(Error::InvalidParameter), s);
        }
        // As the code descends: at each level above the target, a leaf in the way is an error;
        // a missing next-level table is allocated, if the pool has a page.
        for l in s2_start_level(self.ia_bits)..level {
            if let Some((_, ll, _)) = s.walk(addr)
                && ll == l
            {
                return (Err(Error::Exists), s);
            }
            let base = addr & !(table_span(l + 1) - 1);
            if !s.tables.contains(&(l + 1, base)) {
                if s.pool == 0 {
                    return (Err(Error::NoMemory), s);
                }
                s.pool -= 1;
                s.tables.insert((l + 1, base));
            }
        }
        let occupied = s.walk(addr).is_some() || (level < 3 && s.tables.contains(&(level + 1, addr)));
        if occupied {
            return (Err(Error::Exists), s);
        }
        s.leaves.insert(addr, (level, d));
        (Ok(()), s)
    }

    /// `clear`: remove the leaf covering `addr`.
    pub fn clear(&self, addr: u64) -> (Option<(u64, u8, u64)>, AbsNpt) {
        let mut s = self.clone();
        let leaf = s.walk(addr);
        if let Some((base, _, _)) = leaf {
            s.leaves.remove(&base);
        }
        (leaf, s)
    }
}
