//! Specification of layer 29 (CtxtSwitch): the world switch as a function on a CPU's register
//! file. A CPU is its system registers and its FP/SIMD registers; a vCPU's saved context is
//! what it needs to continue. Entering a guest replaces exactly the registers that belong to
//! whoever runs at EL1 (plus the EL2 controls a guest runs under) and keeps the host's old
//! values aside; leaving saves the guest's and puts every one of the host's back.
//!
//! Written as sets of registers and their meaning (Arm ARM D23.2 for HCR_EL2, CPTR_EL2,
//! CNTHCTL_EL2, VTTBR_EL2, VMPIDR_EL2; GICv3 chapter 12 for the list registers), not in the
//! code's order of operations.

use crate::machine::{FpRegs, SysReg};
use crate::vcpu::guestcpu::CpuFeatures;
use std::collections::BTreeMap;

/// A CPU's registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsCpu {
    /// Every [`SysReg`].
    pub regs: BTreeMap<SysReg, u64>,
    /// q0..q31, FPSR, FPCR.
    pub fp: FpRegs,
}

/// A vCPU's saved context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsCtxt {
    /// x0..x30.
    pub x: [u64; 31],
    /// Where it resumes.
    pub pc: u64,
    /// Its PSTATE.
    pub pstate: u64,
    /// Its EL1 (and EL0) system registers: [`el1_state`].
    pub el1: BTreeMap<SysReg, u64>,
    /// Its FP/SIMD registers.
    pub fp: FpRegs,
    /// Its virtual interrupts: list registers 0..4.
    pub lrs: [u64; 4],
    /// Its virtual CPU interface's control (ICH_VMCR_EL2).
    pub vmcr: u64,
    /// Its active priorities: ICH_AP0R<0-3>_EL2, ICH_AP1R<0-3>_EL2 (those the CPU has).
    pub aprs: [u64; 8],
}

/// What the host leaves behind while a guest runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsHost {
    /// The values of [`host_saved`] registers at entry.
    pub regs: BTreeMap<SysReg, u64>,
    /// Its FP/SIMD registers.
    pub fp: FpRegs,
}

/// The registers that belong to whoever runs at EL1 and EL0: translation, exception, thread
/// and timer state of EL1/EL0, and SP_EL0.
pub fn el1_state() -> Vec<SysReg> {
    use SysReg::*;
    vec![
        SpEl1,
        ElrEl1,
        SpsrEl1,
        SctlrEl1,
        Ttbr0El1,
        Ttbr1El1,
        TcrEl1,
        MairEl1,
        AmairEl1,
        VbarEl1,
        ContextidrEl1,
        TpidrEl0,
        TpidrEl1,
        TpidrroEl0,
        CpacrEl1,
        EsrEl1,
        FarEl1,
        Afsr0El1,
        Afsr1El1,
        ParEl1,
        CntkctlEl1,
        CsselrEl1,
        MdscrEl1,
        CntvCtlEl0,
        CntvCvalEl0,
        SpEl0,
    ]
}

/// The registers the host gets back exactly: its EL1 state, its GIC system-register enable,
/// and the EL2 controls a guest runs under (the fine-grained trap registers and HCRX_EL2 only
/// where the CPU has them).
pub fn host_saved(f: CpuFeatures) -> Vec<SysReg> {
    let mut r = el1_state();
    r.extend([
        SysReg::IccSreEl1,
        SysReg::HcrEl2,
        SysReg::VttbrEl2,
        SysReg::CptrEl2,
        SysReg::CnthctlEl2,
        SysReg::VmpidrEl2,
        SysReg::MdcrEl2,
    ]);
    if f.fgt {
        r.extend([SysReg::HfgrtrEl2, SysReg::HfgwtrEl2]);
    }
    if f.hcx {
        r.push(SysReg::HcrxEl2);
    }
    if f.mte2 {
        r.extend([SysReg::TfsrEl1, SysReg::Tfsre0El1, SysReg::RgsrEl1, SysReg::GcrEl1]);
    }
    r
}

const LRS: [SysReg; 4] = [SysReg::IchLr0El2, SysReg::IchLr1El2, SysReg::IchLr2El2, SysReg::IchLr3El2];
/// ICH_AP0R<0-3>_EL2 then ICH_AP1R<0-3>_EL2.
const APRS: [SysReg; 8] = [
    SysReg::IchAp0r0El2,
    SysReg::IchAp0r1El2,
    SysReg::IchAp0r2El2,
    SysReg::IchAp0r3El2,
    SysReg::IchAp1r0El2,
    SysReg::IchAp1r1El2,
    SysReg::IchAp1r2El2,
    SysReg::IchAp1r3El2,
];

