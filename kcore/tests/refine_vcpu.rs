//! Refinement check for layers 27-28 (VCPUOpsAux, VCPUOps): generated runs of a two-vCPU VM
//! (VCPU_RUN preparation with host-supplied MMIO values, guest traps of every kind, PSCI
//! CPU_ON/OFF/AFFINITY_INFO, SYSTEM_OFF, MAP_VM_PAGE) through the code and through
//! `kcore::spec::vcpu`. After every step: equal results and exit actions, equal registers,
//! PC, run states and pending exchanges, the MMIO the guest enrolled with MMIO_GUARD, and the
//! invariants. The same for a non-protected VM (RAM region from the host, pages lent on
//! faults, registers read and set by the host) and for a protected VM with a RAM region.
//! MMIO_GUARD comes one call at a time and in bursts that fill the enrolment table, join
//! ranges and probe enrolled and un-enrolled pages.

mod common;

use common::*;
use kcore::Pfn;
use kcore::error::Error;
use kcore::invariants;
use kcore::kcore::KCore;
use kcore::machine::sim::SimMachine;
use kcore::mem::pagemgmt::Owner;
use kcore::psci;
use kcore::spec::vcpu::{AbsVcpu, AbsVcpus, GuestTrap, Pending, Run};
use kcore::vcpu::vcpuops::Trap;
use kcore::vcpu::vcpuopsaux::{PageRegs, VcpuPage};
use proptest::prelude::*;
use std::collections::BTreeSet;

const LOAD: u64 = 0x8000_0000;
const LEN: u64 = 8192;

#[derive(Clone, Copy, Debug)]
enum Step {
    Run {
        vcpu: usize,
        value: u64,
    },
    Trap(GuestTrap),
    MapVmPage {
        vcpu: u64,
    },
    GetReg {
        vcpu: u64,
        reg: u64,
    },
    SetReg {
        vcpu: u64,
        reg: u64,
        value: u64,
    },
    /// The running vCPU enrols `count` pages with MMIO_GUARD, every `stride` pages from page
    /// `first` of the window at [`BURST_BASE`] (stride 2 and up leave gaps: separate ranges,
    /// enough of them to fill the table), then accesses page `probe` of the window.
    GuardBurst {
        first: u64,
        stride: u64,
        count: u64,
        probe: u64,
    },
}

/// Where [`Step::GuardBurst`] enrols: device space away from the UART's window.
const BURST_BASE: u64 = 0x1000_0000;

/// The non-protected VM's RAM: the image's place and above (16 MiB), everything else MMIO.
const NP_RAM: (u64, u64) = (LOAD, 16 << 20);

/// A verified non-protected VM with two vCPUs and a RAM region.
fn setup_np() -> (KCore<SimMachine>, u16) {
    let (k, _) = bare_kcore();
    let vmid = k.register_vm_kind(P0 + 20, 1).unwrap();
    for i in 0..12 {
        k.mem().donate_to_pool(vmid, P0 + 22 + i).unwrap();
    }
    k.register_vcpu(vmid as u64, 0).unwrap();
    k.register_vcpu(vmid as u64, 1).unwrap();
    k.add_ram_region(vmid as u64, NP_RAM.0, NP_RAM.1).unwrap();
    (k, vmid)
}

