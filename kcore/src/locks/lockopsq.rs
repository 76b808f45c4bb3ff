//! Layer 2 (LockOpsQ): the ticket lock seen as a FIFO queue.
//!
//! The queue is the tickets handed out but not yet served: its head holds the lock, the rest
//! wait in order. `wait_qlock`/`pass_qlock` are `wait_lock`/`pass_lock` of layer 1; this layer
//! adds the queue observations the specification is stated over.

use super::lockops::TicketLock;

/// A ticket lock with its queue view.
#[derive(Debug, Default)]
pub struct QueueLock {
    ticket: TicketLock,
}

impl QueueLock {
    /// An unlocked lock with an empty queue.
    pub const fn new() -> Self {
        QueueLock { ticket: TicketLock::new() }
    }

    /// Join the queue and wait to reach its head.
    pub fn wait_qlock(&self) {
        self.ticket.wait_lock();
    }

    /// Leave the head of the queue.
    pub fn pass_qlock(&self) {
        self.ticket.pass_lock();
    }

    /// Number of CPUs in the queue, the holder included.
    pub fn queue_len(&self) -> u32 {
        self.ticket.next_ticket().wrapping_sub(self.ticket.now_serving())
    }

    /// Is the lock free (empty queue)?
    pub fn is_free(&self) -> bool {
        self.queue_len() == 0
    }
}
