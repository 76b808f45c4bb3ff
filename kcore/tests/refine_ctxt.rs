//! Refinement check for layer 29 (CtxtSwitch): generated sequences of world switches on the
//! simulated CPU — enter a guest, the guest (or the hardware on its behalf) changes its
//! registers, its timer fires, it leaves; the host changes its own registers between runs —
//! through the code and through `kcore::spec::ctxt`. After every step the whole register file
//! and FP/SIMD state equal the specification's; after every exit the context page holds the
//! specification's saved context, and the host has exactly its registers back. A second run
//! with different host registers must leave identical guest contexts (nothing of the host's
//! reaches a guest through the switch).

mod common;

use common::*;
use kcore::PAGE_SHIFT;
use kcore::kcore::KCore;
use kcore::machine::sim::SimMachine;
use kcore::machine::{FP_WORDS, FpRegs, SysReg};
use kcore::spec::ctxt::{self, AbsCpu, AbsCtxt, AbsHost};
use kcore::vcpu::ctxtswitch::HostCtxt;
use kcore::vcpu::guestcpu::{CpuFeatures, ID_REGS, id_index};
use kcore::vcpu::slot;
use kcore::vcpu::vcpuopsaux::VcpuPage;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Two context pages (in host RAM: the switch does not look at ownership).
const PAGES: [u64; 2] = [(P0 + 3000) << PAGE_SHIFT, (P0 + 3001) << PAGE_SHIFT];

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Enter vCPU `vcpu` of VM `vm` with context page `page`.
    Enter { vm: u16, vcpu: usize, page: usize },
    /// Register `reg` of the guest-owned set (EL1 state, list registers, VMCR) changes.
    GuestReg { reg: usize, val: u64 },
    /// An FP/SIMD register changes.
    GuestFp { i: usize, val: u64 },
    /// The hardware's exception registers change (a trap was taken).
    Trap { reg: usize, val: u64 },
    /// A physical IRQ with the guest's CNTV_CTL_EL0 = `ctl`.
    Irq { ctl: u64 },
    /// The guest leaves with these general registers, PC and PSTATE.
    Exit { seed: u64, pc: u64, pstate: u64 },
    /// The host changes one of its registers between runs.
    HostReg { reg: usize, val: u64 },
}

fn guest_owned() -> Vec<SysReg> {
    let mut r = ctxt::el1_state();
    r.extend([SysReg::IchLr0El2, SysReg::IchLr1El2, SysReg::IchLr2El2, SysReg::IchLr3El2, SysReg::IchVmcrEl2]);
    r.extend([SysReg::IchAp0r0El2, SysReg::IchAp0r1El2, SysReg::IchAp0r2El2, SysReg::IchAp0r3El2]);
    r.extend([SysReg::IchAp1r0El2, SysReg::IchAp1r1El2, SysReg::IchAp1r2El2, SysReg::IchAp1r3El2]);
    r
}

const TRAP_REGS: [SysReg; 5] = [SysReg::ElrEl2, SysReg::SpsrEl2, SysReg::EsrEl2, SysReg::FarEl2, SysReg::HpfarEl2];

fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 31)
}

fn cpu_of(k: &KCore<SimMachine>) -> AbsCpu {
    AbsCpu { regs: SysReg::ALL.iter().map(|r| (*r, k.m.sysreg(0, *r))).collect(), fp: k.m.fp_regs(0) }
}

/// The context a page holds, read through layer 27's layout.
fn ctxt_of(k: &KCore<SimMachine>, pa: u64) -> AbsCtxt {
    let page = VcpuPage { pa };
    let el1 = ctxt::el1_state()
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, page.get(&k.m, if r == SysReg::SpEl0 { slot::SP_EL0 } else { slot::SYSREGS + i as u64 })))
        .collect();
    AbsCtxt {
        x: std::array::from_fn(|i| page.get(&k.m, slot::X0 + i as u64)),
        pc: page.get(&k.m, slot::PC),
        pstate: page.get(&k.m, slot::PSTATE),
        el1,
        fp: std::array::from_fn(|i| page.get(&k.m, slot::FP + i as u64)),
        lrs: std::array::from_fn(|i| page.get(&k.m, slot::LRS + i as u64)),
        vmcr: page.get(&k.m, slot::VMCR),
        aprs: std::array::from_fn(|i| page.get(&k.m, slot::APRS + i as u64)),
    }
}