fn setup() -> (KCore<SimMachine>, u16) {
    let (k, kp) = bare_kcore();
    let img: Vec<u8> = (0..LEN).map(|i| (i * 3) as u8).collect();
    let sig = sign_image(&kp, LOAD, &img);
    let w = |pfn: Pfn, b: &[u8]| write_bytes(&k, pfn, b);
    w(P0 + 10, &sig);
    w(P0 + 11, &img);
    let vmid = k.register_vm(P0 + 20).unwrap();
    for i in 0..12 {
        k.mem().donate_to_pool(vmid, P0 + 22 + i).unwrap();
    }
    k.register_vcpu(vmid as u64, 0).unwrap();
    k.register_vcpu(vmid as u64, 1).unwrap();
    k.set_boot_info(vmid as u64, LOAD, LEN, P0 + 10).unwrap();
    k.map_image_page(vmid as u64, 0, 0, P0 + 11).unwrap();
    k.map_image_page(vmid as u64, 0, 1, P0 + 12).unwrap();
    // (page 12 holds zeros beyond the image's first 4 KiB: sign what is there)
    (k, vmid)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop_oneof![8 => 0usize..2, 1 => Just(2usize), 1 => Just(9usize)], any::<u64>())
            .prop_map(|(vcpu, value)| Step::Run { vcpu, value }),
        6 => guest_trap(LOAD, LEN).prop_map(Step::Trap),
        2 => (0u64..3).prop_map(|vcpu| Step::MapVmPage { vcpu }),
        2 => (vcpu_arg(), reg()).prop_map(|(vcpu, reg)| Step::GetReg { vcpu, reg }),
        2 => (vcpu_arg(), reg(), prop_oneof![2 => any::<u64>(), 1 => Just(LOAD + 0x40), 1 => pstate()])
            .prop_map(|(vcpu, reg, value)| Step::SetReg { vcpu, reg, value }),
        1 => (0u64..4, 1u64..4, prop_oneof![1 => 1u64..8, 1 => 8u64..40], 0u64..120)
            .prop_map(|(first, stride, count, probe)| Step::GuardBurst { first, stride, count, probe }),
    ]
}

fn vcpu_arg() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 0u64..2, 1 => Just(2u64), 1 => Just(8u64)]
}

/// Register numbers: the general registers and PC this model holds, PSTATE, SP_EL0, EL1 and
/// FP registers, and the gaps and ends of the numbering.
fn reg() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..4, 1 => Just(30u64), 3 => Just(32u64), 2 => Just(33u64), 1 => Just(31u64),
        1 => Just(58u64), 1 => Just(59u64), 1 => Just(63u64), 1 => Just(64u64), 1 => Just(129u64), 1 => Just(130u64),
        1 => Just(u64::MAX)]
}

/// PSTATE values: EL1h/EL1t/EL0t with flags, and ones naming EL2, AArch32 or reserved bits.
fn pstate() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0x3c5u64),
        Just(0x3c4),
        Just(0x0),
        Just(0x2000_03c5),
        Just(0x3c9),
        Just(0x3cd),
        Just(0x10),
        Just(0x3c5 | 1 << 20),
        Just(1 << 40)
    ]
}

fn refine(steps: &[Step]) -> Result<(), TestCaseError> {
    refine_kind(steps, true)
}

fn refine_kind(steps: &[Step], protected: bool) -> Result<(), TestCaseError> {
    refine_layout(steps, protected, !protected)
}

