//! The MMIO a protected VM enrolled with pKVM's MMIO_GUARD call: a fixed table of coalesced
//! `[start, end)` page ranges, kept sorted, with no two ranges touching (adjacent pages
//! merge), in KCore's own record of the VM ([`super::VmInfo`]).
//!
//! A Linux guest with the pKVM guest driver enrols every page it maps as a device, one call
//! per page, in address order (its `ioremap` hook), so a device's window of any size ends up
//! as one range: the table's bound is on how many separate windows a VM may have, not on
//! their size. The table only grows while the VM lives (the upstream ABI has no unenrol);
//! destroying the VM empties it.
//!
//! Fields are atomics only so the record can be shared between CPUs without `unsafe`; the
//! VM's `vm(vmid)` lock serialises every change and every lookup, except
//! [`MmioGuard::in_use`], which only asks whether the table is still empty (it never empties
//! while the VM lives).

use crate::PAGE_SIZE;
use crate::error::{Error, Result};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

/// Most separate MMIO ranges one VM may enrol. A Linux guest on QEMU's `virt` machine with
/// virtio-pci devices needs about a dozen (the GIC's distributor and redistributors, the
/// PL011, PL031 and PL061, the virtio-mmio transports, the PCI configuration window and the
/// devices' BARs); an enrolment that would need one more range is refused.
pub const MMIO_GUARD_RANGES: usize = 32;

/// One VM's enrolled MMIO.
#[derive(Debug, Default)]
pub struct MmioGuard {
    count: AtomicU8,
    start: [AtomicU64; MMIO_GUARD_RANGES],
    end: [AtomicU64; MMIO_GUARD_RANGES],
    /// Successful MMIO_GUARD calls, repeats included (reported when the VM is destroyed).
    calls: AtomicU64,
    /// Refused MMIO_GUARD calls (reported too).
    refused: AtomicU64,
}

impl MmioGuard {
    /// Has the guest enrolled anything (it "uses the guard": un-enrolled MMIO is refused)?
    pub fn in_use(&self) -> bool {
        self.count.load(Relaxed) != 0
    }

    /// How many ranges the table holds.
    pub fn len(&self) -> usize {
        (self.count.load(Relaxed) as usize).min(MMIO_GUARD_RANGES)
    }

    /// The range count as stored (for the invariants: never above the bound).
    pub fn stored_len(&self) -> usize {
        self.count.load(Relaxed) as usize
    }

    /// Is the table empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Successful enrolments so far, repeats included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// Count a refused MMIO_GUARD call (a bad argument, or the table full).
    pub fn note_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// Refused MMIO_GUARD calls so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Range `i` (< [`MmioGuard::len`]) as `(start, end)`.
    pub fn range(&self, i: usize) -> (u64, u64) {
        (self.start[i].load(Relaxed), self.end[i].load(Relaxed))
    }

