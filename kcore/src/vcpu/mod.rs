//! Layers 27-29: a vCPU's state, held only in KCore, and the world switch.
//!
//! Each vCPU's registers live in one KCore-owned page taken from its VM's table pool when the
//! vCPU is registered (so the invariants cover it, and destroy scrubs and returns it). The
//! host never sees it; on each exit KCore discloses only what that exit needs
//! ([`vcpuops::Exit`]).

pub mod ctxtswitch;
pub mod guestcpu;
pub mod sysregs;
pub mod vcpuops;
pub mod vcpuopsaux;
pub mod vgic;

use crate::machine::SysReg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_and_list_register_decisions() {
        assert!(vtimer_fired(0b101));
        assert!(!vtimer_fired(0b111), "masked");
        assert!(!vtimer_fired(0b001), "not yet");
        assert!(!vtimer_fired(0b100), "disabled");
        assert!(host_deadline_armed(0b001) && host_deadline_armed(0b101));
        assert!(!host_deadline_armed(0b011), "masked");
        assert!(!host_deadline_armed(0b000), "off");
        let fresh = pending_lr(27);
        assert_eq!(timer_lr_pended(0), fresh, "empty");
        assert_eq!(timer_lr_pended(27), fresh, "finished (state invalid)");
        assert_eq!(timer_lr_pended(fresh), fresh, "already pending");
        let active = (fresh & !(0b11 << 62)) | (0b10 << 62);
        assert_eq!(timer_lr_pended(active) >> 62, 0b11, "active: pending and active");
        assert_eq!(timer_lr_pended(active | (0b01 << 62)), active | (0b01 << 62));
        assert_eq!(TIMER_LR, 3);
        assert_eq!(apr_count(4 << 26), 1, "5 preemption bits (QEMU, Cortex-A)");
        assert_eq!(apr_count(5 << 26), 2);
        assert_eq!(apr_count(6 << 26), 4);
    }
}

/// Word offsets in a vCPU context page.
pub mod slot {
    /// x0..x30 at 0..=30.
    pub const X0: u64 = 0;
    /// SP_EL0.
    pub const SP_EL0: u64 = 31;
    /// PC (ELR_EL2 on exit).
    pub const PC: u64 = 32;
    /// PSTATE (SPSR_EL2 on exit).
    pub const PSTATE: u64 = 33;
    /// First EL1 system register; see [`super::EL1_SYSREGS`] for the order.
    pub const SYSREGS: u64 = 34;
    /// Run state flags ([`super::flags`]; registration sets the first ones, layer 21).
    pub const FLAGS: u64 = crate::vm::vcpu_start::FLAGS_WORD;
    /// ESR_EL2 of the last exit.
    pub const EXIT_ESR: u64 = 61;
    /// Faulting IPA of the last exit (from HPFAR_EL2 and FAR_EL2).
    pub const EXIT_IPA: u64 = 62;
    /// FP/SIMD state: q0..q31 (two words each), then FPSR, FPCR.
    pub const FP: u64 = 64;
    /// Virtual GIC: the list registers (ICH_LR<n>_EL2 values), [`super::MAX_LRS`] of them.
    pub const LRS: u64 = FP + 66;
    /// Virtual GIC: ICH_VMCR_EL2.
    pub const VMCR: u64 = LRS + super::MAX_LRS;
    /// Virtual GIC: the active priorities, ICH_AP0R<0-3>_EL2 then ICH_AP1R<0-3>_EL2 (those
    /// the CPU has, [`super::apr_count`]).
    pub const APRS: u64 = VMCR + 1;
    /// Words in use.
    pub const WORDS: u64 = APRS + 8;
}

/// The EL1 system registers KCore switches for a guest, in page order from
/// [`slot::SYSREGS`]; SP_EL0 has its own slot ([`slot::SP_EL0`]).
pub const EL1_SYSREGS: [SysReg; 25] = {
    let mut regs = [SysReg::SpEl1; 25];
    let mut i = 0;
    while i < 25 {
        regs[i] = SysReg::ALL[i];
        i += 1;
    }
    regs
};
const _: () = assert!(matches!(SysReg::ALL[24], SysReg::CntvCvalEl0) && matches!(SysReg::ALL[25], SysReg::SpEl0));

/// List registers KCore uses per vCPU (GICv3 has at least 4; ICH_VTR_EL2 may offer more).
pub const MAX_LRS: u64 = 4;

/// An ICH_LR<n>_EL2 value for a pending, group-1, virtual-only interrupt `intid` (Arm GICv3
/// architecture, ICH_LR<n>_EL2: State 0b01 = pending, bit 60 Group, Priority bits 55:48).
pub const fn pending_lr(intid: u32) -> u64 {
    pending_lr_with(intid, 0xa0, false)
}

/// [`pending_lr`] with priority `priority` and, for a level-triggered interrupt (`level`),
/// the EOI bit (41): the guest's deactivation raises an EOI maintenance interrupt, so the
/// host learns it and can sample its line again.
pub const fn pending_lr_with(intid: u32, priority: u8, level: bool) -> u64 {
    (0b01 << 62) | (1 << 60) | ((priority as u64) << 48) | ((level as u64) << LR_EOI_SHIFT) | intid as u64
}

/// ICH_LR<n>_EL2.EOI.
pub const LR_EOI_SHIFT: u32 = 41;

