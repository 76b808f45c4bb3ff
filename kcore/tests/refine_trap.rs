//! Refinement check for layers 33 (TrapHandlerRaw) and 34 (TrapHandler): generated sequences
//! of the events the hardware delivers to KCore — host hypercalls of every id (the whole VM
//! lifecycle, VCPU_RUN, MAP_VM_PAGE, INJECT_IRQ, VM_STATE, malformed arguments), host SMCs,
//! stage-2 aborts, other traps and interrupts, exceptions in EL2 itself, and, while a guest
//! runs, its traps and interrupts — through KCore's single entry point (`KCore::trap`, with
//! `begin_run` / `end_run` around guest runs exactly as `boot/` drives them) on the simulated
//! machine, and through `kcore::spec::trap`. After every event: the same route, the same
//! registers for the interrupted side (trap frame and EL1 exception registers), the same VM
//! states, memory records and maps, vCPU states and registers, and the invariants.
//! Layer 33's pieces (vector decoding, exception delivery) are also checked on their own.

mod common;

use common::*;
use kcore::arch;
use kcore::invariants;
use kcore::kcore::KCore;
use kcore::machine::SysReg;
use kcore::machine::sim::SimMachine;
use kcore::psci;
use kcore::spec::mem::abstraction;
use kcore::spec::trap::{self as spec, AbsTop, AbsVector, El1Exc, HostEvent, Regs, Route};
use kcore::spec::vcpu::GuestTrap;
use kcore::trap::traphandler::Outcome;
use kcore::trap::traphandlerraw::{TrapFrame, Vector, vector};
use kcore::vcpu::ctxtswitch::HostCtxt;
use kcore::vcpu::slot;
use kcore::vcpu::vcpuopsaux::VcpuPage;
use kcore::{PAGE_SHIFT, Pfn, abi};
use proptest::prelude::*;
use std::collections::BTreeMap;

const LOAD: u64 = 0x8000_0000;
const LEN: u64 = 8192;
const IMG: Pfn = P0 + 10;
const SIG: Pfn = P0 + 12;

#[derive(Clone, Copy, Debug)]
enum Event {
    /// A host hypercall with x0..x4.
    Hvc([u64; 5]),
    Host(HostEvent),
    /// A guest trap (or, `None`, an interrupt) while it runs.
    Guest(Option<GuestTrap>),
    /// A host hypercall with x0..x4 on the second CPU while the guest runs on the first.
    OtherCpuHvc([u64; 5]),
    /// A host VCPU_RUN with x0..x7 (interrupts to inject in x5..x7).
    RunWith([u64; 8]),
}

fn setup() -> (KCore<SimMachine>, ed25519_compact::PublicKey) {
    let (k, kp) = bare_kcore();
    let img: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
    let sig = sign_image(&kp, LOAD, &img);
    let w = |pfn: Pfn, b: &[u8]| {
        for (i, c) in b.chunks(8).enumerate() {
            let mut x = [0u8; 8];
            x[..c.len()].copy_from_slice(c);
            kcore::machine::Machine::store(&k.m, (pfn << PAGE_SHIFT) + 8 * i as u64, u64::from_le_bytes(x));
        }
    };
    w(IMG, &img);
    w(SIG, &sig);
    // The host's EL1: its vector base, SCTLR with SPAN clear (PAN set on entry) and DSSBS.
    k.m.set_sysreg(0, SysReg::VbarEl1, 0xffff_8000_1001_0800);
    k.m.set_sysreg(0, SysReg::SctlrEl1, (1 << 44) | 0x30d0_0805);
    (k, kp.pk)
}

