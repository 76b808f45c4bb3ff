//! Layer 28 (VCPUOps): running a vCPU and deciding each exit. KCore handles what it can
//! itself (PSCI queries, unknown calls, exception injection) and otherwise returns to the host
//! with only what that exit needs: an MMIO write discloses the written value, an MMIO read
//! discloses nothing and later takes exactly one value from the host, a stage-2 fault on
//! guest RAM discloses the faulting page address.

use super::sysregs::{self, SysRegAccess, SysRegAction};
use super::vcpuopsaux::{GuestRegs, MmioAccess, VcpuPage, decode_mmio, mmio_read_value, pending_read_flags};
use super::{flags, slot};
use crate::abi;
use crate::arch::{self, ec};
use crate::error::{Error, Result};
use crate::kcore::KCore;
use crate::machine::{Machine, SysReg};
use crate::psci;
use crate::vm::vmpower::check_vmid;
use crate::vm::{MAX_VCPUS, VcpuState, VmKind, VmState};
use crate::{PAGE_SHIFT, Pfn};

/// Without a layout from the host, guest IPAs below this are device (MMIO) space and RAM lies
/// above (the QEMU `virt` layout); see [`crate::vm::VmInfo::is_ram`].
pub const GUEST_MMIO_LIMIT: u64 = crate::vm::LEGACY_RAM_START;

/// Why a vCPU stopped running, as the host learns it (ABI: x1 = reason, x2..x4 = details).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// MMIO access at `ipa`; for a write, the value written (nothing else of the guest).
    Mmio { ipa: u64, write: bool, size_log2: u64, value: u64 },
    /// The guest touched RAM at `ipa` that has no page yet: back it with MAP_VM_PAGE.
    PageFault { ipa: u64 },
    /// The guest waits for an interrupt (WFI, or WFE if `wfe`). `deadline`: the counter
    /// value at which its virtual timer fires (CNTV_CVAL_EL0; its CNTVOFF_EL2 is 0), or
    /// `u64::MAX` if the timer is off or masked; the host may sleep the vCPU until then or an
    /// interrupt for it. A timer that has already fired never gets here: KCore delivers it.
    Wfi { wfe: bool, deadline: u64 },
    /// A physical interrupt arrived for the host.
    Irq,
    /// The guest powered itself off (PSCI SYSTEM_OFF or SYSTEM_RESET).
    Shutdown,
    /// The guest started vCPU `vcpu` (PSCI CPU_ON): the host may run it now.
    VcpuStarted { vcpu: u64 },
    /// This vCPU turned itself off (PSCI CPU_OFF): do not run it until a CPU_ON.
    VcpuOff,
    /// The guest wrote `value` to an SGI register (`reg`: 0 ICC_SGI0R_EL1, 1 ICC_SGI1R_EL1,
    /// 2 ICC_ASGI1R_EL1): the host's virtual GIC delivers the IPI it names.
    Sgi { reg: u64, value: u64 },
    /// The guest accessed a system register the host emulates (`iss`: ESR_EL2.ISS with Rt
    /// and the direction cleared, see [`super::sysregs::ISS_REG_MASK`]); for a write, the
    /// value; a read takes its value from the next VCPU_RUN, like an MMIO read.
    SysReg { iss: u64, write: bool, value: u64 },
}

impl Exit {
    /// x1..x4 of VCPU_RUN's result.
    pub fn encode(&self) -> [u64; 4] {
        match *self {
            Exit::Mmio { ipa, write, size_log2, value } => [1, ipa, (size_log2 << 1) | write as u64, value],
            Exit::PageFault { ipa } => [2, ipa, 0, 0],
            Exit::Wfi { wfe, deadline } => [3, deadline, wfe as u64, 0],
            Exit::Irq => [4, 0, 0, 0],
            Exit::Shutdown => [5, 0, 0, 0],
            Exit::VcpuStarted { vcpu } => [6, vcpu, 0, 0],
            Exit::VcpuOff => [7, 0, 0, 0],
            Exit::Sgi { reg, value } => [8, value, reg, 0],
            Exit::SysReg { iss, write, value } => [9, iss, write as u64, value],
        }
    }
}

/// What to do after a guest trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Return to the guest (its registers in the context page may have changed).
    Resume,
    /// Inject an Undefined Instruction exception into the guest, then resume.
    InjectUndef,
    /// Inject a synchronous external abort into the guest, then resume.
    InjectAbort,
    /// Stop running the guest and tell the host.
    ToHost(Exit),
}

/// A guest trap as the vectors saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// Synchronous exception with ESR, FAR and HPFAR.
    Sync { esr: u64, far: u64, hpfar: u64 },
    /// A physical IRQ or FIQ (routed to EL2 while a guest runs).
    Interrupt,
}

use crate::abi::RUN_LRS_IN_REGS;

/// The list registers the host fills, one per VCPU_RUN injection word (x5..x7).
pub const RUN_INJECTIONS: usize = super::TIMER_LR;

