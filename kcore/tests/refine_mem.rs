//! Refinement check for layers 16-17 (MemAux, MemOps): generated sequences of requests,
//! valid, invalid and adversarial, run through the code on the simulated machine and through
//! the specification (`kcore::spec::mem`). After every step the results must be equal, the
//! abstraction of the concrete state must equal the specified state (the host map up to the
//! block sizes the code chooses, which must stay within what the host may map), the
//! invariants must hold, every lock must be free, and every page handed back must be zero.

mod common;

use common::*;
use kcore::error::Error;
use kcore::invariants;
use kcore::locks::LockId;
use kcore::machine::Machine;
use kcore::mem::pagemgmt::Owner;
use kcore::spec::mem::{AbsMem, Op, abstraction, run};
use kcore::{PAGE_SHIFT, PAGE_SIZE};
use proptest::prelude::*;

const PFNS: [u64; 16] = [
    P0,
    P0 + 1,
    P0 + 2,
    P0 + 511,
    P0 + 512,
    P0 + 513,
    P0 + 1023,
    P0 + 1024,
    P0 + 1025,
    P0 + 1536,
    DONATED,          // KCore-owned (donated)
    (KMEM >> 12) + 3, // KCore-owned (metadata)
    0,                // page 0: never RAM
    P0 + 4096,        // just past RAM
    u64::MAX >> 12,   // absurd
    1 << 40,          // absurd, shifts out of range
];
const GFNS: [u64; 10] = [0, 1, 2, 511, 512, 513, 1024, (1 << 28) - 1, 1 << 28, u64::MAX];
const VMIDS: [u16; 7] = [0, 1, 2, 3, 63, 64, u16::MAX];

fn pfn() -> impl Strategy<Value = u64> {
    (0..PFNS.len()).prop_map(|i| PFNS[i])
}
fn gfn() -> impl Strategy<Value = u64> {
    (0..GFNS.len()).prop_map(|i| GFNS[i])
}
fn vmid() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 1u16..=2, 1 => (0..VMIDS.len()).prop_map(|i| VMIDS[i])]
}
/// (gfn, pfn) pairs laid out the way a host gives a guest its memory: gfn = pfn - P0, so
/// assignments and later block mappings of the same range meet.
fn paired() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![3 => (0..10usize).prop_map(|i| (PFNS[i] - P0, PFNS[i])), 2 => (gfn(), pfn())]
}
fn level() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(3u8), 3 => Just(2u8), 1 => 0u8..6]
}
fn ipa() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => pfn().prop_map(|p| p.wrapping_shl(12) | 0x18),
        1 => Just(0x0900_0000u64),
        1 => Just(0x80_0000_0000u64),
        1 => Just(1u64 << 40),
    ]
}
fn device_pa() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0x0900_0000u64), Just(0x0901_0000), Just(RAM + 0x5000), Just(0x0900_0010), Just(1 << 48)]
}