/// The host's path to a running VM 1 with vCPUs 0 and 1.
fn boot_vm1() -> Vec<Event> {
    let mut ev = vec![Event::Hvc([abi::REGISTER_VM as u64, P0 + 400, 0, 0, 0])];
    for i in 0..12 {
        ev.push(Event::Hvc([abi::DONATE_PAGE as u64, 1, P0 + 300 + i, 0, 0]));
    }
    ev.push(Event::Hvc([abi::REGISTER_VCPU as u64, 1, 0, 0, 0]));
    ev.push(Event::Hvc([abi::REGISTER_VCPU as u64, 1, 1, 0, 0]));
    ev.push(Event::Hvc([abi::SET_BOOT_INFO as u64, 1, LOAD, LEN, SIG]));
    ev.push(Event::Hvc([abi::MAP_IMAGE_PAGE as u64, 1, 0, 0, IMG]));
    ev.push(Event::Hvc([abi::MAP_IMAGE_PAGE as u64, 1, 0, 1, IMG + 1]));
    ev.push(Event::Hvc([abi::VERIFY_VM as u64, 1, 0x4800_1000, 0, 0]));
    ev
}

/// The syndrome registers the hardware sets for a guest trap, and the vector slot.
fn guest_syndrome(t: Option<GuestTrap>) -> (u64, u64, u64, u64) {
    let Some(t) = t else { return (9, 0, 0, 0) };
    let (esr, far) = match t {
        GuestTrap::Hvc(_) => ((0x16 << 26) | (1 << 25), 0),
        GuestTrap::MmioWrite { ipa, rt, size_log2 } => (esr_dabt(true, rt, size_log2, false, true), ipa),
        GuestTrap::MmioRead { ipa, rt, size_log2, sign } => (esr_dabt(false, rt, size_log2, sign, true), ipa),
        GuestTrap::RamFault { ipa } => (esr_dabt(true, 3, 3, false, false), ipa),
        GuestTrap::Wfi => ((0x01 << 26) | (1 << 25), 0),
        GuestTrap::Sysreg { reg, rt, read } => (esr_sysreg(reg, rt, read), 0),
    };
    (8, esr, far, (far >> 12) << 4)
}

fn host_syndrome(ev: HostEvent) -> (u64, u64, u64, u64) {
    match ev {
        HostEvent::Hvc => (8, (0x16 << 26) | (1 << 25), 0, 0),
        HostEvent::Smc => (8, (0x17 << 26) | (1 << 25), 0, 0),
        HostEvent::Abort { ipa, data, translation, write } => {
            let esr = ((if data { 0x24u64 } else { 0x20 }) << 26)
                | (1 << 25)
                | (((write && data) as u64) << 6)
                | if translation { 0b00_0111 } else { 0b00_1111 };
            (8, esr, ipa, (ipa >> 12) << 4)
        }
        HostEvent::Other { ec } => (8, (ec << 26) | (1 << 25), 0, 0),
        HostEvent::Async { slot } | HostEvent::Own { slot } => (slot, 0, 0, 0),
    }
}

fn el1_of(k: &KCore<SimMachine>, cpu: usize) -> El1Exc {
    let r = |x| k.m.sysreg(cpu, x);
    El1Exc {
        vbar: r(SysReg::VbarEl1),
        sctlr: r(SysReg::SctlrEl1),
        esr: r(SysReg::EsrEl1),
        far: r(SysReg::FarEl1),
        elr: r(SysReg::ElrEl1),
        spsr: r(SysReg::SpsrEl1),
    }
}

fn regs_of(f: &TrapFrame) -> Regs {
    Regs { x: f.x, pc: f.elr, pstate: f.spsr }
}

fn route_of(o: Outcome) -> Route {
    match o {
        Outcome::Return => Route::Return,
        Outcome::EnterGuest { vmid, vcpu, .. } => Route::EnterGuest { vmid, vcpu },
        Outcome::ExitGuest => Route::ExitGuest,
        Outcome::HostSmc => Route::HostSmc,
        Outcome::OwnException => Route::Halt,
    }
}

