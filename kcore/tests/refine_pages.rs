//! Refinement check for layers 13-15: region search, page index and the ownership records
//! (with their 2 MiB block counters) against RAM as a set of frames and records as a map.

use kcore::PAGE_SHIFT;
use kcore::machine::sim::SimMachine;
use kcore::mem::memblock::MemBlocks;
use kcore::mem::pageindex::page_index;
use kcore::mem::pagemgmt::{CHUNK_PAGES, MAX_SHARE_COUNT, Owner, PageInfo, PageMeta};
use kcore::spec::pages::AbsPages;
use proptest::prelude::*;

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![Just(Owner::Host), Just(Owner::KCore), (1u16..=2046).prop_map(Owner::Vm)]
}

proptest! {
    #[test]
    fn regions_and_records_refine_their_specification(
        // Up to three disjoint regions with arbitrary (unaligned) edges.
        gaps in prop::collection::vec((1u64..(8 << 20), 1u64..(6 << 20)), 1..4),
        probes in prop::collection::vec(0u64..(64 << 20), 1..40),
        writes in prop::collection::vec((0u64..(64 << 20), owner(), 0..=MAX_SHARE_COUNT, 0u64..(1 << 36)), 0..80),
    ) {
        let mut ranges = Vec::new();
        let mut at = 0x4000_0000u64;
        for (gap, size) in gaps {
            at += gap;
            ranges.push((at, size));
            at += size;
        }
        let mb = MemBlocks::new(&ranges).unwrap();
        let spec0 = AbsPages::new(&ranges);
        let mut spec = spec0.clone();
        for p in probes {
            let pa = 0x4000_0000 + p;
            prop_assert_eq!(mb.search(pa).map(|r| (r.base >> PAGE_SHIFT, r.end() >> PAGE_SHIFT)), spec.search(pa));
            prop_assert_eq!(page_index(&mb, pa), spec.page_index(pa));
        }
        let pages = mb.total_pages();
        let m = SimMachine::new(0x1000_0000, (pages * 8).next_multiple_of(4096));
        let meta = PageMeta { base: 0x1000_0000 };
        for (off, owner, count, gfn) in writes {
            let pfn = (0x4000_0000 + off) >> PAGE_SHIFT;
            let info = PageInfo { owner, count, gfn };
            if let Some(record) = spec.records.get_mut(&pfn) {
                meta.set(&m, &mb, pfn, info);
                *record = info;
            } else {
                prop_assert_eq!(meta.get(&m, &mb, pfn), None);
            }
            prop_assert_eq!(meta.get(&m, &mb, pfn), spec.records.get(&pfn).copied());
        }
        for r in mb.regions() {
            let mut chunk = (r.base >> PAGE_SHIFT).next_multiple_of(CHUNK_PAGES);
            while chunk < r.end() >> PAGE_SHIFT {
                prop_assert_eq!(meta.chunk_blockers(&m, &mb, chunk), spec.chunk_blockers(chunk), "chunk {:#x}", chunk);
                chunk += CHUNK_PAGES;
            }
        }
        for (pfn, info) in &spec.records {
            prop_assert_eq!(meta.get(&m, &mb, *pfn), Some(*info));
        }
    }
}