fn root_of(k: &KCore<SimMachine>, vm: u16) -> u64 {
    k.vms[vm as usize - 1].npt().unwrap().root
}

/// Run `steps` from host registers drawn from `host_seed` and guest contexts from
/// `guest_seed`; returns the final contexts of both pages.
fn refine(steps: &[Step], host_seed: u64, guest_seed: u64, f: CpuFeatures) -> Result<Vec<AbsCtxt>, TestCaseError> {
    let (k, _) = kcore();
    // The CPU's trap-control registers exist as `f` says (ID_AA64MMFR0.FGT, MMFR1.HCX).
    let mut ids = [0u64; ID_REGS];
    ids[id_index(7, 0).unwrap()] = (f.fgt as u64) << 56;
    ids[id_index(7, 1).unwrap()] = (f.hcx as u64) << 40;
    ids[id_index(4, 1).unwrap()] = if f.mte2 { 2 << 8 } else { 0 }; // ID_AA64PFR1_EL1.MTE
    k.guest_cpu.configure(&ids, 40);
    for (i, r) in SysReg::ALL.iter().enumerate() {
        k.m.set_sysreg(0, *r, mix(host_seed, i as u64));
    }
    let fp: FpRegs = std::array::from_fn(|i| mix(host_seed, 100 + i as u64));
    k.m.set_fp_regs(0, &fp);
    // ICH_VTR_EL2 is the CPU's, not the host's: 5, 6 or 7 preemption bits (1, 2 or 4
    // active-priority registers of each group), the same for both host seeds.
    k.m.set_sysreg(0, SysReg::IchVtrEl2, (4 + guest_seed % 3) << 26);
    for (p, pa) in PAGES.iter().enumerate() {
        for w in 0..slot::WORDS {
            kcore::machine::Machine::store(&k.m, pa + 8 * w, mix(guest_seed, 1000 * p as u64 + w));
        }
    }
    let mut spec = cpu_of(&k);
    // While a guest runs: its page, the code's and the specification's host state, and the
    // host's registers before entry.
    let mut running: Option<(u64, HostCtxt, AbsHost, AbsCpu)> = None;
    for (n, s) in steps.iter().enumerate() {
        let syncs = k.m.syncs();
        match (*s, running.take()) {
            (Step::Enter { vm, vcpu, page }, None) => {
                let pa = PAGES[page];
                let guest = ctxt_of(&k, pa);
                let before = spec.clone();
                let flags = kcore::machine::Machine::load(&k.m, pa + 8 * slot::FLAGS);
                let underflow = flags & kcore::vcpu::flags::UNDERFLOW_NOTIFY != 0;
                let (next, host) = ctxt::enter(&spec, &guest, vm, root_of(&k, vm), vcpu, f, underflow);
                let mut hc = HostCtxt::new();
                k.switch_to_guest(vm, vcpu, &VcpuPage { pa }, &mut hc);
                prop_assert!(k.m.syncs() > syncs, "no context synchronisation after entry");
                // The EL2 timer's interrupt reaches KCore whenever it stands in for the host's.
                if before.regs[&SysReg::CntvCtlEl0] & 0b11 == 0b01 {
                    prop_assert!(k.m.enabled_ppis(0) & (1 << 26) != 0, "host deadline armed, PPI 26 off");
                }
                // So does the maintenance interrupt whenever the guest may raise it: underflow
                // asked for, or a level interrupt tracked for its EOI.
                if underflow || guest.lrs.iter().any(|lr| lr & (1 << 41) != 0) {
                    prop_assert!(k.m.enabled_ppis(0) & (1 << 25) != 0, "maintenance interrupt PPI 25 off");
                }
                k.m.clear_ppis(0); // the host may turn it off again while it runs
                spec = next;
                running = Some((pa, hc, host, before));
            }
            (Step::GuestReg { reg, val }, Some(r)) => {
                let reg = guest_owned()[reg % guest_owned().len()];
                k.m.set_sysreg(0, reg, val);
                spec.regs.insert(reg, val);
                running = Some(r);
            }
            (Step::GuestFp { i, val }, Some(r)) => {
                let mut fp = k.m.fp_regs(0);
                fp[i % FP_WORDS] = val;
                k.m.set_fp_regs(0, &fp);
                spec.fp = fp;
                running = Some(r);
            }
            (Step::Trap { reg, val }, Some(r)) => {
                let reg = TRAP_REGS[reg % TRAP_REGS.len()];
                k.m.set_sysreg(0, reg, val);
                spec.regs.insert(reg, val);
                running = Some(r);
            }
            (Step::Irq { ctl }, Some(r)) => {
                k.m.set_sysreg(0, SysReg::CntvCtlEl0, ctl);
                spec.regs.insert(SysReg::CntvCtlEl0, ctl);
                let (want, next) = ctxt::timer_irq(&spec);
                let got = k.guest_timer_interrupt();
                prop_assert_eq!(got, want, "step {}: {:?}", n, s);
                spec = next;
                running = Some(r);
            }
            (Step::Exit { seed, pc, pstate }, Some((pa, hc, host, before))) => {
                let x: [u64; 31] = std::array::from_fn(|i| mix(seed, i as u64));
                let (next, saved) = ctxt::exit(&spec, &host, x, pc, pstate);
                let page = VcpuPage { pa };
                k.save_guest_gprs(&page, &x, pc, pstate);
                k.switch_to_host(&page, &hc);
                prop_assert!(k.m.syncs() > syncs, "no context synchronisation after exit");
                prop_assert_eq!(ctxt_of(&k, pa), saved, "saved context after step {}", n);
                // The host has every register it had before entry back, and its FP/SIMD.
                let now = cpu_of(&k);
                for r in ctxt::host_saved(f) {
                    prop_assert_eq!(now.regs[&r], before.regs[&r], "host {:?} after step {}", r, n);
                }
                prop_assert_eq!(now.fp, before.fp);
                spec = next;
            }
            (Step::HostReg { reg, val }, None) => {
                let reg = ctxt::host_saved(f)[reg % ctxt::host_saved(f).len()];
                k.m.set_sysreg(0, reg, val);
                spec.regs.insert(reg, val);
            }
            (_, r) => running = r, // not possible in this mode: skipped
        }
        prop_assert_eq!(cpu_of(&k), spec.clone(), "CPU after step {}: {:?}", n, s);
    }
    Ok(PAGES.iter().map(|pa| ctxt_of(&k, *pa)).collect())
}

