//! Layer 7 (NPTWalk): walk and set a whole translation table (stage-2 of one vmid, or KCore's
//! own EL2 table): 4 KiB granule, leaves at level 1 (1 GiB), 2 (2 MiB) or 3 (4 KiB). The root
//! is one level-0 table, or, for an input space of 42 bits or less, 2^(bits - 39) concatenated
//! level-1 tables ([`arch::s2_start_level`]).

use super::ptalloc::PagePool;
use super::ptwalk::{next_table, read_entry, write_entry};
use crate::arch::{self, desc, level_size};
use crate::error::{Error, Result};
use crate::machine::Machine;

/// A translation table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Npt {
    /// Physical address of the root: the level-0 table, or the first of the concatenated
    /// level-1 tables.
    pub root: u64,
    /// Input address size in bits (40..=48); it decides the root's level and size.
    pub ia_bits: u32,
}

/// A leaf found by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Level of the leaf: 1, 2 or 3.
    pub level: u8,
    /// The descriptor.
    pub desc: u64,
}

impl Leaf {
    /// Size of the region the leaf maps.
    pub const fn size(&self) -> u64 {
        level_size(self.level)
    }
    /// Output address for input `addr` inside the leaf.
    pub const fn output(&self, addr: u64) -> u64 {
        (self.desc & desc::ADDR_MASK & !(self.size() - 1)) | (addr & (self.size() - 1))
    }
}

impl Npt {
    /// Is `addr` inside the input range?
    pub const fn covers(&self, addr: u64) -> bool {
        addr >> self.ia_bits == 0
    }

    /// The level of the root table(s).
    pub const fn start_level(&self) -> u8 {
        arch::s2_start_level(self.ia_bits)
    }

    /// Pages the root occupies (contiguous from [`Npt::root`]).
    pub const fn root_pages(&self) -> u64 {
        arch::s2_root_pages(self.ia_bits)
    }

    /// The root-level table that translates `addr` (inside the input range): with a level-1
    /// start, concatenated table `n` covers the `n`th 512 GiB.
    const fn root_table(&self, addr: u64) -> u64 {
        if self.start_level() == 0 { self.root } else { self.root + (addr >> 39) * crate::PAGE_SIZE }
    }

    /// Every root-level table as `(table, first input address it translates)`.
    fn roots(&self) -> impl Iterator<Item = (u64, u64)> {
        let (root, span_shift) = (self.root, 12 + 9 * (4 - self.start_level() as u32));
        (0..self.root_pages()).map(move |n| (root + n * crate::PAGE_SIZE, n << span_shift))
    }

    /// The leaf that maps `addr`, if any.
    pub fn walk<M: Machine>(&self, m: &M, addr: u64) -> Option<Leaf> {
        if !self.covers(addr) {
            return None;
        }
        let mut table = self.root_table(addr);
        for level in self.start_level()..=3u8 {
            let d = read_entry(m, table, level, addr);
            if arch::is_table(d, level) {
                table = d & desc::ADDR_MASK;
                continue;
            }
            return if level > 0 && arch::is_leaf(d, level) { Some(Leaf { level, desc: d }) } else { None };
        }
        None
    }

    /// The shallowest level at which a leaf for `addr` could be written without replacing a
    /// table: the first level whose entry is not a table descriptor.
    pub fn first_non_table_level<M: Machine>(&self, m: &M, addr: u64) -> u8 {
        let mut table = self.root_table(addr);
        for level in self.start_level()..3u8 {
            let d = read_entry(m, table, level, addr);
            if !arch::is_table(d, level) {
                return level;
            }
            table = d & desc::ADDR_MASK;
        }
        3
    }

    /// Write leaf `d` for `addr` at `level` (1..=3), allocating intermediate tables from
    /// `pool`. The entry must be invalid: replacing a live entry needs break-before-make,
    /// which is the caller's job ([`Error::Exists`] otherwise; also for a block above).
    pub fn set<M: Machine>(&self, m: &M, pool: &PagePool, addr: u64, level: u8, d: u64) -> Result<()> {
        if !(1..=3).contains(&level) || !self.covers(addr) || addr & (level_size(level) - 1) != 0 {
            return Err(Error::InvalidParameter);
        }
        let mut table = self.root_table(addr);
        for l in self.start_level()..level {
            table = next_table(m, Some(pool), table, l, addr)?.ok_or(Error::NoMemory)?;
        }
        if read_entry(m, table, level, addr) & desc::VALID != 0 {
            return Err(Error::Exists);
        }
        write_entry(m, table, level, addr, d);
        Ok(())
    }

