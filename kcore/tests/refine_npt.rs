//! Refinement check for layers 6-8: set/clear/walk on a real table (in simulated memory, with
//! a small pool) against the table specification of leaves and present tables, including
//! pool exhaustion midway down. Removals through layer 8 must invalidate the TLB for the
//! removed leaf.

use kcore::arch;
use kcore::locks::Locks;
use kcore::machine::sim::{SimMachine, TlbOp};
use kcore::pt::nptops::S2Table;
use kcore::pt::nptwalk::Npt;
use kcore::pt::ptalloc::PagePool;
use kcore::spec::npt::AbsNpt;
use kcore::{BLOCK_1G, BLOCK_2M, PAGE_SIZE};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const BASE: u64 = 0x1_0000_0000;

#[derive(Clone, Copy, Debug)]
enum Step {
    Set(u64, u8),
    Clear(u64),
    Walk(u64),
}

fn addr() -> impl Strategy<Value = u64> {
    let points = [
        0,
        PAGE_SIZE,
        2 * PAGE_SIZE,
        BLOCK_2M,
        BLOCK_2M + PAGE_SIZE,
        3 * BLOCK_2M,
        BLOCK_1G,
        BLOCK_1G + BLOCK_2M,
        5 * BLOCK_1G,
        1 << 39,
        (1 << 40) - PAGE_SIZE,
        1 << 40,
        0x123,
    ];
    (0..points.len()).prop_map(move |i| points[i])
}

fn abstraction(m: &SimMachine, npt: &Npt, pool: &PagePool) -> AbsNpt {
    let mut leaves = BTreeMap::new();
    npt.for_each_leaf(m, |a, l| {
        leaves.insert(a, (l.level, l.desc));
    });
    let mut tables = BTreeSet::new();
    npt.for_each_table(m, |_, level, a| {
        tables.insert((level, a));
    });
    AbsNpt { ia_bits: npt.ia_bits, leaves, tables, pool: pool.available() }
}

proptest! {
    #[test]
    fn table_refines_its_specification(
        // 40 bits: two concatenated level-1 root tables; 44: one level-0 root.
        ia_bits in prop_oneof![Just(40u32), Just(44)],
        pool_pages in 0u64..8,
        steps in prop::collection::vec(prop_oneof![
            3 => (addr(), 0u8..5).prop_map(|(a, l)| Step::Set(a, l)),
            1 => addr().prop_map(Step::Clear),
            1 => addr().prop_map(Step::Walk),
        ], 1..40),
    ) {
        let m = SimMachine::new(BASE, 16 * PAGE_SIZE);
        let locks = Locks::new();
        let root_pages = arch::s2_root_pages(ia_bits);
        let t = S2Table::new(5, ia_bits, PagePool::new(BASE, BASE + (root_pages + pool_pages) * PAGE_SIZE));
        t.init_root(&m, &locks).unwrap();
        let npt = t.expect_npt();
        let mut spec = AbsNpt::new(ia_bits, pool_pages);
        for s in steps {
            match s {
                Step::Set(a, level) => {
                    let d = arch::s2_normal_leaf(a, level.clamp(1, 3));
                    let (want, next) = spec.set(a, level, d);
                    prop_assert_eq!(t.map(&m, &locks, a, level, d), want, "set {:#x} at {}", a, level);
                    spec = next;
                }
                Step::Clear(a) => {
                    let (want, next) = spec.clear(a);
                    let got = t.unmap(&m, &locks, a);
                    prop_assert_eq!(got.map(|l| (a & !(l.size() - 1), l.level, l.desc)), want);
                    let flushes = m.take_tlb_log();
                    match want {
                        Some((base, _, _)) => prop_assert_eq!(flushes, vec![TlbOp::Ipa { vmid: 5, ipa: base }]),
                        None => prop_assert!(flushes.is_empty()),
                    }
                    spec = next;
                }
                Step::Walk(a) => {
                    let got = t.walk(&m, &locks, a).map(|l| (a & !(l.size() - 1), l.level, l.desc));
                    prop_assert_eq!(got, spec.walk(a));
                }
            }
            prop_assert_eq!(abstraction(&m, &npt, &t.pool), spec.clone());
        }
    }
}