fn refine(events: &[Event], host_pc: u64, host_pstate: u64) -> Result<(), TestCaseError> {
    let (k, pk) = setup();
    let oracle = Oracle { k: &k, pk };
    let mut spec = AbsTop {
        boot: kcore::spec::boot::AbsBoot {
            vms: BTreeMap::new(),
            mem: abstraction(&k, &BTreeMap::new()),
            donated: BTreeMap::new(),
        },
        vcpus: BTreeMap::new(),
        pstate: BTreeMap::new(),
        lrs: BTreeMap::new(),
        running: None,
        report_lrs: false,
        ids: configure_guest_cpu(&k),
        mdscr: BTreeMap::new(),
        gic_v2: matches!(k.vgic.kind(), kcore::vcpu::vgic::GicKind::V2 { .. }),
    };
    let mut host = TrapFrame { elr: host_pc, spsr: host_pstate, ..TrapFrame::default() };
    for (i, x) in host.x.iter_mut().enumerate() {
        *x = 0x1111 * i as u64;
    }
    // While a guest runs: its frame, and the host's state kept by the world switch.
    let mut guest: Option<(TrapFrame, HostCtxt)> = None;
    let mut other = host.clone();
    for (n, ev) in events.iter().enumerate() {
        match (*ev, guest.take()) {
            (Event::Hvc(a), None) => {
                host.x[..5].copy_from_slice(&a);
                guest = host_event(&k, &oracle, &mut spec, &mut host, HostEvent::Hvc, 0, n)?;
            }
            (Event::RunWith(a), None) => {
                host.x[..8].copy_from_slice(&a);
                guest = host_event(&k, &oracle, &mut spec, &mut host, HostEvent::Hvc, 0, n)?;
            }
            (Event::Host(e), None) => guest = host_event(&k, &oracle, &mut spec, &mut host, e, 0, n)?,
            (Event::OtherCpuHvc(a), Some(g)) => {
                // The host on CPU 1 while the guest runs on CPU 0 (never VCPU_RUN here).
                other.x[..5].copy_from_slice(&a);
                SimMachine::set_cpu(1);
                let entered = host_event(&k, &oracle, &mut spec, &mut other, HostEvent::Hvc, 1, n);
                SimMachine::set_cpu(0);
                prop_assert!(entered?.is_none());
                guest = Some(g);
            }
            (Event::Guest(t), Some((mut frame, hc))) => {
                // The guest computed something since its last trap.
                frame.x[n % 31] = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                if let Some(GuestTrap::Hvc(a)) = t {
                    frame.x[..4].copy_from_slice(&a);
                }
                let (slot, esr, far, hpfar) = guest_syndrome(t);
                // The guest's timer has not fired: an interrupt is the host's.
                k.m.set_sysreg(0, SysReg::CntvCtlEl0, 0);
                k.m.set_sysreg(0, SysReg::EsrEl2, esr);
                k.m.set_sysreg(0, SysReg::FarEl2, far);
                k.m.set_sysreg(0, SysReg::HpfarEl2, hpfar);
                let (want_route, want_regs, want_el1, want_host, next) =
                    spec.guest_trap(t, regs_of(&frame), el1_of(&k, 0));
                let got = route_of(k.trap(slot, &mut frame));
                prop_assert_eq!(got, want_route, "event {}: {:?}", n, ev);
                prop_assert_eq!(regs_of(&frame), want_regs, "guest registers after event {}: {:?}", n, ev);
                prop_assert_eq!(el1_of(&k, 0), want_el1, "guest EL1 after event {}: {:?}", n, ev);
                if let Some((words, lrs)) = want_host {
                    let before: [u64; 3] = host.x[5..8].try_into().expect("three");
                    k.end_run(&hc, &mut host);
                    prop_assert_eq!(&host.x[..5], &words[..], "host's VCPU_RUN result after event {}", n);
                    let want_lrs = lrs.unwrap_or(before);
                    prop_assert_eq!(&host.x[5..8], &want_lrs[..], "host's x5..x7 after event {} (list registers)", n);
                } else {
                    guest = Some((frame, hc));
                }
                spec = next;
            }
            (_, g) => guest = g, // not possible in this mode: skipped
        }
        check_state(&k, &spec, guest.as_ref().map(|g| &g.0), n)?;
    }
    Ok(())
}