    /// Invalidate the leaf that maps `addr` and return it (the caller invalidates the TLB).
    pub fn clear<M: Machine>(&self, m: &M, addr: u64) -> Option<Leaf> {
        if !self.covers(addr) {
            return None;
        }
        let mut table = self.root_table(addr);
        for level in self.start_level()..=3u8 {
            let d = read_entry(m, table, level, addr);
            if arch::is_table(d, level) {
                table = d & desc::ADDR_MASK;
                continue;
            }
            if level > 0 && arch::is_leaf(d, level) {
                write_entry(m, table, level, addr, 0);
                return Some(Leaf { level, desc: d });
            }
            return None;
        }
        None
    }

    /// Visit every leaf as `(input address, leaf)`, in address order.
    pub fn for_each_leaf<M: Machine>(&self, m: &M, mut f: impl FnMut(u64, Leaf)) {
        for (table, base) in self.roots() {
            self.visit(
                m,
                table,
                self.start_level(),
                base,
                &mut |a, l| {
                    f(a, l);
                    false
                },
                &mut |_, _, _| {},
            );
        }
    }

    /// Clear every leaf for which `drop(input address, leaf)` holds; returns how many went.
    /// The caller invalidates the TLBs of this table's VMID afterwards if any did.
    pub fn clear_leaves<M: Machine>(&self, m: &M, mut drop: impl FnMut(u64, Leaf) -> bool) -> u64 {
        let mut cleared = 0;
        let mut leaf = |a, l| {
            let gone = drop(a, l);
            cleared += u64::from(gone);
            gone
        };
        for (table, base) in self.roots() {
            self.visit(m, table, self.start_level(), base, &mut leaf, &mut |_, _, _| {});
        }
        cleared
    }

    /// Visit every table page as `(table address, level, input address it starts at)`,
    /// the root's pages included (each at [`Npt::start_level`]).
    pub fn for_each_table<M: Machine>(&self, m: &M, mut f: impl FnMut(u64, u8, u64)) {
        for (table, base) in self.roots() {
            f(table, self.start_level(), base);
            self.visit(m, table, self.start_level(), base, &mut |_, _| false, &mut f);
        }
    }

    /// Hand every table page below the root to `free`, children before parents, then clear
    /// the root. The caller invalidates the TLBs of this table's VMID afterwards.
    pub fn release_tables<M: Machine>(&self, m: &M, mut free: impl FnMut(u64)) {
        for (table, _) in self.roots() {
            self.release(m, table, self.start_level(), &mut free);
        }
    }

    fn release<M: Machine>(&self, m: &M, table: u64, level: u8, free: &mut impl FnMut(u64)) {
        for i in 0..super::ptwalk::ENTRIES {
            let d = m.load(table + 8 * i);
            if arch::is_table(d, level) {
                self.release(m, d & desc::ADDR_MASK, level + 1, free);
                free(d & desc::ADDR_MASK);
            }
            if d != 0 {
                m.store(table + 8 * i, 0);
            }
        }
    }

