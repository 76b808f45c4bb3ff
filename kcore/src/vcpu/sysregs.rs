//! Layer 28 (VCPUOps), trapped system-register accesses of a guest (ESR_EL2.EC 0x18): what
//! KCore answers itself (the sanitised ID registers, the emulated debug registers, set/way
//! cache maintenance), what goes to the host (the GIC's SGI registers, which the host's
//! virtual GIC turns into IPIs; the EL1 physical timer, which the host emulates), and what is
//! refused with an Undefined Instruction exception (everything else: the hidden features of
//! [`super::guestcpu`]).

use super::guestcpu::{GuestCpu, id_index};

/// A trapped MSR/MRS or system instruction, from ESR_EL2.ISS (Arm ARM D23.2.43, ISS encoding
/// for EC 0x18: Op0 21:20, Op2 19:17, Op1 16:14, CRn 13:10, Rt 9:5, CRm 4:1, Direction 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Op0.
    pub op0: u64,
    /// Op1.
    pub op1: u64,
    /// CRn.
    pub crn: u64,
    /// CRm.
    pub crm: u64,
    /// Op2.
    pub op2: u64,
    /// The general register transferred (31 = XZR).
    pub rt: u64,
    /// MRS (a read), or MSR / a system instruction (a write).
    pub read: bool,
}

/// The ISS bits that name the register (everything but Rt and the direction): what the host
/// is told of a register it must emulate.
pub const ISS_REG_MASK: u64 = 0x3f_fc1e;

impl SysRegAccess {
    /// Decode the syndrome of an EC 0x18 trap.
    pub const fn decode(esr: u64) -> SysRegAccess {
        SysRegAccess {
            op0: (esr >> 20) & 3,
            op2: (esr >> 17) & 7,
            op1: (esr >> 14) & 7,
            crn: (esr >> 10) & 0xf,
            rt: (esr >> 5) & 0x1f,
            crm: (esr >> 1) & 0xf,
            read: esr & 1 != 0,
        }
    }