/// One VCPU_RUN injection word: 0 for none, or bit 63 set with the INTID in 31:0 and
/// INJECT_IRQ's attributes (priority 7:0, level 8) in 40:32, every other bit clear.
pub fn run_injection(word: u64) -> Result<Option<(u32, u64)>> {
    if word == 0 {
        return Ok(None);
    }
    if word & crate::abi::RUN_INJECT_VALID == 0 || (word >> 41) & ((1 << 22) - 1) != 0 {
        return Err(Error::InvalidParameter);
    }
    let (intid, attrs) = (word & 0xffff_ffff, (word >> 32) & 0x1ff);
    check_injection(intid, attrs)?;
    Ok(Some((intid as u32, attrs)))
}

/// INJECT_IRQ's argument checks: 1020-1023 are special and above is no INTID; the virtual
/// timer's (27) is KCore's; attributes have 9 bits.
fn check_injection(intid: u64, attrs: u64) -> Result<()> {
    if intid >= 1020 || intid == super::VTIMER_INTID as u64 || attrs >> 9 != 0 {
        return Err(Error::InvalidParameter);
    }
    Ok(())
}

/// Put `intid` (pending, group 1, `attrs`' priority, EOI maintenance if level-triggered) in
/// the first free one of the host's list registers `lrs`: `Exists` if it is live there
/// already, `NoMemory` if none is free.
fn place_irq(lrs: &mut [u64; RUN_INJECTIONS], intid: u32, attrs: u64) -> Result<()> {
    let live = |lr: u64| lr >> 62 != 0;
    if lrs.iter().any(|&lr| live(lr) && lr & 0xffff_ffff == intid as u64) {
        return Err(Error::Exists);
    }
    let free = lrs.iter().position(|&lr| !live(lr)).ok_or(Error::NoMemory)?;
    lrs[free] = super::pending_lr_with(intid, attrs as u8, attrs & 0x100 != 0);
    Ok(())
}

impl<M: Machine> KCore<M> {
    fn vcpu_args(&self, vmid: u64, vcpu: u64) -> Result<(u16, usize)> {
        let vmid = check_vmid(vmid)?;
        if vcpu >= MAX_VCPUS as u64 {
            return Err(Error::InvalidParameter);
        }
        Ok((vmid, vcpu as usize))
    }

    /// The context page of a registered vCPU.
    pub fn vcpu_page(&self, vmid: u16, vcpu: usize) -> VcpuPage {
        VcpuPage { pa: self.vminfo[vmid as usize - 1].vcpu_page(vcpu) }
    }

    /// `set_vcpu_active` + `restore_shadow_kvm_regs`: get vCPU `vcpu` of a verified VM ready to
    /// run on this CPU: first-run reset (entry = the first image's load address, inside a
    /// verified image), or completion of a pending MMIO read with `mmio_value` (the one value
    /// the host may give the guest). Marks it active: a vCPU runs on one CPU at a time.
    pub fn prepare_run(&self, vmid: u64, vcpu: u64, mmio_value: u64) -> Result<(u16, usize, VcpuPage)> {
        self.prepare_run_with(vmid, vcpu, mmio_value, 0, &[0; RUN_INJECTIONS])
    }

    /// [`KCore::prepare_run`] with VCPU_RUN's options `opts` (bit 0: ask for an exit when the
    /// vCPU's list registers run empty, so the host can refill them; bit 1
    /// ([`RUN_LRS_IN_REGS`]): `inject` holds interrupts to put in its list registers first, as
    /// INJECT_IRQ would, all or none; see [`run_injection`]).
    pub fn prepare_run_with(
        &self,
        vmid: u64,
        vcpu: u64,
        mmio_value: u64,
        opts: u64,
        inject: &[u64; RUN_INJECTIONS],
    ) -> Result<(u16, usize, VcpuPage)> {
        let (vmid, vcpu) = self.vcpu_args(vmid, vcpu)?;
        if opts & !(1 | RUN_LRS_IN_REGS) != 0 {
            return Err(Error::InvalidParameter);
        }
        let mut wanted = [None; RUN_INJECTIONS];
        if opts & RUN_LRS_IN_REGS != 0 {
            for (w, &word) in wanted.iter_mut().zip(inject) {
                *w = run_injection(word)?;
            }
        }
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Verified {
            return Err(Error::BadState);
        }
        if info.vcpu(vcpu) != VcpuState::Ready {
            return Err(if info.vcpu(vcpu) == VcpuState::Active { Error::BadState } else { Error::NotFound });
        }
        let page = self.vcpu_page(vmid, vcpu);
        let f = page.get(&self.m, slot::FLAGS);
        if f & flags::OFF != 0 {
            return Err(Error::BadState);
        }
        // A host in SME streaming mode (SVCR.SM) would hand the guest a CPU whose FP/SIMD
        // instructions behave otherwise: the host must leave streaming mode first.
        if self.guest_cpu.features().sme && self.m.read_sysreg(SysReg::SvcrEl0) & 1 != 0 {
            return Err(Error::BadState);
        }
        // GICv2: before the VM's first run, its GIC CPU interface (GICV) is in its stage-2;
        // tables for it come from the VM's pool, and a short pool fails the run before
        // anything changed (donate and retry). Per VM, not per vCPU's first run: a vCPU
        // whose registers the host set before it ran has had its first-run reset already.
        if !info.cpuif_mapped() {
            self.map_guest_cpuif(vmid, info)?;
            info.set_cpuif_mapped();
        }
        // The injections, checked against the list registers as a whole before any is
        // written: a refused one leaves the vCPU as it was (and it does not run).
        if wanted.iter().any(Option::is_some) {
            let mut lrs = self.host_lrs(&page);
            for &(intid, attrs) in wanted.iter().flatten() {
                place_irq(&mut lrs, intid, attrs)?;
            }
            for (i, lr) in lrs.into_iter().enumerate() {
                page.set(&self.m, slot::LRS + i as u64, lr);
            }
        }
        if f & flags::FIRST_RUN != 0 {
            self.first_run_reset(info, &page);
        } else if f & flags::MMIO_READ_PENDING != 0 {
            let rt = (f >> flags::MMIO_RT_SHIFT) & 0x1f;
            let size = (f >> flags::MMIO_SIZE_SHIFT) & 3;
            page.set_x(&self.m, rt, mmio_read_value(mmio_value, size, f & flags::MMIO_SIGN != 0));
            page.skip_instruction(&self.m);
        }
        page.set(&self.m, slot::FLAGS, if opts & 1 != 0 { flags::UNDERFLOW_NOTIFY } else { 0 });
        info.set_vcpu(vcpu, VcpuState::Active);
        Ok((vmid, vcpu, page))
    }

