//! Layers 9-12 (the SMMU's tables) on the simulated machine with its simulated SMMUv3: the
//! boot takeover, the host-DMA table against its specification (`kcore::spec::spt`) under
//! generated ownership changes and device accesses, the simulated SMMU's TLB showing that
//! every removal was invalidated before it returned, and invariant 8 catching broken tables.

mod common;

use common::*;
use kcore::invariants::{self, Violation};
use kcore::kcore::KCore;
use kcore::machine::Machine;
use kcore::machine::sim::SimMachine;
use kcore::machine::simsmmu::DmaFault;
use kcore::smmu::raw::{self, cr0, evt, gbpa, op, reg};
use kcore::spec::spt::AbsHostDma;
use kcore::{PAGE_SHIFT, Pfn};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// QEMU virt's SMMUv3 registers and the ITS doorbell page (GITS_TRANSLATER's).
const SMMU_REGS: (u64, u64) = (0x0905_0000, 0x0907_0000);
const DOORBELL: u64 = 0x0809_0000;
/// A PCI device's stream (00:03.0).
const SID: u32 = 0x18;
/// The SMMU's pool: KCore memory between the metadata and the host table pool.
const SPT_POOL: (u64, u64) = (KMEM + (512 << 10), KMEM + (1 << 20));
/// Host pages the generated sequences work on.
const WINDOW: u64 = P0 + 200;
const WINDOW_PAGES: u64 = 24;

fn with_smmu() -> (KCore<SimMachine>, BTreeMap<u16, u64>) {
    let (k, pools) = kcore();
    k.take_smmu(SMMU_REGS, SPT_POOL, &[DOORBELL], false).unwrap();
    (k, pools)
}

fn dma(k: &KCore<SimMachine>, sid: u32, pa: u64, write: bool) -> Result<u64, DmaFault> {
    k.m.smmu.lock().unwrap().dma(&k.m, sid, pa, write)
}

fn commands(k: &KCore<SimMachine>) -> Vec<u8> {
    k.m.smmu.lock().unwrap().commands.iter().map(raw::cmd_opcode).collect()
}

#[test]
fn boot_takes_the_smmu_and_every_stream_reaches_exactly_host_memory() {
    let (k, _) = with_smmu();
    invariants::check(&k).unwrap();
    // Enabled, and aborting (not bypassing) whenever it is not.
    assert_eq!(k.m.smmu_read(reg::CR0ACK, 4) as u32, cr0::SMMUEN | cr0::CMDQEN | cr0::EVTQEN);
    assert_ne!(k.m.smmu_read(reg::GBPA, 4) as u32 & gbpa::ABORT, 0);
    // Nothing an earlier owner left cached survives.
    assert_eq!(commands(&k), [op::CFGI_STE_RANGE, op::TLBI_NSNH_ALL, op::SYNC]);
    let host = (P0 + 300) << PAGE_SHIFT;
    assert_eq!(dma(&k, SID, host + 0x10, true), Ok(host + 0x10));
    assert_eq!(dma(&k, 0, host, false), Ok(host), "every stream of the first level-2 tables");
    assert_eq!(dma(&k, 0x7ff, host, false), Ok(host));
    assert_eq!(dma(&k, SID, DOORBELL + 0x40, true), Ok(DOORBELL + 0x40), "MSIs reach the ITS");
    // KCore's memory, a VM's page (DONATED: VM 1's root), other device memory: stage-2 faults.
    for pa in [KMEM, DONATED << PAGE_SHIFT, SPT_POOL.0, 0x0900_0000, SMMU_REGS.0] {
        match dma(&k, SID, pa, false) {
            Err(DmaFault::Event(e)) => {
                assert_eq!((e.kind, e.stage2, e.sid), (evt::F_TRANSLATION, true, SID), "{pa:#x}")
            }
            r => panic!("DMA to {pa:#x} gave {r:?}"),
        }
    }
    // Streams KCore has no table for are refused outright.
    assert!(matches!(dma(&k, 0x800, host, false), Err(DmaFault::Event(e)) if e.kind == evt::C_BAD_STREAMID));
    // The host never maps the SMMU's registers.
    assert_eq!(k.mem().map_page_host(SMMU_REGS.0 + 0x1_00a8), Err(kcore::Error::Denied));
    // KCore logs what was refused (and drains its event queue).
    k.log_dma_faults();
    assert!(k.dma.dev.next_event(&k.m, &k.locks).is_none());
}

