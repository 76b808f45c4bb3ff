//! Layer 15 (PageMgmt): the ownership record of every RAM page.
//!
//! Each 4 KiB page of RAM has one 64-bit record in KCore-owned memory (8 bytes per page):
//!
//! | bits | field |
//! |---|---|
//! | 0..=35 | gfn: where the owning VM maps the page (36 bits: IPAs up to 48 bits) |
//! | 36..=46 | owner: 0 host, 1..=2046 a VM, 2047 KCore |
//! | 47..=53 | share count (VM pages granted to the host; at most [`MAX_SHARE_COUNT`]); 127 with a VM in the owner field marks a host page lent to that VM |
//! | 54..=63 | in the record of the first page of each 2 MiB chunk: how many pages of that chunk the host may not map as part of a block (owner not host, or shared) |
//!
//! The last field lets the host fault path pick a 2 MiB or 1 GiB block without scanning every
//! page record. All accessors run under the `s2page` lock.

use super::memblock::MemBlocks;
use super::pageindex::page_index;
use crate::machine::Machine;
use crate::{Gfn, PAGE_SHIFT, Pfn};

/// Who owns a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The host (KServ).
    Host,
    /// A VM.
    Vm(u16),
    /// The host, which has lent the page to a non-protected VM: mapped in that VM's stage-2
    /// at the record's gfn and still the host's to access. It can be lent to no other VM and
    /// given to no one until the VM gives it back (unmapped, with TLB invalidation).
    Lent(u16),
    /// KCore itself.
    KCore,
}

/// Largest VM id the record can hold.
pub const MAX_OWNER_VMID: u16 = 2046;
/// Most outstanding grants of one VM page to the host.
pub const MAX_SHARE_COUNT: u64 = 100;
/// Pages in a 2 MiB chunk.
pub const CHUNK_PAGES: u64 = 512;

const GFN_BITS: u32 = 36;
const GFN_MASK: u64 = (1 << GFN_BITS) - 1;
const OWNER_SHIFT: u32 = 36;
const OWNER_MASK: u64 = 0x7ff;
const OWNER_KCORE: u64 = 0x7ff;
const COUNT_SHIFT: u32 = 47;
const COUNT_MASK: u64 = 0x7f;
const FOREIGN_SHIFT: u32 = 54;
const FOREIGN_MASK: u64 = 0x3ff;
/// The count value that marks a lent page (above [`MAX_SHARE_COUNT`], never a real count).
const LENT_MARK: u64 = COUNT_MASK;

impl Owner {
    const fn encode(self) -> u64 {
        match self {
            Owner::Host => 0,
            Owner::Vm(v) | Owner::Lent(v) => v as u64,
            Owner::KCore => OWNER_KCORE,
        }
    }
    /// Decode the owner field `v` and the count field `count` of a record.
    const fn decode(v: u64, count: u64) -> Owner {
        match v & OWNER_MASK {
            0 => Owner::Host,
            OWNER_KCORE => Owner::KCore,
            v if count == LENT_MARK => Owner::Lent(v as u16),
            v => Owner::Vm(v as u16),
        }
    }

    /// May the host access the page (its own, or its own lent to a VM)?
    pub const fn is_hosts(self) -> bool {
        matches!(self, Owner::Host | Owner::Lent(_))
    }
}

/// The decoded record of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// Owner.
    pub owner: Owner,
    /// Share count.
    pub count: u64,
    /// Guest frame number the owning VM maps it at.
    pub gfn: Gfn,
}

impl PageInfo {
    /// May the host's stage-2 map the page (identity)? Its own pages, lent ones included (the
    /// host keeps access), and pages a VM shares with it.
    pub fn host_may_map(&self) -> bool {
        self.owner.is_hosts() || (matches!(self.owner, Owner::Vm(_)) && self.count > 0)
    }
}

/// The metadata array: `total_pages` records starting at physical address `base`.
#[derive(Clone, Copy, Debug)]
pub struct PageMeta {
    /// Physical address of record 0 (KCore-owned memory).
    pub base: u64,
}