    /// On a GICv2 machine: map the GICV frame at VM `vmid`'s GIC CPU interface window
    /// ([`super::vgic::GUEST_GICC`]), page for page, where it is not mapped yet and the VM
    /// has no RAM there. Nothing to do on a GICv3.
    fn map_guest_cpuif(&self, vmid: u16, info: &crate::vm::VmInfo) -> Result<()> {
        let window = super::vgic::GUEST_GICC..super::vgic::GUEST_GICC + super::vgic::GUEST_GICC_SIZE;
        for ipa in window.step_by(crate::PAGE_SIZE as usize) {
            let Some(pa) = self.vgic.guest_cpuif_page(ipa) else { return Ok(()) };
            if info.is_ram(ipa) {
                continue;
            }
            match self.mem().map_vm_cpuif(vmid, ipa, pa) {
                Ok(()) | Err(Error::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The state a vCPU that never ran starts in: a protected VM's at its first image's load
    /// address (inside a verified image); a non-protected VM's at 0, for the host to set.
    fn first_run_reset(&self, info: &crate::vm::VmInfo, page: &VcpuPage) {
        let (entry, arg) =
            if info.kind() == VmKind::Protected { (info.image(0).load_ipa, info.boot_arg()) } else { (0, 0) };
        page.reset(&self.m, entry, arg);
        page.set(&self.m, slot::FLAGS, page.get(&self.m, slot::FLAGS) & !flags::FIRST_RUN);
    }

    /// The guest stopped running and KCore returns to the host: the vCPU may run again.
    pub fn finish_run(&self, vmid: u16, vcpu: usize) {
        let _vm = self.lock_vm(vmid);
        self.vminfo[vmid as usize - 1].set_vcpu(vcpu, VcpuState::Ready);
    }

    /// [`KCore::finish_run`] for a run that asked for its list registers in registers
    /// ([`RUN_LRS_IN_REGS`]): also reports the host's list registers as VCPU_IRQ_STATE does
    /// (masked, and reported once: the invalid ones are cleared).
    pub fn finish_run_reporting(&self, vmid: u16, vcpu: usize) -> [u64; RUN_INJECTIONS] {
        let _vm = self.lock_vm(vmid);
        self.vminfo[vmid as usize - 1].set_vcpu(vcpu, VcpuState::Ready);
        let page = self.vcpu_page(vmid, vcpu);
        core::array::from_fn(|i| self.report_lr(&page, i))
    }

    /// List register `i` of a vCPU that is not running, as the host may see it; cleared if
    /// the guest is done with it (state invalid), so it is reported once.
    fn report_lr(&self, page: &VcpuPage, i: usize) -> u64 {
        let lr = page.get(&self.m, slot::LRS + i as u64);
        if lr >> 62 == 0 {
            page.set(&self.m, slot::LRS + i as u64, 0);
        }
        lr & super::LR_HOST_VISIBLE
    }

    /// The list registers the host fills (every one but the timer's, [`super::TIMER_LR`]).
    fn host_lrs(&self, page: &VcpuPage) -> [u64; RUN_INJECTIONS] {
        core::array::from_fn(|i| page.get(&self.m, slot::LRS + i as u64))
    }

    /// `vm_exit_dispatcher`: decide a guest trap. `regs` are the guest's registers as the trap
    /// left them (KCore may change them: PSCI answers, PC advance); `page` is its context page
    /// for the run state. If the answer is [`ExitAction::ToHost`], the caller copies `regs`
    /// into the page before returning to the host.
    pub fn handle_vm_trap(&self, vmid: u16, regs: &mut impl GuestRegs, page: &VcpuPage, trap: Trap) -> ExitAction {
        let m = &self.m;
        let Trap::Sync { esr, far, hpfar } = trap else { return ExitAction::ToHost(Exit::Irq) };
        match arch::esr_ec(esr) {
            ec::HVC64 => self.guest_hvc(vmid, regs, page),
            ec::SMC64 => {
                regs.skip();
                regs.set_x(0, crate::abi::NOT_SUPPORTED as u64);
                ExitAction::Resume
            }
            ec::WFX => {
                regs.skip();
                // ISS.TI bit 0: WFE (vs WFI). The guest's timer is live on this CPU.
                let ctl = m.read_sysreg(SysReg::CntvCtlEl0);
                let deadline = if ctl & 0b11 == 0b01 { m.read_sysreg(SysReg::CntvCvalEl0) } else { u64::MAX };
                ExitAction::ToHost(Exit::Wfi { wfe: esr & 1 != 0, deadline })
            }
            ec::DABT_LOW | ec::IABT_LOW => {
                page.set(m, slot::EXIT_ESR, esr);
                let ipa = arch::fault_ipa(hpfar, far);
                page.set(m, slot::EXIT_IPA, ipa);
                if !arch::is_translation_fault(esr) {
                    return ExitAction::InjectAbort;
                }
                if self.vminfo[vmid as usize - 1].is_ram(ipa) {
                    page.set(m, slot::FLAGS, flags::PAGE_FAULT_PENDING);
                    return ExitAction::ToHost(Exit::PageFault { ipa: ipa & !0xfff });
                }
                if self.mmio_refused(vmid, ipa) {
                    return ExitAction::InjectAbort;
                }
                match decode_mmio(esr) {
                    Some(a) => self.mmio_exit(regs, page, ipa, &a),
                    None => ExitAction::InjectAbort,
                }
            }
            ec::SYS64 => self.guest_sysreg(regs, page, esr),
            // Everything else, including the hidden features' own traps (pointer
            // authentication, SVE, SME) and AArch32 coprocessor accesses: refused.
            _ => ExitAction::InjectUndef,
        }
    }

    /// A trapped system-register access (EC 0x18), decided by [`sysregs::decide`].
    fn guest_sysreg(&self, regs: &mut impl GuestRegs, page: &VcpuPage, esr: u64) -> ExitAction {
        let m = &self.m;
        let a = SysRegAccess::decode(esr);
        let action = sysregs::decide(&a, &self.guest_cpu);
        match action {
            SysRegAction::Undef => return ExitAction::InjectUndef,
            SysRegAction::Read(v) => regs.set_x(a.rt, v),
            SysRegAction::Ignore => {}
            // The guest's MDSCR_EL1 is the CPU's while it runs (switched, layer 29).
            SysRegAction::MdscrRead => regs.set_x(a.rt, m.read_sysreg(SysReg::MdscrEl1)),
            SysRegAction::MdscrWrite => m.write_sysreg(SysReg::MdscrEl1, regs.x(a.rt) & !sysregs::MDSCR_DEBUG_ENABLES),
            SysRegAction::Sgi(reg) => {
                let value = regs.x(a.rt);
                regs.skip();
                return ExitAction::ToHost(Exit::Sgi { reg: reg as u64, value });
            }
            SysRegAction::Host => {
                let iss = esr & sysregs::ISS_REG_MASK;
                if a.read {
                    let read = MmioAccess { write: false, size_log2: 3, rt: a.rt, sign_extend: false };
                    page.set(m, slot::FLAGS, pending_read_flags(&read));
                    return ExitAction::ToHost(Exit::SysReg { iss, write: false, value: 0 });
                }
                let value = regs.x(a.rt);
                regs.skip();
                return ExitAction::ToHost(Exit::SysReg { iss, write: true, value });
            }
        }
        regs.skip();
        ExitAction::Resume
    }

    /// pKVM's MMIO guard: once a guest has enrolled MMIO (MMIO_GUARD), only what it enrolled
    /// is MMIO for it. An access anywhere else outside its RAM is refused (the caller injects
    /// an external abort) and never reaches the host. A guest that never enrolled anything
    /// has all of its device space forwarded.
    fn mmio_refused(&self, vmid: u16, ipa: u64) -> bool {
        let guard = self.vminfo[vmid as usize - 1].mmio_guard();
        // Never empties while the VM lives: an empty table needs no lock.
        if !guard.in_use() {
            return false;
        }
        let _vm = self.lock_vm(vmid);
        !guard.contains(ipa)
    }

    fn mmio_exit(&self, regs: &mut impl GuestRegs, page: &VcpuPage, ipa: u64, a: &MmioAccess) -> ExitAction {
        let m = &self.m;
        if a.write {
            let mask = if a.size_log2 == 3 { u64::MAX } else { (1u64 << (8 << a.size_log2)) - 1 };
            let value = regs.x(a.rt) & mask;
            regs.skip();
            ExitAction::ToHost(Exit::Mmio { ipa, write: true, size_log2: a.size_log2, value })
        } else {
            page.set(m, slot::FLAGS, pending_read_flags(a));
            ExitAction::ToHost(Exit::Mmio { ipa, write: false, size_log2: a.size_log2, value: 0 })
        }
    }

    /// Guest hypercalls KCore answers itself (SMCCC over HVC; the PC already points past it).
    fn guest_hvc(&self, vmid: u16, regs: &mut impl GuestRegs, page: &VcpuPage) -> ExitAction {
        // The common queries first and short: they are the hot path of a guest's hypercalls.
        let id = regs.x(0) as u32;
        match id {
            psci::PSCI_VERSION | abi::SMCCC_VERSION => {
                regs.set_x(0, 0x1_0001);
                ExitAction::Resume
            }
            _ => self.guest_hvc_slow(vmid, id, regs, page),
        }
    }

    fn guest_hvc_slow(&self, vmid: u16, id: u32, regs: &mut impl GuestRegs, page: &VcpuPage) -> ExitAction {
        macro_rules! ret {
            ($v:expr) => {{
                regs.set_x(0, $v as u64);
                ExitAction::Resume
            }};
        }
        let protected = self.vminfo[vmid as usize - 1].kind() == VmKind::Protected;
        match id {
            psci::CPU_ON_32 | psci::CPU_ON_64 => self.guest_cpu_on(vmid, regs),
            psci::CPU_OFF => {
                page.set(&self.m, slot::FLAGS, flags::OFF);
                ExitAction::ToHost(Exit::VcpuOff)
            }
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
                let target = regs.x(1) & psci::MPIDR_AFF_MASK;
                let _vm = self.lock_vm(vmid);
                let info = &self.vminfo[vmid as usize - 1];
                let state = match target {
                    t if t >= MAX_VCPUS as u64 || info.vcpu(t as usize) == VcpuState::Unused => {
                        psci::INVALID_PARAMETERS
                    }
                    t => (self.vcpu_page(vmid, t as usize).get(&self.m, slot::FLAGS) & flags::OFF != 0) as i64,
                };
                ret!(state)
            }
            psci::PSCI_FEATURES => {
                // What Linux probes (PSCI 1.1 5.1.14): the calls KCore answers, and
                // SMCCC_VERSION, which tells it SMCCC 1.1 is there to ask.
                let f = regs.x(1) as u32;
                let known = [
                    psci::PSCI_VERSION,
                    psci::PSCI_FEATURES,
                    psci::SYSTEM_OFF,
                    psci::SYSTEM_RESET,
                    psci::CPU_ON_64,
                    psci::CPU_OFF,
                    psci::AFFINITY_INFO_64,
                    psci::MIGRATE_INFO_TYPE,
                    abi::SMCCC_VERSION,
                ];
                ret!(if regs.x(1) >> 32 == 0 && known.contains(&f) { 0i64 } else { abi::NOT_SUPPORTED })
            }
            psci::MIGRATE_INFO_TYPE => ret!(psci::TOS_NOT_PRESENT_MP),
            abi::SMCCC_ARCH_FEATURES => {
                // SMCCC 1.1: only the discovery call itself; no firmware workaround calls
                // (ARCH_WORKAROUND_1/2/3) or SOC_ID are offered.
                ret!(if regs.x(1) == abi::SMCCC_ARCH_FEATURES as u64 { 0 } else { abi::NOT_SUPPORTED })
            }
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                let _ = self.set_vm_poweroff(vmid);
                ExitAction::ToHost(Exit::Shutdown)
            }
            abi::VENDOR_HYP_CALL_UID => {
                for (i, w) in abi::GUEST_KVM_UID.iter().enumerate() {
                    regs.set_x(i as u64, *w as u64);
                }
                ExitAction::Resume
            }
            abi::GUEST_KVM_FEATURES => {
                // pKVM offers its memory-protection calls to protected VMs only: HYP_MEMINFO
                // (2), MEM_SHARE (3), MEM_UNSHARE (4), and MMIO_GUARD (7), which KCore
                // enforces (a Linux guest registers its ioremap hook only when bit 7 is set).
                let fns: &[u32] = if protected { &[0, 2, 3, 4, 7] } else { &[0] };
                regs.set_x(0, fns.iter().fold(0, |b, f| b | 1 << f));
                for r in 1..4 {
                    regs.set_x(r, 0);
                }
                ExitAction::Resume
            }
            abi::GUEST_HYP_MEMINFO
            | abi::GUEST_MEM_SHARE
            | abi::GUEST_MEM_UNSHARE
            | abi::GUEST_MMIO_GUARD
            | abi::GUEST_SEKVM_GRANT
            | abi::GUEST_SEKVM_REVOKE
                if !protected =>
            {
                // A non-protected VM's memory is the host's already: nothing to share.
                if id == abi::GUEST_MEM_SHARE || id == abi::GUEST_MEM_UNSHARE {
                    self.vminfo[vmid as usize - 1].shares().note(id == abi::GUEST_MEM_SHARE, false);
                }
                ret!(abi::NOT_SUPPORTED)
            }
            abi::GUEST_HYP_MEMINFO => {
                let zero = (1..4).all(|r| regs.x(r) == 0);
                ret!(if zero { crate::PAGE_SIZE as i64 } else { abi::INVALID_PARAMETER })
            }
            // One granule at x1; x2 and x3 must be zero (pKVM's ABI).
            abi::GUEST_MEM_SHARE | abi::GUEST_MEM_UNSHARE | abi::GUEST_MMIO_GUARD
                if regs.x(2) != 0 || regs.x(3) != 0 =>
            {
                let info = &self.vminfo[vmid as usize - 1];
                if id == abi::GUEST_MMIO_GUARD {
                    info.mmio_guard().note_refused();
                } else {
                    info.shares().note(id == abi::GUEST_MEM_SHARE, false);
                }
                ret!(abi::INVALID_PARAMETER)
            }
            abi::GUEST_MEM_SHARE | abi::GUEST_MEM_UNSHARE => {
                let ipa = regs.x(1);
                let up = id == abi::GUEST_MEM_SHARE;
                let action = self.guest_share(vmid, regs, page, ipa, 1, up, true);
                // Counted once answered (a page the host must back first is retried).
                if action == ExitAction::Resume {
                    let ok = regs.x(0) as i64 == abi::SUCCESS;
                    self.vminfo[vmid as usize - 1].shares().note(up, ok);
                }
                action
            }
            abi::GUEST_SEKVM_GRANT | abi::GUEST_SEKVM_REVOKE => {
                let (ipa, size) = (regs.x(1), regs.x(2));
                if !size.is_multiple_of(crate::PAGE_SIZE) {
                    return ret!(abi::INVALID_PARAMETER);
                }
                self.guest_share(vmid, regs, page, ipa, size / crate::PAGE_SIZE, id == abi::GUEST_SEKVM_GRANT, false)
            }
            abi::GUEST_MMIO_GUARD => {
                // pKVM's "map one granule as emulated MMIO": a page of the VM's device space
                // (aligned, inside its IPA space, outside its RAM), kept for the VM's life. A
                // full table is NO_MEMORY (the guest sees the failure; nothing is dropped).
                let ipa = regs.x(1);
                let info = &self.vminfo[vmid as usize - 1];
                if !ipa.is_multiple_of(crate::PAGE_SIZE) || ipa >> self.host.ia_bits != 0 || info.is_ram(ipa) {
                    info.mmio_guard().note_refused();
                    return ret!(abi::INVALID_PARAMETER);
                }
                let _vm = self.lock_vm(vmid);
                ret!(match info.mmio_guard().enrol(ipa) {
                    Ok(()) => abi::SUCCESS,
                    Err(e) => {
                        info.mmio_guard().note_refused();
                        e.code()
                    }
                })
            }
            _ => ret!(abi::NOT_SUPPORTED),
        }
    }

    /// PSCI CPU_ON from the guest: start its vCPU x1 (Aff0 = vCPU index) at x2 with x0 = x3.
    /// The entry point must lie inside a verified image, like vCPU 0's.
    fn guest_cpu_on(&self, vmid: u16, regs: &mut impl GuestRegs) -> ExitAction {
        let (target, entry, context) = (regs.x(1) & psci::MPIDR_AFF_MASK, regs.x(2), regs.x(3));
        // The target's state and registers change under the VM's lock: VCPU_RUN of the target
        // on another CPU checks them under the same lock.
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        let code = if target >= MAX_VCPUS as u64 || info.vcpu(target as usize) == VcpuState::Unused {
            psci::INVALID_PARAMETERS
        } else if info.kind() == VmKind::Protected
            && (0..info.image_count()).all(|i| {
                let img = info.image(i);
                entry < img.load_ipa || entry >= img.load_ipa + img.bytes
            })
        {
            psci::INVALID_ADDRESS
        } else {
            let t = self.vcpu_page(vmid, target as usize);
            if t.get(&self.m, slot::FLAGS) & flags::OFF == 0 {
                psci::ALREADY_ON
            } else {
                t.reset(&self.m, entry, context);
                0
            }
        };
        regs.set_x(0, code as u64);
        if code == 0 { ExitAction::ToHost(Exit::VcpuStarted { vcpu: target }) } else { ExitAction::Resume }
    }

    /// Share (`up`) or unshare `pages` guest pages from `ipa` with the host. pKVM's calls
    /// (`exclusive`) share one page exactly once; SeKVM's grant/revoke count. A page the guest
    /// has not touched yet is first faulted in through the host, and the call re-issued.
    #[allow(clippy::too_many_arguments)]
    fn guest_share(
        &self,
        vmid: u16,
        regs: &mut impl GuestRegs,
        page: &VcpuPage,
        ipa: u64,
        pages: u64,
        up: bool,
        exclusive: bool,
    ) -> ExitAction {
        let m = &self.m;
        macro_rules! ret {
            ($v:expr) => {{
                regs.set_x(0, $v as u64);
                ExitAction::Resume
            }};
        }
        if !ipa.is_multiple_of(crate::PAGE_SIZE) || !self.vminfo[vmid as usize - 1].is_ram(ipa) || pages == 0 {
            return ret!(abi::INVALID_PARAMETER);
        }
        let mem = self.mem();
        let Ok(t) = mem.vm(vmid) else { return ret!(abi::INVALID_PARAMETER) };
        let npt = t.expect_npt();
        if exclusive {
            match npt.walk(m, ipa) {
                None if up => {
                    // Not backed yet: let the host back it, then retry the HVC.
                    page.set(m, slot::EXIT_IPA, ipa);
                    page.set(m, slot::FLAGS, flags::PAGE_FAULT_PENDING);
                    let pc = regs.pc();
                    regs.set_pc(pc.wrapping_sub(4));
                    return ExitAction::ToHost(Exit::PageFault { ipa });
                }
                None => return ret!(abi::INVALID_PARAMETER),
                Some(leaf) => {
                    let pfn = leaf.output(ipa) >> PAGE_SHIFT;
                    let count = self.meta.get(m, &self.mb, pfn).map(|i| i.count);
                    // pKVM: share exactly once, unshare only what is shared.
                    if (up && count != Some(0)) || (!up && count != Some(1)) {
                        return ret!(abi::INVALID_PARAMETER);
                    }
                }
            }
        }
        match mem.share_gpa_range(vmid, ipa, pages * crate::PAGE_SIZE, up) {
            Ok(_) => ret!(abi::SUCCESS),
            Err(e) => ret!(e.code()),
        }
    }

    /// INJECT_IRQ: the host asks for virtual interrupt `intid` to be delivered to vCPU `vcpu`.
    /// KCore checks it (an SGI, PPI or SPI number; a registered vCPU of a running VM; no copy
    /// of it already waiting) and puts it in a free list register of the vCPU; the guest sees
    /// it on its next run. A full set of list registers answers NO_MEMORY (retry later).
    pub fn inject_irq(&self, vmid: u64, vcpu: u64, intid: u64) -> Result<()> {
        self.inject_irq_with(vmid, vcpu, intid, 0)
    }

    /// INJECT_IRQ with its attributes `attrs`: bits 7:0 the priority, bit 8 level-triggered
    /// (the guest's deactivation then raises an EOI maintenance interrupt: an exit, after
    /// which VCPU_IRQ_STATE shows the list register invalid with its EOI bit).
    pub fn inject_irq_with(&self, vmid: u64, vcpu: u64, intid: u64, attrs: u64) -> Result<()> {
        let (vmid, vcpu) = self.vcpu_args(vmid, vcpu)?;
        check_injection(intid, attrs)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Verified || info.vcpu(vcpu) == VcpuState::Unused {
            return Err(Error::BadState);
        }
        if info.vcpu(vcpu) == VcpuState::Active {
            // Its list registers are live on another CPU; ask again once it has exited.
            return Err(Error::BadState);
        }
        let page = self.vcpu_page(vmid, vcpu);
        let mut lrs = self.host_lrs(&page);
        place_irq(&mut lrs, intid as u32, attrs)?;
        for (i, lr) in lrs.into_iter().enumerate() {
            page.set(&self.m, slot::LRS + i as u64, lr);
        }
        Ok(())
    }

    /// VCPU_IRQ_STATE: the list registers of vCPU `vcpu` (not running) as the host may see
    /// them ([`super::LR_HOST_VISIBLE`]): which interrupts are still pending or active, and
    /// which level-triggered ones the guest deactivated (state invalid, EOI set). Reported
    /// once: the ones the guest is done with are cleared, so a deactivation's maintenance
    /// interrupt does not fire again on the next run.
    pub fn vcpu_irq_state(&self, vmid: u64, vcpu: u64) -> Result<[u64; super::MAX_LRS as usize]> {
        let (vmid, vcpu) = self.vcpu_args(vmid, vcpu)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        match info.vcpu(vcpu) {
            VcpuState::Unused => return Err(Error::NotFound),
            VcpuState::Active => return Err(Error::BadState),
            VcpuState::Ready => {}
        }
        let page = self.vcpu_page(vmid, vcpu);
        Ok(core::array::from_fn(|i| self.report_lr(&page, i)))
    }

    /// MAP_VM_PAGE: back the page the vCPU's last exit faulted on (KCore's own record of the
    /// address; the host only proposes the page) with host page `pfn`.
    pub fn map_vm_page(&self, vmid: u64, vcpu: u64, pfn: Pfn) -> Result<()> {
        let (vmid, vcpu) = self.vcpu_args(vmid, vcpu)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Verified || info.vcpu(vcpu) != VcpuState::Ready {
            return Err(Error::BadState);
        }
        let page = self.vcpu_page(vmid, vcpu);
        if page.get(&self.m, slot::FLAGS) & flags::PAGE_FAULT_PENDING == 0 {
            return Err(Error::BadState);
        }
        let gfn = page.get(&self.m, slot::EXIT_IPA) >> PAGE_SHIFT;
        match info.kind() {
            VmKind::Protected => self.mem().prot_and_map_vm(vmid, gfn, pfn, 3)?,
            VmKind::NonProtected => self.mem().lend_pfn_to_vm(vmid, gfn, pfn)?,
        }
        page.set(&self.m, slot::FLAGS, 0);
        Ok(())
    }

    /// The non-protected VM `vmid` (registered and not destroyed), under its lock.
    fn non_protected(&self, vmid: u64) -> Result<(u16, crate::locks::LockGuard<'_>)> {
        let vmid = check_vmid(vmid)?;
        let g = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if matches!(info.state(), VmState::Unused | VmState::Invalid) {
            return Err(Error::BadState);
        }
        if info.kind() != VmKind::NonProtected {
            return Err(Error::Denied);
        }
        Ok((vmid, g))
    }

    /// LEND_PAGE: the host lends its page `pfn` to non-protected VM `vmid` at guest address
    /// `ipa` (page aligned, in one of the VM's RAM regions), mapped at once.
    pub fn lend_page(&self, vmid: u64, ipa: u64, pfn: Pfn) -> Result<()> {
        let (vmid, _vm) = self.non_protected(vmid)?;
        if !ipa.is_multiple_of(crate::PAGE_SIZE) || !self.vminfo[vmid as usize - 1].is_ram(ipa) {
            return Err(Error::InvalidParameter);
        }
        self.mem().lend_pfn_to_vm(vmid, ipa >> PAGE_SHIFT, pfn)
    }

    /// RECLAIM_PAGE: the host takes back the page it lent to non-protected VM `vmid` at `ipa`
    /// (unmapped from the VM, TLB invalidated). Returns the page.
    pub fn reclaim_page(&self, vmid: u64, ipa: u64) -> Result<Pfn> {
        let (vmid, _vm) = self.non_protected(vmid)?;
        if !ipa.is_multiple_of(crate::PAGE_SIZE) {
            return Err(Error::InvalidParameter);
        }
        self.mem().reclaim_lent_page(vmid, ipa >> PAGE_SHIFT)
    }

    /// The context page of a non-protected VM's vCPU the host may read or write: registered
    /// and not running. A vCPU that never ran gets its reset state first.
    fn host_visible_vcpu(&self, vmid: u16, vcpu: u64) -> Result<VcpuPage> {
        let info = &self.vminfo[vmid as usize - 1];
        if vcpu >= MAX_VCPUS as u64 {
            return Err(Error::InvalidParameter);
        }
        match info.vcpu(vcpu as usize) {
            VcpuState::Unused => return Err(Error::NotFound),
            VcpuState::Active => return Err(Error::BadState),
            VcpuState::Ready => {}
        }
        let page = self.vcpu_page(vmid, vcpu as usize);
        if page.get(&self.m, slot::FLAGS) & flags::FIRST_RUN != 0 {
            self.first_run_reset(info, &page);
        }
        Ok(page)
    }

    /// GET_VCPU_REG: register `reg` ([`reg_slot`]) of vCPU `vcpu` of non-protected VM `vmid`.
    pub fn get_vcpu_reg(&self, vmid: u64, vcpu: u64, reg: u64) -> Result<u64> {
        let (vmid, _vm) = self.non_protected(vmid)?;
        let slot_index = reg_slot(reg).ok_or(Error::InvalidParameter)?;
        let page = self.host_visible_vcpu(vmid, vcpu)?;
        Ok(page.get(&self.m, slot_index))
    }

    /// SET_VCPU_REG: set register `reg` of vCPU `vcpu` of non-protected VM `vmid` to `value`.
    /// PSTATE must name AArch64 EL0t, EL1t or EL1h with only architected flags: a guest never
    /// enters EL2 or AArch32 state through the host.
    pub fn set_vcpu_reg(&self, vmid: u64, vcpu: u64, reg: u64, value: u64) -> Result<()> {
        let (vmid, _vm) = self.non_protected(vmid)?;
        let slot_index = reg_slot(reg).ok_or(Error::InvalidParameter)?;
        if slot_index == slot::PSTATE && !valid_guest_pstate(value) {
            return Err(Error::InvalidParameter);
        }
        let page = self.host_visible_vcpu(vmid, vcpu)?;
        page.set(&self.m, slot_index, value);
        Ok(())
    }
}

/// The context-page word of register `reg` as GET/SET_VCPU_REG number it (`docs/ABI.md`):
/// 0..=30 x0..x30, 31 SP_EL0, 32 PC, 33 PSTATE, 34..=58 the EL1 registers in
/// [`super::EL1_SYSREGS`] order, 64..=127 q0..q31 (low word first), 128 FPSR, 129 FPCR. The
/// run-state words between them are KCore's own and not registers.
pub fn reg_slot(reg: u64) -> Option<u64> {
    let el1_end = slot::SYSREGS + super::EL1_SYSREGS.len() as u64;
    let fp_end = slot::FP + crate::machine::FP_WORDS as u64;
    if reg < el1_end || (slot::FP..fp_end).contains(&reg) { Some(reg) } else { None }
}

/// May a host give a guest this PSTATE? AArch64 (M[4] = 0) EL0t, EL1t or EL1h, and only the
/// flags a guest may hold (NZCV, DIT, UAO, PAN, SS, ALLINT, SSBS, BTYPE, D, A, I, F). ALLINT
/// (bit 13) is set by the CPU itself: on a CPU with FEAT_NMI, taking an exception to EL1 sets
/// PSTATE.ALLINT to NOT SCTLR_EL1.SPINTMASK whether or not the guest enabled NMIs
/// (AArch64.TakeException), so a guest that never heard of FEAT_NMI (hidden from it) runs its
/// exception handlers with ALLINT set, and a VMM writing back the PSTATE it read must not be
/// refused. It only masks the guest's own interrupts (and only once the guest sets
/// SCTLR_EL1.NMI), like DAIF.
pub const fn valid_guest_pstate(v: u64) -> bool {
    use crate::arch::mode;
    const ALLOWED: u64 =
        (0xf << 28) | (1 << 24) | (1 << 23) | (1 << 22) | (1 << 21) | (1 << 13) | (1 << 12) | (0b11 << 10) | (0xf << 6);
    let m = v & 0x1f;
    v & !(ALLOWED | 0x1f) == 0 && (m == mode::EL0T || m == mode::EL1T || m == mode::EL1H)
}