/// The check for a protected or non-protected VM, with a RAM region from the host
/// ([`NP_RAM`]: everything else of the IPA space is MMIO) or without (RAM from 1 GiB up).
fn refine_layout(steps: &[Step], protected: bool, region: bool) -> Result<(), TestCaseError> {
    let (k, vmid) = if protected { setup() } else { setup_np() };
    if protected && region {
        k.add_ram_region(vmid as u64, NP_RAM.0, NP_RAM.1).unwrap();
    }
    k.verify_vm(vmid as u64).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let fresh = AbsVcpu { run: Run::Off, x: [0; 31], pc: 0, pending: Pending::None };
    let mut spec = AbsVcpus {
        vcpus: vec![AbsVcpu { run: Run::Ready { first: true }, ..fresh.clone() }, fresh],
        entry: LOAD,
        boot_arg: 0,
        images: vec![(LOAD, LOAD + LEN)],
        off: false,
        ids: configure_guest_cpu(&k),
        mdscr: 0,
        protected,
        ram: if region { vec![NP_RAM] } else { vec![] },
        ipa_limit: 1 << 40,
        guard: Default::default(),
        guard_used: false,
    };
    let mut active: Option<usize> = None;
    let mut mapped = BTreeSet::new();
    let mut next_pfn = P0 + 400;
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Run { vcpu, value } => {
                let (want, next) = spec.run(vcpu, value);
                let want = if active.is_some() && want.is_ok() { Err(Error::BadState) } else { want };
                if active.is_some() {
                    // One CPU in this model: the host does not start a second run.
                    continue;
                }
                let got = k.prepare_run(vmid as u64, vcpu as u64, value).map(|_| ());
                prop_assert_eq!(got, want, "step {}: {:?}", i, s);
                if got.is_ok() {
                    spec = next;
                    active = Some(vcpu);
                }
            }
            Step::Trap(t) => {
                let Some(v) = active else { continue };
                let page = VcpuPage { pa: k.vminfo[vmid as usize - 1].vcpu_page(v) };
                let trap = match t {
                    GuestTrap::Hvc(x) => {
                        for (r, val) in x.iter().enumerate() {
                            page.set_x(&k.m, r as u64, *val);
                            spec.vcpus[v].x[r] = *val;
                        }
                        Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 }
                    }
                    GuestTrap::MmioWrite { ipa, rt, size_log2 } => Trap::Sync {
                        esr: esr_dabt(true, rt, size_log2, false, true),
                        far: ipa,
                        hpfar: (ipa >> 12) << 4,
                    },
                    GuestTrap::MmioRead { ipa, rt, size_log2, sign } => Trap::Sync {
                        esr: esr_dabt(false, rt, size_log2, sign, true),
                        far: ipa,
                        hpfar: (ipa >> 12) << 4,
                    },
                    GuestTrap::RamFault { ipa } => {
                        Trap::Sync { esr: esr_dabt(true, 3, 3, false, false), far: ipa, hpfar: (ipa >> 12) << 4 }
                    }
                    GuestTrap::Wfi => Trap::Sync { esr: 0x01 << 26 | 1 << 25, far: 0, hpfar: 0 },
                    GuestTrap::Sysreg { reg, rt, read } => {
                        Trap::Sync { esr: esr_sysreg(reg, rt, read), far: 0, hpfar: 0 }
                    }
                };
                let (want, mut next) = spec.trap(v, t);
                let got = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap);
                prop_assert_eq!(got, want, "step {}: {:?}", i, s);
                // The guest's debug control on the CPU (the vCPUs share this one CPU here).
                prop_assert_eq!(
                    k.m.sysreg(0, kcore::machine::SysReg::MdscrEl1),
                    next.mdscr,
                    "MDSCR_EL1 after step {}",
                    i
                );
                // The run ends here (at once for a host exit; "later" otherwise).
                k.finish_run(vmid, v);
                next.finish(v);
                spec = next;
                active = None;
            }
            Step::GuardBurst { first, stride, count, probe } => {
                let Some(v) = active else { continue };
                let page = VcpuPage { pa: k.vminfo[vmid as usize - 1].vcpu_page(v) };
                let hvc = Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 };
                for n in 0..count {
                    let x = [0xC600_0007, BURST_BASE + (first + n * stride) * 4096, 0, 0];
                    for (r, val) in x.iter().enumerate() {
                        page.set_x(&k.m, r as u64, *val);
                        spec.vcpus[v].x[r] = *val;
                    }
                    let (want, next) = spec.trap(v, GuestTrap::Hvc(x));
                    let got = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, hvc);
                    prop_assert_eq!(got, want, "step {}: {:?}: call {}", i, s, n);
                    spec = next;
                    prop_assert_eq!(page.x(&k.m, 0), spec.vcpus[v].x[0], "step {}: {:?}: call {}", i, s, n);
                }
                // Then a store of x1 to the probed page: enrolled or refused.
                let ipa = BURST_BASE + probe * 4096 + 8;
                let t = GuestTrap::MmioWrite { ipa, rt: 1, size_log2: 3 };
                let trap = Trap::Sync { esr: esr_dabt(true, 1, 3, false, true), far: ipa, hpfar: (ipa >> 12) << 4 };
                let (want, mut next) = spec.trap(v, t);
                let got = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap);
                prop_assert_eq!(got, want, "step {}: {:?}: the access", i, s);
                k.finish_run(vmid, v);
                next.finish(v);
                spec = next;
                active = None;
            }
            Step::MapVmPage { vcpu } => {
                if active.is_some() {
                    continue;
                }
                let want = match spec.vcpus.get(vcpu as usize) {
                    None => Err(Error::InvalidParameter),
                    Some(_) if spec.off => Err(Error::BadState),
                    Some(c) => match (c.run, c.pending) {
                        (Run::Ready { .. } | Run::Off, Pending::Fault { ipa }) if mapped.contains(&ipa) => {
                            Err(Error::Exists)
                        }
                        (Run::Ready { .. } | Run::Off, Pending::Fault { .. }) => Ok(()),
                        _ => Err(Error::BadState),
                    },
                };
                let want = if (2..8).contains(&vcpu) { Err(Error::BadState) } else { want };
                let got = k.map_vm_page(vmid as u64, vcpu, next_pfn);
                prop_assert_eq!(got, want, "step {}: {:?}", i, s);
                if got.is_ok() {
                    let c = &mut spec.vcpus[vcpu as usize];
                    if let Pending::Fault { ipa } = c.pending {
                        mapped.insert(ipa);
                    }
                    c.pending = Pending::None;
                    let owner = if protected { Owner::Vm(vmid) } else { Owner::Lent(vmid) };
                    prop_assert_eq!(k.mem().page(next_pfn).unwrap().owner, owner);
                    next_pfn += 1;
                }
            }
            Step::GetReg { vcpu, reg } => {
                if active.is_some() {
                    continue;
                }
                let (want, next) = spec.get_reg(vcpu, reg);
                let got = k.get_vcpu_reg(vmid as u64, vcpu, reg);
                match want {
                    Ok(Some(v)) => prop_assert_eq!(got, Ok(v), "step {}: {:?}", i, s),
                    Ok(None) => prop_assert!(got.is_ok(), "step {}: {:?}: {:?}", i, s, got),
                    Err(e) => prop_assert_eq!(got, Err(e), "step {}: {:?}", i, s),
                }
                spec = next;
            }
            Step::SetReg { vcpu, reg, value } => {
                if active.is_some() {
                    continue;
                }
                let (want, next) = spec.set_reg(vcpu, reg, value);
                let got = k.set_vcpu_reg(vmid as u64, vcpu, reg, value);
                prop_assert_eq!(got, want, "step {}: {:?}", i, s);
                spec = next;
            }
        }
        prop_assert_eq!(vcpus_of(&k, vmid, &spec, None), spec.clone(), "state after step {}: {:?}", i, s);
        if let Err(v) = invariants::check(&k) {
            prop_assert!(false, "invariant broken after step {}: {:?}: {:?}", i, s, v);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn vcpu_layers_refine_their_specification(steps in prop::collection::vec(step(), 1..40)) {
        refine(&steps)?;
    }

    #[test]
    fn vcpu_layers_refine_their_specification_non_protected(steps in prop::collection::vec(step(), 1..40)) {
        refine_kind(&steps, false)?;
    }

    /// A protected VM with a RAM region from the host: the rest of its IPA space, up to its
    /// end, is device space it may enrol.
    #[test]
    fn vcpu_layers_refine_their_specification_protected_with_layout(steps in prop::collection::vec(step(), 1..40)) {
        refine_layout(&steps, true, true)?;
    }
}

