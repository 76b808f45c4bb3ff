//! Layer 5 (PTAlloc): page-table pages from a KCore-owned pool.
//!
//! A pool is a physical range of KCore-owned pages handed out one at a time, zeroed, with a
//! free list for pages given back. Exhaustion is an error (the host can donate more pages and
//! retry), never a panic. The owner's `pt` lock serialises use; the fields are atomics only so
//! the pool can be shared between CPUs without `unsafe`.

use crate::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::machine::Machine;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A pool of page-table pages.
#[derive(Debug, Default)]
pub struct PagePool {
    /// Next never-used page.
    next: AtomicU64,
    /// End of the never-used range.
    end: AtomicU64,
    /// Head of the free list (0 = empty); each free page holds the next pointer in word 0.
    free_head: AtomicU64,
    /// Pages on the free list.
    free_count: AtomicU64,
    /// Pages currently handed out.
    in_use: AtomicU64,
}

impl PagePool {
    /// A pool over the pages of `[start, end)`, both page aligned, owned by KCore.
    pub const fn new(start: u64, end: u64) -> Self {
        PagePool {
            next: AtomicU64::new(start),
            end: AtomicU64::new(end),
            free_head: AtomicU64::new(0),
            free_count: AtomicU64::new(0),
            in_use: AtomicU64::new(0),
        }
    }

    /// Give a pool that was created empty (`new(0, 0)`) the range `[start, end)`: boot only,
    /// before any page of it is used.
    pub fn set_range(&self, start: u64, end: u64) {
        assert!(self.next.load(Relaxed) == self.end.load(Relaxed) && self.free_head.load(Relaxed) == 0, "pool in use");
        self.next.store(start, Relaxed);
        self.end.store(end, Relaxed);
    }

    /// Allocate a zeroed page.
    pub fn alloc<M: Machine>(&self, m: &M) -> Result<u64> {
        let head = self.free_head.load(Relaxed);
        let page = if head != 0 {
            self.free_head.store(m.load(head), Relaxed);
            self.free_count.fetch_sub(1, Relaxed);
            head
        } else {
            let next = self.next.load(Relaxed);
            if next >= self.end.load(Relaxed) {
                return Err(Error::NoMemory);
            }
            self.next.store(next + PAGE_SIZE, Relaxed);
            next
        };
        m.zero_page(page);
        self.in_use.fetch_add(1, Relaxed);
        Ok(page)
    }

    /// Allocate `pages` (a power of two) zeroed, contiguous pages aligned to their total size,
    /// from the never-used range (a concatenated stage-2 root); pages skipped to align go to
    /// the free list. One page is [`PagePool::alloc`].
    pub fn alloc_contiguous<M: Machine>(&self, m: &M, pages: u64) -> Result<u64> {
        if pages <= 1 {
            return self.alloc(m);
        }
        let bytes = pages * PAGE_SIZE;
        let next = self.next.load(Relaxed);
        let start = next.next_multiple_of(bytes);
        if start.checked_add(bytes).is_none_or(|end| end > self.end.load(Relaxed)) {
            return Err(Error::NoMemory);
        }
        for skipped in (next..start).step_by(PAGE_SIZE as usize) {
            self.push(m, skipped);
        }
        self.next.store(start + bytes, Relaxed);
        for page in (start..start + bytes).step_by(PAGE_SIZE as usize) {
            m.zero_page(page);
        }
        self.in_use.fetch_add(pages, Relaxed);
        Ok(start)
    }

    /// Return a page to the pool. It must have come from [`PagePool::alloc`].
    pub fn free<M: Machine>(&self, m: &M, page: u64) {
        self.push(m, page);
        self.in_use.fetch_sub(1, Relaxed);
    }

    /// Add a page that was not in the pool (a page the host donated, now KCore-owned).
    pub fn add<M: Machine>(&self, m: &M, page: u64) {
        self.push(m, page);
    }

    fn push<M: Machine>(&self, m: &M, page: u64) {
        m.store(page, self.free_head.load(Relaxed));
        self.free_head.store(page, Relaxed);
        self.free_count.fetch_add(1, Relaxed);
    }

    /// Take every page off the free list (for giving back to the host); the bump range is
    /// left alone (it is KCore's own reserve).
    pub fn drain<M: Machine>(&self, m: &M, mut f: impl FnMut(u64)) {
        loop {
            let head = self.free_head.load(Relaxed);
            if head == 0 {
                return;
            }
            self.free_head.store(m.load(head), Relaxed);
            self.free_count.fetch_sub(1, Relaxed);
            f(head);
        }
    }

    /// Pages that can be allocated now.
    pub fn available(&self) -> u64 {
        self.never_used() + self.free_count.load(Relaxed)
    }

    /// Pages handed out and not returned.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Relaxed)
    }

    /// Pages that can still be allocated without a free.
    pub fn never_used(&self) -> u64 {
        (self.end.load(Relaxed) - self.next.load(Relaxed)) / PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;

    #[test]
    fn alloc_zeroes_and_exhausts_with_an_error() {
        let m = SimMachine::new(0x1000_0000, 4 * PAGE_SIZE);
        m.fill_page(0x1000_0000, 0xaa);
        let pool = PagePool::new(0x1000_0000, 0x1000_0000 + 2 * PAGE_SIZE);
        let a = pool.alloc(&m).unwrap();
        assert!(m.page_is_zero(a));
        let b = pool.alloc(&m).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.alloc(&m), Err(Error::NoMemory));
        pool.free(&m, a);
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.alloc(&m), Ok(a));
        assert!(m.page_is_zero(a), "a reused page is zeroed again");
        assert_eq!(pool.in_use(), 2);
        pool.add(&m, 0x1000_0000 + 3 * PAGE_SIZE);
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.alloc(&m), Ok(0x1000_0000 + 3 * PAGE_SIZE));
    }

    #[test]
    fn contiguous_allocation_is_aligned_and_keeps_the_skipped_pages() {
        let base = 0x1000_0000;
        let m = SimMachine::new(base, 16 * PAGE_SIZE);
        m.fill_page(base + 2 * PAGE_SIZE, 0xaa);
        let pool = PagePool::new(base + PAGE_SIZE, base + 8 * PAGE_SIZE);
        let root = pool.alloc_contiguous(&m, 2).unwrap();
        assert_eq!(root, base + 2 * PAGE_SIZE, "aligned to 8 KiB");
        assert!(m.page_is_zero(root) && m.page_is_zero(root + PAGE_SIZE));
        assert_eq!((pool.in_use(), pool.available()), (2, 5), "the page skipped to align is free");
        assert_eq!(pool.alloc_contiguous(&m, 8), Err(Error::NoMemory));
        assert_eq!(pool.alloc_contiguous(&m, 4), Ok(base + 4 * PAGE_SIZE));
        assert_eq!(pool.alloc(&m), Ok(base + PAGE_SIZE));
    }
}
