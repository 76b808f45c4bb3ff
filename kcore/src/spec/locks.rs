//! Specification of layers 1-4: each lock is a FIFO queue of CPUs; the head holds it.

use std::collections::VecDeque;

/// One lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbsLock {
    /// Waiting CPUs in arrival order; the first holds the lock.
    pub queue: VecDeque<usize>,
}

impl AbsLock {
    /// `cpu` joins the queue.
    pub fn enqueue(&mut self, cpu: usize) {
        self.queue.push_back(cpu);
    }
    /// The holder releases; the next CPU holds it.
    pub fn release(&mut self) -> Option<usize> {
        self.queue.pop_front()
    }
    /// The CPU holding the lock.
    pub fn holder(&self) -> Option<usize> {
        self.queue.front().copied()
    }
}