    /// The register as (op0, op1, CRn, CRm, op2).
    pub const fn reg(&self) -> (u64, u64, u64, u64, u64) {
        (self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// MDSCR_EL1.MDE (bit 15) and KDE (bit 13): breakpoints, watchpoints and kernel debug
/// exceptions. A guest never gets them on: the breakpoint registers it sees are emulated, and
/// the CPU's real ones hold the host's settings.
pub const MDSCR_DEBUG_ENABLES: u64 = (1 << 15) | (1 << 13);

/// OSLSR_EL1 as a guest reads it: OSLM = 0b10 (the OS lock is implemented, bit 3), OSLK = 0
/// (unlocked).
pub const OSLSR_GUEST: u64 = 0b1000;

/// Which SGI register a guest wrote (the value KCore reports with the exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum SgiReg {
    /// ICC_SGI0R_EL1: a group 0 SGI.
    Sgi0r = 0,
    /// ICC_SGI1R_EL1: a group 1 SGI for the guest's own security state.
    Sgi1r = 1,
    /// ICC_ASGI1R_EL1: a group 1 SGI for the other security state.
    Asgi1r = 2,
}

/// What to do with a trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysRegAction {
    /// A read KCore answers with this value.
    Read(u64),
    /// A write (or system instruction) KCore ignores.
    Ignore,
    /// MDSCR_EL1, read from the CPU (the guest's is loaded).
    MdscrRead,
    /// MDSCR_EL1, written to the CPU without [`MDSCR_DEBUG_ENABLES`].
    MdscrWrite,
    /// An SGI the host's virtual GIC must deliver.
    Sgi(SgiReg),
    /// A register the host emulates (the EL1 physical timer).
    Host,
    /// Refused: an Undefined Instruction exception in the guest.
    Undef,
}

/// Decide a trapped access `a` for a guest on the CPU `cpu` describes.
pub fn decide(a: &SysRegAccess, cpu: &GuestCpu) -> SysRegAction {
    use SysRegAction::*;
    match a.reg() {
        // The ID registers (HCR_EL2.TID3): read-only, sanitised.
        (3, 0, 0, crm, op2) if id_index(crm, op2).is_some() => match id_index(crm, op2) {
            Some(i) if a.read => Read(cpu.id_reg(i)),
            _ => Undef,
        },
        // Debug registers (MDCR_EL2.TDA/TDOSA/TDRA): op0 = 2 with op1 = 0 (breakpoints,
        // watchpoints, OS lock, claim tags, MDSCR, MDCCINT, ...) or op1 = 3 (the debug
        // communications channel). Emulated: read as zero, writes ignored, so a kernel that
        // resets them at boot works and nothing of the host's settings shows through.
        (2, 0, 0, 2, 2) if a.read => MdscrRead,
        (2, 0, 0, 2, 2) => MdscrWrite,
        (2, 0, 1, 1, 4) if a.read => Read(OSLSR_GUEST),
        (2, 0, 1, 1, 4) => Undef,
        (2, 0 | 3, ..) if a.read => Read(0),
        (2, 0 | 3, ..) => Ignore,
        // The GICv3 SGI registers (write-only; trapped while HCR_EL2.IMO/FMO = 1): the host's
        // virtual GIC delivers the IPI (GIC architecture, 12.2.21-23).
        (3, 0, 12, 11, 5) if !a.read => Sgi(SgiReg::Sgi1r),
        (3, 0, 12, 11, 6) if !a.read => Sgi(SgiReg::Asgi1r),
        (3, 0, 12, 11, 7) if !a.read => Sgi(SgiReg::Sgi0r),
        // DC ISW / CSW / CISW (HCR_EL2.TSW): set/way maintenance only makes sense for the
        // CPU's own caches, which the guest does not own; stage-2 keeps guest memory
        // coherent, so the instruction does nothing (as under KVM between cache toggles).
        (1, 0, 7, 6 | 10 | 14, 2) if !a.read => Ignore,
        // CNTP_TVAL_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0 (CNTHCTL_EL2.EL1PCEN = 0): the host
        // emulates the EL1 physical timer if it offers one.
        (3, 3, 14, 2, 0..=2) => Host,
        _ => Undef,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcpu::guestcpu::ID_REGS;

    /// ESR_EL2 for an access to (op0, op1, CRn, CRm, op2) through `rt`.
    fn esr(r: (u64, u64, u64, u64, u64), rt: u64, read: bool) -> u64 {
        let (op0, op1, crn, crm, op2) = r;
        (0x18 << 26)
            | (1 << 25)
            | (op0 << 20)
            | (op2 << 17)
            | (op1 << 14)
            | (crn << 10)
            | (rt << 5)
            | (crm << 1)
            | read as u64
    }

    #[test]
    fn decode_round_trips() {
        let a = SysRegAccess::decode(esr((3, 0, 12, 11, 5), 7, false));
        assert_eq!((a.reg(), a.rt, a.read), ((3, 0, 12, 11, 5), 7, false));
        assert_eq!(esr((3, 3, 14, 2, 1), 31, true) & ISS_REG_MASK, esr((3, 3, 14, 2, 1), 0, false) & ISS_REG_MASK);
    }

    #[test]
    fn decisions() {
        let cpu = GuestCpu::default();
        let mut raw = [0u64; ID_REGS];
        raw[id_index(4, 0).unwrap()] = 0x22;
        cpu.configure(&raw, 40);
        let d = |r, read| decide(&SysRegAccess::decode(esr(r, 1, read)), &cpu);
        use SysRegAction::*;
        assert_eq!(d((3, 0, 0, 4, 0), true), Read(0x11), "PFR0: EL0 and EL1 AArch64 only");
        assert_eq!(d((3, 0, 0, 4, 0), false), Undef, "ID registers are read-only");
        assert_eq!(d((3, 0, 0, 0, 0), true), Undef, "MIDR is not trapped by TID3");
        assert_eq!(d((2, 0, 0, 0, 4), false), Ignore, "DBGBVR0_EL1");
        assert_eq!(d((2, 0, 0, 0, 5), true), Read(0), "DBGBCR0_EL1");
        assert_eq!(d((2, 0, 1, 0, 4), false), Ignore, "OSLAR_EL1");
        assert_eq!(d((2, 0, 1, 1, 4), true), Read(OSLSR_GUEST));
        assert_eq!(d((2, 0, 0, 2, 2), false), MdscrWrite);
        assert_eq!(d((2, 1, 0, 0, 0), true), Undef, "trace registers");
        assert_eq!(d((3, 0, 12, 11, 5), false), Sgi(SgiReg::Sgi1r));
        assert_eq!(d((3, 0, 12, 11, 7), false), Sgi(SgiReg::Sgi0r));
        assert_eq!(d((3, 0, 12, 11, 5), true), Undef);
        assert_eq!(d((1, 0, 7, 14, 2), false), Ignore, "DC CISW");
        assert_eq!(d((3, 3, 14, 2, 1), true), Host, "CNTP_CTL_EL0");
        assert_eq!(d((3, 3, 9, 12, 0), true), Undef, "PMCR_EL0 (PMU hidden)");
        assert_eq!(d((3, 0, 2, 1, 0), false), Undef, "APIAKeyLo_EL1 (pointer authentication hidden)");
        assert_eq!(d((3, 0, 10, 4, 0), true), Undef, "LORSA_EL1");
        assert_eq!(d((3, 3, 13, 2, 0), true), Undef, "AMCR_EL0");
    }
}