    /// Walk the tables below `table` (at `level`, translating from `base`) in address order:
    /// `t` sees each next-level table, `f` each leaf, which is cleared if `f` says so.
    fn visit<M: Machine>(
        &self,
        m: &M,
        table: u64,
        level: u8,
        base: u64,
        f: &mut impl FnMut(u64, Leaf) -> bool,
        t: &mut impl FnMut(u64, u8, u64),
    ) {
        let span = 1u64 << (12 + 9 * (3 - level as u32));
        for i in 0..super::ptwalk::ENTRIES {
            let addr = base + i * span;
            if !self.covers(addr) {
                break;
            }
            let d = m.load(table + 8 * i);
            if arch::is_table(d, level) {
                t(d & desc::ADDR_MASK, level + 1, addr);
                self.visit(m, d & desc::ADDR_MASK, level + 1, addr, f, t);
            } else if level > 0 && arch::is_leaf(d, level) && f(addr, Leaf { level, desc: d }) {
                write_entry(m, table, level, addr, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;
    use crate::{BLOCK_1G, BLOCK_2M, PAGE_SIZE};

    const BASE: u64 = 0x4000_0000;

    /// The two geometries: 40 bits (level-1 start, two concatenated root tables) and 44 bits
    /// (level-0 start).
    const IA_BITS: [u32; 2] = [40, 44];

    fn setup(ia_bits: u32) -> (SimMachine, PagePool, Npt) {
        let m = SimMachine::new(BASE, 64 * PAGE_SIZE);
        let root_end = BASE + arch::s2_root_pages(ia_bits) * PAGE_SIZE;
        let pool = PagePool::new(root_end, BASE + 64 * PAGE_SIZE);
        (m, pool, Npt { root: BASE, ia_bits })
    }

    #[test]
    fn a_level_1_root_is_two_concatenated_tables() {
        let (m, pool, npt) = setup(40);
        assert_eq!((npt.start_level(), npt.root_pages()), (1, 2));
        // 512 GiB and up is translated by the second root page: its first entry.
        let high = 1u64 << 39;
        npt.set(&m, &pool, high, 1, arch::s2_device_leaf(high, 1)).unwrap();
        assert_eq!(m.load(BASE + PAGE_SIZE), arch::s2_device_leaf(high, 1));
        // The last GiB below 512 GiB: the first root page's last entry.
        let low = high - BLOCK_1G;
        npt.set(&m, &pool, low + BLOCK_2M, 2, arch::s2_normal_leaf(low + BLOCK_2M, 2)).unwrap();
        assert!(arch::is_table(m.load(BASE + 511 * 8), 1));
        assert_eq!(npt.walk(&m, high + 5).map(|l| l.level), Some(1));
        let mut tables = vec![];
        npt.for_each_table(&m, |t, level, a| tables.push((t, level, a)));
        assert_eq!(tables[0], (BASE, 1, 0));
        assert_eq!((tables[1].1, tables[1].2), (2, low));
        assert_eq!(tables[2], (BASE + PAGE_SIZE, 1, high));
        let mut freed = vec![];
        npt.release_tables(&m, |t| freed.push(t));
        assert_eq!(freed, vec![tables[1].0]);
        assert!(m.page_is_zero(BASE) && m.page_is_zero(BASE + PAGE_SIZE));
    }

    #[test]
    fn set_then_walk_each_level() {
        for ia_bits in IA_BITS {
            set_then_walk(ia_bits);
        }
    }

    fn set_then_walk(ia_bits: u32) {
        let (m, pool, npt) = setup(ia_bits);
        let cases = [(1u8, BLOCK_1G * 3), (2, BLOCK_1G + BLOCK_2M * 5), (3, 0x9000_0000 + 7 * PAGE_SIZE)];
        for (level, ipa) in cases {
            let d = arch::s2_normal_leaf(ipa, level);
            npt.set(&m, &pool, ipa, level, d).unwrap();
            let leaf = npt.walk(&m, ipa + 0x123).unwrap();
            assert_eq!(leaf, Leaf { level, desc: d });
            assert_eq!(leaf.output(ipa + 0x123), ipa + 0x123);
        }
        let mut seen = vec![];
        npt.for_each_leaf(&m, |a, l| seen.push((a, l.level)));
        assert_eq!(seen, vec![(BLOCK_1G + BLOCK_2M * 5, 2), (0x9000_0000 + 7 * PAGE_SIZE, 3), (BLOCK_1G * 3, 1)]);
    }

    #[test]
    fn set_refuses_live_entries_blocks_in_the_way_and_bad_args() {
        for ia_bits in IA_BITS {
            set_refuses(ia_bits);
        }
    }

    fn set_refuses(ia_bits: u32) {
        let (m, pool, npt) = setup(ia_bits);
        npt.set(&m, &pool, BLOCK_1G, 1, arch::s2_normal_leaf(BLOCK_1G, 1)).unwrap();
        assert_eq!(npt.set(&m, &pool, BLOCK_1G, 1, 0x1), Err(Error::Exists));
        assert_eq!(npt.set(&m, &pool, BLOCK_1G + PAGE_SIZE, 3, 0x3), Err(Error::Exists));
        assert_eq!(npt.set(&m, &pool, PAGE_SIZE, 2, 0x1), Err(Error::InvalidParameter));
        assert_eq!(npt.set(&m, &pool, 1 << ia_bits, 3, 0x3), Err(Error::InvalidParameter));
        assert_eq!(npt.set(&m, &pool, 0, 0, 0x1), Err(Error::InvalidParameter));
    }

    #[test]
    fn clear_removes_only_that_leaf() {
        for ia_bits in IA_BITS {
            clear_removes(ia_bits);
        }
    }

    fn clear_removes(ia_bits: u32) {
        let (m, pool, npt) = setup(ia_bits);
        npt.set(&m, &pool, 0x5000, 3, arch::s2_normal_leaf(0x5000, 3)).unwrap();
        npt.set(&m, &pool, 0x6000, 3, arch::s2_normal_leaf(0x6000, 3)).unwrap();
        assert_eq!(npt.clear(&m, 0x5000).map(|l| l.level), Some(3));
        assert_eq!(npt.walk(&m, 0x5000), None);
        assert!(npt.walk(&m, 0x6000).is_some());
        assert_eq!(npt.clear(&m, 0x5000), None);
        assert_eq!(npt.first_non_table_level(&m, 0x5000), 3);
        assert_eq!(npt.first_non_table_level(&m, BLOCK_1G), 1);
        assert_eq!(npt.first_non_table_level(&m, 1 << 39), if ia_bits == 40 { 1 } else { 0 });
    }

    #[test]
    fn pool_exhaustion_is_an_error() {
        let m = SimMachine::new(BASE, 4 * PAGE_SIZE);
        let pool = PagePool::new(BASE + 2 * PAGE_SIZE, BASE + 3 * PAGE_SIZE);
        let npt = Npt { root: BASE, ia_bits: 40 };
        assert_eq!(npt.set(&m, &pool, 0x1000, 3, 0x1003), Err(Error::NoMemory));
    }
}
