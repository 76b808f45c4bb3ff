//! Layer 27 (VCPUOpsAux), the guest's view of the CPU: which architectural features a guest
//! gets and which are hidden from it, the ID register values it reads, and the EL2 trap
//! controls that make every hidden feature trap to KCore.
//!
//! Every piece of state a guest can touch is either switched by the world switch (layer 29)
//! or hidden: absent in the ID registers it reads (HCR_EL2.TID3 traps them and KCore answers
//! the sanitised values computed here) and trapped when used, so that KCore refuses the access
//! with an Undefined Instruction exception; nothing of a hidden feature reaches the host. The
//! table is `docs/ABI.md`'s "Guest CPU features". ID registers are kept by allow-list: a field
//! KCore does not know stays zero (absent), so a newer CPU cannot expose new state by accident.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How many ID registers TID3 traps: op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7, op2 = 0..=7.
pub const ID_REGS: usize = 56;

/// The index of the ID register (op0 3, op1 0, CRn 0, `crm`, `op2`) in an ID table, if it is
/// one of the TID3 group.
pub const fn id_index(crm: u64, op2: u64) -> Option<usize> {
    if crm >= 1 && crm <= 7 && op2 <= 7 { Some(((crm - 1) * 8 + op2) as usize) } else { None }
}

/// The CPU features that decide which EL2 registers exist and must be switched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// FEAT_FGT: HFGRTR_EL2/HFGWTR_EL2 exist (ID_AA64MMFR0_EL1.FGT).
    pub fgt: bool,
    /// FEAT_HCX: HCRX_EL2 exists (ID_AA64MMFR1_EL1.HCX).
    pub hcx: bool,
    /// FEAT_SME: SVCR exists (ID_AA64PFR1_EL1.SME).
    pub sme: bool,
    /// FEAT_MTE2: allocation tags in memory (ID_AA64PFR1_EL1.MTE >= 2). The host may use
    /// them (HCR_EL2.ATA); guests may not, and their tag-check faults must not reach the
    /// host's TFSR registers, so the MTE state registers are switched.
    pub mte2: bool,
}

impl CpuFeatures {
    /// The features of a CPU whose ID registers (indexed by [`id_index`]) are `raw`.
    pub fn from_id_regs(raw: &[u64; ID_REGS]) -> CpuFeatures {
        let f = |reg: (u64, u64), shift: u32| {
            let i = id_index(reg.0, reg.1).expect("an ID register");
            (raw[i] >> shift) & 0xf
        };
        CpuFeatures { fgt: f(MMFR0, 56) != 0, hcx: f(MMFR1, 40) != 0, sme: f(PFR1, 24) != 0, mte2: f(PFR1, 8) >= 2 }
    }
}

/// (CRm, op2) of the AArch64 ID registers the sanitiser knows (Arm ARM D23.2).
const PFR0: (u64, u64) = (4, 0);
const PFR1: (u64, u64) = (4, 1);
const DFR0: (u64, u64) = (5, 0);
const ISAR0: (u64, u64) = (6, 0);
const ISAR1: (u64, u64) = (6, 1);
const ISAR2: (u64, u64) = (6, 2);
const MMFR0: (u64, u64) = (7, 0);
const MMFR1: (u64, u64) = (7, 1);
const MMFR2: (u64, u64) = (7, 2);

/// A mask keeping the 4-bit fields at `shifts`.
const fn fields(shifts: &[u32]) -> u64 {
    let mut m = 0;
    let mut i = 0;
    while i < shifts.len() {
        m |= 0xf << shifts[i];
        i += 1;
    }
    m
}

