//! Layer 6 (PTWalk): read, write and descend one translation-table level.
//!
//! The table-descriptor format is the same for KCore's EL2 stage-1 tables and for stage-2
//! tables, so this layer serves both. Leaves are written as given by the caller.

use super::ptalloc::PagePool;
use crate::arch::{self, desc};
use crate::error::{Error, Result};
use crate::machine::Machine;

/// Entries per table with a 4 KiB granule.
pub const ENTRIES: u64 = 512;

/// Index of `addr` in a table at `level` (0..=3).
pub const fn index(level: u8, addr: u64) -> u64 {
    (addr >> (12 + 9 * (3 - level as u32))) & (ENTRIES - 1)
}

/// Physical address of the entry for `addr` in the table at `table`.
pub const fn entry_addr(table: u64, level: u8, addr: u64) -> u64 {
    table + 8 * index(level, addr)
}

/// Read the entry for `addr` at `level` of `table`.
pub fn read_entry<M: Machine>(m: &M, table: u64, level: u8, addr: u64) -> u64 {
    m.load(entry_addr(table, level, addr))
}

/// Write the entry for `addr` at `level` of `table` (a single 64-bit store, so the walker sees
/// the old or the new descriptor, never a mix).
pub fn write_entry<M: Machine>(m: &M, table: u64, level: u8, addr: u64, d: u64) {
    m.store(entry_addr(table, level, addr), d)
}

/// Descend from the table at `level` towards `addr`.
///
/// Returns the next-level table. If the entry is invalid and `pool` is given, a zeroed table
/// is allocated and linked in; without a pool an invalid entry gives `Ok(None)`. A block in the
/// way gives [`Error::Exists`].
pub fn next_table<M: Machine>(m: &M, pool: Option<&PagePool>, table: u64, level: u8, addr: u64) -> Result<Option<u64>> {
    let d = read_entry(m, table, level, addr);
    if arch::is_table(d, level) {
        return Ok(Some(d & desc::ADDR_MASK));
    }
    if d & desc::VALID != 0 {
        return Err(Error::Exists);
    }
    let Some(pool) = pool else { return Ok(None) };
    let new = pool.alloc(m)?;
    // The new table is all zeros (invalid entries); publish it before linking it in.
    m.publish_table_writes();
    write_entry(m, table, level, addr, new | desc::VALID | desc::TABLE_OR_PAGE);
    Ok(Some(new))
}
