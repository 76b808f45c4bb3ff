//! Layer 29's assembly half: entering a guest and coming back. Everything else of the world
//! switch (EL1 and FP/SIMD state, the virtual GIC, VTTBR, HCR and the other controls) is
//! `kcore::vcpu::ctxtswitch`, run through layer 0; what is left here is loading the guest's
//! x0..x30 and `ERET` (`kcore_guest_enter` in `entry.S`), and unwinding back to the VCPU_RUN
//! handler when the guest exits (`kcore_guest_exit`).

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU64;
use kcore::kcore::KCore;
use kcore::locks::locks::MAX_CPUS;
use kcore::machine::hw::Hardware;
use kcore::trap::traphandlerraw::TrapFrame;
use kcore::vcpu::ctxtswitch::HostCtxt;

/// KCore's stack pointer while a guest runs, per CPU (written by `kcore_guest_enter`).
#[unsafe(no_mangle)]
static KCORE_GUEST_SAVED_SP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

unsafe extern "C" {
    fn kcore_guest_enter(page: u64) -> u64;
    fn kcore_guest_exit(code: u64) -> !;
    /// Stores q0..q31, FPSR, FPCR (528 bytes) at x0.
    pub fn kcore_fp_save(area: u64);
    /// Loads them from x0.
    pub fn kcore_fp_restore(area: u64);
}

/// Where each CPU keeps the host's state while a guest runs on it (KCore memory, never the
/// host's). A static instead of the VCPU_RUN handler's stack: nothing to clear per run.
struct HostCtxts([UnsafeCell<HostCtxt>; MAX_CPUS]);

// SAFETY: entry `i` is only touched by CPU `i`, inside its VCPU_RUN handler, and a CPU handles
// one VCPU_RUN at a time (the host cannot issue another while its guest runs on that CPU).
unsafe impl Sync for HostCtxts {}

static HOST_CTXTS: HostCtxts = HostCtxts([const { UnsafeCell::new(HostCtxt::new()) }; MAX_CPUS]);

/// VCPU_RUN: run the prepared vCPU until it needs the host, then report its exit in `frame`.
pub fn run_vcpu(k: &KCore<Hardware>, frame: &mut TrapFrame, vmid: u16, vcpu: usize, page: u64) {
    let cpu = crate::cpu::current_index();
    // SAFETY: this CPU's own entry (see `HostCtxts`); no other reference to it exists while
    // this handler runs, and the guest's exit unwinds back here on the same CPU.
    let host = unsafe { &mut *HOST_CTXTS.0[cpu].get() };
    k.begin_run(vmid, vcpu, page, host);
    // SAFETY: `page` is the vCPU's KCore-owned context page holding its registers; its EL1
    // state, stage-2 and traps were loaded by `begin_run`, and kcore_guest_exit returns here
    // on this CPU's stack (KCORE_GUEST_SAVED_SP) with KCore's callee-saved registers restored.
    unsafe { kcore_guest_enter(page) };
    k.end_run(host, frame);
}

/// The running guest exits: unwind to `run_vcpu` on this CPU.
pub fn exit_guest() -> ! {
    // SAFETY: a guest runs on this CPU (KCore said it exits), so kcore_guest_enter saved
    // KCore's stack pointer and registers; everything of the guest is in its context page.
    unsafe { kcore_guest_exit(1) }
}