/// ID_AA64PFR0_EL1 fields a guest sees as they are: FP, AdvSIMD, GIC (the system-register
/// CPU interface, virtualised), DIT, CSV3; CSV2 at most 1 (2 and above promise the
/// SCXTNUM_ELx context registers, which are not switched: HCR_EL2.EnSCXT = 0 traps them).
/// EL0 and EL1 are reported AArch64-only (a guest's EL1 is AArch64: HCR_EL2.RW),
/// EL2/EL3/SEL2 absent (a guest has none), and SVE, RAS, MPAM, AMU and RME hidden.
const PFR0_KEEP: u64 = fields(&[16, 20, 24, 48, 60]);
/// ID_AA64PFR0_EL1.CSV2.
const PFR0_CSV2_SHIFT: u32 = 56;
/// ID_AA64PFR0_EL1.EL0 = EL1 = 0b0001: AArch64 only.
const PFR0_EL0_AARCH64: u64 = 1 | (1 << 4);
/// ID_AA64PFR1_EL1: BT (BTI: PSTATE and SCTLR_EL1 bits, both switched), SSBS (PSTATE).
/// Hidden: MTE, RAS_frac, MPAM_frac, SME, NMI, GCS, THE, CSV2_frac (its higher values also
/// promise SCXTNUM) and the rest.
const PFR1_KEEP: u64 = fields(&[0, 4]);
/// ID_AA64DFR0_EL1 as a guest sees it: Armv8.0 debug (DebugVer 6) with the minimum of two
/// breakpoints and two watchpoints (BRPs = WRPs = 1, CTX_CMPs = 0), which KCore emulates
/// as read-as-zero / writes-ignored registers; no trace, PMU, SPE, TRBE, BRBE; no
/// OS double lock (DoubleLock = 0xf).
const DFR0_GUEST: u64 = 6 | (1 << 12) | (1 << 20) | (0xf << 36);
/// ID_AA64ISAR0_EL1: instructions without state of their own (AES, SHA, CRC32, atomics,
/// RDM, SHA3, SM3, SM4, DP, FHM, TS, TLB, RNDR); TME hidden.
const ISAR0_KEEP: u64 = !(0xf << 24);
/// ID_AA64ISAR1_EL1: DPB, JSCVT, FCMA, LRCPC, FRINTTS, SB, SPECRES, BF16, DGH, I8MM, XS.
/// Hidden: pointer authentication (APA, API, GPA, GPI; the keys are not switched and
/// HCR_EL2.API/APK = 0 trap its use) and LS64 (ACCDATA_EL1).
const ISAR1_KEEP: u64 = fields(&[0, 12, 16, 20, 32, 36, 40, 44, 48, 52, 56]);
/// ID_AA64ISAR2_EL1: WFxT, RPRES, MOPS (HCRX_EL2.MSCEn is set for guests), BC, CLRBHB,
/// PRFMSLC, RPRFM, CSSC. Hidden: APA3, GPA3, PAC_frac, the 128-bit system registers, LUT,
/// ATS1A.
const ISAR2_KEEP: u64 = fields(&[0, 4, 16, 20, 28, 40, 48, 52]);
/// ID_AA64MMFR0_EL1: ASIDBits, BigEnd, SNSMem, BigEndEL0, the stage-1 granules, ExS; the
/// PARange is capped at the VM's IPA size. Hidden: stage-2 granules, FGT, ECV (EL2's).
const MMFR0_KEEP: u64 = fields(&[4, 8, 12, 16, 20, 24, 28, 44]);
/// ID_AA64MMFR1_EL1: HAFDBS, HPDS, PAN, SpecSEI, ETS, AFP, nTLBPA, ECBHB. Hidden:
/// VMIDBits, VH, LO (LORegions: HCR_EL2.TLOR traps), XNX, TWED, HCX, TIDCP1, CMOW.
const MMFR1_KEEP: u64 = fields(&[0, 12, 20, 24, 36, 44, 48, 60]);
/// ID_AA64MMFR2_EL1: CnP, UAO, LSM, IESB, VARange, CCIDX, ST, AT, IDS, TTL, BBM, E0PD.
/// Hidden: NV, FWB, EVT (EL2's).
const MMFR2_KEEP: u64 = fields(&[0, 4, 8, 12, 16, 20, 28, 32, 36, 48, 52, 60]);