/// VM 2 is non-protected (the only kind a page may be lent to; layer 28 checks the kind).
fn lend_vmid() -> impl Strategy<Value = u16> {
    prop_oneof![6 => Just(2u16), 1 => Just(0u16), 1 => Just(64u16), 1 => Just(u16::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (lend_vmid(), paired()).prop_map(|(vmid, (gfn, pfn))| Op::Lend { vmid, gfn, pfn }),
        2 => (prop_oneof![3 => lend_vmid(), 1 => Just(1u16)], gfn()).prop_map(|(vmid, gfn)| Op::Reclaim { vmid, gfn }),
        4 => ipa().prop_map(|ipa| Op::HostFault { ipa }),
        3 => ipa().prop_map(|ipa| Op::HostKernelRead { ipa }),
        1 => (vmid(), pfn()).prop_map(|(vmid, pfn)| Op::Donate { vmid, pfn }),
        1 => (prop_oneof![Just(3u16), Just(1), Just(0), Just(64)], prop_oneof![Just(P0 + 2), pfn()])
            .prop_map(|(vmid, root)| Op::CreateVm { vmid, root }),
        3 => (vmid(), paired()).prop_map(|(vmid, (gfn, pfn))| Op::Assign { vmid, gfn, pfn }),
        3 => (vmid(), paired(), level()).prop_map(|(vmid, (gfn, pfn), level)| Op::Map { vmid, gfn, pfn, level }),
        4 => (vmid(), paired(), level()).prop_map(|(vmid, (gfn, pfn), level)| Op::ProtMap { vmid, gfn, pfn, level }),
        3 => (vmid(), pfn()).prop_map(|(vmid, pfn)| Op::Grant { vmid, pfn }),
        2 => (vmid(), pfn()).prop_map(|(vmid, pfn)| Op::Revoke { vmid, pfn }),
        2 => (vmid(), pfn()).prop_map(|(vmid, pfn)| Op::Scrub { vmid, pfn }),
        1 => (vmid(), gfn(), device_pa()).prop_map(|(vmid, g, pa)| Op::MapIo { vmid, gpa: g.wrapping_shl(12), pa }),
        1 => (vmid(), pfn(), prop_oneof![Just(1u64), Just(2), Just(512), Just(0), Just(u64::MAX)])
            .prop_map(|(vmid, pfn, n)| Op::ClearRange { vmid, pfn, n }),
        2 => (vmid(), gfn(), prop_oneof![Just(4096u64), Just(8192), Just(2 << 20), Just(0), Just(100), Just(!4095)], any::<bool>())
            .prop_map(|(vmid, g, size, up)| Op::ShareRange { vmid, gpa: g.wrapping_shl(12), size, up }),
    ]
}

/// Run `ops` on both sides, checking everything after every step.
fn refine(ops: &[Op]) -> Result<(), TestCaseError> {
    let (k, pools) = kcore();
    k.vminfo[1].set_kind(kcore::vm::VmKind::NonProtected);
    let mut spec: AbsMem = abstraction(&k, &pools);
    for (step, &op) in ops.iter().enumerate() {
        let (want, next) = spec.step(op);
        let got = run(&k, op);
        prop_assert_eq!(got, want, "step {}: {:?}", step, op);
        let abs = abstraction(&k, &next.pools);
        prop_assert_eq!(&abs.pages, &next.pages, "records after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_maps, &next.vm_maps, "VM maps after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.host_zero, &next.host_zero, "host zero-page leaves after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_tables, &next.vm_tables);
        prop_assert_eq!(&abs.vm_split, &next.vm_split, "VM tables after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_table_pages, &next.vm_table_pages, "VM table pages after step {}: {:?}", step, op);
        for &p in &abs.host_mapped {
            prop_assert!(next.host_may_map(p), "host maps {:#x} after step {}: {:?}", p, step, op);
        }
        if let (Op::HostFault { ipa }, Ok(_)) = (op, got)
            && next.pages.contains_key(&(ipa >> PAGE_SHIFT))
        {
            prop_assert!(abs.host_mapped.contains(&(ipa >> PAGE_SHIFT)), "fault at {:#x} not resolved", ipa);
        }
        // Pages that just left a VM for the host must be zero; pages a VM just got are
        // filled with "guest data" so a missing scrub shows.
        for (p, before) in &spec.pages {
            let after = next.pages[p];
            if matches!(before.owner, Owner::Vm(_)) && after.owner == Owner::Host {
                prop_assert!(k.m.page_is_zero(p << PAGE_SHIFT), "page {:#x} returned unscrubbed", p);
            }
            if before.owner != after.owner && matches!(after.owner, Owner::Vm(_)) {
                k.m.fill_page(p << PAGE_SHIFT, 0xab);
            }
        }
        if let Err(v) = invariants::check(&k) {
            prop_assert!(false, "invariant broken after step {}: {:?}: {:?}", step, op, v);
        }
        for id in [LockId::S2Page, LockId::Pt(0), LockId::Pt(1), LockId::Pt(2), LockId::Pt(3)] {
            prop_assert_eq!(k.locks.holder(id), None, "{:?} left held", id);
        }
        spec = AbsMem { host_mapped: abs.host_mapped, ..next };
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn memaux_and_memops_refine_their_specification(ops in prop::collection::vec(op(), 1..48)) {
        refine(&ops)?;
    }
}

/// A hand-written sequence through the life of a page, so the common path is always covered.
#[test]
fn a_page_through_every_transition() {
    let p = P0 + 512;
    let ops = [
        Op::HostFault { ipa: p << 12 },
        Op::ProtMap { vmid: 1, gfn: 512, pfn: p, level: 2 },
        Op::HostFault { ipa: p << 12 },
        Op::HostKernelRead { ipa: (p + 3) << 12 },
        Op::HostKernelRead { ipa: (p + 3) << 12 },
        Op::Grant { vmid: 1, pfn: p + 3 },
        Op::HostFault { ipa: (p + 3) << 12 },
        Op::ShareRange { vmid: 1, gpa: 512 << 12, size: 4 * PAGE_SIZE, up: true },
        Op::ShareRange { vmid: 1, gpa: 512 << 12, size: 4 * PAGE_SIZE, up: false },
        Op::Revoke { vmid: 1, pfn: p + 3 },
        Op::HostFault { ipa: (p + 3) << 12 },
        Op::HostKernelRead { ipa: (p + 7) << 12 },
        Op::Scrub { vmid: 1, pfn: p + 7 },
        Op::ProtMap { vmid: 2, gfn: 0, pfn: p + 7, level: 3 },
        Op::ClearRange { vmid: 1, pfn: p, n: 512 },
        Op::ClearRange { vmid: 2, pfn: p, n: 512 },
        Op::HostFault { ipa: p << 12 },
        Op::MapIo { vmid: 2, gpa: 0x0800_0000, pa: 0x0901_0000 },
        Op::Donate { vmid: 3, pfn: p + 9 },
        Op::CreateVm { vmid: 3, root: p + 9 },
        Op::CreateVm { vmid: 3, root: p + 11 },
        Op::CreateVm { vmid: 3, root: p + 10 },
        Op::CreateVm { vmid: 3, root: p + 12 },
    ];
    refine(&ops).unwrap();
    let (k, _) = kcore();
    for op in ops {
        let _ = run(&k, op);
    }
    assert_eq!(k.mem().page(p + 9).unwrap().owner, Owner::KCore);
    // The root: two host pages, 8 KiB aligned (p + 9 is KCore's, p + 11 misaligned), once.
    assert_eq!(run(&kcore().0, Op::CreateVm { vmid: 3, root: p + 11 }), Err(Error::InvalidParameter));
    assert_eq!(k.mem().vm(3).unwrap().expect_npt().root, (p + 10) << 12);
    assert_eq!(k.mem().page(p + 11).unwrap().owner, Owner::KCore);
    assert!(k.m.cpu_index() == 0);
}