/// One host event through the code and the specification; enters the guest if it says so.
fn host_event(
    k: &KCore<SimMachine>,
    oracle: &Oracle,
    spec: &mut AbsTop,
    host: &mut TrapFrame,
    e: HostEvent,
    cpu: usize,
    n: usize,
) -> Result<Option<(TrapFrame, HostCtxt)>, TestCaseError> {
    let (slot, esr, far, hpfar) = host_syndrome(e);
    k.m.set_sysreg(cpu, SysReg::EsrEl2, esr);
    k.m.set_sysreg(cpu, SysReg::FarEl2, far);
    k.m.set_sysreg(cpu, SysReg::HpfarEl2, hpfar);
    let (want_route, want_regs, want_el1, next) = spec.host_trap(e, regs_of(host), el1_of(k, cpu), oracle);
    let got = route_of(k.trap(slot, host));
    prop_assert_eq!(got, want_route, "event {}: {:?} x {:x?}", n, e, &host.x[..5]);
    prop_assert_eq!(regs_of(host), want_regs, "host registers after event {}: {:?}", n, e);
    prop_assert_eq!(el1_of(k, cpu), want_el1, "host EL1 after event {}: {:?}", n, e);
    *spec = next;
    let Route::EnterGuest { vmid, vcpu } = got else { return Ok(None) };
    // As boot/ does: switch, then the assembly loads x0..x30, ELR and SPSR from the page.
    let page = VcpuPage { pa: k.vminfo[vmid as usize - 1].vcpu_page(vcpu) };
    let mut hc = HostCtxt::new();
    k.begin_run(vmid, vcpu, page.pa, &mut hc);
    let frame = TrapFrame {
        x: std::array::from_fn(|i| page.x(&k.m, i as u64)),
        elr: k.m.sysreg(0, SysReg::ElrEl2),
        spsr: k.m.sysreg(0, SysReg::SpsrEl2),
        pad: 0,
    };
    prop_assert_eq!(frame.spsr, spec.pstate[&(vmid, vcpu)], "guest PSTATE at entry");
    Ok(Some((frame, hc)))
}

fn check_state(k: &KCore<SimMachine>, spec: &AbsTop, live: Option<&TrapFrame>, n: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(abstract_vms(k), spec.boot.vms.clone(), "VMs after event {}", n);
    let abs = abstraction(k, &spec.boot.mem.pools);
    prop_assert_eq!(&abs.pages, &spec.boot.mem.pages, "page records after event {}", n);
    prop_assert_eq!(&abs.vm_maps, &spec.boot.mem.vm_maps, "VM maps after event {}", n);
    prop_assert_eq!(&abs.host_zero, &spec.boot.mem.host_zero, "host zero-page leaves after event {}", n);
    for &p in &abs.host_mapped {
        prop_assert!(spec.boot.mem.host_may_map(p), "host maps {:#x} after event {}", p, n);
    }
    for (vmid, vs) in &spec.vcpus {
        let l = spec.running.filter(|r| r.0 == *vmid).and_then(|r| live.map(|f| (r.1, f.x, f.elr)));
        prop_assert_eq!(&vcpus_of(k, *vmid, vs, l), vs, "vCPUs of VM {} after event {}", vmid, n);
        for (&(vm, v), lrs) in spec.lrs.iter().filter(|e| e.0.0 == *vmid) {
            let page = VcpuPage { pa: k.vminfo[vm as usize - 1].vcpu_page(v) };
            let got: [u64; 4] = std::array::from_fn(|i| page.get(&k.m, slot::LRS + i as u64));
            prop_assert_eq!(&got, lrs, "list registers of {}/{} after event {}", vm, v, n);
        }
    }
    if let Err(v) = invariants::check(k) {
        prop_assert!(false, "invariant broken after event {}: {:?}", n, v);
    }
    Ok(())
}

