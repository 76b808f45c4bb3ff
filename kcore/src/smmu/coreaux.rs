//! Layer 23 (SmmuCoreAux): the register policy for the host's accesses to the SMMU's two
//! 64 KiB register pages. [`classify`] says, for any offset, size and direction, whether the
//! access reads the real register (with bits hidden), passes through to it (with a write
//! mask), is emulated by layer 24 ([`super::core`]), reads as zero and ignores writes, or is
//! refused. The policy is the table [`REGS`]; offsets it does not list are RAZ/WI.
//!
//! What is hidden and why: the host is told there is no stage 2 (S2P), no VMID16, no EL2
//! (HYP), no MSIs, no ATS or PRI, no stall model, no VATOS, no VMW, no BTM, so the stock
//! driver writes only abort, bypass and stage-1 STEs, issues no EL2, stage-2, ATS or PRI
//! commands, and programs no MSI addresses (reference/smmuv3.md 1.8 and 2.2).

use super::raw::{idr0, idr1, reg};

/// SMMU_IRQ_CTRL bits the host may set (IHI 0070 6.3.15): GERROR_IRQEN and EVTQ_IRQEN.
/// PRIQ_IRQEN stays 0 (PRI is hidden).
pub const IRQ_CTRL_HOST: u32 = (1 << 0) | (1 << 2);
/// SMMU_EVTQ_CONS bits the host may write (IHI 0070 6.3.28): RD (index and wrap, at most
/// 2^19 entries) and OVACKFLG.
pub const EVTQ_CONS_HOST: u32 = (1 << 31) | 0xf_ffff;
/// SMMU_IDR0 bits hidden from the host (IHI 0070 6.3.1).
pub const IDR0_HIDDEN: u32 = idr0::S2P
    | idr0::BTM
    | idr0::HYP
    | idr0::ATS
    | (1 << 11) // NS1ATS
    | idr0::MSI
    | idr0::PRI
    | (1 << 17) // VMW
    | idr0::VMID16
    | (1 << 20) // VATOS
    | (0b11 << idr0::STALL_MODEL_SHIFT);
/// SMMU_IDR0 bits set for the host: STALL_MODEL = 0b01, stalls not supported. The host then
/// never asks for a stall (and CMD_RESUME is refused anyway).
pub const IDR0_SET: u32 = 0b01 << idr0::STALL_MODEL_SHIFT;
/// SMMU_IDR1 bits hidden from the host: the presets, REL and ECMDQ (KCore refuses to take
/// over an SMMU that has them, so they read as 0 anyway).
pub const IDR1_HIDDEN: u32 = idr1::REL | idr1::QUEUES_PRESET | idr1::TABLES_PRESET | idr1::ECMDQ;

/// A register layer 24 emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EmuReg {
    Cr0,
    Cr0Ack,
    Cr1,
    Cr2,
    Gbpa,
    /// IRQ_CTRL: the host's enables, mirrored into the real register.
    IrqCtrl,
    IrqCtrlAck,
    Gerror,
    Gerrorn,
    /// One of GERROR_IRQ_CFG0 and EVTQ_IRQ_CFG0: an MSI target address, only 0 accepted.
    IrqCfg0,
    StrtabBase,
    StrtabBaseCfg,
    CmdqBase,
    CmdqProd,
    CmdqCons,
    EvtqBase,
    /// Page 1: read from the real register; written only while the host's EVTQEN is 0.
    EvtqProd,
}

/// Which part of a register an access covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The whole register (a 4-byte access to a 32-bit register, 8-byte to a 64-bit one).
    Full,
    /// Bits \[31:0\] of a 64-bit register, by a 4-byte access at its offset.
    Low,
    /// Bits \[63:32\] of a 64-bit register, by a 4-byte access at its offset + 4.
    High,
}

