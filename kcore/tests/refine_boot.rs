//! Refinement check for layers 18-21 (VMPower, BootCore, BootAux, BootOps): generated
//! sequences of lifecycle requests, with correct, tampered and misplaced images and invalid
//! arguments, run through the code and through `kcore::spec::boot`. After every step: equal
//! results, equal VM states and images, equal memory abstraction, invariants, free locks.
//! The specification decides signatures with a one-shot Ed25519 verification over the page
//! contents, independent of KCore's streaming path.

mod common;

use common::*;
use kcore::invariants;
use kcore::kcore::KCore;
use kcore::locks::LockId;
use kcore::machine::Machine;
use kcore::machine::sim::SimMachine;
use kcore::mem::pagemgmt::Owner;
use kcore::spec::boot::{AbsBoot, BootOp};
use kcore::spec::mem::abstraction;
use kcore::{PAGE_SHIFT, Pfn};
use proptest::prelude::*;
use std::collections::BTreeMap;

const LOAD: u64 = 0x8000_0000;
const GOOD_SIG: Pfn = P0 + 200;
const BAD_SIG: Pfn = P0 + 201;
const IMG: Pfn = P0 + 100; // 100..103 the image; 103 a tampered copy of page 0
const LEN: u64 = 10_000;

fn setup() -> (KCore<SimMachine>, ed25519_compact::PublicKey) {
    let (k, kp) = bare_kcore();
    let img: Vec<u8> = (0..LEN).map(|i| (i * 31 + 1) as u8).collect();
    let write = |pfn: Pfn, bytes: &[u8]| {
        for (i, c) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            k.m.store((pfn << PAGE_SHIFT) + 8 * i as u64, u64::from_le_bytes(w));
        }
    };
    write(IMG, &img);
    let mut tampered = img[..4096].to_vec();
    tampered[100] ^= 1;
    write(IMG + 3, &tampered);
    let sig = sign_image(&kp, LOAD, &img);
    write(GOOD_SIG, &sig);
    let mut bad = sig;
    bad[40] ^= 2;
    write(BAD_SIG, &bad);
    (k, kp.pk)
}

fn run(k: &KCore<SimMachine>, op: BootOp) -> Result<u64, kcore::Error> {
    match op {
        BootOp::RegisterVm { root, kind } => k.register_vm_kind(root, kind).map(u64::from),
        BootOp::AddRamRegion { vmid, base, size } => k.add_ram_region(vmid, base, size).map(|_| 0),
        BootOp::RegisterVcpu { vmid, vcpu } => k.register_vcpu(vmid, vcpu).map(|_| 0),
        BootOp::SetBootInfo { vmid, load_ipa, bytes, sig_pfn } => {
            k.set_boot_info(vmid, load_ipa, bytes, sig_pfn).map(|i| i as u64)
        }
        BootOp::MapImagePage { vmid, image, index, pfn } => k.map_image_page(vmid, image, index, pfn).map(|_| 0),
        BootOp::Verify { vmid, arg } => k.verify_vm_with(vmid, arg).map(|_| 0),
        BootOp::Destroy { vmid } => k.destroy_vm(vmid).map(|_| 0),
        BootOp::Donate { vmid, pfn } => k.donate_page(vmid as u64, pfn).map(|_| 0),
    }
}

fn vmid() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 1u64..=2, 1 => Just(3u64), 1 => Just(0u64), 1 => Just(64u64)]
}

fn op() -> impl Strategy<Value = BootOp> {
    let page = prop_oneof![4 => (0u64..4).prop_map(|i| IMG + i), 2 => (0u64..40).prop_map(|i| P0 + 300 + i), 1 => Just(KMEM >> 12), 1 => Just(0u64)];
    prop_oneof![
        2 => (prop_oneof![(0u64..8).prop_map(|i| P0 + 400 + i), Just(IMG), Just(KMEM >> 12)], prop_oneof![4 => Just(0u64), 2 => Just(1u64), 1 => Just(2u64)])
            .prop_map(|(root, kind)| BootOp::RegisterVm { root, kind }),
        2 => (vmid(), prop_oneof![Just(1u64 << 30), Just(0x8000_0000u64), Just(0x8000_1000u64), Just(0x123u64), Just(u64::MAX - 4095)],
              prop_oneof![Just(1u64 << 30), Just(4096u64), Just(0u64), Just(1u64 << 47)])
            .prop_map(|(vmid, base, size)| BootOp::AddRamRegion { vmid, base, size }),
        2 => (vmid(), 0u64..10).prop_map(|(vmid, vcpu)| BootOp::RegisterVcpu { vmid, vcpu }),
        3 => (vmid(), prop_oneof![4 => Just(LOAD), 1 => Just(LOAD + 4096), 1 => Just(LOAD + 1), 1 => Just(1u64 << 40)],
              prop_oneof![4 => Just(LEN), 1 => Just(0u64), 1 => Just(4096u64), 1 => Just(u64::MAX)],
              prop_oneof![3 => Just(GOOD_SIG), 1 => Just(BAD_SIG), 1 => Just(IMG)])
            .prop_map(|(vmid, load_ipa, bytes, sig_pfn)| BootOp::SetBootInfo { vmid, load_ipa, bytes, sig_pfn }),
        6 => (vmid(), prop_oneof![5 => Just(0u64), 1 => 1u64..6], 0u64..4, page)
            .prop_map(|(vmid, image, index, pfn)| BootOp::MapImagePage { vmid, image, index, pfn }),
        // Mostly the right page for the index, so whole images get loaded.
        8 => (vmid(), 0u64..3).prop_map(|(vmid, index)| BootOp::MapImagePage { vmid, image: 0, index, pfn: IMG + index }),
        2 => (vmid(), prop_oneof![Just(0u64), Just(0x4000_0000u64), any::<u64>()]).prop_map(|(vmid, arg)| BootOp::Verify { vmid, arg }),
        1 => vmid().prop_map(|vmid| BootOp::Destroy { vmid }),
        3 => (prop_oneof![Just(1u16), Just(2), Just(0)], (0u64..40).prop_map(|i| P0 + 300 + i))
            .prop_map(|(vmid, pfn)| BootOp::Donate { vmid, pfn }),
    ]
}