fn hvc() -> impl Strategy<Value = Event> {
    let vmid = prop_oneof![6 => Just(1u64), 2 => Just(2u64), 1 => Just(0u64), 1 => Just(64u64)];
    let vcpu = prop_oneof![6 => 0u64..2, 1 => Just(2u64), 1 => Just(8u64)];
    let pfn =
        prop_oneof![4 => (0u64..24).prop_map(|i| P0 + 500 + i), 1 => Just(KMEM >> 12), 1 => Just(IMG), 1 => Just(0u64)];
    let w = |id: u32| id as u64;
    prop_oneof![
        10 => (vmid.clone(), vcpu.clone(), any::<u64>(), prop_oneof![8 => Just(0u64), 2 => Just(1u64), 1 => Just(2u64)])
            .prop_map(move |(a, b, c, d)| Event::Hvc([w(abi::VCPU_RUN), a, b, c, d])),
        4 => (vmid.clone(), vcpu.clone(), pfn.clone()).prop_map(move |(a, b, c)| Event::Hvc([w(abi::MAP_VM_PAGE), a, b, c, 0])),
        3 => (vmid.clone(), vcpu.clone(), prop_oneof![Just(27u64), Just(40u64), 16u64..24, Just(1020u64), Just(u64::MAX)])
            .prop_flat_map(move |(a, b, c)| {
                prop_oneof![Just(0u64), Just(0xa0u64), Just(0x1a0u64), Just(0x200u64)]
                    .prop_map(move |d| Event::Hvc([w(abi::INJECT_IRQ), a, b, c, d]))
            }),
        1 => (vmid.clone(), vcpu.clone()).prop_map(move |(a, b)| Event::Hvc([w(abi::VCPU_IRQ_STATE), a, b, 0, 0])),
        6 => (vmid.clone(), vcpu.clone(), any::<u64>(), prop_oneof![4 => Just(2u64), 4 => Just(3u64), 1 => Just(0u64), 1 => Just(4u64)],
              [injection(), injection(), injection()])
            .prop_map(move |(a, b, c, d, [e, f, g])| Event::RunWith([w(abi::VCPU_RUN), a, b, c, d, e, f, g])),
        1 => vmid.clone().prop_map(move |a| Event::Hvc([w(abi::VM_STATE), a, 0, 0, 0])),
        1 => prop_oneof![Just(abi::KCORE_VERSION), Just(abi::VENDOR_HYP_CALL_UID), Just(abi::VENDOR_HYP_REVISION),
            Just(0xC600_00FF), Just(0x8400_0000), Just(0xdead_beef)]
            .prop_map(move |id| Event::Hvc([w(id), 1, 2, 3, 4])),
        1 => (prop_oneof![Just(0u64), Just(1u64), Just(2u64), Just(99u64)], pfn.clone())
            .prop_map(move |(a, p)| Event::Hvc([w(abi::DONATE_PAGE), a, p, 0, 0])),
        1 => prop_oneof![(0u64..4).prop_map(|i| P0 + 401 + i), Just(IMG)]
            .prop_map(move |r| Event::Hvc([w(abi::REGISTER_VM), r, 0, 0, 0])),
        1 => (vmid.clone(), prop_oneof![Just(0u64), Just(9u64)]).prop_map(move |(a, b)| Event::Hvc([w(abi::REGISTER_VCPU), a, b, 0, 0])),
        1 => vmid.clone().prop_map(move |a| Event::Hvc([w(abi::SET_BOOT_INFO), a, LOAD, LEN, SIG])),
        1 => (vmid.clone(), 0u64..2).prop_map(move |(a, i)| Event::Hvc([w(abi::MAP_IMAGE_PAGE), a, 0, i, IMG + i])),
        1 => vmid.clone().prop_map(move |a| Event::Hvc([w(abi::VERIFY_VM), a, 0x4000_0000, 0, 0])),
        1 => vmid.prop_map(move |a| Event::Hvc([w(abi::DESTROY_VM), a, 0, 0, 0])),
    ]
}

/// A VCPU_RUN injection word (x5..x7): none, an interrupt (some refused: the timer's, out
/// of range, bad attributes), or a malformed word.
fn injection() -> impl Strategy<Value = u64> {
    let intid = prop_oneof![4 => Just(40u64), 4 => 16u64..24, 1 => Just(27u64), 1 => Just(1020u64)];
    let attrs = prop_oneof![Just(0u64), Just(0xa0u64), Just(0x1a0u64)];
    prop_oneof![
        4 => Just(0u64),
        6 => (intid.clone(), attrs).prop_map(|(i, a)| (1 << 63) | (a << 32) | i),
        1 => intid.clone().prop_map(|i| (1 << 63) | (0x200 << 32) | i),
        1 => intid.prop_map(|i| (0xa0 << 32) | i),
    ]
}

