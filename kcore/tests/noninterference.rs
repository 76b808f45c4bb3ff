//! Noninterference: two runs that differ only in a guest's private data (register values it
//! never outputs, contents of pages it never shares) give the host identical observations:
//! every hypercall result (including each exit's details), the ownership records, and the
//! contents of every page the host may read. The same generated sequence of host requests and
//! guest traps drives both runs. The guest's private data includes its EL1 system registers,
//! its FP/SIMD registers and its live debug state (MDSCR_EL1), and its traps include accesses
//! to the hidden and emulated registers (ID, debug, PMU, pointer authentication) and the
//! ones whose values do leave (SGI writes, the EL1 physical timer) with public operands, and
//! MMIO_GUARD enrolments with a secret stored to a device page the guest never enrolled
//! (refused: it must not reach the host).

mod common;

use common::*;
use kcore::abi;
use kcore::kcore::KCore;
use kcore::machine::Machine;
use kcore::machine::sim::SimMachine;
use kcore::mem::pagemgmt::Owner;
use kcore::trap::dispatcher::{HostCall, host_hvc};
use kcore::vcpu::vcpuops::{Exit, ExitAction, Trap};
use kcore::vcpu::vcpuopsaux::VcpuPage;
use kcore::{PAGE_SHIFT, Pfn};
use proptest::prelude::*;

const LOAD: u64 = 0x8000_0000;
/// Pages the scenario uses (the host's view is compared over all of them).
const WINDOW: std::ops::Range<u64> = (P0 + 64)..(P0 + 128);

/// One step, the same in both runs.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The guest runs, touches its private data, and traps like this.
    Guest(GuestTrap),
    /// The host backs the last faulting page with this page of the window.
    MapFault(u64),
    /// The host tries to read a page of the window (a stage-2 fault if it has no mapping).
    HostTouch(u64),
    /// The host donates a page of the window to the VM's pool.
    Donate(u64),
    /// The host touches every page of the window (a host probing all of memory).
    HostTouchAll,
    /// The host destroys the VM.
    Destroy,
}

#[derive(Clone, Copy, Debug)]
enum GuestTrap {
    /// str x1 (public) to the emulated UART.
    MmioWrite,
    /// ldr x2 from the UART.
    MmioRead,
    /// First touch of guest RAM page `n` (above the image).
    Touch(u64),
    /// PSCI_VERSION (answered by KCore).
    PsciVersion,
    /// MEM_SHARE / MEM_UNSHARE of guest RAM page `n`.
    Share(u64, bool),
    /// WFI.
    Wfi,
    /// A trapped MSR/MRS of (op0, op1, CRn, CRm, op2) through register `rt` (1: public, 5 and
    /// 6: secret).
    SysReg((u64, u64, u64, u64, u64), u64, bool),
    /// MMIO_GUARD of device page `n` from the UART's (0: the UART).
    Guard(u64),
    /// The guest enrols the UART's page (it uses the MMIO guard), then stores a secret (x5)
    /// to a device page it never enrols: refused, the host hears nothing of it.
    StrayWrite,
}