/// ID_AA64MMFR0_EL1.PARange encoding for an `ipa_bits` address space (rounded down).
pub const fn parange_for(ipa_bits: u32) -> u64 {
    match ipa_bits {
        52.. => 6,
        48..=51 => 5,
        44..=47 => 4,
        42..=43 => 3,
        40..=41 => 2,
        36..=39 => 1,
        _ => 0,
    }
}

/// The value a guest reads from ID register `i` (an [`id_index`]) when the CPU's is `raw`
/// and its VMs have `ipa_bits` of guest-physical address space. Every register of the
/// group not named here, including all AArch32 ones (guests run AArch64 only), reads zero.
pub fn sanitise(i: usize, raw: u64, ipa_bits: u32) -> u64 {
    let at = |reg: (u64, u64)| id_index(reg.0, reg.1) == Some(i);
    if at(PFR0) {
        let csv2 = ((raw >> PFR0_CSV2_SHIFT) & 0xf).min(1);
        (raw & PFR0_KEEP) | PFR0_EL0_AARCH64 | csv2 << PFR0_CSV2_SHIFT
    } else if at(PFR1) {
        raw & PFR1_KEEP
    } else if at(DFR0) {
        DFR0_GUEST
    } else if at(ISAR0) {
        raw & ISAR0_KEEP
    } else if at(ISAR1) {
        raw & ISAR1_KEEP
    } else if at(ISAR2) {
        raw & ISAR2_KEEP
    } else if at(MMFR0) {
        (raw & MMFR0_KEEP) | (raw & 0xf).min(parange_for(ipa_bits))
    } else if at(MMFR1) {
        raw & MMFR1_KEEP
    } else if at(MMFR2) {
        raw & MMFR2_KEEP
    } else {
        0
    }
}

/// HCR_EL2 bits every guest runs with beyond [`super::ctxtswitch::GUEST_HCR`]'s base set:
/// TID3 (bit 18: the ID registers trap, KCore answers sanitised values), TLOR (35: LORegions
/// registers trap), TERR (36: RAS error-record registers trap). API and APK (40, 41) stay 0:
/// pointer-authentication instructions and key registers trap (hidden). ATA (56) stays 0:
/// MTE tag registers trap.
pub const GUEST_HCR_HIDE: u64 = (1 << 18) | (1 << 35) | (1 << 36);

/// CPTR_EL2 (E2H = 0) for a guest: RES1 bits 13, 9, 7:0; TFP (10) = 0 (FP/SIMD is the
/// guest's, switched); TZ (8) and TSM (12) = 1: SVE and SME instructions and their registers
/// (ZCR_EL1, SMCR_EL1, SVCR) trap (hidden); TTA (20) = 1: trace registers trap; TAM (30) = 1:
/// activity monitors trap. TCPAC (31) = 0: CPACR_EL1 is the guest's (switched).
pub const GUEST_CPTR: u64 = 0x22ff | (1 << 8) | (1 << 12) | (1 << 20) | (1 << 30);

/// MDCR_EL2 for a guest, given the host's (whose HPMN field, bits 4:0, is kept: it must stay
/// a valid counter count): TPMCR (5) and TPM (6): every PMU register traps (hidden); TDA (9),
/// TDOSA (10), TDRA (11): every debug register traps (KCore emulates them); TPMS (14): SPE
/// traps; E2PB (13:12) = 0 and E2TB (25:24) = 0: the profiling and trace buffers are EL2's,
/// so EL1 accesses trap; TTRF (19): trace filter control traps.
pub const fn guest_mdcr(host_mdcr: u64) -> u64 {
    (host_mdcr & 0x1f) | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 19)
}

/// HCRX_EL2 for a guest (where FEAT_HCX exists), given the host's: only MSCEn (bit 11, the
/// memory copy and set instructions, which have no state of their own) is kept; every other
/// enable (TCR2En, SCTLR2En, GCSEn, the LS64 and 128-bit system register enables, ...) is 0,
/// so its registers trap or its instructions are undefined.
pub const fn guest_hcrx(host_hcrx: u64) -> u64 {
    host_hcrx & (1 << 11)
}