/// Bytes of metadata for `pages` pages.
pub const fn meta_bytes(pages: u64) -> u64 {
    pages * 8
}

impl PageMeta {
    fn record_addr(&self, mb: &MemBlocks, pfn: Pfn) -> Option<u64> {
        let pa = pfn.checked_shl(PAGE_SHIFT)?;
        if pa >> PAGE_SHIFT != pfn {
            return None;
        }
        page_index(mb, pa).map(|i| self.base + 8 * i)
    }

    /// The record of `pfn`, or `None` if `pfn` is not RAM.
    pub fn get<M: Machine>(&self, m: &M, mb: &MemBlocks, pfn: Pfn) -> Option<PageInfo> {
        let r = m.load(self.record_addr(mb, pfn)?);
        let count = (r >> COUNT_SHIFT) & COUNT_MASK;
        let owner = Owner::decode(r >> OWNER_SHIFT, count);
        let count = if matches!(owner, Owner::Lent(_)) { 0 } else { count };
        Some(PageInfo { owner, count, gfn: r & GFN_MASK })
    }

    /// `get_pfn_owner`: the owner of `pfn`, `None` for non-RAM.
    pub fn owner<M: Machine>(&self, m: &M, mb: &MemBlocks, pfn: Pfn) -> Option<Owner> {
        self.get(m, mb, pfn).map(|i| i.owner)
    }

    /// Write the record of `pfn` (a RAM page; callers check). Keeps the chunk counters exact.
    /// Out-of-range fields are a KCore bug and halt.
    pub fn set<M: Machine>(&self, m: &M, mb: &MemBlocks, pfn: Pfn, info: PageInfo) {
        assert!(info.gfn <= GFN_MASK && info.count <= MAX_SHARE_COUNT, "page record field out of range");
        if let Owner::Vm(v) | Owner::Lent(v) = info.owner {
            assert!((1..=MAX_OWNER_VMID).contains(&v), "bad vmid in page record");
        }
        if let Owner::Lent(_) = info.owner {
            assert!(info.count == 0, "a lent page has no share count");
        }
        let count = if matches!(info.owner, Owner::Lent(_)) { LENT_MARK } else { info.count };
        let addr = self.record_addr(mb, pfn).expect("page record of non-RAM");
        let old = m.load(addr);
        let old_count = (old >> COUNT_SHIFT) & COUNT_MASK;
        let was_blocking = Self::blocks_host_block(Owner::decode(old >> OWNER_SHIFT, old_count), old_count);
        let now_blocking = Self::blocks_host_block(info.owner, count);
        let new = (old & (FOREIGN_MASK << FOREIGN_SHIFT))
            | (info.owner.encode() << OWNER_SHIFT)
            | (count << COUNT_SHIFT)
            | info.gfn;
        m.store(addr, new);
        if was_blocking != now_blocking {
            self.adjust_chunk(m, mb, pfn, now_blocking);
        }
    }

    /// A page keeps its 2 MiB chunk out of host block mappings unless it is the host's
    /// (plainly, or lent to a VM: the host keeps access). Shared VM pages are mapped to the
    /// host one page at a time.
    const fn blocks_host_block(owner: Owner, count: u64) -> bool {
        match owner {
            Owner::Host => count != 0,
            Owner::Lent(_) => false,
            _ => true,
        }
    }

    fn adjust_chunk<M: Machine>(&self, m: &M, mb: &MemBlocks, pfn: Pfn, up: bool) {
        let chunk = pfn & !(CHUNK_PAGES - 1);
        let same_region = mb.search(pfn << PAGE_SHIFT).is_some_and(|r| r.contains(chunk << PAGE_SHIFT));
        if !same_region {
            // A partial chunk at a region's start is never block-mapped; no counter needed.
            return;
        }
        let addr = self.record_addr(mb, chunk).expect("chunk head is RAM");
        let r = m.load(addr);
        let n = (r >> FOREIGN_SHIFT) & FOREIGN_MASK;
        let n = if up { n + 1 } else { n.checked_sub(1).expect("chunk counter underflow") };
        assert!(n <= CHUNK_PAGES, "chunk counter overflow");
        m.store(addr, (r & !(FOREIGN_MASK << FOREIGN_SHIFT)) | (n << FOREIGN_SHIFT));
    }