#[test]
fn boot_a_second_vcpu_and_serve_io() {
    let steps = [
        Step::Run { vcpu: 0, value: 0 },
        // An unknown call leaves x1..x3 as the guest set them; a byte store of x1 must
        // disclose only its low byte.
        Step::Trap(GuestTrap::Hvc([0xC600_1234, 0x1122_3344_5566_7788, 0, 0])),
        Step::Run { vcpu: 0, value: 0 },
        Step::Trap(GuestTrap::MmioWrite { ipa: 0x0900_0000, rt: 1, size_log2: 0 }),
        Step::Run { vcpu: 0, value: 0 },
        Step::Trap(GuestTrap::MmioRead { ipa: 0x0900_0018, rt: 5, size_log2: 0, sign: true }),
        Step::Run { vcpu: 0, value: 0x80 },
        Step::Trap(GuestTrap::Hvc([psci::CPU_ON_64 as u64, 1, LOAD + 0x40, 0x77])),
        Step::Run { vcpu: 1, value: 0 },
        Step::Trap(GuestTrap::RamFault { ipa: LOAD + 0x10_0000 }),
        Step::MapVmPage { vcpu: 1 },
        Step::Run { vcpu: 1, value: 0 },
        Step::Trap(GuestTrap::Hvc([psci::CPU_OFF as u64, 0, 0, 0])),
        Step::Run { vcpu: 1, value: 0 },
        Step::Run { vcpu: 0, value: 0 },
        Step::Trap(GuestTrap::Hvc([psci::SYSTEM_OFF as u64, 0, 0, 0])),
        Step::Run { vcpu: 0, value: 0 },
    ];
    refine(&steps).unwrap();
}

