//! Layer 29 (CtxtSwitch): the world switch between the host and a guest on one CPU.
//!
//! VCPU_RUN saves the host's EL1 state in KCore's per-CPU memory (never in host memory),
//! loads the guest's from its context page, sets the guest's stage-2 (VTTBR with its vmid)
//! and traps, and enters it. A guest trap comes back through the normal vectors: `kcore`
//! decides it; KCore either resumes the guest or saves its EL1 state into the page, unwinds to
//! the VCPU_RUN handler, restores the host and reports the exit. FP/SIMD registers are switched
//! eagerly: the host's go to KCore's per-CPU memory, the guest's live in its context page.

use crate::fatal::fatal;
use crate::sysreg::{isb, read_sysreg, write_sysreg};
use crate::trap::{TrapFrame, inject};
use bitflags::bitflags;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kcore::arch;
use kcore::kcore::KCore;
use kcore::locks::locks::MAX_CPUS;
use kcore::machine::hw::Hardware;
use kcore::vcpu::slot;
use kcore::vcpu::vcpuops::{ExitAction, Trap};
use kcore::vcpu::vcpuopsaux::{GuestRegs, VcpuPage};

/// The trap frame as the guest's registers: KCore answers most guest traps in place, without
/// copying the guest's registers anywhere.
struct FrameRegs<'a>(&'a mut TrapFrame);

impl GuestRegs for FrameRegs<'_> {
    fn x(&self, n: u64) -> u64 {
        if n < 31 { self.0.x[n as usize] } else { 0 }
    }
    fn set_x(&mut self, n: u64, v: u64) {
        if n < 31 {
            self.0.x[n as usize] = v;
        }
    }
    fn pc(&self) -> u64 {
        self.0.elr
    }
    fn set_pc(&mut self, v: u64) {
        self.0.elr = v;
    }
}

bitflags! {
    /// HCR_EL2 while a guest runs (Arm ARM D17.2.48).
    #[derive(Clone, Copy, Debug)]
    struct GuestHcr: u64 {
        const VM = 1 << 0;
        const SWIO = 1 << 1;
        const PTW = 1 << 2;
        const FMO = 1 << 3;
        const IMO = 1 << 4;
        const AMO = 1 << 5;
        const FB = 1 << 9;
        const BSU_IS = 1 << 10;
        const TWI = 1 << 13;
        const TWE = 1 << 14;
        const TSC = 1 << 19;
        const TIDCP = 1 << 20;
        const TACR = 1 << 21;
        const TSW = 1 << 22;
        const RW = 1 << 31;
    }
}

/// KCore's stack pointer while a guest runs, per CPU (written by `kcore_guest_enter`).
#[unsafe(no_mangle)]
static KCORE_GUEST_SAVED_SP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: (vmid + 1, vCPU, context page) of the running guest; vmid + 1 = 0 when none.
static RUNNING: [[AtomicU64; 3]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 3] }; MAX_CPUS];
/// Per CPU: the last exit, encoded for the host.
static EXIT: [[AtomicU64; 4]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 4] }; MAX_CPUS];
/// Per CPU: the host's FP/SIMD registers while a guest runs (q0..q31, FPSR, FPCR).
static HOST_FP: [[AtomicU64; 66]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 66] }; MAX_CPUS];

unsafe extern "C" {
    fn kcore_guest_enter(page: u64) -> u64;
    fn kcore_guest_exit(code: u64) -> !;
    fn kcore_fp_save(area: u64);
    fn kcore_fp_restore(area: u64);
}

/// Load the guest's virtual GIC state (list registers, VMCR) and enable the virtual CPU
/// interface (ICH_HCR_EL2.En), so the guest's ICC_* accesses and interrupts are virtual.
fn vgic_load(k: &KCore<Hardware>, page: &VcpuPage) {
    let lr = |i: u64| page.get(&k.m, slot::LRS + i);
    write_sysreg!("S3_4_C12_C12_0", lr(0)); // ICH_LR0_EL2
    write_sysreg!("S3_4_C12_C12_1", lr(1));
    write_sysreg!("S3_4_C12_C12_2", lr(2));
    write_sysreg!("S3_4_C12_C12_3", lr(3));
    write_sysreg!("S3_4_C12_C11_7", page.get(&k.m, slot::VMCR)); // ICH_VMCR_EL2
    write_sysreg!("S3_4_C12_C11_0", 1); // ICH_HCR_EL2.En
    // ICC_SRE_EL1 is not virtualised: a guest always gets the system-register interface.
    write_sysreg!("S3_0_C12_C12_5", 1);
    isb();
}