    /// Pages of the 2 MiB chunk starting at `chunk` (2 MiB-aligned pfn) that keep it out of a
    /// host block mapping; `None` if the chunk head is not RAM.
    pub fn chunk_blockers<M: Machine>(&self, m: &M, mb: &MemBlocks, chunk: Pfn) -> Option<u64> {
        debug_assert_eq!(chunk % CHUNK_PAGES, 0);
        Some((m.load(self.record_addr(mb, chunk)?) >> FOREIGN_SHIFT) & FOREIGN_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;

    #[test]
    fn records_round_trip_and_chunk_counters_follow_owners() {
        let mb = MemBlocks::new(&[(0x4000_0000, 0x40_0000)]).unwrap(); // 4 MiB, 1024 pages
        let m = SimMachine::new(0x1000_0000, 0x2000);
        let meta = PageMeta { base: 0x1000_0000 };
        let p = 0x4000_0000 >> 12;
        assert_eq!(meta.get(&m, &mb, p + 3).unwrap(), PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
        meta.set(&m, &mb, p + 3, PageInfo { owner: Owner::Vm(7), count: 0, gfn: 0xabcdef });
        meta.set(&m, &mb, p + 4, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
        assert_eq!(meta.get(&m, &mb, p + 3).unwrap(), PageInfo { owner: Owner::Vm(7), count: 0, gfn: 0xabcdef });
        assert_eq!(meta.chunk_blockers(&m, &mb, p), Some(2));
        assert_eq!(meta.chunk_blockers(&m, &mb, p + 512), Some(0));
        // Sharing a VM page keeps it blocking; returning it to the host unblocks.
        meta.set(&m, &mb, p + 3, PageInfo { owner: Owner::Vm(7), count: 1, gfn: 0xabcdef });
        assert_eq!(meta.chunk_blockers(&m, &mb, p), Some(2));
        meta.set(&m, &mb, p + 3, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
        meta.set(&m, &mb, p + 4, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
        assert_eq!(meta.chunk_blockers(&m, &mb, p), Some(0));
        // The record of the chunk head keeps its own fields next to the counter.
        meta.set(&m, &mb, p + 1, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
        meta.set(&m, &mb, p, PageInfo { owner: Owner::Vm(1), count: 5, gfn: 9 });
        assert_eq!(meta.get(&m, &mb, p).unwrap(), PageInfo { owner: Owner::Vm(1), count: 5, gfn: 9 });
        assert_eq!(meta.chunk_blockers(&m, &mb, p), Some(2));
        assert_eq!(meta.owner(&m, &mb, 0x3000_0000 >> 12), None, "device memory has no owner");
        // A lent page keeps its vmid and gfn, and does not block host blocks.
        meta.set(&m, &mb, p + 600, PageInfo { owner: Owner::Lent(9), count: 0, gfn: 0x4_0000 });
        assert_eq!(meta.get(&m, &mb, p + 600).unwrap(), PageInfo { owner: Owner::Lent(9), count: 0, gfn: 0x4_0000 });
        assert_eq!(meta.chunk_blockers(&m, &mb, p + 512), Some(0));
        meta.set(&m, &mb, p + 600, PageInfo { owner: Owner::Vm(9), count: 100, gfn: 1 });
        assert_eq!(meta.get(&m, &mb, p + 600).unwrap().owner, Owner::Vm(9), "count 100 is a share count");
    }

    #[test]
    fn metadata_is_eight_bytes_per_page() {
        assert_eq!(meta_bytes(1), 8);
    }
}