/// HFGRTR_EL2 and HFGWTR_EL2 for a guest (where FEAT_FGT exists): 0. Their positive bits
/// then trap nothing, and their negative ("n") bits trap every register they cover:
/// TPIDR2_EL0 and SMPRI_EL1 (SME), PIR/PIRE0/POR/S2POR (permission indirection and
/// overlays), GCS, ACCDATA_EL1, RCWMASK (Arm ARM D23.2, HFGRTR_EL2).
pub const GUEST_HFGXTR: u64 = 0;

/// ID registers measured on QEMU 10.0's `-cpu max` as (CRm, op2, value), the CPU with the most
/// features to hide; the tests build their CPUs from it.
pub const QEMU_MAX_ID_REGS: [(u64, u64, u64); 13] = [
    (1, 0, 0x131),
    (4, 0, 0x1301_0011_2111_0222),
    (4, 1, 0x10_0100_0121),
    (4, 4, 0x0110_1101_0021_0021),
    (4, 5, 0x80f1_00fd_0000_0000),
    (5, 0, 0x1000_0000_1030_560a),
    (6, 0, 0x1221_1111_1021_2120),
    (6, 1, 0x0111_2111_1021_1502),
    (6, 2, 0x11_0012),
    (7, 0, 0x2100_0323_1020_1126),
    (7, 1, 0x0110_1120_1031_2122),
    (7, 2, 0x1221_0111_1201_1011),
    (7, 3, 0x1000_0000_0000_0000),
];

/// [`QEMU_MAX_ID_REGS`] as a raw ID table.
pub fn qemu_max_id_regs() -> [u64; ID_REGS] {
    let mut raw = [0u64; ID_REGS];
    for (crm, op2, v) in QEMU_MAX_ID_REGS {
        if let Some(i) = id_index(crm, op2) {
            raw[i] = v;
        }
    }
    raw
}

/// What KCore knows of the CPU guests run on, set once at boot ([`GuestCpu::configure`])
/// from the boot CPU's ID registers; CPUs are assumed alike.
#[derive(Debug)]
pub struct GuestCpu {
    features: AtomicU64,
    ids: [AtomicU64; ID_REGS],
}

impl Default for GuestCpu {
    /// No features known and every ID register zero, until [`GuestCpu::configure`].
    fn default() -> Self {
        GuestCpu { features: AtomicU64::new(0), ids: [const { AtomicU64::new(0) }; ID_REGS] }
    }
}

impl GuestCpu {
    /// Record the CPU's features and the sanitised ID registers guests read, from the raw
    /// ID registers `raw` (indexed by [`id_index`]); VMs have `ipa_bits` of IPA space.
    pub fn configure(&self, raw: &[u64; ID_REGS], ipa_bits: u32) {
        let f = CpuFeatures::from_id_regs(raw);
        self.features.store(f.fgt as u64 | (f.hcx as u64) << 1 | (f.sme as u64) << 2 | (f.mte2 as u64) << 3, Relaxed);
        for (i, id) in self.ids.iter().enumerate() {
            id.store(sanitise(i, raw[i], ipa_bits), Relaxed);
        }
    }

    /// The CPU's features.
    pub fn features(&self) -> CpuFeatures {
        let f = self.features.load(Relaxed);
        CpuFeatures { fgt: f & 1 != 0, hcx: f & 2 != 0, sme: f & 4 != 0, mte2: f & 8 != 0 }
    }