fn host() -> impl Strategy<Value = Event> {
    let ipa = prop_oneof![
        4 => (0u64..24).prop_map(|i| (P0 + 500 + i) << PAGE_SHIFT),
        2 => (0u64..2).prop_map(|i| (IMG + i) << PAGE_SHIFT),
        1 => Just(KMEM),
        1 => Just(0x0900_0000u64),
        1 => Just(1u64 << 39),
    ];
    prop_oneof![
        4 => (ipa, any::<bool>(), prop_oneof![4 => Just(true), 1 => Just(false)], any::<bool>())
            .prop_map(|(ipa, data, translation, write)| HostEvent::Abort { ipa: ipa | 0x18, data, translation, write }),
        1 => Just(HostEvent::Smc),
        1 => prop_oneof![Just(0x18u64), Just(0x07), Just(0x00)].prop_map(|ec| HostEvent::Other { ec }),
        1 => (9u64..12).prop_map(|slot| HostEvent::Async { slot }),
        1 => (0u64..8).prop_map(|slot| HostEvent::Own { slot }),
    ]
    .prop_map(Event::Host)
}

fn guest() -> impl Strategy<Value = Event> {
    prop_oneof![12 => guest_trap(LOAD, LEN).prop_map(Some), 1 => Just(None)].prop_map(Event::Guest)
}