/// How many active-priority registers of each group the CPU has: one for 5 preemption bits
/// (ICH_VTR_EL2.PREbits, 28:26, is the count minus one), two for 6, four for 7.
fn aprs_of(cpu: &AbsCpu) -> usize {
    match (cpu.regs[&SysReg::IchVtrEl2] >> 26) & 0b111 {
        0..=4 => 1,
        5 => 2,
        _ => 4,
    }
}

/// HCR_EL2 for a guest, bit by bit: stage-2 on (VM), set/way invalidation upgraded (SWIO),
/// protected table walks (PTW), FIQ, IRQ and SError to EL2 (FMO, IMO, AMO), broadcast TLB
/// maintenance (FB) and inner-shareable barriers (BSU = 01), WFI and WFE trapped (TWI, TWE),
/// SMC trapped (TSC), implementation-defined registers trapped (TIDCP), auxiliary control
/// trapped (TACR), set/way cache maintenance trapped (TSW), EL1 in AArch64 (RW); and to hide
/// features: ID group 3 registers trapped (TID3, bit 18), LORegions registers trapped (TLOR,
/// 35), RAS error records trapped (TERR, 36). API and APK (40, 41) stay clear: pointer
/// authentication traps.
pub const fn guest_hcr() -> u64 {
    let bits = [0u32, 1, 2, 3, 4, 5, 9, 10, 13, 14, 18, 19, 20, 21, 22, 31, 35, 36];
    let mut v = 0;
    let mut i = 0;
    while i < bits.len() {
        v |= 1 << bits[i];
        i += 1;
    }
    v
}

/// Enter a guest: the CPU after, and what the host left behind. `underflow`: the host asked
/// to hear when the guest's list registers run empty.
pub fn enter(
    cpu: &AbsCpu,
    guest: &AbsCtxt,
    vmid: u16,
    root: u64,
    vcpu: usize,
    f: CpuFeatures,
    underflow: bool,
) -> (AbsCpu, AbsHost) {
    let host = AbsHost { regs: host_saved(f).into_iter().map(|r| (r, cpu.regs[&r])).collect(), fp: cpu.fp };
    let mut c = cpu.clone();
    for r in el1_state() {
        c.regs.insert(r, guest.el1[&r]);
    }
    c.fp = guest.fp;
    for (r, v) in LRS.iter().zip(guest.lrs) {
        c.regs.insert(*r, v);
    }
    let set = |c: &mut AbsCpu, r, v| {
        c.regs.insert(r, v);
    };
    set(&mut c, SysReg::IchVmcrEl2, guest.vmcr);
    for i in 0..aprs_of(cpu) {
        set(&mut c, APRS[i], guest.aprs[i]);
        set(&mut c, APRS[4 + i], guest.aprs[4 + i]);
    }
    // ICH_HCR_EL2: En (the virtual CPU interface is on), UIE (bit 1) if asked.
    set(&mut c, SysReg::IchHcrEl2, 1 | (underflow as u64) << 1);
    set(&mut c, SysReg::IccSreEl1, 1); // SRE: the GIC through system registers
    set(&mut c, SysReg::ElrEl2, guest.pc);
    set(&mut c, SysReg::SpsrEl2, guest.pstate);
    set(&mut c, SysReg::VttbrEl2, ((vmid as u64) << 48) | root);
    set(&mut c, SysReg::HcrEl2, guest_hcr());
    // CPTR_EL2: RES1 bits 13, 9, 7:0; TFP (bit 10) and TCPAC (31) clear: FP/SIMD and
    // CPACR_EL1 are the guest's; TZ (8), TSM (12), TTA (20), TAM (30) set: SVE, SME, trace and
    // activity monitors trap (hidden).
    set(&mut c, SysReg::CptrEl2, (1 << 13) | (1 << 9) | 0xff | (1 << 8) | (1 << 12) | (1 << 20) | (1 << 30));
    // MDCR_EL2: the host's HPMN (4:0) kept; PMU (TPMCR 5, TPM 6), debug (TDA 9, TDOSA 10,
    // TDRA 11), SPE (TPMS 14) and trace filter (TTRF 19) accesses trap; the profiling and
    // trace buffers (E2PB, E2TB) are EL2's.
    let mdcr = cpu.regs[&SysReg::MdcrEl2] & 0x1f;
    set(&mut c, SysReg::MdcrEl2, mdcr | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 19));
    // Fine-grained traps: every negative-polarity bit clear, so every register they guard
    // (TPIDR2_EL0, SMPRI_EL1, PIR, POR, GCS, ...) traps.
    if f.fgt {
        set(&mut c, SysReg::HfgrtrEl2, 0);
        set(&mut c, SysReg::HfgwtrEl2, 0);
    }
    // HCRX_EL2: only the memory copy/set instructions (MSCEn, bit 11) as the host has them.
    if f.hcx {
        set(&mut c, SysReg::HcrxEl2, cpu.regs[&SysReg::HcrxEl2] & (1 << 11));
    }
    // FEAT_MTE2: the guest runs with none of the host's tag-check fault status (it has no
    // tag access; its own asynchronous tag-check faults land in these and are dropped).
    if f.mte2 {
        set(&mut c, SysReg::TfsrEl1, 0);
        set(&mut c, SysReg::Tfsre0El1, 0);
    }
    // CNTHCTL_EL2: EL1PCTEN (physical counter readable), not EL1PCEN (physical timer traps).
    set(&mut c, SysReg::CnthctlEl2, 1);
    // VMPIDR_EL2: bit 31 RES1, Aff0 = the vCPU's index.
    set(&mut c, SysReg::VmpidrEl2, (1 << 31) | vcpu as u64);
    // The host's tick (its EL1 virtual timer, enabled and unmasked) is taken over by the EL2
    // physical timer at the same deadline: the guest cannot keep the CPU past it.
    let host_ctl = cpu.regs[&SysReg::CntvCtlEl0];
    if host_ctl & 0b11 == 0b01 {
        set(&mut c, SysReg::CnthpCvalEl2, cpu.regs[&SysReg::CntvCvalEl0]);
        set(&mut c, SysReg::CnthpCtlEl2, 1);
    }
    (c, host)
}