fn step() -> impl Strategy<Value = Step> {
    let ctl = prop_oneof![Just(0b101u64), Just(0b111), Just(0b100), Just(0b001), any::<u64>()];
    prop_oneof![
        3 => (1u16..=2, 0usize..8, 0usize..2).prop_map(|(vm, vcpu, page)| Step::Enter { vm, vcpu, page }),
        4 => (any::<usize>(), any::<u64>()).prop_map(|(reg, val)| Step::GuestReg { reg, val }),
        // List registers: free, pending or active INTID 27, another interrupt.
        2 => (26usize..30, prop_oneof![Just(0u64), Just((1 << 62) | 27), Just((2 << 62) | 27), Just((1 << 62) | 40)])
            .prop_map(|(reg, val)| Step::GuestReg { reg, val }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, val)| Step::GuestFp { i, val }),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(reg, val)| Step::Trap { reg, val }),
        3 => ctl.prop_map(|ctl| Step::Irq { ctl }),
        3 => (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(seed, pc, pstate)| Step::Exit { seed, pc, pstate }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(reg, val)| Step::HostReg { reg, val }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn world_switch_refines_its_specification(
        steps in prop::collection::vec(step(), 1..40),
        host in any::<u64>(),
        other_host in any::<u64>(),
        guest in any::<u64>(),
        fgt in any::<bool>(),
        hcx in any::<bool>(),
        mte2 in any::<bool>(),
    ) {
        let f = CpuFeatures { fgt, hcx, sme: false, mte2 };
        let a = refine(&steps, host, guest, f)?;
        let b = refine(&steps, other_host, guest, f)?;
        prop_assert_eq!(a, b, "a guest's saved context depends on the host's registers");
    }
}

