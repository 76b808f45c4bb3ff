//! Layer 33's Rust glue: `entry.S`'s vectors call [`kcore_trap`] with the saved registers;
//! `kcore`'s top-level step (layer 34) decides, and this module does what only the EL2
//! binary can: enter and leave guests, call firmware, halt.

use crate::el2::{CPUS, HOST_ENTRIES, KCORE, secondary_entry};
use crate::fatal::{fatal, halted, park};
use aarch64_cpu::registers::{ELR_EL2, ESR_EL2, FAR_EL2};
use kcore::psci::{self, HostSmc};
use kcore::trap::traphandler::Outcome;
use kcore::trap::traphandlerraw::TrapFrame;
use tock_registers::interfaces::Readable;

#[unsafe(no_mangle)]
extern "C" fn kcore_trap(slot: u64, frame: &mut TrapFrame) {
    if halted() {
        park();
    }
    let Some(k) = KCORE.get() else { fatal(format_args!("exception (slot {slot}) before KCore was set up")) };
    #[cfg(debug_assertions)]
    let from_host = k.running_guest().is_none();
    match k.trap(slot, frame) {
        Outcome::Return => {}
        Outcome::EnterGuest { vmid, vcpu, page } => crate::world::run_vcpu(k, frame, vmid, vcpu, page),
        Outcome::ExitGuest => crate::world::exit_guest(),
        Outcome::HostSmc => host_smc(frame),
        Outcome::OwnException => fatal(format_args!(
            "exception in KCore itself: slot {slot} esr {:#x} elr {:#x} far {:#x}",
            ESR_EL2.get(),
            ELR_EL2.get(),
            FAR_EL2.get()
        )),
    }
    // Debug builds check KCore's security invariants after every host trap.
    #[cfg(debug_assertions)]
    if from_host && let Err(v) = kcore::invariants::check_quiesced(k) {
        fatal(format_args!("security invariant broken: {v:?}"));
    }
}

fn host_smc(frame: &mut TrapFrame) {
    let Some(cpus) = CPUS.get() else { return };
    let x = [frame.x[0], frame.x[1], frame.x[2], frame.x[3]];
    let this_cpu = crate::cpu::current_index();
    let call = match psci::host_smc(cpus, &HOST_ENTRIES, secondary_entry(), this_cpu, x) {
        HostSmc::Reply(v) => {
            frame.x[0] = v as u64;
            return;
        }
        HostSmc::ReplyWords(w) => {
            frame.x[..4].copy_from_slice(&w);
            return;
        }
        HostSmc::Forward => {
            let mut a = [0u64; 8];
            a.copy_from_slice(&frame.x[..8]);
            a
        }
        HostSmc::Rewrite(r) => [r[0], r[1], r[2], r[3], 0, 0, 0, 0],
    };
    let r = firmware_call(call);
    frame.x[..4].copy_from_slice(&r);
}

/// An SMC to firmware (SMCCC: arguments in x0..x7, results in x0..x3, x4..x17 may be
/// clobbered).
pub fn firmware_call(a: [u64; 8]) -> [u64; 4] {
    let r: [u64; 4];
    // SAFETY: an SMC transfers control to the secure monitor, which follows SMCCC and
    // returns with only the declared registers changed.
    unsafe {
        let (r0, r1, r2, r3);
        core::arch::asm!(
            "smc #0",
            inlateout("x0") a[0] => r0,
            inlateout("x1") a[1] => r1,
            inlateout("x2") a[2] => r2,
            inlateout("x3") a[3] => r3,
            inlateout("x4") a[4] => _,
            inlateout("x5") a[5] => _,
            inlateout("x6") a[6] => _,
            inlateout("x7") a[7] => _,
            lateout("x8") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
            lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _,
            lateout("x16") _, lateout("x17") _,
            options(nostack)
        );
        r = [r0, r1, r2, r3];
    }
    r
}
