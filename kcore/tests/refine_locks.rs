//! Refinement check for layers 1-4: the ticket lock against a FIFO queue of CPUs. Operations
//! are interleaved deterministically: a CPU takes a ticket, polls whether it is served, or the
//! holder releases. The queue view (layer 2) and the holder view (layer 3) must agree with the
//! queue after every step.

use kcore::locks::lockops::TicketLock;
use kcore::locks::lockopsh::HoldLock;
use kcore::spec::locks::AbsLock;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Step {
    Take(usize),
    Poll(usize),
    Release,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![(0..4usize).prop_map(Step::Take), (0..4usize).prop_map(Step::Poll), Just(Step::Release)]
}

proptest! {
    #[test]
    fn ticket_lock_refines_a_fifo_queue(steps in prop::collection::vec(step(), 1..64)) {
        let lock = TicketLock::new();
        let mut spec = AbsLock::default();
        let mut ticket: [Option<u32>; 4] = [None; 4];
        for s in steps {
            match s {
                Step::Take(cpu) if ticket[cpu].is_none() => {
                    ticket[cpu] = Some(lock.take_ticket());
                    spec.enqueue(cpu);
                }
                Step::Poll(cpu) => {
                    if let Some(t) = ticket[cpu] {
                        prop_assert_eq!(lock.is_served(t), spec.holder() == Some(cpu));
                    }
                }
                Step::Release => {
                    if let Some(cpu) = spec.release() {
                        lock.pass_lock();
                        ticket[cpu] = None;
                    }
                }
                _ => {}
            }
            prop_assert_eq!(lock.next_ticket().wrapping_sub(lock.now_serving()) as usize, spec.queue.len());
            for (cpu, t) in ticket.iter().enumerate() {
                if let Some(t) = t {
                    prop_assert_eq!(lock.is_served(*t), spec.holder() == Some(cpu));
                }
            }
        }
    }

    #[test]
    fn hold_view_names_the_holder(cpus in prop::collection::vec(0..8usize, 1..32)) {
        let lock = HoldLock::new();
        for cpu in cpus {
            prop_assert_eq!(lock.holder(), None);
            lock.wait_hlock(cpu);
            prop_assert_eq!(lock.holder(), Some(cpu));
            prop_assert_eq!(lock.contenders(), 1);
            lock.pass_hlock(cpu);
        }
    }
}