/// A timer interrupt goes to the last list register, the timer's own, even with others
/// free (they may hold state the host has yet to read); a second one while 27 is still
/// pending is not queued twice; one while the guest has it active makes it pending and
/// active.
#[test]
fn timer_goes_to_its_own_list_register() {
    let steps = [
        Step::Enter { vm: 1, vcpu: 3, page: 0 },
        Step::GuestReg { reg: 26, val: (1 << 62) | 40 },
        Step::GuestReg { reg: 27, val: 41 }, // finished, not yet reported to the host
        Step::GuestReg { reg: 28, val: 0 },
        Step::GuestReg { reg: 29, val: 0 },
        Step::Irq { ctl: 0b101 },
        Step::Irq { ctl: 0b101 },
        Step::Exit { seed: 1, pc: 0x8000_0000, pstate: 0x3c5 },
    ];
    let ctxts = refine(&steps, 7, 9, CpuFeatures::default()).unwrap();
    let pending_27 = (1 << 62) | (1 << 60) | (0xa0 << 48) | 27;
    assert_eq!(ctxts[0].lrs, [(1 << 62) | 40, 41, 0, pending_27], "queued once, in the last");
    assert_eq!(ctxts[0].el1[&SysReg::CntvCtlEl0], 0b111, "timer output masked");
    let active = [
        Step::Enter { vm: 1, vcpu: 3, page: 0 },
        Step::GuestReg { reg: 29, val: (0b10 << 62) | (1 << 60) | (0xa0 << 48) | 27 },
        Step::Irq { ctl: 0b101 },
        Step::Exit { seed: 1, pc: 0x8000_0000, pstate: 0x3c5 },
    ];
    let ctxts = refine(&active, 7, 9, CpuFeatures::default()).unwrap();
    assert_eq!(ctxts[0].lrs[3] >> 62, 0b11, "pending and active");
}

/// The specification's own round trip: entering and leaving with nothing changed gives the
/// host back every register and the guest its context.
#[test]
fn spec_round_trip_is_the_identity() {
    let regs: BTreeMap<SysReg, u64> = SysReg::ALL.iter().map(|r| (*r, *r as u64 * 3 + 1)).collect();
    let cpu = AbsCpu { regs, fp: [5; FP_WORDS] };
    let guest = AbsCtxt {
        x: [9; 31],
        pc: 0x1000,
        pstate: 0x3c5,
        el1: ctxt::el1_state().into_iter().map(|r| (r, 77)).collect(),
        fp: [6; FP_WORDS],
        lrs: [1, 2, 3, 4],
        vmcr: 8,
        aprs: [1 << 20, 0, 0, 0, 1 << 5, 0, 0, 0],
    };
    let f = CpuFeatures { fgt: true, hcx: true, sme: false, mte2: true };
    let (inside, host) = ctxt::enter(&cpu, &guest, 1, 0x4000_0000, 0, f, false);
    let (back, saved) = ctxt::exit(&inside, &host, guest.x, guest.pc, guest.pstate);
    assert_eq!(saved, guest);
    for r in ctxt::host_saved(f) {
        assert_eq!(back.regs[&r], cpu.regs[&r]);
    }
    assert_eq!(back.fp, cpu.fp);
}
