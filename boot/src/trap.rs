//! EL2 exception handling: the Rust side of `entry.S`'s vectors. Decisions live in `kcore`
//! (trap dispatch, fault handling, the PSCI proxy); this module moves registers.

use crate::el2::{CPUS, HOST_ENTRIES, KCORE, secondary_entry};
use crate::fatal::{fatal, halted, park};
use crate::sysreg::write_sysreg;
use aarch64_cpu::registers::{ELR_EL2, ESR_EL2, FAR_EL2, HPFAR_EL2, SCTLR_EL1, VBAR_EL1};
use kcore::arch::{self, ec};
use kcore::psci::{self, HostSmc};
use kcore::trap::dispatcher;
use kcore::trap::faulthandler::{self, HostFault};
use tock_registers::interfaces::Readable;

/// The registers `entry.S` saves on every exception; layout shared with the assembly.
#[repr(C)]
pub struct TrapFrame {
    /// x0..x30 of the interrupted context.
    pub x: [u64; 31],
    /// ELR_EL2: where the context resumes.
    pub elr: u64,
    /// SPSR_EL2: its PSTATE.
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 272);
const _: () = assert!(core::mem::offset_of!(TrapFrame, elr) == 248);
const _: () = assert!(core::mem::offset_of!(TrapFrame, spsr) == 256);

/// Vector slot numbers (Arm ARM D1.3.1 order).
const SLOT_LOWER_A64_SYNC: u64 = 8;
const SLOT_LOWER_A32_SYNC: u64 = 12;

#[unsafe(no_mangle)]
extern "C" fn kcore_trap(slot: u64, frame: &mut TrapFrame) {
    if halted() {
        park();
    }
    if (8..=11).contains(&slot) && crate::world::guest_running(crate::cpu::current_index()) {
        let Some(k) = KCORE.get() else { fatal(format_args!("guest trap before KCore was set up")) };
        crate::world::guest_trap(k, frame, slot);
        return;
    }
    match slot {
        SLOT_LOWER_A64_SYNC | SLOT_LOWER_A32_SYNC => {
            host_sync(frame);
            // Debug builds check KCore's security invariants after every host trap.
            #[cfg(debug_assertions)]
            if let Some(k) = KCORE.get()
                && let Err(v) = kcore::invariants::check_quiesced(k)
            {
                fatal(format_args!("security invariant broken: {v:?}"));
            }
        }
        9..=11 | 13..=15 => {
            // KCore routes no host interrupt or SError to EL2 (HCR_EL2.IMO/FMO/AMO = 0).
            log::warn!("unexpected {} from the host ignored", ["irq", "fiq", "serror"][(slot % 4 - 1) as usize]);
        }
        _ => fatal(format_args!(
            "exception in KCore itself: slot {slot} esr {:#x} elr {:#x} far {:#x}",
            ESR_EL2.get(),
            ELR_EL2.get(),
            FAR_EL2.get()
        )),
    }
}

fn host_sync(frame: &mut TrapFrame) {
    let Some(k) = KCORE.get() else { fatal(format_args!("host trap before KCore was set up")) };
    let esr = ESR_EL2.get();
    match arch::esr_ec(esr) {
        ec::HVC64 => {
            let mut x = [0u64; 8];
            x.copy_from_slice(&frame.x[..8]);
            let call = dispatcher::host_hvc(k, &mut x);
            frame.x[..8].copy_from_slice(&x);
            if let dispatcher::HostCall::Run { vmid, vcpu, page } = call {
                crate::world::run_vcpu(k, frame, vmid, vcpu, page);
            }
        }
        ec::SMC64 => {
            // A trapped SMC's ELR points at the SMC itself (Arm ARM D1.11.2): skip it.
            frame.elr += 4;
            host_smc(frame);
        }
        ec::DABT_LOW | ec::IABT_LOW => {
            let far = FAR_EL2.get();
            let hpfar = HPFAR_EL2.get();
            match faulthandler::host_stage2_fault(k, esr, far, hpfar) {
                HostFault::Resume => log::trace!("host stage-2 fault at {:#x} resolved", arch::fault_ipa(hpfar, far)),
                HostFault::InjectAbort(why) => {
                    let ipa = arch::fault_ipa(hpfar, far);
                    log::warn!("host access to {ipa:#x} refused ({why:?}); external abort injected");
                    inject(frame, arch::external_abort_esr(esr, frame.spsr), Some(far));
                }
            }
        }
        class => {
            log::warn!("unexpected trap from the host (EC {class:#x}, ESR {esr:#x}); undefined instruction injected");
            inject(frame, arch::UNDEF_ESR, None);
        }
    }
}

/// Deliver a synchronous exception with syndrome `esr_el1` to the EL1 whose state is loaded
/// (the host's, or a guest's while it runs).
pub fn inject(frame: &mut TrapFrame, esr_el1: u64, far: Option<u64>) {
    let vbar = VBAR_EL1.get();
    let sctlr = SCTLR_EL1.get();
    let Some(inj) = arch::inject_sync_el1(frame.elr, frame.spsr, esr_el1, vbar, sctlr) else {
        fatal(format_args!("host trapped from an unsupported mode, spsr {:#x}", frame.spsr));
    };
    write_sysreg!("esr_el1", inj.esr_el1);
    if let Some(far) = far {
        write_sysreg!("far_el1", far);
    }
    write_sysreg!("elr_el1", inj.elr_el1);
    write_sysreg!("spsr_el1", inj.spsr_el1);
    frame.elr = inj.vector;
    frame.spsr = inj.pstate;
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