fn esr_dabt(write: bool, rt: u64) -> u64 {
    (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (rt << 16) | ((write as u64) << 6) | 0x07
}

struct Run {
    k: KCore<SimMachine>,
    vmid: u64,
    /// The secret: differs between the two runs.
    secret: u64,
}

impl Run {
    fn new(secret: u64) -> Run {
        let (k, kp) = bare_kcore();
        let img: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let sig = sign_image(&kp, LOAD, &img);
        let w = |pfn: Pfn, b: &[u8]| {
            for (i, c) in b.chunks(8).enumerate() {
                let mut x = [0u8; 8];
                x[..c.len()].copy_from_slice(c);
                k.m.store((pfn << PAGE_SHIFT) + 8 * i as u64, u64::from_le_bytes(x));
            }
        };
        w(P0 + 10, &sig);
        w(P0 + 11, &img);
        let vmid = k.register_vm(P0 + 12).unwrap() as u64;
        for i in 0..8 {
            k.mem().donate_to_pool(vmid as u16, P0 + 14 + i).unwrap();
        }
        k.register_vcpu(vmid, 0).unwrap();
        k.set_boot_info(vmid, LOAD, 4096, P0 + 10).unwrap();
        k.map_image_page(vmid, 0, 0, P0 + 11).unwrap();
        k.verify_vm(vmid).unwrap();
        Run { k, vmid, secret }
    }

    fn hvc(&self, x: [u64; 8]) -> ([u64; 8], Option<(u16, usize, u64)>) {
        let mut x = x;
        let call = host_hvc(&self.k, &mut x);
        let run = match call {
            HostCall::Run { vmid, vcpu, page, .. } => Some((vmid, vcpu, page)),
            HostCall::Done => None,
        };
        (x, run)
    }

    /// Pages the guest owns and has not shared: where its private data lives.
    fn private_pages(&self) -> Vec<Pfn> {
        (P0..P0 + 256)
            .filter(|p| {
                let i = self.k.mem().page(*p).unwrap();
                i.owner == Owner::Vm(self.vmid as u16) && i.count == 0
            })
            .collect()
    }

    /// One step; returns what the host observes of it.
    fn step(&self, s: Step, mmio_value: &mut u64) -> Vec<u64> {
        let k = &self.k;
        match s {
            Step::Guest(t) => {
                let (x, run) = self.hvc([abi::VCPU_RUN as u64, self.vmid, 0, *mmio_value, 0, 0, 0, 0]);
                *mmio_value = 0;
                let Some((vmid, vcpu, pa)) = run else { return x.to_vec() };
                let page = VcpuPage { pa };
                // The guest computes with its secret: registers it never outputs, and the
                // contents of its private pages.
                for r in 3..31 {
                    page.set_x(&k.m, r, self.secret ^ r);
                }
                for p in self.private_pages() {
                    k.m.store(p << PAGE_SHIFT, self.secret);
                    k.m.store((p << PAGE_SHIFT) + 4088, !self.secret);
                }
                page.set_x(&k.m, 1, 0x41); // public: what it writes to the UART
                for i in 0..kcore::vcpu::EL1_SYSREGS.len() as u64 {
                    page.set(&k.m, kcore::vcpu::slot::SYSREGS + i, self.secret ^ (0x100 + i));
                }
                for i in 0..kcore::machine::FP_WORDS as u64 {
                    page.set(&k.m, kcore::vcpu::slot::FP + i, self.secret.rotate_left(i as u32));
                }
                // Loaded on the CPU while it runs: its debug control.
                k.m.set_sysreg(0, kcore::machine::SysReg::MdscrEl1, self.secret & 0x7fff_ffff);
                let trap = match t {
                    GuestTrap::MmioWrite => {
                        Trap::Sync { esr: esr_dabt(true, 1), far: 0x0900_0000, hpfar: 0x0900_0000 >> 8 }
                    }
                    GuestTrap::MmioRead => {
                        Trap::Sync { esr: esr_dabt(false, 2), far: 0x0900_0018, hpfar: 0x0900_0000 >> 8 }
                    }
                    GuestTrap::Touch(n) => {
                        let ipa = LOAD + 0x10_0000 + n * 4096;
                        Trap::Sync { esr: esr_dabt(true, 3) & !(1 << 24), far: ipa, hpfar: ipa >> 8 }
                    }
                    GuestTrap::PsciVersion => {
                        page.set_x(&k.m, 0, 0x8400_0000);
                        Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 }
                    }
                    GuestTrap::Share(n, up) => {
                        let ipa = LOAD + 0x10_0000 + n * 4096;
                        if up {
                            // A guest shares a buffer it filled with what it means to send.
                            let npt = k.vms[vmid as usize - 1].expect_npt();
                            if let Some(leaf) = npt.walk(&k.m, ipa) {
                                let pa = leaf.output(ipa);
                                for w in 0..512 {
                                    k.m.store(pa + 8 * w, 0x5075_626c_6963 ^ w);
                                }
                            }
                        }
                        page.set_x(&k.m, 0, if up { 0xC600_0003 } else { 0xC600_0004 });
                        page.set_x(&k.m, 1, ipa);
                        Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 }
                    }
                    GuestTrap::Wfi => Trap::Sync { esr: 0x01 << 26 | 1 << 25, far: 0, hpfar: 0 },
                    GuestTrap::SysReg(reg, rt, read) => Trap::Sync { esr: esr_sysreg(reg, rt, read), far: 0, hpfar: 0 },
                    GuestTrap::Guard(n) => {
                        page.set_x(&k.m, 0, abi::GUEST_MMIO_GUARD as u64);
                        page.set_x(&k.m, 1, 0x0900_0000 + n * 4096);
                        page.set_x(&k.m, 2, 0);
                        page.set_x(&k.m, 3, 0);
                        Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 }
                    }
                    GuestTrap::StrayWrite => {
                        for (r, v) in [abi::GUEST_MMIO_GUARD as u64, 0x0900_0000, 0, 0].into_iter().enumerate() {
                            page.set_x(&k.m, r as u64, v);
                        }
                        let hvc = Trap::Sync { esr: 0x16 << 26 | 1 << 25, far: 0, hpfar: 0 };
                        let mut regs = kcore::vcpu::vcpuopsaux::PageRegs { page, m: &k.m };
                        assert_eq!(k.handle_vm_trap(vmid, &mut regs, &page, hvc), ExitAction::Resume);
                        assert_eq!(page.x(&k.m, 0), 0, "the UART's page enrolled");
                        Trap::Sync { esr: esr_dabt(true, 5), far: 0x0a00_0000, hpfar: 0x0a00_0000 >> 8 }
                    }
                };
                let mut regs = kcore::vcpu::vcpuopsaux::PageRegs { page, m: &k.m };
                let action = k.handle_vm_trap(vmid, &mut regs, &page, trap);
                // What the host sees: this exit, or, for a trap KCore handled itself, the exit
                // the run ends with later (say, a host interrupt).
                let exit = match action {
                    ExitAction::ToHost(exit) => exit,
                    _ => Exit::Irq,
                };
                if matches!(exit, Exit::Mmio { write: false, .. }) {
                    *mmio_value = 0x90;
                }
                k.finish_run(vmid, vcpu);
                let mut obs = x.to_vec();
                obs.extend(exit.encode());
                obs
            }
            Step::MapFault(p) => self.hvc([abi::MAP_VM_PAGE as u64, self.vmid, 0, p, 0, 0, 0, 0]).0.to_vec(),
            Step::HostTouch(p) => vec![k.mem().map_page_host(p << PAGE_SHIFT).map(|m| m.level as u64).unwrap_or(99)],
            Step::Donate(p) => self.hvc([abi::DONATE_PAGE as u64, self.vmid, p, 0, 0, 0, 0, 0]).0.to_vec(),
            Step::HostTouchAll => {
                WINDOW.map(|p| k.mem().map_page_host(p << PAGE_SHIFT).map(|m| m.level as u64).unwrap_or(99)).collect()
            }
            Step::Destroy => self.hvc([abi::DESTROY_VM as u64, self.vmid, 0, 0, 0, 0, 0, 0]).0.to_vec(),
        }
    }

    /// Everything the host can see: the records of the window, and the contents of every
    /// page it can actually read: those its stage-2 maps now, and those it could fault in
    /// (its own, and pages a VM shares).
    fn host_view(&self) -> Vec<u64> {
        let k = &self.k;
        let host = k.host.expect_npt();
        let mut v = Vec::new();
        for p in WINDOW.chain(P0..P0 + 64) {
            let i = k.mem().page(p).unwrap();
            v.extend([p, i.count, i.gfn, matches!(i.owner, Owner::Host) as u64]);
            let mapped = host.walk(&k.m, p << PAGE_SHIFT).is_some();
            let mappable = i.owner == Owner::Host || (matches!(i.owner, Owner::Vm(_)) && i.count > 0);
            v.push(mapped as u64);
            if mapped || mappable {
                v.extend((0..512).map(|w| k.m.load((p << PAGE_SHIFT) + 8 * w)));
            }
        }
        v
    }
}