/// What to do with one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read the real 32-bit register at `off`, clear `clear`, set `set`; writes are ignored.
    ReadReal { off: u64, clear: u32, set: u32 },
    /// Read the real 32-bit register at `off` masked by `mask`; a write changes only the
    /// real register's `mask` bits to the written value's.
    PassReal { off: u64, mask: u32 },
    /// Layer 24 emulates the register.
    Emulated(EmuReg, Part),
    /// Reads as zero, writes are ignored.
    RazWi,
    /// Not an access a driver makes (bad size, misaligned, a 64-bit access to a 32-bit
    /// register, outside the two pages): the caller refuses it (RAZ/WI and a log, or an
    /// external abort to the host).
    Deny,
}

/// Width of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W32,
    W64,
}

/// One row of the policy: a register, its width, the policy for reads and for writes.
#[derive(Clone, Copy, Debug)]
pub struct RegPolicy {
    pub off: u64,
    pub width: Width,
    pub read: Rule,
    pub write: Rule,
}

/// The policy of one direction of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Real { clear: u32, set: u32 },
    Pass { mask: u32 },
    Emu(EmuReg),
    Ignore,
}

const fn row(off: u64, width: Width, read: Rule, write: Rule) -> RegPolicy {
    RegPolicy { off, width, read, write }
}

const fn emu(off: u64, width: Width, r: EmuReg) -> RegPolicy {
    row(off, width, Rule::Emu(r), Rule::Emu(r))
}

const fn real_ro(off: u64, clear: u32, set: u32) -> RegPolicy {
    row(off, Width::W32, Rule::Real { clear, set }, Rule::Ignore)
}

/// The policy table (reference/smmuv3.md 2.2, "What must be trapped and how each register is
/// handled"). Registers not listed (AGBPA, the IRQ_CFG1/CFG2 registers, PRIQ_*, GATOS_*,
/// VATOS, MPAM, IDR6, the IMPLEMENTATION DEFINED space and the Secure registers) read as zero
/// and ignore writes.
pub const REGS: [RegPolicy; 28] = [
    real_ro(reg::IDR0, IDR0_HIDDEN, IDR0_SET),
    real_ro(reg::IDR1, IDR1_HIDDEN, 0),
    real_ro(reg::IDR2, 0, 0),
    real_ro(reg::IDR3, 0, 0),
    real_ro(reg::IDR4, 0, 0),
    real_ro(reg::IDR5, 0, 0),
    real_ro(reg::IIDR, 0, 0),
    real_ro(reg::AIDR, 0, 0),
    emu(reg::CR0, Width::W32, EmuReg::Cr0),
    emu(reg::CR0ACK, Width::W32, EmuReg::Cr0Ack),
    emu(reg::CR1, Width::W32, EmuReg::Cr1),
    emu(reg::CR2, Width::W32, EmuReg::Cr2),
    real_ro(reg::STATUSR, 0, 0),
    emu(reg::GBPA, Width::W32, EmuReg::Gbpa),
    emu(reg::IRQ_CTRL, Width::W32, EmuReg::IrqCtrl),
    emu(reg::IRQ_CTRLACK, Width::W32, EmuReg::IrqCtrlAck),
    emu(reg::GERROR, Width::W32, EmuReg::Gerror),
    emu(reg::GERRORN, Width::W32, EmuReg::Gerrorn),
    emu(reg::GERROR_IRQ_CFG0, Width::W64, EmuReg::IrqCfg0),
    emu(reg::EVTQ_IRQ_CFG0, Width::W64, EmuReg::IrqCfg0),
    emu(reg::EVTQ_PROD, Width::W32, EmuReg::EvtqProd),
    row(reg::EVTQ_CONS, Width::W32, Rule::Pass { mask: EVTQ_CONS_HOST }, Rule::Pass { mask: EVTQ_CONS_HOST }),
    emu(reg::STRTAB_BASE, Width::W64, EmuReg::StrtabBase),
    emu(reg::CMDQ_BASE, Width::W64, EmuReg::CmdqBase),
    emu(reg::STRTAB_BASE_CFG, Width::W32, EmuReg::StrtabBaseCfg),
    emu(reg::CMDQ_PROD, Width::W32, EmuReg::CmdqProd),
    emu(reg::CMDQ_CONS, Width::W32, EmuReg::CmdqCons),
    emu(reg::EVTQ_BASE, Width::W64, EmuReg::EvtqBase),
];