/// Save the guest's virtual GIC state (the guest may have acknowledged and completed
/// interrupts) and turn the virtual CPU interface off for the host.
fn vgic_save(k: &KCore<Hardware>, page: &VcpuPage) {
    let lrs = [
        read_sysreg!("S3_4_C12_C12_0"),
        read_sysreg!("S3_4_C12_C12_1"),
        read_sysreg!("S3_4_C12_C12_2"),
        read_sysreg!("S3_4_C12_C12_3"),
    ];
    for (i, v) in lrs.iter().enumerate() {
        page.set(&k.m, slot::LRS + i as u64, *v);
    }
    page.set(&k.m, slot::VMCR, read_sysreg!("S3_4_C12_C11_7"));
    write_sysreg!("S3_4_C12_C11_0", 0);
}

/// A physical interrupt arrived while a guest runs: if it is the guest's own virtual timer
/// (its CNTV_CTL says fired and unmasked), mask the timer output (as the guest's handler
/// would first do) and give the guest virtual INTID 27 in a free list register. Returns
/// whether the interrupt was the guest's; otherwise it is the host's and the guest exits.
fn guest_timer_interrupt() -> bool {
    let ctl = read_sysreg!("cntv_ctl_el0");
    if !kcore::vcpu::vtimer_fired(ctl) {
        return false;
    }
    write_sysreg!("cntv_ctl_el0", ctl | 0b010); // IMASK: the physical PPI drops
    let lrs = [
        read_sysreg!("S3_4_C12_C12_0"),
        read_sysreg!("S3_4_C12_C12_1"),
        read_sysreg!("S3_4_C12_C12_2"),
        read_sysreg!("S3_4_C12_C12_3"),
    ];
    let lr = kcore::vcpu::pending_lr(kcore::vcpu::VTIMER_INTID);
    match kcore::vcpu::free_lr(&lrs, kcore::vcpu::VTIMER_INTID) {
        Some(0) => write_sysreg!("S3_4_C12_C12_0", lr),
        Some(1) => write_sysreg!("S3_4_C12_C12_1", lr),
        Some(2) => write_sysreg!("S3_4_C12_C12_2", lr),
        Some(3) => write_sysreg!("S3_4_C12_C12_3", lr),
        // Already queued, or no room: the guest has it or gets it when one frees up (it
        // stays masked until the guest re-arms its timer).
        _ => {}
    }
    isb();
    true
}

/// Save this CPU's FP/SIMD registers to `area` (528 bytes of KCore memory).
fn fp_save(area: u64) {
    // SAFETY: `area` is KCore memory of at least 528 bytes (a per-CPU array or the FP part of
    // a vCPU context page); FP/SIMD access is not trapped at EL2 (CPTR_EL2.TFP = 0 here).
    unsafe { kcore_fp_save(area) }
}

/// Load this CPU's FP/SIMD registers from `area`.
fn fp_restore(area: u64) {
    // SAFETY: as for `fp_save`; KCore's own code never uses these registers.
    unsafe { kcore_fp_restore(area) }
}