#[test]
fn a_page_donated_while_a_device_uses_it_is_unreachable_when_the_donation_returns() {
    let (k, _) = with_smmu();
    let page = P0 + 400;
    let pa = page << PAGE_SHIFT;
    // The device has the translation cached.
    assert_eq!(dma(&k, SID, pa, true), Ok(pa));
    assert!(k.m.smmu.lock().unwrap().tlb.iter().any(|e| e.output == page));
    let before = commands(&k).len();
    k.mem().assign_pfn_to_vm(1, 0x10, page).unwrap();
    // A whole-VMID invalidation and a completed CMD_SYNC before the call returned.
    assert_eq!(commands(&k)[before..], [op::TLBI_S12_VMALL, op::SYNC]);
    assert!(k.m.smmu.lock().unwrap().tlb.iter().all(|e| e.output != page));
    assert!(matches!(dma(&k, SID, pa, true), Err(DmaFault::Event(e)) if e.stage2));
    invariants::check(&k).unwrap();
    // Scrubbed back to the host: its devices reach it again.
    k.mem().clear_vm_page(1, page).unwrap();
    assert_eq!(dma(&k, SID, pa, false), Ok(pa));
    invariants::check(&k).unwrap();
}

#[test]
fn without_the_invalidation_the_device_keeps_the_page() {
    // The test rig's own check: had layer 12 only cleared the leaf, the simulated SMMU's TLB
    // would keep the translation, and a device would still reach the page.
    let (k, _) = with_smmu();
    let page = P0 + 401;
    let pa = page << PAGE_SHIFT;
    assert_eq!(dma(&k, SID, pa, false), Ok(pa));
    assert!(k.dma.table.clear(&k.m, page));
    assert_eq!(dma(&k, SID, pa, false), Ok(pa), "stale translation");
    // And an invalidation by IPA of a stage-2-only stream does remove it.
    k.dma.dev.issue(&k.m, &k.locks, &[[u64::from(op::TLBI_S2_IPA), pa]]);
    assert!(dma(&k, SID, pa, false).is_err());
}

#[test]
fn invariant_8_catches_a_wrong_host_dma_table_or_stream_table() {
    let (k, _) = with_smmu();
    let w = k.dma.table.walker().unwrap();
    // A KCore page mapped for devices.
    let kpage = KMEM >> PAGE_SHIFT;
    k.dma.table.set(&k.m, kpage, false).unwrap();
    assert_eq!(invariants::check(&k), Err(Violation::HostDmaForeign { ipa: KMEM }));
    w.clear_leaf(&k.m, KMEM);
    // A host page missing.
    let page = P0 + 402;
    k.dma.table.clear(&k.m, page);
    assert_eq!(invariants::check(&k), Err(Violation::HostDmaMissing { pfn: page }));
    k.dma.table.set(&k.m, page, false).unwrap();
    // A VM page still mapped after the VM took it (the ownership record changed alone).
    invariants::check(&k).unwrap();
    // A stream switched to bypass.
    let l1 = k.m.load(k.dma.dev.strtab());
    let ste0 = l1 & raw::ADDR_MASK_51_6;
    let sid = 5u64;
    let old = k.m.load(ste0 + sid * 64);
    k.m.store(ste0 + sid * 64, raw::ste::V | (raw::ste::CONFIG_BYPASS << 1));
    assert_eq!(invariants::check(&k), Err(Violation::StreamNotHostDma { sid: 5 }));
    k.m.store(ste0 + sid * 64, old);
    invariants::check(&k).unwrap();
    // The per-trap check of debug builds looks at recent changes only, and catches a page
    // mapped for devices that is not the host's.
    invariants::check_quiesced(&k).unwrap();
    k.dma.map(&k.m, &k.locks, kpage, false).unwrap();
    assert_eq!(invariants::check_quiesced(&k), Err(Violation::HostDmaForeign { ipa: KMEM }));
    k.dma.unmap(&k.m, &k.locks, kpage);
    invariants::check_quiesced(&k).unwrap();
}