fn lookup(off: u64) -> Option<&'static RegPolicy> {
    REGS.iter().find(|r| match r.width {
        Width::W32 => r.off == off,
        Width::W64 => r.off == off || r.off + 4 == off,
    })
}

/// The policy for one host access: `size` bytes at byte offset `off` into the SMMU's
/// register space, a write if `is_write`. Total: every offset, size and direction gives an
/// answer (IHI 0070 6.2: registers are accessed by aligned 32-bit accesses, and 64-bit
/// registers also by aligned 64-bit accesses).
pub fn classify(off: u64, size: u64, is_write: bool) -> Access {
    if off >= reg::SIZE || !(size == 4 || size == 8) || !off.is_multiple_of(size) {
        return Access::Deny;
    }
    let Some(r) = lookup(off) else {
        return Access::RazWi;
    };
    let part = match (r.width, size, off == r.off) {
        (Width::W32, 4, _) => Part::Full,
        (Width::W32, _, _) => return Access::Deny,
        (Width::W64, 8, true) => Part::Full,
        (Width::W64, 4, true) => Part::Low,
        (Width::W64, 4, false) => Part::High,
        (Width::W64, _, _) => return Access::Deny,
    };
    match if is_write { r.write } else { r.read } {
        Rule::Real { clear, set } => Access::ReadReal { off: r.off, clear, set },
        Rule::Pass { mask } => Access::PassReal { off: r.off, mask },
        Rule::Emu(e) => Access::Emulated(e, part),
        Rule::Ignore => Access::RazWi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_id_registers_as_the_host_sees_them() {
        // QEMU's IDR0 0x0d44101b (reference/smmuv3.md 1.1): S2P and VMID16 go, the stall
        // model says "no stall", the rest stays.
        let Access::ReadReal { clear, set, .. } = classify(reg::IDR0, 4, false) else { panic!() };
        let host = (0x0d44_101b & !clear) | set;
        assert_eq!(host & (idr0::S2P | idr0::VMID16 | idr0::HYP | idr0::MSI | idr0::ATS | idr0::PRI), 0);
        assert_ne!(host & idr0::S1P, 0);
        assert_eq!((host >> idr0::ST_LEVEL_SHIFT) & 3, 1, "2-level tables stay");
        assert_eq!((host >> idr0::STALL_MODEL_SHIFT) & 3, 1);
        assert_eq!(classify(reg::IDR0, 4, true), Access::RazWi);
    }

    #[test]
    fn sizes_and_halves() {
        assert_eq!(classify(reg::STRTAB_BASE, 8, true), Access::Emulated(EmuReg::StrtabBase, Part::Full));
        assert_eq!(classify(reg::STRTAB_BASE + 4, 4, true), Access::Emulated(EmuReg::StrtabBase, Part::High));
        assert_eq!(classify(reg::CMDQ_PROD, 8, true), Access::Deny, "64-bit access to a 32-bit register");
        assert_eq!(classify(reg::CR0 + 1, 4, false), Access::Deny);
        assert_eq!(classify(reg::CR0, 2, false), Access::Deny);
        assert_eq!(classify(reg::SIZE, 4, false), Access::Deny);
        assert_eq!(classify(u64::MAX - 3, 4, false), Access::Deny);
        assert_eq!(classify(reg::PRIQ_BASE, 8, true), Access::RazWi);
        assert_eq!(classify(0x8000, 4, true), Access::RazWi, "Secure page");
        assert_eq!(classify(0xa8, 4, false), Access::RazWi, "page-0 alias of EVTQ_PROD");
        assert_eq!(classify(reg::EVTQ_PROD, 4, true), Access::Emulated(EmuReg::EvtqProd, Part::Full));
    }
}