    /// The ranges in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.len()).map(|i| self.range(i))
    }

    /// How many ranges start at or below `ipa` (binary search; the ranges are sorted).
    fn ranges_at_or_below(&self, ipa: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.start[mid].load(Relaxed) <= ipa {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Is `ipa` in an enrolled page?
    pub fn contains(&self, ipa: u64) -> bool {
        let i = self.ranges_at_or_below(ipa);
        i > 0 && ipa < self.end[i - 1].load(Relaxed)
    }

    /// Enrol the page at `page` (page aligned, not at the top page of the address space: the
    /// caller checked it lies in the VM's IPA space). A page already enrolled is fine. A page
    /// that touches a range extends it (joining two ranges if it fills the gap between them);
    /// otherwise it starts a range of its own, `NoMemory` if the table is full (nothing
    /// changes then).
    pub fn enrol(&self, page: u64) -> Result<()> {
        debug_assert!(page.is_multiple_of(PAGE_SIZE) && page.checked_add(PAGE_SIZE).is_some());
        let n = self.len();
        let i = self.ranges_at_or_below(page);
        let below = (i > 0).then(|| self.range(i - 1));
        let above = (i < n).then(|| self.range(i));
        let next = page + PAGE_SIZE;
        match (below, above) {
            (Some((_, end)), _) if page < end => {}
            (Some((_, end)), Some((start, after))) if page == end && next == start => {
                // Fills the gap: range i joins range i - 1.
                self.end[i - 1].store(after, Relaxed);
                for j in i..n - 1 {
                    self.start[j].store(self.start[j + 1].load(Relaxed), Relaxed);
                    self.end[j].store(self.end[j + 1].load(Relaxed), Relaxed);
                }
                self.count.store(n as u8 - 1, Relaxed);
            }
            (Some((_, end)), _) if page == end => self.end[i - 1].store(next, Relaxed),
            (_, Some((start, _))) if next == start => self.start[i].store(page, Relaxed),
            _ => {
                if n == MMIO_GUARD_RANGES {
                    return Err(Error::NoMemory);
                }
                for j in (i..n).rev() {
                    self.start[j + 1].store(self.start[j].load(Relaxed), Relaxed);
                    self.end[j + 1].store(self.end[j].load(Relaxed), Relaxed);
                }
                self.start[i].store(page, Relaxed);
                self.end[i].store(next, Relaxed);
                self.count.store(n as u8 + 1, Relaxed);
            }
        }
        self.calls.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Say on KCore's console what VM `vmid`, about to be destroyed, enrolled (nothing if it
    /// never called MMIO_GUARD): how many calls, how many refused, and the ranges they made.
    pub(crate) fn report(&self, vmid: u16) {
        if self.calls() == 0 && self.refused() == 0 {
            return;
        }
        log::info!(
            "VM {vmid} destroyed: {} MMIO_GUARD enrolments ({} calls refused) in {} ranges",
            self.calls(),
            self.refused(),
            self.len()
        );
        for (start, end) in self.ranges() {
            log::info!("VM {vmid} MMIO guard: [{start:#x}, {end:#x}) {} pages", (end - start) / PAGE_SIZE);
        }
    }

    /// Forget every enrolment (the VM is gone).
    pub(crate) fn clear(&self) {
        self.count.store(0, Relaxed);
        self.calls.store(0, Relaxed);
        self.refused.store(0, Relaxed);
        for (s, e) in self.start.iter().zip(&self.end) {
            s.store(0, Relaxed);
            e.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn ranges(g: &MmioGuard) -> Vec<(u64, u64)> {
        g.ranges().collect()
    }

    #[test]
    fn pages_in_order_make_one_range() {
        let g = MmioGuard::default();
        assert!(!g.in_use());
        for i in 0..4096 {
            g.enrol(0x1000_0000 + i * P).unwrap();
        }
        assert_eq!(ranges(&g), [(0x1000_0000, 0x1000_0000 + 4096 * P)]);
        assert!(g.in_use());
        assert_eq!(g.calls(), 4096);
    }

    #[test]
    fn repeats_extensions_and_joins() {
        let g = MmioGuard::default();
        g.enrol(10 * P).unwrap();
        g.enrol(10 * P).unwrap();
        assert_eq!(ranges(&g), [(10 * P, 11 * P)]);
        g.enrol(12 * P).unwrap();
        g.enrol(5 * P).unwrap();
        assert_eq!(ranges(&g), [(5 * P, 6 * P), (10 * P, 11 * P), (12 * P, 13 * P)]);
        g.enrol(9 * P).unwrap(); // extends downwards
        g.enrol(11 * P).unwrap(); // fills the gap: two ranges join
        assert_eq!(ranges(&g), [(5 * P, 6 * P), (9 * P, 13 * P)]);
        assert_eq!(g.calls(), 6);
        for (ipa, inside) in [(5 * P, true), (6 * P - 1, true), (6 * P, false), (8 * P, false), (9 * P, true)] {
            assert_eq!(g.contains(ipa), inside, "{ipa:#x}");
        }
        assert!(g.contains(13 * P - 1) && !g.contains(13 * P) && !g.contains(0) && !g.contains(u64::MAX));
    }

    #[test]
    fn a_full_table_refuses_a_new_range_but_still_grows_ranges() {
        let g = MmioGuard::default();
        for i in 0..MMIO_GUARD_RANGES as u64 {
            g.enrol(4 * i * P).unwrap();
        }
        assert_eq!(g.enrol(4 * MMIO_GUARD_RANGES as u64 * P), Err(Error::NoMemory));
        assert_eq!(g.enrol(2 * P), Err(Error::NoMemory));
        assert_eq!(g.len(), MMIO_GUARD_RANGES);
        assert!(!g.contains(2 * P));
        // Touching a range, or a page already in: fine.
        g.enrol(P).unwrap();
        g.enrol(0).unwrap();
        // Joining two ranges frees a slot.
        g.enrol(2 * P).unwrap();
        g.enrol(3 * P).unwrap();
        assert_eq!(g.len(), MMIO_GUARD_RANGES - 1);
        g.enrol(1 << 40).unwrap();
        assert_eq!(g.range(MMIO_GUARD_RANGES - 1), (1 << 40, (1 << 40) + P));
        assert_eq!(g.calls(), MMIO_GUARD_RANGES as u64 + 5);
        g.note_refused();
        assert_eq!(g.refused(), 1);
        g.clear();
        assert!(!g.in_use() && g.calls() == 0 && g.refused() == 0 && !g.contains(0));
    }

    /// Against a set of pages: after each enrolment of a pseudo-random page, the table is the
    /// set's maximal runs, in order, or the enrolment was refused because it would need one
    /// run too many.
    #[test]
    fn matches_a_set_of_pages() {
        let g = MmioGuard::default();
        let mut set = std::collections::BTreeSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = (x % 160) * P;
            let mut with = set.clone();
            with.insert(page);
            let runs = runs_of(&with);
            let r = g.enrol(page);
            if runs.len() > MMIO_GUARD_RANGES {
                assert_eq!(r, Err(Error::NoMemory));
            } else {
                assert_eq!(r, Ok(()));
                set = with;
            }
            assert_eq!(ranges(&g), runs_of(&set));
        }
    }

    fn runs_of(set: &std::collections::BTreeSet<u64>) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = vec![];
        for &p in set {
            match runs.last_mut() {
                Some(r) if r.1 == p => r.1 = p + P,
                _ => runs.push((p, p + P)),
            }
        }
        runs
    }
}
