//! Layer 4 (Locks): KCore's named locks and their fixed acquisition order.
//!
//! | lock | protects |
//! |---|---|
//! | `smmu` | SMMU configuration and register emulation |
//! | `vm(vmid)` | a VM's state, vCPU states, boot information |
//! | `core` | vmid allocation, the image remap window, one-time installation |
//! | `s2page` | the per-page ownership metadata |
//! | `pt(vmid)` | the stage-2 table of `vmid` (0 = host) and its page pool |
//! | `spt` | the SMMU page tables |
//!
//! Order: smmu -> vm -> core/s2page -> pt/spt. A CPU may only acquire a lock whose rank is
//! above every rank it already holds; in debug builds a violation halts KCore.

use super::lockopsh::HoldLock;
use core::sync::atomic::{AtomicU8, Ordering};

/// The most CPUs KCore supports.
pub const MAX_CPUS: usize = 16;
/// Number of stage-2 table owners with their own `pt` lock: the host (0) and VMs 1..
pub const MAX_PT: usize = 64;

/// Names of KCore's locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockId {
    /// The SMMU lock.
    Smmu,
    /// The lock of one VM's state.
    Vm(u16),
    /// The core lock (vmids, remap window, installation).
    Core,
    /// The ownership metadata lock.
    S2Page,
    /// The stage-2 table lock of one vmid (0 = host).
    Pt(u16),
    /// The SMMU page-table lock.
    Spt,
    /// KCore's SMMU command queue: innermost, taken only to push commands and wait for
    /// their completion (by ownership transitions under `s2page`/`spt`, and by the SMMU
    /// emulation under `smmu`).
    SmmuQ,
}

impl LockId {
    /// Position in the acquisition order (smmu -> vm -> core/s2page -> pt -> spt -> smmu_q:
    /// a page leaving or joining the host-DMA table does so under `s2page`, sometimes while
    /// a VM's table is being released under its `pt`).
    pub const fn rank(self) -> u8 {
        match self {
            LockId::Smmu => 0,
            LockId::Vm(_) => 1,
            LockId::Core | LockId::S2Page => 2,
            LockId::Pt(_) => 3,
            LockId::Spt => 4,
            LockId::SmmuQ => 5,
        }
    }
}

/// All of KCore's locks.
pub struct Locks {
    smmu: HoldLock,
    core: HoldLock,
    s2page: HoldLock,
    spt: HoldLock,
    smmu_q: HoldLock,
    pt: [HoldLock; MAX_PT],
    vm: [HoldLock; MAX_PT],
    /// Per CPU: bit r set while the CPU holds a lock of rank r.
    held_ranks: [AtomicU8; MAX_CPUS],
}

impl Default for Locks {
    fn default() -> Self {
        Self::new()
    }
}

impl Locks {
    /// All locks free.
    pub const fn new() -> Self {
        Locks {
            smmu: HoldLock::new(),
            core: HoldLock::new(),
            s2page: HoldLock::new(),
            spt: HoldLock::new(),
            smmu_q: HoldLock::new(),
            pt: [const { HoldLock::new() }; MAX_PT],
            vm: [const { HoldLock::new() }; MAX_PT],
            held_ranks: [const { AtomicU8::new(0) }; MAX_CPUS],
        }
    }

    fn lock(&self, id: LockId) -> &HoldLock {
        match id {
            LockId::Smmu => &self.smmu,
            LockId::Core => &self.core,
            LockId::S2Page => &self.s2page,
            LockId::Spt => &self.spt,
            LockId::SmmuQ => &self.smmu_q,
            LockId::Pt(v) => &self.pt[v as usize],
            LockId::Vm(v) => &self.vm[v as usize],
        }
    }

    /// Acquire `id` on CPU `cpu`; released when the guard drops.
    ///
    /// The caller has range-checked any vmid in `id` (< [`MAX_PT`]). Taking locks out of
    /// order is a KCore bug: debug builds halt on it.
    pub fn acquire(&self, id: LockId, cpu: usize) -> LockGuard<'_> {
        let rank_bit = 1u8 << id.rank();
        let held = self.held_ranks[cpu].load(Ordering::Relaxed);
        if cfg!(debug_assertions) && held >= rank_bit {
            panic!("lock order violated on cpu {cpu}: {id:?} taken while holding ranks {held:#b}");
        }
        self.lock(id).wait_hlock(cpu);
        self.held_ranks[cpu].store(held | rank_bit, Ordering::Relaxed);
        LockGuard { locks: self, id, cpu }
    }

    /// The CPU holding `id`, if any.
    pub fn holder(&self, id: LockId) -> Option<usize> {
        self.lock(id).holder()
    }
}

/// A held lock; dropping it releases the lock.
pub struct LockGuard<'a> {
    locks: &'a Locks,
    id: LockId,
    cpu: usize,
}

impl LockGuard<'_> {
    /// Which lock this is.
    pub fn id(&self) -> LockId {
        self.id
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let bit = 1u8 << self.id.rank();
        let ranks = &self.locks.held_ranks[self.cpu];
        ranks.store(ranks.load(Ordering::Relaxed) & !bit, Ordering::Relaxed);
        self.locks.lock(self.id).pass_hlock(self.cpu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn ticket_lock_is_mutual_exclusion() {
        let locks = Arc::new(Locks::new());
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|cpu| {
                let (locks, counter) = (locks.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let _g = locks.acquire(LockId::S2Page, cpu);
                        // A non-atomic read-modify-write: lost updates if exclusion fails.
                        let v = counter.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 8000);
        assert_eq!(locks.holder(LockId::S2Page), None);
    }

    #[test]
    fn order_is_allowed_forwards() {
        let locks = Locks::new();
        let a = locks.acquire(LockId::Vm(3), 0);
        let b = locks.acquire(LockId::S2Page, 0);
        let c = locks.acquire(LockId::Pt(0), 0);
        assert_eq!(locks.holder(LockId::Pt(0)), Some(0));
        drop((c, b, a));
        assert_eq!(locks.holder(LockId::Vm(3)), None);
    }

    #[test]
    #[should_panic(expected = "lock order violated")]
    fn order_violation_halts() {
        let locks = Locks::new();
        let _pt = locks.acquire(LockId::Pt(0), 1);
        let _s2 = locks.acquire(LockId::S2Page, 1);
    }

    #[test]
    #[should_panic(expected = "released by cpu")]
    fn release_by_non_holder_halts() {
        let l = HoldLock::new();
        l.wait_hlock(0);
        l.pass_hlock(1);
    }

    #[test]
    fn queue_view_counts_holder() {
        let q = super::super::lockopsq::QueueLock::new();
        assert!(q.is_free());
        q.wait_qlock();
        assert_eq!(q.queue_len(), 1);
        q.pass_qlock();
        assert!(q.is_free());
    }
}