#[test]
fn no_smmu_means_no_host_dma_state() {
    let (k, _) = kcore();
    assert!(!k.dma.active());
    k.mem().assign_pfn_to_vm(1, 0x10, P0 + 400).unwrap();
    k.log_dma_faults();
    invariants::check(&k).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Assign(u64),
    Donate(u64),
    Scrub(u64),
    Lend(u64),
    Reclaim(u64),
    Dma(u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..WINDOW_PAGES;
    prop_oneof![
        1 => i.clone().prop_map(Op::Assign),
        1 => i.clone().prop_map(Op::Donate),
        1 => i.clone().prop_map(Op::Scrub),
        1 => i.clone().prop_map(Op::Lend),
        1 => i.clone().prop_map(Op::Reclaim),
        3 => (i, any::<bool>()).prop_map(|(i, w)| Op::Dma(i, w)),
    ]
}

fn mapped(k: &KCore<SimMachine>) -> std::collections::BTreeSet<Pfn> {
    (WINDOW..WINDOW + WINDOW_PAGES).filter(|&p| k.dma.maps(&k.m, p)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Generated ownership changes and device accesses: the host-DMA table abstracts to the
    /// specification's domain after every step; every device access succeeds exactly when the
    /// specification allows it; the SMMU's TLB stays clean; the invariants hold.
    #[test]
    fn host_dma_refines_its_specification(ops in proptest::collection::vec(op(), 1..40)) {
        let (k, _) = with_smmu();
        k.vminfo[1].set_kind(kcore::vm::VmKind::NonProtected);
        let mut spec = AbsHostDma { mapped: mapped(&k), cached: Default::default() };
        prop_assert_eq!(spec.mapped.len() as u64, WINDOW_PAGES);
        for o in ops {
            let gfn = |i: u64| 0x100 + i;
            match o {
                Op::Assign(i) => if k.mem().assign_pfn_to_vm(1, gfn(i), WINDOW + i).is_ok() {
                    spec = spec.unmap(WINDOW + i);
                },
                Op::Donate(i) => if k.mem().donate_to_pool(1, WINDOW + i).is_ok() {
                    spec = spec.unmap(WINDOW + i);
                },
                Op::Scrub(i) => if k.mem().clear_vm_page(1, WINDOW + i).is_ok() {
                    spec = spec.map(WINDOW + i);
                },
                // A page lent to a non-protected VM (VM 2) stays the host's, for its devices too.
                Op::Lend(i) => { let _ = k.mem().lend_pfn_to_vm(2, gfn(i), WINDOW + i); }
                Op::Reclaim(i) => { let _ = k.mem().reclaim_lent_page(2, gfn(i)); }
                Op::Dma(i, write) => {
                    let pa = (WINDOW + i) << PAGE_SHIFT;
                    let (allowed, next) = spec.dma(WINDOW + i);
                    prop_assert_eq!(dma(&k, SID, pa, write).is_ok(), allowed, "DMA to {:#x}", pa);
                    spec = next;
                }
            }
            prop_assert_eq!(&mapped(&k), &spec.mapped);
            prop_assert!(spec.tlb_clean());
            let tlb: Vec<u64> = k.m.smmu.lock().unwrap().tlb.iter().map(|e| e.output).collect();
            prop_assert!(tlb.iter().all(|p| !(WINDOW..WINDOW + WINDOW_PAGES).contains(p) || spec.mapped.contains(p)));
            prop_assert_eq!(invariants::check(&k), Ok(()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Layer 9 against layer 5's specification: pages handed out are free ones, zeroed, in
    /// the pool's range, never twice; exhaustion is `NoMemory` and changes nothing.
    #[test]
    fn smmu_pool_refines_the_pool_specification(n in 1u64..24, dirty in any::<u8>()) {
        use kcore::spec::ptalloc::AbsPool;
        use kcore::spt::mmioptalloc::SptPool;
        let m = SimMachine::new(RAM, RAM_SIZE);
        let (start, pages) = (RAM + (1 << 20), 16u64);
        for p in 0..pages {
            m.fill_page(start + p * 4096, dirty);
        }
        let pool = SptPool::new(0, 0);
        pool.set_range(start, start + pages * 4096);
        let mut spec = AbsPool { free: (0..pages).map(|p| start + p * 4096).collect(), ..Default::default() };
        for _ in 0..n {
            let got = pool.alloc(&m);
            spec = spec.alloc(got).map_err(|_| TestCaseError::fail(format!("{got:?} not allowed")))?;
            if let Ok(p) = got {
                prop_assert!(m.page_is_zero(p));
            }
            prop_assert_eq!(pool.available(), spec.free.len() as u64);
        }
    }
}
