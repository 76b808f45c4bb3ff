//! Layer 34 (TrapHandler): KCore's top-level step. Every exception KCore takes comes here
//! ([`KCore::trap`]) with the interrupted context's registers; this layer decides whose it is
//! (the host's, or the guest running on this CPU) and hands it to the layer that handles it:
//! host hypercalls (layer 32), host stage-2 faults (layer 31), guest exits (layer 28) and the
//! guest's timer (layer 29). A vCPU run is bracketed by [`KCore::begin_run`] and
//! [`KCore::end_run`], between which `boot/` enters the guest.

use super::dispatcher::{self, HostCall};
use super::faulthandler::{self, HostFault};
use super::traphandlerraw::{TrapFrame, Vector, vector};
use crate::arch::{self, ec};
use crate::kcore::KCore;
use crate::locks::locks::MAX_CPUS;
use crate::machine::Machine;
use crate::vcpu::ctxtswitch::HostCtxt;
use crate::vcpu::vcpuops::{Exit, ExitAction, Trap};
use crate::vcpu::vcpuopsaux::VcpuPage;

/// Host kernel reads KCore answered with its zero page (only for its log).
static ZERO_READS: AtomicU64 = AtomicU64::new(0);
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What `boot/` must do after [`KCore::trap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the interrupted context with the frame as it now is.
    Return,
    /// The host's VCPU_RUN: vCPU `vcpu` of VM `vmid` (context page `page`) is prepared;
    /// call [`KCore::begin_run`], enter the guest, and [`KCore::end_run`] when it is back.
    EnterGuest {
        /// The VM.
        vmid: u16,
        /// The vCPU.
        vcpu: usize,
        /// Its context page.
        page: u64,
    },
    /// The running guest exits to the host: its registers are in its context page; unwind
    /// to where it was entered.
    ExitGuest,
    /// A host SMC for the PSCI proxy (`kcore::psci`); the frame's ELR already points past it.
    HostSmc,
    /// An exception in KCore itself: halt.
    OwnException,
}

/// What runs on one CPU.
#[derive(Default)]
pub struct CpuRun {
    /// vmid + 1 of the running guest; 0 when the host runs.
    vmid_plus_one: AtomicU64,
    vcpu: AtomicU64,
    page: AtomicU64,
    /// The last exit, encoded for the host ([`crate::vcpu::vcpuops::Exit::encode`]).
    exit: [AtomicU64; 4],
    /// The run asked for its list registers in x5..x7 when it exits (VCPU_RUN x4 bit 1).
    report_lrs: AtomicBool,
    /// The page of this CPU's last host stage-2 fault that KCore's table already mapped, and
    /// how many such faults in a row it took.
    host_refault: [AtomicU64; 2],
}

/// Host stage-2 faults in a row on one page KCore's table maps before the host gets an
/// external abort for it: a few are races with another CPU mapping it; this many means the
/// hardware walks something other than KCore's tables (a KCore bug), which must not become a
/// silent endless retry. Not a halt: a host racing its own CPUs must not be able to stop KCore.
pub const HOST_REFAULT_LIMIT: u64 = 64;

/// Per-CPU run records.
pub type CpuRuns = [CpuRun; MAX_CPUS];

impl<M: Machine> KCore<M> {
    /// Track host faults on pages KCore's table maps already; the [`HOST_REFAULT_LIMIT`]th
    /// in a row on one page becomes a refusal (an external abort for the host), said loudly.
    fn count_host_refault(&self, fault: HostFault, esr: u64, ipa: u64) -> HostFault {
        let [page, count] = &self.runs[self.m.cpu_index()].host_refault;
        if fault != HostFault::AlreadyMapped {
            count.store(0, Relaxed);
            return fault;
        }
        let this = ipa >> crate::PAGE_SHIFT;
        let n = if page.swap(this, Relaxed) == this { count.load(Relaxed) + 1 } else { 1 };
        if n < HOST_REFAULT_LIMIT {
            count.store(n, Relaxed);
            return fault;
        }
        count.store(0, Relaxed);
        log::error!(
            "host stage-2 fault at {ipa:#x} (ESR {esr:#x}) {n} times in a row, though KCore's table maps it: \
             the hardware's walk disagrees with KCore's tables"
        );
        HostFault::InjectAbort(crate::error::Error::BadState)
    }

    /// The guest running on this CPU, if any: (vmid, vCPU, context page).
    pub fn running_guest(&self) -> Option<(u16, usize, VcpuPage)> {
        let r = &self.runs[self.m.cpu_index()];
        match r.vmid_plus_one.load(Relaxed) {
            0 => None,
            v => Some(((v - 1) as u16, r.vcpu.load(Relaxed) as usize, VcpuPage { pa: r.page.load(Relaxed) })),
        }
    }

    /// Handle an exception taken through vector entry `slot` (0..16) with the interrupted
    /// context's registers in `frame`.
    pub fn trap(&self, slot: u64, frame: &mut TrapFrame) -> Outcome {
        let v = vector(slot);
        if v == Vector::Own {
            return Outcome::OwnException;
        }
        if let Some((vmid, _, page)) = self.running_guest() {
            return self.guest_trap(vmid, &page, v, frame);
        }
        if v != Vector::LowerSync {
            // KCore routes no host interrupt or SError to EL2 (HCR_EL2.IMO/FMO/AMO = 0).
            log::warn!("unexpected {v:?} from the host ignored");
            return Outcome::Return;
        }
        self.host_sync(frame)
    }

    fn host_sync(&self, frame: &mut TrapFrame) -> Outcome {
        let s = self.syndrome();
        match arch::esr_ec(s.esr) {
            ec::HVC64 => {
                // What the SMMU refused since the last hypercall, in KCore's log (one register
                // read when nothing was).
                self.log_dma_faults();
                // SMCCC arguments and results: x0..x7, in place in the trap frame (no copy).
                let Some(x) = frame.x.first_chunk_mut::<8>() else { unreachable!("the frame has x0..x30") };
                match dispatcher::host_hvc(self, x) {
                    HostCall::Done => Outcome::Return,
                    HostCall::Run { vmid, vcpu, page, report_lrs } => {
                        self.runs[self.m.cpu_index()].report_lrs.store(report_lrs, Relaxed);
                        Outcome::EnterGuest { vmid, vcpu, page }
                    }
                }
            }
            ec::SMC64 => {
                // A trapped SMC's ELR points at the SMC itself (Arm ARM D1.11.2): skip it.
                frame.elr = frame.elr.wrapping_add(4);
                Outcome::HostSmc
            }
            ec::DABT_LOW | ec::IABT_LOW if let Some(off) = self.smmu.offset(arch::fault_ipa(s.hpfar, s.far)) => {
                self.host_smmu_access(frame, s.esr, s.far, off);
                Outcome::Return
            }
            ec::DABT_LOW | ec::IABT_LOW => {
                let from_el1 = !matches!(frame.spsr & arch::spsr::MODE_MASK, arch::mode::EL0T | arch::mode::A32_USR);
                let fault = faulthandler::host_stage2_fault(self, s.esr, s.far, s.hpfar, from_el1);
                match self.count_host_refault(fault, s.esr, arch::fault_ipa(s.hpfar, s.far)) {
                    HostFault::Resume | HostFault::AlreadyMapped => {}
                    HostFault::ReadsZero => {
                        // Said for the first few pages and then every 1024th: a host that
                        // scans its RAM meets thousands.
                        let n = ZERO_READS.fetch_add(1, Relaxed);
                        if n < 4 || n.is_multiple_of(1024) {
                            let ipa = arch::fault_ipa(s.hpfar, s.far);
                            log::info!(
                                "host kernel read {ipa:#x}, not its own: it reads KCore's zero page ({} so far)",
                                n + 1
                            );
                        }
                    }
                    HostFault::InjectAbort(why) => {
                        let ipa = arch::fault_ipa(s.hpfar, s.far);
                        log::warn!("host access to {ipa:#x} refused ({why:?}); external abort injected");
                        self.inject_sync(frame, arch::external_abort_esr(s.esr, frame.spsr), Some(s.far));
                    }
                }
                Outcome::Return
            }
            class => {
                log::warn!("unexpected trap from the host (EC {class:#x}, ESR {:#x}); undefined instruction", s.esr);
                self.inject_sync(frame, arch::UNDEF_ESR, None);
                Outcome::Return
            }
        }
    }

    /// The host read or wrote the SMMU's registers (offset `off`): layer 26 emulates the
    /// access and the host continues after the instruction; an access KCore cannot decode
    /// (no instruction syndrome, ESR.ISV = 0) or that the SMMU's policy denies gets the host an
    /// external abort.
    fn host_smmu_access(&self, frame: &mut TrapFrame, esr: u64, far: u64, off: u64) {
        let done = crate::vcpu::vcpuopsaux::decode_mmio(esr).and_then(|a| {
            let rt = a.rt as usize;
            // Register 31 is XZR here: a store of zero, a load discarded.
            let val = if rt == 31 { 0 } else { frame.x[rt] };
            let v = self.smmu_ops().host_access(off, 1 << a.size_log2, a.write, val).ok()?;
            if !a.write && rt != 31 {
                frame.x[rt] = crate::vcpu::vcpuopsaux::mmio_read_value(v, a.size_log2, a.sign_extend);
            }
            Some(())
        });
        match done {
            Some(()) => frame.elr = frame.elr.wrapping_add(4),
            None => {
                log::warn!(
                    "host access to the SMMU at offset {off:#x} refused (ESR {esr:#x}); external abort injected"
                );
                self.inject_sync(frame, arch::external_abort_esr(esr, frame.spsr), Some(far));
            }
        }
    }

    fn guest_trap(&self, vmid: u16, page: &VcpuPage, v: Vector, frame: &mut TrapFrame) -> Outcome {
        if v == Vector::LowerIrq && self.guest_timer_interrupt() {
            return Outcome::Return; // the guest now has a virtual timer interrupt pending
        }
        let (trap, s) = if v == Vector::LowerSync {
            let s = self.syndrome();
            (Trap::Sync { esr: s.esr, far: s.far, hpfar: s.hpfar }, s)
        } else {
            (Trap::Interrupt, super::traphandlerraw::Syndrome { esr: 0, far: 0, hpfar: 0 })
        };
        match self.handle_vm_trap(vmid, frame, page, trap) {
            ExitAction::Resume => {}
            ExitAction::InjectUndef => self.inject_sync(frame, arch::UNDEF_ESR, None),
            ExitAction::InjectAbort => {
                self.inject_sync(frame, arch::external_abort_esr(s.esr, frame.spsr), Some(s.far))
            }
            // A guest waiting for its own timer, which has fired already: KCore delivers the
            // interrupt and the wait ends at once (the PC is already past the WFx), without
            // the host.
            ExitAction::ToHost(Exit::Wfi { .. }) if self.guest_timer_interrupt() => {}
            ExitAction::ToHost(exit) => {
                let r = &self.runs[self.m.cpu_index()];
                for (w, v) in r.exit.iter().zip(exit.encode()) {
                    w.store(v, Relaxed);
                }
                self.save_guest_gprs(page, &frame.x, frame.elr, frame.spsr);
                return Outcome::ExitGuest;
            }
        }
        Outcome::Return
    }

    /// Switch this CPU to the vCPU an [`Outcome::EnterGuest`] named, keeping the host's state
    /// in `host` for [`KCore::end_run`].
    pub fn begin_run(&self, vmid: u16, vcpu: usize, page: u64, host: &mut HostCtxt) {
        self.switch_to_guest(vmid, vcpu, &VcpuPage { pa: page }, host);
        let r = &self.runs[self.m.cpu_index()];
        r.vcpu.store(vcpu as u64, Relaxed);
        r.page.store(page, Relaxed);
        r.vmid_plus_one.store(vmid as u64 + 1, Relaxed);
    }

    /// The guest run begun by [`KCore::begin_run`] has exited ([`Outcome::ExitGuest`]):
    /// switch back to the host and answer its VCPU_RUN in `frame` (x0 = SUCCESS, x1..x4 =
    /// the exit, x5..x7 the list registers if the run asked for them).
    pub fn end_run(&self, host: &HostCtxt, frame: &mut TrapFrame) {
        let (vmid, vcpu, page) = self.running_guest().expect("end_run follows begin_run on this CPU");
        self.switch_to_host(&page, host);
        let r = &self.runs[self.m.cpu_index()];
        r.vmid_plus_one.store(0, Relaxed);
        if r.report_lrs.load(Relaxed) {
            let lrs = self.finish_run_reporting(vmid, vcpu);
            frame.x[5..8].copy_from_slice(&lrs);
        } else {
            self.finish_run(vmid, vcpu);
        }
        frame.x[0] = crate::abi::SUCCESS as u64;
        for (x, w) in frame.x[1..5].iter_mut().zip(&r.exit) {
            *x = w.load(Relaxed);
        }
    }
}