fn refine(ops: &[BootOp]) -> Result<(), TestCaseError> {
    let (k, pk) = setup();
    let pools = BTreeMap::new();
    let mut spec = AbsBoot { vms: BTreeMap::new(), mem: abstraction(&k, &pools), donated: BTreeMap::new() };
    for (step, &op) in ops.iter().enumerate() {
        let oracle = Oracle { k: &k, pk };
        let (want, mut next) = spec.step(op, &oracle);
        let got = run(&k, op);
        prop_assert_eq!(got, want, "step {}: {:?}", step, op);
        prop_assert_eq!(abstract_vms(&k), next.vms.clone(), "VMs after step {}: {:?}", step, op);
        let abs = abstraction(&k, &next.mem.pools);
        prop_assert_eq!(&abs.pages, &next.mem.pages, "records after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_maps, &next.mem.vm_maps, "VM maps after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.host_zero, &next.mem.host_zero, "host zero-page leaves after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_tables, &next.mem.vm_tables);
        for &p in &abs.host_mapped {
            prop_assert!(next.mem.host_may_map(p));
        }
        for (p, before) in &spec.mem.pages {
            if !before.owner.is_hosts() && next.mem.pages[p].owner == Owner::Host {
                prop_assert!(k.m.page_is_zero(p << PAGE_SHIFT), "page {:#x} returned unscrubbed", p);
            }
        }
        if let Err(v) = invariants::check(&k) {
            prop_assert!(false, "invariant broken after step {}: {:?}: {:?}", step, op, v);
        }
        for id in [LockId::S2Page, LockId::Core, LockId::Vm(1), LockId::Vm(2), LockId::Pt(1), LockId::Pt(2)] {
            prop_assert_eq!(k.locks.holder(id), None);
        }
        next.mem.host_mapped = abs.host_mapped;
        prop_assert_eq!(&abs.vm_table_pages, &next.mem.vm_table_pages, "VM tables after step {}: {:?}", step, op);
        prop_assert_eq!(&abs.vm_split, &next.mem.vm_split);
        spec = next;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn boot_layers_refine_their_specification(ops in prop::collection::vec(op(), 1..40)) {
        // Start from a registered VM with a provisioned table pool, as a host would.
        let mut all = vec![BootOp::RegisterVm { root: P0 + 410, kind: 0 }];
        all.extend((0..6).map(|i| BootOp::Donate { vmid: 1, pfn: P0 + 340 + i }));
        all.extend(ops);
        refine(&all)?;
    }
}

/// The path a well-behaved host takes, always exercised.
#[test]
fn a_host_that_does_everything_right() {
    let mut ops = vec![BootOp::RegisterVm { root: P0 + 400, kind: 0 }];
    for i in 0..6 {
        ops.push(BootOp::Donate { vmid: 1, pfn: P0 + 300 + i });
    }
    ops.push(BootOp::RegisterVcpu { vmid: 1, vcpu: 0 });
    ops.push(BootOp::SetBootInfo { vmid: 1, load_ipa: LOAD, bytes: LEN, sig_pfn: GOOD_SIG });
    for i in 0..3 {
        ops.push(BootOp::MapImagePage { vmid: 1, image: 0, index: i, pfn: IMG + i });
    }
    ops.push(BootOp::Verify { vmid: 1, arg: 0x4800_0000 });
    ops.push(BootOp::Destroy { vmid: 1 });
    // A non-protected VM: a RAM layout, no images, verified without a signature.
    ops.push(BootOp::RegisterVm { root: P0 + 402, kind: 1 });
    ops.push(BootOp::Donate { vmid: 1, pfn: P0 + 310 });
    ops.push(BootOp::RegisterVcpu { vmid: 1, vcpu: 0 });
    ops.push(BootOp::AddRamRegion { vmid: 1, base: 0x8000_0000, size: 1 << 30 });
    ops.push(BootOp::AddRamRegion { vmid: 1, base: 0x8000_1000, size: 4096 });
    ops.push(BootOp::SetBootInfo { vmid: 1, load_ipa: LOAD, bytes: LEN, sig_pfn: GOOD_SIG });
    ops.push(BootOp::Verify { vmid: 1, arg: 0x4800_0000 });
    ops.push(BootOp::AddRamRegion { vmid: 1, base: 0x4000_0000, size: 4096 });
    ops.push(BootOp::Destroy { vmid: 1 });
    refine(&ops).unwrap();
}
