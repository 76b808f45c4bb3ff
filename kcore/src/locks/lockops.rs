//! Layer 1 (LockOps): the ticket spinlock primitive.
//!
//! `wait_lock` takes a ticket and spins until the "now serving" counter reaches it;
//! `pass_lock` serves the next ticket. Acquire/release ordering makes everything written
//! under the lock visible to the next holder.

use core::sync::atomic::{AtomicU32, Ordering};

/// A ticket spinlock: FIFO, bounded waiting for every CPU.
#[derive(Debug, Default)]
pub struct TicketLock {
    next: AtomicU32,
    now: AtomicU32,
}

impl TicketLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        TicketLock { next: AtomicU32::new(0), now: AtomicU32::new(0) }
    }

    /// Take a ticket and wait until it is served. Returns the ticket.
    pub fn wait_lock(&self) -> u32 {
        let ticket = self.take_ticket();
        while !self.is_served(ticket) {
            crate::machine::spin_wait_hint();
        }
        ticket
    }

    /// `incr_ticket`: join the queue.
    pub fn take_ticket(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// `get_now == ticket`: has `ticket` reached the head (acquiring everything the previous
    /// holder released)?
    pub fn is_served(&self, ticket: u32) -> bool {
        self.now.load(Ordering::Acquire) == ticket
    }

    /// Serve the next ticket (release the lock). Only the holder may call this.
    pub fn pass_lock(&self) {
        // Only the holder writes `now`, so a load/store pair is a correct increment.
        let now = self.now.load(Ordering::Relaxed);
        self.now.store(now.wrapping_add(1), Ordering::Release);
    }

    /// The next ticket to hand out.
    pub fn next_ticket(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }

    /// The ticket being served.
    pub fn now_serving(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }
}