/// Trapped system registers, each kind once: an ID register read, the debug control written
/// with every bit (breakpoint and kernel-debug enables must not stick) and read back, the OS
/// lock status, a breakpoint register, an SGI write and an EL1 physical timer read answered
/// by the host, a write to a read-only ID register, and a PMU register (hidden).
#[test]
fn trapped_system_registers() {
    let sysreg = |reg, rt, read| Step::Trap(GuestTrap::Sysreg { reg, rt, read });
    let steps = [
        Step::Run { vcpu: 0, value: 0 },
        Step::Trap(GuestTrap::Hvc([0xC600_1234, 0x1122_3344_5566_7788, 0, u64::MAX])),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((3, 0, 0, 4, 0), 5, true),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((2, 0, 0, 2, 2), 3, false),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((2, 0, 0, 2, 2), 6, true),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((2, 0, 1, 1, 4), 7, true),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((2, 0, 0, 0, 5), 3, false),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((3, 0, 12, 11, 5), 1, false),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((3, 3, 14, 2, 1), 8, true),
        Step::Run { vcpu: 0, value: 0xabcd },
        sysreg((3, 0, 0, 4, 1), 1, false),
        Step::Run { vcpu: 0, value: 0 },
        sysreg((3, 3, 9, 12, 0), 1, true),
    ];
    refine(&steps).unwrap();
}

/// A guest HVC with x0..x3 = `x` on the vCPU whose context page is `page`: what KCore does
/// with it, and the guest's x0 after.
fn guest_hvc(k: &KCore<SimMachine>, vmid: u16, page: VcpuPage, x: [u64; 4]) -> (kcore::vcpu::vcpuops::ExitAction, i64) {
    for (r, v) in x.into_iter().enumerate() {
        page.set_x(&k.m, r as u64, v);
    }
    let trap = Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 };
    let action = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap);
    (action, page.x(&k.m, 0) as i64)
}