/// Leave a guest whose general registers, PC and PSTATE the trap left as `x`, `pc` and
/// `pstate`: the CPU after, and the guest's saved context.
pub fn exit(cpu: &AbsCpu, host: &AbsHost, x: [u64; 31], pc: u64, pstate: u64) -> (AbsCpu, AbsCtxt) {
    let ctxt = AbsCtxt {
        x,
        pc,
        pstate,
        el1: el1_state().into_iter().map(|r| (r, cpu.regs[&r])).collect(),
        fp: cpu.fp,
        lrs: LRS.map(|r| cpu.regs[&r]),
        vmcr: cpu.regs[&SysReg::IchVmcrEl2],
        // Those the CPU lacks hold nothing: zero.
        aprs: std::array::from_fn(|i| if i % 4 < aprs_of(cpu) { cpu.regs[&APRS[i]] } else { 0 }),
    };
    let mut c = cpu.clone();
    for (r, v) in &host.regs {
        c.regs.insert(*r, *v);
    }
    c.fp = host.fp;
    c.regs.insert(SysReg::IchHcrEl2, 0); // the virtual CPU interface off for the host
    c.regs.insert(SysReg::CnthpCtlEl2, 0); // the host's own timer is back: no alarm
    (c, ctxt)
}

/// A physical IRQ while the guest runs: is it the guest's virtual timer (enabled, fired,
/// not masked)? If so the CPU after: the timer's output masked and INTID 27 pending in the
/// last list register, which is the timer's alone: written fresh unless 27 is live there
/// already; if the guest has it active (still handling the previous one), pending and active.
pub fn timer_irq(cpu: &AbsCpu) -> (bool, AbsCpu) {
    let ctl = cpu.regs[&SysReg::CntvCtlEl0];
    let (enable, imask, istatus) = (ctl & 1 != 0, ctl & 2 != 0, ctl & 4 != 0);
    if !(enable && istatus && !imask) {
        return (false, cpu.clone());
    }
    let mut c = cpu.clone();
    c.regs.insert(SysReg::CntvCtlEl0, ctl | 2);
    let timer_lr = LRS[3];
    let lr = c.regs[&timer_lr];
    let (state, is_27) = (lr >> 62, lr as u32 == 27);
    let after = match state {
        0b10 if is_27 => lr | (1 << 62), // active: now pending and active
        0b01 | 0b11 if is_27 => lr,      // already pending
        // State pending (01), group 1, priority 0xa0, virtual INTID 27.
        _ => (1 << 62) | (1 << 60) | (0xa0 << 48) | 27,
    };
    c.regs.insert(timer_lr, after);
    (true, c)
}