/// The fields of a list register the host may see (VCPU_IRQ_STATE): the state the guest
/// moved it to, and what the host put there itself (group, priority, EOI, virtual INTID).
pub const LR_HOST_VISIBLE: u64 = (0b11 << 62) | (1 << 60) | (0xff << 48) | (1 << LR_EOI_SHIFT) | 0xffff_ffff;

/// The maintenance interrupt (PPI 9, INTID 25): the virtual CPU interface asks EL2 for
/// attention (an EOI of a level interrupt, list registers running empty).
pub const MAINTENANCE_INTID: u32 = 25;

/// ICH_HCR_EL2 bits: En (the virtual CPU interface on), UIE (underflow: a maintenance
/// interrupt while at most one list register holds a valid interrupt).
pub const ICH_HCR_EN: u64 = 1;
/// See [`ICH_HCR_EN`].
pub const ICH_HCR_UIE: u64 = 1 << 1;

/// The virtual timer's interrupt (PPI 11, INTID 27 on every GICv3 system).
pub const VTIMER_INTID: u32 = 27;

/// The EL2 physical timer's interrupt (PPI 10, INTID 26; Arm BSA / the GICv3 PPI map): KCore's
/// alarm for the host's own timer deadline while a guest runs on the CPU.
pub const HYP_TIMER_INTID: u32 = 26;

/// Is the host's timer armed to interrupt it (CNTV_CTL_EL0: ENABLE set, IMASK clear)? Then
/// its deadline must take the CPU back from a guest.
pub const fn host_deadline_armed(cntv_ctl: u64) -> bool {
    cntv_ctl & 0b11 == 0b01
}

/// Has the guest's virtual timer fired with its interrupt unmasked? (CNTV_CTL_EL0: ENABLE
/// bit 0, IMASK bit 1, ISTATUS bit 2.)
pub const fn vtimer_fired(cntv_ctl: u64) -> bool {
    cntv_ctl & 0b111 == 0b101
}

/// How many of each kind of active-priority register (ICH_AP0R<n>_EL2, ICH_AP1R<n>_EL2) a
/// CPU with this ICH_VTR_EL2 has: its PREbits (28:26) field is the number of virtual
/// preemption bits minus one; 5 bits need one register, 6 two, 7 four (GICv3 architecture,
/// ICH_AP1R<n>_EL2). They hold which priorities the guest has active and not yet dropped, so
/// they are a vCPU's state: left behind, another vCPU would run with its interrupts masked
/// and this one's end-of-interrupts would find nothing to drop.
pub const fn apr_count(ich_vtr: u64) -> usize {
    match (ich_vtr >> 26) & 0b111 {
        0..=4 => 1,
        5 => 2,
        _ => 4,
    }
}

/// The list register KCore keeps for the guest's virtual timer (the last one). The host's
/// INJECT_IRQ uses only the others, so KCore never overwrites an interrupt the host queued, nor
/// the finished state of one the host has yet to read back (VCPU_IRQ_STATE): losing that
/// would leave the host believing the interrupt still sits in a list register, and it would
/// never give that INTID (an IPI, say) to the vCPU again.
pub const TIMER_LR: usize = MAX_LRS as usize - 1;

/// The list register value that makes the virtual timer interrupt pending, given `lr`, the
/// timer's list register now: a fresh pending entry if it holds nothing live; pending and
/// active if the guest is still handling the previous one (the GIC's state for an edge that
/// arrives while active: the guest takes it again after its deactivation); unchanged if it is
/// already pending.
pub const fn timer_lr_pended(lr: u64) -> u64 {
    let live = lr >> 62 != 0 && lr & 0xffff_ffff == VTIMER_INTID as u64;
    match (live, lr >> 62) {
        (true, 0b10) => lr | (0b01 << 62),
        (true, _) => lr,
        (false, _) => pending_lr(VTIMER_INTID),
    }
}

/// Index of SCTLR_EL1 in [`EL1_SYSREGS`].
pub const SYSREG_SCTLR: u64 = SysReg::SctlrEl1 as u64;

/// Flag bits in [`slot::FLAGS`].
pub mod flags {
    /// The vCPU has never run: reset it on the first run.
    pub const FIRST_RUN: u64 = crate::vm::vcpu_start::FIRST_RUN;
    /// The last exit was an MMIO read: the next run supplies the value.
    pub const MMIO_READ_PENDING: u64 = 1 << 1;
    /// The last exit was a stage-2 fault on RAM the host must back.
    pub const PAGE_FAULT_PENDING: u64 = 1 << 2;
    /// The vCPU is off: it runs only after the guest's PSCI CPU_ON (secondary vCPUs start off).
    pub const OFF: u64 = crate::vm::vcpu_start::OFF;
    /// The host asked (VCPU_RUN x4 bit 0) to hear when the list registers run empty.
    pub const UNDERFLOW_NOTIFY: u64 = 1 << 4;
    /// Destination register (bits 8..=12), access size log2 (bits 16..=17), sign-extend (bit
    /// 20) of a pending MMIO read.
    pub const MMIO_RT_SHIFT: u32 = 8;
    /// See [`MMIO_RT_SHIFT`].
    pub const MMIO_SIZE_SHIFT: u32 = 16;
    /// See [`MMIO_RT_SHIFT`].
    pub const MMIO_SIGN: u64 = 1 << 20;
}