fn step() -> impl Strategy<Value = Step> {
    let page = (0u64..64).prop_map(|i| WINDOW.start + i);
    prop_oneof![
        2 => Just(Step::Guest(GuestTrap::MmioWrite)),
        1 => Just(Step::Guest(GuestTrap::MmioRead)),
        3 => (0u64..6).prop_map(|n| Step::Guest(GuestTrap::Touch(n))),
        1 => Just(Step::Guest(GuestTrap::PsciVersion)),
        2 => ((0u64..6), any::<bool>()).prop_map(|(n, up)| Step::Guest(GuestTrap::Share(n, up))),
        1 => Just(Step::Guest(GuestTrap::Wfi)),
        1 => (0u64..3).prop_map(|n| Step::Guest(GuestTrap::Guard(n))),
        1 => Just(Step::Guest(GuestTrap::StrayWrite)),
        3 => prop_oneof![
            Just(GuestTrap::SysReg((3, 0, 0, 4, 0), 5, true)),   // ID_AA64PFR0_EL1
            Just(GuestTrap::SysReg((2, 0, 0, 0, 5), 5, false)),  // DBGBCR0_EL1
            Just(GuestTrap::SysReg((2, 0, 0, 2, 2), 5, false)),  // MDSCR_EL1
            Just(GuestTrap::SysReg((2, 0, 0, 2, 2), 6, true)),
            Just(GuestTrap::SysReg((2, 0, 1, 0, 4), 5, false)),  // OSLAR_EL1
            Just(GuestTrap::SysReg((3, 3, 9, 12, 0), 5, true)),  // PMCR_EL0
            Just(GuestTrap::SysReg((3, 0, 2, 1, 0), 5, false)),  // APIAKeyLo_EL1
            Just(GuestTrap::SysReg((3, 0, 12, 11, 5), 1, false)), // ICC_SGI1R_EL1
            Just(GuestTrap::SysReg((3, 3, 14, 2, 1), 1, false)),  // CNTP_CTL_EL0
            Just(GuestTrap::SysReg((3, 3, 14, 2, 1), 5, true)),
        ]
        .prop_map(Step::Guest),
        4 => page.clone().prop_map(Step::MapFault),
        2 => page.clone().prop_map(Step::HostTouch),
        1 => page.prop_map(Step::Donate),
        2 => Just(Step::HostTouchAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn guest_secrets_do_not_reach_the_host(mut steps in prop::collection::vec(step(), 1..30)) {
        // Finally the host tears the VM down and looks at everything it got back.
        steps.extend([Step::Destroy, Step::HostTouchAll]);
        let a = Run::new(0x1111_2222_3333_4444);
        let b = Run::new(0x9999_8888_7777_6666);
        let (mut va, mut vb) = (0, 0);
        for (i, s) in steps.iter().enumerate() {
            let oa = a.step(*s, &mut va);
            let ob = b.step(*s, &mut vb);
            prop_assert_eq!(oa, ob, "hypercall results differ at step {}: {:?}", i, s);
            prop_assert!(a.host_view() == b.host_view(), "host-visible memory differs after step {}: {:?}", i, s);
        }
    }
}

/// The life of a shared buffer, always exercised: backed, shared, read by the host, unshared,
/// then refilled with private data, then the VM destroyed.
#[test]
fn an_unshared_buffer_carries_no_secret_to_the_host() {
    let steps = [
        Step::Guest(GuestTrap::Touch(2)),
        Step::MapFault(WINDOW.start + 5),
        Step::Guest(GuestTrap::Share(2, true)),
        Step::HostTouchAll,
        Step::Guest(GuestTrap::Share(2, false)),
        Step::Guest(GuestTrap::MmioWrite),
        Step::HostTouchAll,
        Step::Destroy,
        Step::HostTouchAll,
    ];
    let a = Run::new(0x1111_2222_3333_4444);
    let b = Run::new(0x9999_8888_7777_6666);
    let (mut va, mut vb) = (0, 0);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(a.step(*s, &mut va), b.step(*s, &mut vb), "step {i}: {s:?}");
        assert!(a.host_view() == b.host_view(), "host-visible memory differs after step {i}: {s:?}");
    }
    // And the buffer really was shared in between (the scenario did what it says).
    assert_eq!(a.k.mem().page(WINDOW.start + 5).unwrap().owner, Owner::Host, "scrubbed back to the host");
}

/// A guest that uses the MMIO guard stores a secret to a device page it did not enrol: the
/// access is refused in KCore (an external abort for the guest) and the host's observations
/// are the same whatever the secret; the store to the enrolled UART still reaches the host.
#[test]
fn a_refused_mmio_write_carries_no_secret_to_the_host() {
    let steps = [
        Step::Guest(GuestTrap::MmioWrite),
        Step::Guest(GuestTrap::StrayWrite),
        Step::Guest(GuestTrap::MmioWrite),
        Step::Guest(GuestTrap::Guard(1)),
        Step::Guest(GuestTrap::StrayWrite),
    ];
    let a = Run::new(0x1111_2222_3333_4444);
    let b = Run::new(0x9999_8888_7777_6666);
    let (mut va, mut vb) = (0, 0);
    let mut seen = vec![];
    for (i, s) in steps.iter().enumerate() {
        let oa = a.step(*s, &mut va);
        assert_eq!(oa, b.step(*s, &mut vb), "step {i}: {s:?}");
        seen.push(oa[8]); // the exit reason the host got
    }
    // MMIO exits (1) for the UART before and after the guard, nothing (the placeholder host
    // interrupt, 4) for the refused stores and the enrolment.
    assert_eq!(seen, [1, 4, 1, 4, 4]);
}