/// MMIO_GUARD end to end on the code, with the answers written out: protected VMs see it in
/// FEATURES; before the first enrolment every device access is forwarded; after it only the
/// enrolled pages are, the rest is refused (an external abort, no exit); RAM, unaligned and
/// malformed calls are INVALID_PARAMETER; the table takes `MMIO_GUARD_RANGES` separate ranges
/// and refuses the next with NO_MEMORY, while pages that touch a range still go in; a
/// non-protected VM is not offered the call; a destroyed VM's vmid comes back with nothing
/// enrolled.
#[test]
fn mmio_guard_enrols_refuses_and_is_bounded() {
    use kcore::abi;
    use kcore::vcpu::vcpuops::{Exit, ExitAction};
    use kcore::vm::mmioguard::MMIO_GUARD_RANGES;
    let (k, vmid) = setup();
    k.verify_vm(vmid as u64).unwrap();
    let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
    let hvc = |x: [u64; 4]| {
        let (action, x0) = guest_hvc(&k, vmid, page, x);
        assert_eq!(action, ExitAction::Resume);
        x0
    };
    let store = |ipa: u64| {
        let trap = Trap::Sync { esr: esr_dabt(true, 1, 2, false, true), far: ipa, hpfar: (ipa >> 12) << 4 };
        let pc = page.get(&k.m, kcore::vcpu::slot::PC);
        let a = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap);
        page.set(&k.m, kcore::vcpu::slot::PC, pc);
        a
    };
    let guard = |ipa: u64| hvc([abi::GUEST_MMIO_GUARD as u64, ipa, 0, 0]);
    let forwarded = |a: ExitAction| matches!(a, ExitAction::ToHost(Exit::Mmio { write: true, .. }));
    assert_eq!(hvc([abi::GUEST_KVM_FEATURES as u64, 0, 0, 0]), 0b1001_1101, "bits 0, 2, 3, 4 and 7");
    assert!(forwarded(store(0x0a00_0000)), "no guard in use yet: forwarded");
    assert_eq!(guard(0x0900_0000), abi::SUCCESS);
    assert_eq!(guard(0x0900_0000), abi::SUCCESS, "again: fine");
    assert!(forwarded(store(0x0900_0000)));
    assert!(forwarded(store(0x0900_0ffc)));
    assert_eq!(store(0x0900_1000), ExitAction::InjectAbort, "the next page was not enrolled");
    assert_eq!(store(0x0a00_0000), ExitAction::InjectAbort);
    let load = Trap::Sync { esr: esr_dabt(false, 2, 2, false, true), far: 0x0a00_0010, hpfar: 0x0a00_0000 >> 8 };
    assert_eq!(k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, load), ExitAction::InjectAbort);
    for bad in [[LOAD, 0, 0], [0x0900_0010, 0, 0], [0x0900_2000, 1, 0], [0x0900_2000, 0, 1], [1 << 40, 0, 0]] {
        assert_eq!(hvc([abi::GUEST_MMIO_GUARD as u64, bad[0], bad[1], bad[2]]), abi::INVALID_PARAMETER, "{bad:x?}");
    }
    let table = k.vminfo[vmid as usize - 1].mmio_guard();
    assert_eq!(table.ranges().collect::<Vec<_>>(), [(0x0900_0000, 0x0900_1000)]);
    // Separate ranges up to the bound (one held by the UART's page already), then no more.
    for i in 1..MMIO_GUARD_RANGES as u64 {
        assert_eq!(guard(0x1000_0000 + 2 * i * 4096), abi::SUCCESS);
    }
    assert_eq!(guard(0x2000_0000), abi::NO_MEMORY);
    assert_eq!(store(0x2000_0000), ExitAction::InjectAbort, "refused, not silently enrolled");
    assert_eq!(guard(0x1000_0000 + 3 * 4096), abi::SUCCESS, "joins two ranges");
    assert_eq!(guard(0x2000_0000), abi::SUCCESS, "in the slot that freed");
    assert!(forwarded(store(0x2000_0000)));
    assert_eq!(table.len(), MMIO_GUARD_RANGES);
    assert_eq!((table.calls(), table.refused()), (MMIO_GUARD_RANGES as u64 + 3, 6), "calls counted for the report");
    // Destroyed, its vmid reused: nothing enrolled, MMIO forwarded again.
    k.finish_run(vmid, 0);
    k.destroy_vm(vmid as u64).unwrap();
    assert!(table.is_empty() && !table.in_use() && table.calls() == 0);
    assert_eq!(k.register_vm(P0 + 20), Ok(vmid), "the vmid comes back");
    assert!(k.vminfo[vmid as usize - 1].mmio_guard().is_empty());
    let (k2, vmid2) = setup_np();
    k2.verify_vm(vmid2 as u64).unwrap();
    let (_, _, page) = k2.prepare_run(vmid2 as u64, 0, 0).unwrap();
    let hvc = |x: [u64; 4]| guest_hvc(&k2, vmid2, page, x).1;
    assert_eq!(hvc([abi::GUEST_KVM_FEATURES as u64, 0, 0, 0]), 1, "non-protected: no pKVM services");
    assert_eq!(hvc([abi::GUEST_MMIO_GUARD as u64, 0x0900_0000, 0, 0]), abi::NOT_SUPPORTED);
}