/// The EL1 registers switched between host and guest, in `kcore::vcpu::EL1_SYSREGS` order.
macro_rules! for_each_el1_sysreg {
    ($m:ident) => {
        $m!(0, "sp_el1");
        $m!(1, "elr_el1");
        $m!(2, "spsr_el1");
        $m!(3, "sctlr_el1");
        $m!(4, "ttbr0_el1");
        $m!(5, "ttbr1_el1");
        $m!(6, "tcr_el1");
        $m!(7, "mair_el1");
        $m!(8, "amair_el1");
        $m!(9, "vbar_el1");
        $m!(10, "contextidr_el1");
        $m!(11, "tpidr_el0");
        $m!(12, "tpidr_el1");
        $m!(13, "tpidrro_el0");
        $m!(14, "cpacr_el1");
        $m!(15, "esr_el1");
        $m!(16, "far_el1");
        $m!(17, "afsr0_el1");
        $m!(18, "afsr1_el1");
        $m!(19, "par_el1");
        $m!(20, "cntkctl_el1");
        $m!(21, "csselr_el1");
        $m!(22, "mdscr_el1");
        $m!(23, "cntv_ctl_el0");
        $m!(24, "cntv_cval_el0");
    };
}

/// Is `a` the same name as `b` (a `const` string comparison)?
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The register list above must be the context page's layout, which `kcore` defines.
macro_rules! check_el1_sysreg {
    ($i:expr, $r:literal) => {
        const _: () = assert!(same_name(kcore::vcpu::EL1_SYSREGS[$i], $r), "EL1 register order differs from kcore");
    };
}
for_each_el1_sysreg!(check_el1_sysreg);
const _: () = assert!(kcore::vcpu::EL1_SYSREGS.len() == 25);

/// Registers of one side's EL1 state: the 25 system registers, then SP_EL0.
type El1State = [u64; 26];

fn save_el1() -> El1State {
    let mut s = [0u64; 26];
    macro_rules! save {
        ($i:expr, $r:literal) => {
            s[$i] = read_sysreg!($r);
        };
    }
    for_each_el1_sysreg!(save);
    s[25] = read_sysreg!("sp_el0");
    s
}

fn load_el1(s: &El1State) {
    macro_rules! load {
        ($i:expr, $r:literal) => {
            write_sysreg!($r, s[$i]);
        };
    }
    for_each_el1_sysreg!(load);
    write_sysreg!("sp_el0", s[25]);
}

fn page_el1(k: &KCore<Hardware>, page: &VcpuPage) -> El1State {
    let mut s = [0u64; 26];
    for (i, v) in s.iter_mut().enumerate().take(25) {
        *v = page.get(&k.m, slot::SYSREGS + i as u64);
    }
    s[25] = page.get(&k.m, slot::SP_EL0);
    s
}

fn set_page_el1(k: &KCore<Hardware>, page: &VcpuPage, s: &El1State) {
    for (i, v) in s.iter().enumerate().take(25) {
        page.set(&k.m, slot::SYSREGS + i as u64, *v);
    }
    page.set(&k.m, slot::SP_EL0, s[25]);
}

/// Is a guest running on this CPU (are we in its trap path)?
pub fn guest_running(cpu: usize) -> bool {
    RUNNING[cpu][0].load(Relaxed) != 0
}