/// Hypercalls the host may make on another CPU while a guest runs (all but VCPU_RUN).
fn other_cpu_hvc() -> impl Strategy<Value = Event> {
    hvc().prop_filter_map("VCPU_RUN", |e| match e {
        Event::Hvc(a) if a[0] != abi::VCPU_RUN as u64 => Some(Event::OtherCpuHvc(a)),
        _ => None,
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![5 => hvc(), 3 => host(), 6 => guest(), 2 => other_cpu_hvc()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn top_level_step_refines_its_specification(
        events in prop::collection::vec(event(), 1..48),
        pc in any::<u64>().prop_map(|p| p & !3),
        pstate in prop_oneof![Just(0x3c5u64), Just(0x0u64), Just(0x4u64), Just(0x10u64), Just(0x0040_0005u64), Just(0x0100_0000u64)],
    ) {
        let mut all = boot_vm1();
        all.extend(events);
        refine(&all, pc, pstate)?;
    }

    /// Layer 33 alone: vector decoding and exception delivery against the specification.
    #[test]
    fn delivery_refines_its_specification(
        slot in 0u64..20,
        pc in any::<u64>(),
        pstate in prop_oneof![Just(0x3c5u64), Just(0x0u64), Just(0x4u64), Just(0x10u64), Just(0x13u64), Just(0x9u64), any::<u64>()],
        vbar in any::<u64>(),
        sctlr in any::<u64>(),
        esr in any::<u64>(),
    ) {
        let want = match spec::vector(slot) {
            AbsVector::Own => Vector::Own,
            AbsVector::Sync => Vector::LowerSync,
            AbsVector::Irq => Vector::LowerIrq,
            AbsVector::Fiq => Vector::LowerFiq,
            AbsVector::SError => Vector::LowerSError,
        };
        prop_assert_eq!(vector(slot), want);
        let got = arch::inject_sync_el1(pc, pstate, esr, vbar, sctlr);
        let want = spec::deliver_sync(pc, pstate, esr, vbar, sctlr);
        prop_assert_eq!(got.map(|i| (i.vector, i.pstate, i.esr_el1, i.elr_el1, i.spsr_el1)),
            want.map(|d| (d.pc, d.pstate, d.esr_el1, d.elr_el1, d.spsr_el1)));
        prop_assert_eq!(arch::external_abort_esr(esr, pstate), spec::refused_access_esr(esr, pstate));
    }
}

/// A well-behaved host and guest: boot, MMIO write and read, a RAM fault backed by the host,
/// a second vCPU, an injected interrupt, power-off.
#[test]
fn a_vm_runs_through_the_top_level_step() {
    let mut ev = boot_vm1();
    let run = |v: u64, val: u64| Event::Hvc([abi::VCPU_RUN as u64, 1, v, val, 0]);
    ev.extend([
        Event::Hvc([abi::INJECT_IRQ as u64, 1, 0, 40, 0]),
        run(0, 0),
        Event::Guest(Some(GuestTrap::MmioWrite { ipa: 0x0900_0000, rt: 1, size_log2: 0 })),
        run(0, 0),
        Event::Guest(Some(GuestTrap::MmioRead { ipa: 0x0900_0018, rt: 5, size_log2: 2, sign: true })),
        run(0, 0x8000_0000),
        Event::Guest(Some(GuestTrap::Sysreg { reg: (3, 0, 0, 4, 0), rt: 3, read: true })),
        Event::Guest(Some(GuestTrap::RamFault { ipa: LOAD + 0x10_0000 })),
        Event::Hvc([abi::MAP_VM_PAGE as u64, 1, 0, P0 + 500, 0]),
        Event::Host(HostEvent::Abort { ipa: IMG << PAGE_SHIFT, data: true, translation: true, write: false }),
        run(0, 0),
        Event::Guest(Some(GuestTrap::Hvc([psci::CPU_ON_64 as u64, 1, LOAD + 0x40, 7]))),
        run(1, 0),
        Event::Guest(None),
        run(1, 0),
        Event::Guest(Some(GuestTrap::Hvc([psci::SYSTEM_OFF as u64, 0, 0, 0]))),
        run(0, 0),
        Event::Hvc([abi::DESTROY_VM as u64, 1, 0, 0, 0]),
    ]);
    refine(&ev, 0xffff_8000_0010_0000, 0x3c5).unwrap();
}

/// A host fault KCore resolves must not come back forever: the same CPU faulting again and
/// again on a page KCore's table maps means the hardware walks something else (as a level-0
/// root on a 40-bit CPU did); the host then gets an external abort for it, with the reason in
/// KCore's log, instead of a silent endless retry (and KCore keeps running).
#[test]
fn a_host_fault_that_keeps_coming_back_is_refused() {
    let (k, _) = bare_kcore();
    let fault = |ipa: u64| {
        let (slot, esr, far, hpfar) =
            host_syndrome(HostEvent::Abort { ipa, data: true, translation: true, write: false });
        k.m.set_sysreg(0, SysReg::EsrEl2, esr);
        k.m.set_sysreg(0, SysReg::FarEl2, far);
        k.m.set_sysreg(0, SysReg::HpfarEl2, hpfar);
        k.m.set_sysreg(0, SysReg::EsrEl1, 0);
        let mut frame = TrapFrame { x: [0; 31], elr: 0x4040_0000, spsr: arch::mode::EL1H, pad: 0 };
        k.trap(slot, &mut frame);
        // An injected abort: ESR_EL1 a data abort taken at EL1 (EC 0x25), the host resumed
        // at its vector instead of the faulting instruction.
        let injected = k.m.sysreg(0, SysReg::EsrEl1) >> 26 == 0x25;
        assert_eq!(injected, frame.elr != 0x4040_0000);
        injected
    };
    let (a, b) = (RAM + 0x5000, RAM + 0x9000);
    let limit = kcore::trap::traphandler::HOST_REFAULT_LIMIT;
    // The first fault maps it; refaults (another CPU's race, as far as KCore can tell) are
    // retried, and a fault elsewhere starts the count again.
    for _ in 0..limit - 1 {
        assert!(!fault(a));
    }
    assert!(!fault(b));
    for _ in 0..limit - 1 {
        assert!(!fault(a));
    }
    assert!(fault(a), "the limit'th refault in a row is refused");
    assert!(!fault(a), "and the count starts again");
    invariants::check(&k).unwrap();
}