    /// What a guest reads from ID register `i` (an [`id_index`]).
    pub fn id_reg(&self, i: usize) -> u64 {
        self.ids[i].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_cpu() -> [u64; ID_REGS] {
        qemu_max_id_regs()
    }

    fn field(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    #[test]
    fn hidden_features_read_as_absent_on_qemu_max() {
        let raw = max_cpu();
        let f = CpuFeatures::from_id_regs(&raw);
        assert_eq!(f, CpuFeatures { fgt: true, hcx: true, sme: true, mte2: false });
        let g = GuestCpu::default();
        g.configure(&raw, 40);
        let id = |crm, op2| g.id_reg(id_index(crm, op2).unwrap());
        let pfr0 = id(4, 0);
        assert_eq!(field(pfr0, 32), 0, "SVE");
        assert_eq!(field(pfr0, 28), 0, "RAS");
        assert_eq!(field(pfr0, 8), 0, "EL2");
        assert_eq!(field(pfr0, 0), 1, "EL0 AArch64 only");
        assert_eq!(field(pfr0, 4), 1, "EL1 AArch64 only");
        assert_eq!(field(pfr0, 24), 1, "GIC system registers kept");
        assert_eq!(field(pfr0, 56), 1, "CSV2 capped below SCXTNUM");
        let pfr1 = id(4, 1);
        assert_eq!(field(pfr1, 24), 0, "SME");
        assert_eq!(field(pfr1, 8), 0, "MTE");
        assert_eq!(field(pfr1, 36), 0, "NMI");
        assert_eq!(field(pfr1, 0), 1, "BTI kept");
        assert_eq!(id(4, 4), 0, "ZFR0");
        assert_eq!(id(4, 5), 0, "SMFR0");
        let dfr0 = id(5, 0);
        assert_eq!((field(dfr0, 0), field(dfr0, 8), field(dfr0, 12), field(dfr0, 20)), (6, 0, 1, 1));
        let isar1 = id(6, 1);
        for shift in [4, 8, 24, 28] {
            assert_eq!(field(isar1, shift), 0, "pointer authentication field at {shift}");
        }
        assert_eq!(field(isar1, 0), 2, "DPB kept");
        let isar2 = id(6, 2);
        assert_eq!((field(isar2, 8), field(isar2, 12)), (0, 0), "APA3/GPA3");
        assert_eq!(field(isar2, 16), 1, "MOPS kept");
        let mmfr0 = id(7, 0);
        assert_eq!(field(mmfr0, 0), 2, "PARange capped at the 40-bit IPA space");
        assert_eq!(field(mmfr0, 56), 0, "FGT");
        let mmfr1 = id(7, 1);
        assert_eq!((field(mmfr1, 16), field(mmfr1, 8), field(mmfr1, 40)), (0, 0, 0), "LO, VH, HCX");
        assert_eq!(id(1, 0), 0, "AArch32 registers read zero");
        assert_eq!(id(7, 3), 0, "MMFR3");
    }

    #[test]
    fn unknown_fields_stay_hidden() {
        let all = [u64::MAX; ID_REGS];
        let g = GuestCpu::default();
        g.configure(&all, 48);
        // Every register the sanitiser does not name reads zero, whatever the CPU has.
        for crm in 1..=7 {
            for op2 in 0..=7 {
                let i = id_index(crm, op2).unwrap();
                let named = matches!((crm, op2), (4, 0) | (4, 1) | (5, 0) | (6, 0..=2) | (7, 0..=2));
                assert!(named || g.id_reg(i) == 0, "({crm}, {op2})");
            }
        }
        assert_eq!(id_index(0, 0), None);
        assert_eq!(id_index(8, 0), None);
        assert_eq!(parange_for(48), 5);
        assert_eq!(g.id_reg(id_index(7, 0).unwrap()) & 0xf, 5);
    }

    #[test]
    fn trap_controls() {
        assert_eq!(guest_mdcr(0x6) & 0x1f, 0x6, "HPMN kept");
        assert_eq!(guest_mdcr(0x3000) & (0b11 << 12), 0, "E2PB: the profiling buffer is EL2's");
        assert_eq!(guest_hcrx((1 << 11) | (1 << 14) | (1 << 15)), 1 << 11);
        assert_eq!(GUEST_CPTR & (1 << 10), 0, "FP/SIMD not trapped");
    }
}