/// VCPU_RUN: run the prepared vCPU until it needs the host, then report its exit in `frame`.
pub fn run_vcpu(k: &KCore<Hardware>, frame: &mut TrapFrame, vmid: u16, vcpu: usize, page_pa: u64) {
    let cpu = crate::cpu::current_index();
    let page = VcpuPage { pa: page_pa };
    let Some(root) = k.vms[vmid as usize - 1].npt().map(|n| n.root) else {
        fatal(format_args!("verified VM {vmid} has no stage-2 table"));
    };
    let host = save_el1();
    let host_sre = read_sysreg!("S3_0_C12_C12_5"); // ICC_SRE_EL1
    let host_fp = HOST_FP[cpu].as_ptr() as u64;
    fp_save(host_fp);
    fp_restore(page.pa + 8 * slot::FP);
    load_el1(&page_el1(k, &page));
    vgic_load(k, &page);
    write_sysreg!("elr_el2", page.get(&k.m, slot::PC));
    write_sysreg!("spsr_el2", page.get(&k.m, slot::PSTATE));
    write_sysreg!("vttbr_el2", arch::vttbr_el2(root, vmid));
    write_sysreg!("hcr_el2", GuestHcr::all().bits());
    write_sysreg!("cptr_el2", 0x22ff); // FP/SIMD switched: no traps
    write_sysreg!("cnthctl_el2", 0b01); // counter readable, physical timer trapped
    write_sysreg!("vmpidr_el2", (1 << 31) | vcpu as u64); // the guest sees its vCPU index as Aff0
    isb();
    RUNNING[cpu][1].store(vcpu as u64, Relaxed);
    RUNNING[cpu][2].store(page_pa, Relaxed);
    RUNNING[cpu][0].store(vmid as u64 + 1, Relaxed);
    // SAFETY: the context page is a KCore page holding the guest's registers; its EL1 state,
    // stage-2 and traps are loaded above, and kcore_guest_exit returns here on this CPU's
    // stack (KCORE_GUEST_SAVED_SP) with KCore's callee-saved registers restored.
    unsafe { kcore_guest_enter(page_pa) };
    RUNNING[cpu][0].store(0, Relaxed);
    fp_restore(host_fp);
    load_el1(&host);
    write_sysreg!("S3_0_C12_C12_5", host_sre);
    let regs = crate::el2::EL2_REGS.get().expect("KCore set up");
    crate::cpu::restore_host_stage2(regs);
    write_sysreg!("cptr_el2", 0x22ff);
    write_sysreg!("cnthctl_el2", 0b11);
    write_sysreg!("vmpidr_el2", read_sysreg!("mpidr_el1"));
    isb();
    k.finish_run(vmid, vcpu);
    frame.x[0] = 0;
    for (x, w) in frame.x[1..5].iter_mut().zip(&EXIT[cpu]) {
        *x = w.load(Relaxed);
    }
}

/// A trap while a guest runs on this CPU (vector `slot`, lower EL). Decided on the trap frame
/// in place; only an exit to the host copies the guest's registers into its context page.
pub fn guest_trap(k: &KCore<Hardware>, frame: &mut TrapFrame, slot: u64) {
    let cpu = crate::cpu::current_index();
    let vmid = (RUNNING[cpu][0].load(Relaxed) - 1) as u16;
    let page = VcpuPage { pa: RUNNING[cpu][2].load(Relaxed) };
    let esr = read_sysreg!("esr_el2");
    if slot == 9 && guest_timer_interrupt() {
        return; // back into the guest, which now has a virtual timer interrupt pending
    }
    // Slots 8 and 12: synchronous, from AArch64 or AArch32 (a guest's 32-bit user space).
    let trap = if slot != 8 && slot != 12 {
        Trap::Interrupt
    } else if matches!(arch::esr_ec(esr), arch::ec::DABT_LOW | arch::ec::IABT_LOW) {
        Trap::Sync { esr, far: read_sysreg!("far_el2"), hpfar: read_sysreg!("hpfar_el2") }
    } else {
        // Only aborts have a faulting address (hot path: hypercalls).
        Trap::Sync { esr, far: 0, hpfar: 0 }
    };
    match k.handle_vm_trap(vmid, &mut FrameRegs(frame), &page, trap) {
        ExitAction::Resume => {}
        ExitAction::InjectUndef => inject(frame, arch::UNDEF_ESR, None),
        ExitAction::InjectAbort => {
            inject(frame, arch::external_abort_esr(esr, frame.spsr), Some(read_sysreg!("far_el2")))
        }
        ExitAction::ToHost(exit) => {
            for (i, w) in exit.encode().iter().enumerate() {
                EXIT[cpu][i].store(*w, Relaxed);
            }
            for (i, x) in frame.x.iter().enumerate() {
                page.set(&k.m, slot::X0 + i as u64, *x);
            }
            page.set(&k.m, slot::PC, frame.elr);
            page.set(&k.m, slot::PSTATE, frame.spsr);
            set_page_el1(k, &page, &save_el1());
            fp_save(page.pa + 8 * slot::FP);
            vgic_save(k, &page);
            // SAFETY: a guest runs on this CPU, so kcore_guest_enter saved KCore's stack
            // pointer and registers; everything of the guest is in its context page.
            unsafe { kcore_guest_exit(1) }
        }
    }
}
