//! Layer 3 (LockOpsH): the lock as atomic hold/release events with a known holder.
//!
//! The queue is hidden; what remains is "CPU c acquired" and "CPU c released". Releasing a lock
//! the CPU does not hold is a broken invariant and halts KCore.

use super::lockopsq::QueueLock;
use core::sync::atomic::{AtomicUsize, Ordering};

const FREE: usize = 0;

/// A lock that records which CPU holds it.
#[derive(Debug, Default)]
pub struct HoldLock {
    queue: QueueLock,
    /// `cpu + 1` of the holder, or [`FREE`].
    holder: AtomicUsize,
}

impl HoldLock {
    /// A free lock.
    pub const fn new() -> Self {
        HoldLock { queue: QueueLock::new(), holder: AtomicUsize::new(FREE) }
    }

    /// CPU `cpu` acquires the lock (waits its turn).
    pub fn wait_hlock(&self, cpu: usize) {
        self.queue.wait_qlock();
        self.holder.store(cpu + 1, Ordering::Relaxed);
    }

    /// CPU `cpu` releases the lock. Halts KCore if `cpu` is not the holder.
    pub fn pass_hlock(&self, cpu: usize) {
        let holder = self.holder.load(Ordering::Relaxed);
        if holder != cpu + 1 {
            panic!("lock released by cpu {cpu} but held by {}", holder.wrapping_sub(1) as isize);
        }
        self.holder.store(FREE, Ordering::Relaxed);
        self.queue.pass_qlock();
    }

    /// The CPU holding the lock, if any.
    pub fn holder(&self) -> Option<usize> {
        match self.holder.load(Ordering::Relaxed) {
            FREE => None,
            h => Some(h - 1),
        }
    }

    /// Number of CPUs holding or waiting.
    pub fn contenders(&self) -> u32 {
        self.queue.queue_len()
    }
}