/// KCore counts a protected guest's MEM_SHARE and MEM_UNSHARE calls, answered and refused, for
/// the report at the VM's destruction: a page the host must back first is counted once, when
/// the retried call is answered; malformed and repeated calls are refused ones; a
/// non-protected VM's calls are refused; destroying the VM clears the counts.
#[test]
fn mem_share_calls_are_counted_for_the_report() {
    use kcore::abi;
    use kcore::vcpu::vcpuops::{Exit, ExitAction};
    let (k, vmid) = setup();
    k.verify_vm(vmid as u64).unwrap();
    let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
    let hvc = |x: [u64; 4]| match guest_hvc(&k, vmid, page, x) {
        (ExitAction::Resume, x0) => Some(x0),
        _ => None,
    };
    let (share, unshare) = (abi::GUEST_MEM_SHARE as u64, abi::GUEST_MEM_UNSHARE as u64);
    let counts = || k.vminfo[vmid as usize - 1].shares().counts();
    assert_eq!(counts(), (0, 0, 0, 0));
    assert_eq!(hvc([share, LOAD, 0, 0]), Some(abi::SUCCESS));
    assert_eq!(hvc([share, LOAD, 0, 0]), Some(abi::INVALID_PARAMETER), "shared already");
    assert_eq!(hvc([unshare, LOAD, 0, 0]), Some(abi::SUCCESS));
    assert_eq!(hvc([unshare, LOAD, 0, 0]), Some(abi::INVALID_PARAMETER), "not shared");
    assert_eq!(hvc([share, LOAD, 1, 0]), Some(abi::INVALID_PARAMETER), "x2 not zero");
    assert_eq!(hvc([share, 0x0900_0000, 0, 0]), Some(abi::INVALID_PARAMETER), "not RAM");
    assert_eq!(counts(), (1, 3, 1, 1));
    // A page the guest never touched: the host backs it, then the call is made again.
    let fresh = LOAD + 0x10_0000;
    let before = page.get(&k.m, kcore::vcpu::slot::PC);
    for (r, v) in [share, fresh, 0, 0].into_iter().enumerate() {
        page.set_x(&k.m, r as u64, v);
    }
    let trap = Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 };
    let a = k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap);
    assert_eq!(a, ExitAction::ToHost(Exit::PageFault { ipa: fresh }));
    assert_eq!(page.get(&k.m, kcore::vcpu::slot::PC), before.wrapping_sub(4), "the HVC is made again");
    assert_eq!(counts(), (1, 3, 1, 1), "not answered yet: not counted");
    k.finish_run(vmid, 0);
    k.map_vm_page(vmid as u64, 0, P0 + 400).unwrap();
    k.prepare_run(vmid as u64, 0, 0).unwrap();
    assert_eq!(hvc([share, fresh, 0, 0]), Some(abi::SUCCESS));
    assert_eq!(counts(), (2, 3, 1, 1));
    k.finish_run(vmid, 0);
    k.destroy_vm(vmid as u64).unwrap();
    assert_eq!(counts(), (0, 0, 0, 0), "cleared with the VM's record");
    // A non-protected VM is not offered the calls: refused, and counted as such.
    let (k2, vmid2) = setup_np();
    k2.verify_vm(vmid2 as u64).unwrap();
    let (_, _, page) = k2.prepare_run(vmid2 as u64, 0, 0).unwrap();
    for (r, v) in [share, NP_RAM.0, 0, 0].into_iter().enumerate() {
        page.set_x(&k2.m, r as u64, v);
    }
    let trap = Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 };
    assert_eq!(k2.handle_vm_trap(vmid2, &mut PageRegs { page, m: &k2.m }, &page, trap), ExitAction::Resume);
    assert_eq!(page.x(&k2.m, 0) as i64, abi::NOT_SUPPORTED);
    assert_eq!(k2.vminfo[vmid2 as usize - 1].shares().counts(), (0, 1, 0, 0));
}
