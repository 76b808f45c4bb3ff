//! Refinement check for layer 5: the pool against a set of free and handed-out pages,
//! including the aligned multi-page allocation of a concatenated stage-2 root.

use kcore::PAGE_SIZE;
use kcore::machine::sim::SimMachine;
use kcore::pt::ptalloc::PagePool;
use kcore::spec::ptalloc::AbsPool;
use proptest::prelude::*;

const BASE: u64 = 0x4000_0000;

#[derive(Clone, Copy, Debug)]
enum Step {
    Alloc,
    AllocContiguous(u64),
    Free(usize),
    Donate(u64),
}

proptest! {
    #[test]
    fn pool_refines_a_page_set(
        size in 0u64..8,
        steps in prop::collection::vec(prop_oneof![
            3 => Just(Step::Alloc),
            1 => prop_oneof![Just(1u64), Just(2), Just(4)].prop_map(Step::AllocContiguous),
            2 => (0..16usize).prop_map(Step::Free),
            1 => (8u64..16).prop_map(Step::Donate),
        ], 1..64),
    ) {
        let m = SimMachine::new(BASE, 16 * PAGE_SIZE);
        let pool = PagePool::new(BASE, BASE + size * PAGE_SIZE);
        let mut spec = AbsPool { free: (0..size).map(|i| BASE + i * PAGE_SIZE).collect(), ..AbsPool::default() };
        let mut donated = std::collections::BTreeSet::new();
        for s in steps {
            match s {
                Step::Alloc => {
                    let got = pool.alloc(&m);
                    spec = spec.alloc(got).map_err(|_| TestCaseError::fail(format!("alloc gave {got:?}")))?;
                    if let Ok(p) = got {
                        prop_assert!(m.page_is_zero(p));
                        m.fill_page(p, 0x5a);
                    }
                }
                Step::AllocContiguous(n) => {
                    let got = pool.alloc_contiguous(&m, n);
                    spec = spec
                        .alloc_contiguous(n, got)
                        .map_err(|_| TestCaseError::fail(format!("alloc_contiguous({n}) gave {got:?}")))?;
                    if let Ok(p) = got {
                        for q in (p..p + n * PAGE_SIZE).step_by(PAGE_SIZE as usize) {
                            prop_assert!(m.page_is_zero(q));
                            m.fill_page(q, 0x5a);
                        }
                    }
                }
                Step::Free(i) => {
                    if let Some(&p) = spec.in_use.iter().nth(i) {
                        pool.free(&m, p);
                        spec = spec.give(p);
                    }
                }
                Step::Donate(i) => {
                    let p = BASE + i * PAGE_SIZE;
                    if donated.insert(p) {
                        pool.add(&m, p);
                        spec = spec.give(p);
                    }
                }
            }
            prop_assert_eq!(pool.available() as usize, spec.free.len());
            prop_assert_eq!(pool.in_use() as usize, spec.in_use.len());
        }
    }
}
