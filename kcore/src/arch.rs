//! Pure AArch64 encodings KCore needs: translation descriptors, syndrome decoding, the
//! register values for exception injection and stage-2 control. No hardware access here, so
//! all of it is tested on the development machine. References are to the Arm ARM (DDI 0487).

use crate::{BLOCK_1G, BLOCK_2M, PAGE_SIZE};

/// Translation-table descriptor bits shared by the stage-1 (EL2) and stage-2 formats
/// (Arm ARM D8.3, VMSAv8-64 descriptor formats, 4 KiB granule, 48-bit output addresses).
pub mod desc {
    /// Bit 0: the descriptor is valid.
    pub const VALID: u64 = 1 << 0;
    /// Bit 1: at levels 0-2 a table (vs block) descriptor; at level 3 it must be set (page).
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// Output address bits [47:12].
    pub const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// Access flag (bit 10). KCore sets it on every leaf so no access-flag faults occur.
    pub const AF: u64 = 1 << 10;
    /// Shareability, bits [9:8]: inner shareable.
    pub const SH_INNER: u64 = 0b11 << 8;
    /// Stage 2: MemAttr[5:2] = 0b1111, Normal, Inner/Outer Write-Back cacheable.
    pub const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
    /// Stage 2: MemAttr[5:2] = 0b0001, Device-nGnRE.
    pub const S2_MEMATTR_DEVICE: u64 = 0b0001 << 2;
    /// Stage 2: S2AP[7:6] = 0b11, read/write.
    pub const S2AP_RW: u64 = 0b11 << 6;
    /// Stage 2: S2AP[7:6] = 0b01, read-only.
    pub const S2AP_RO: u64 = 0b01 << 6;
    /// Stage 2: XN[54:53] = 0b10, not executable at EL1 or EL0.
    pub const S2_XN: u64 = 0b10 << 53;
    /// Stage 1 (EL2): AttrIndx[4:2].
    pub const fn s1_attr_index(i: u64) -> u64 {
        (i & 7) << 2
    }
    /// Stage 1 (EL2): AP[7:6] = 0b10, read-only (EL2 has no EL0 access bit meaning).
    pub const S1_AP_RO: u64 = 0b10 << 6;
    /// Stage 1 (EL2 single range): XN, bit 54.
    pub const S1_XN: u64 = 1 << 54;
}

/// MAIR_EL2 attribute indices KCore uses for its own mapping.
pub mod mair {
    /// Index of Device-nGnRE.
    pub const DEVICE: u64 = 1;
    /// Index of Normal Write-Back RA/WA.
    pub const NORMAL: u64 = 2;
    /// MAIR_EL2 value: attr0 Device-nGnRnE, attr1 Device-nGnRE (0x04), attr2 Normal WB (0xff).
    pub const VALUE: u64 = (0x04 << 8) | (0xff << 16);
}

/// Bytes mapped by one leaf at `level` (1, 2 or 3) with a 4 KiB granule.
pub const fn level_size(level: u8) -> u64 {
    match level {
        1 => BLOCK_1G,
        2 => BLOCK_2M,
        _ => PAGE_SIZE,
    }
}

/// A stage-2 leaf for host-owned (or shared) RAM at `level`: Normal WB, RW, executable.
pub const fn s2_normal_leaf(pa: u64, level: u8) -> u64 {
    leaf_type(level) | (pa & desc::ADDR_MASK) | desc::AF | desc::SH_INNER | desc::S2AP_RW | desc::S2_MEMATTR_NORMAL_WB
}

/// A stage-2 leaf for device memory at `level`: Device-nGnRE, RW, never executable.
pub const fn s2_device_leaf(pa: u64, level: u8) -> u64 {
    leaf_type(level) | (pa & desc::ADDR_MASK) | desc::AF | desc::S2AP_RW | desc::S2_MEMATTR_DEVICE | desc::S2_XN
}

/// The host's level-3 leaf for a page a VM owns that the host kernel tried to read: KCore's
/// zero page at `zero_pa`, read-only, never executable. The kernel reads zeros (and survives);
/// a write or an instruction fetch is a permission fault, which KCore refuses.
pub const fn s2_zero_leaf(zero_pa: u64) -> u64 {
    leaf_type(3)
        | (zero_pa & desc::ADDR_MASK)
        | desc::AF
        | desc::SH_INNER
        | desc::S2AP_RO
        | desc::S2_MEMATTR_NORMAL_WB
        | desc::S2_XN
}

/// The type bits of a leaf: page (0b11) at level 3, block (0b01) above.
pub const fn leaf_type(level: u8) -> u64 {
    if level == 3 { desc::VALID | desc::TABLE_OR_PAGE } else { desc::VALID }
}

/// Is `d` a table descriptor at `level`?
pub const fn is_table(d: u64, level: u8) -> bool {
    level < 3 && d & 0b11 == 0b11
}

/// Is `d` a valid leaf (block or page) at `level`?
pub const fn is_leaf(d: u64, level: u8) -> bool {
    if level == 3 { d & 0b11 == 0b11 } else { d & 0b11 == 0b01 }
}

/// Exception classes (ESR_ELx.EC, Arm ARM D17.2.37) KCore handles.
pub mod ec {
    /// Unknown reason.
    pub const UNKNOWN: u64 = 0x00;
    /// WFI/WFE.
    pub const WFX: u64 = 0x01;
    /// HVC from AArch64.
    pub const HVC64: u64 = 0x16;
    /// SMC from AArch64 (trapped by HCR_EL2.TSC).
    pub const SMC64: u64 = 0x17;
    /// MSR/MRS/system instruction.
    pub const SYS64: u64 = 0x18;
    /// Pointer authentication instruction (HCR_EL2.API = 0).
    pub const PAC: u64 = 0x09;
    /// SVE (CPTR_EL2.TZ).
    pub const SVE: u64 = 0x19;
    /// SME (CPTR_EL2.TSM).
    pub const SME: u64 = 0x1d;
    /// Instruction abort from a lower EL.
    pub const IABT_LOW: u64 = 0x20;
    /// Instruction abort from the same EL.
    pub const IABT_CUR: u64 = 0x21;
    /// Data abort from a lower EL.
    pub const DABT_LOW: u64 = 0x24;
    /// Data abort from the same EL.
    pub const DABT_CUR: u64 = 0x25;
}

/// ESR_ELx.EC.
pub const fn esr_ec(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// ESR_ELx.IL: a 32-bit instruction.
pub const ESR_IL: u64 = 1 << 25;

/// For aborts: the fault status code, ISS[5:0] (DFSC/IFSC).
pub const fn abort_fsc(esr: u64) -> u64 {
    esr & 0x3f
}

/// Is this abort's status a translation fault (levels 0-3: 0b0001LL)?
pub const fn is_translation_fault(esr: u64) -> bool {
    abort_fsc(esr) & 0b11_1100 == 0b00_0100
}

/// For data aborts: WnR, the access was a write.
pub const fn abort_is_write(esr: u64) -> bool {
    esr & (1 << 6) != 0
}

/// For aborts taken to EL2: S1PTW, the fault happened on a stage-1 table walk.
pub const fn abort_on_s1_walk(esr: u64) -> bool {
    esr & (1 << 7) != 0
}

/// The faulting IPA from HPFAR_EL2 (FIPA holds IPA[51:12] in bits [43:4]) and the page offset
/// from FAR_EL2.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    (((hpfar >> 4) & 0xff_ffff_ffff) << 12) | (far & 0xfff)
}

/// PSTATE/SPSR mode field values (AArch64).
pub mod mode {
    /// EL0t.
    pub const EL0T: u64 = 0b0000;
    /// EL1t.
    pub const EL1T: u64 = 0b0100;
    /// EL1h.
    pub const EL1H: u64 = 0b0101;
    /// AArch32 User mode (nRW set): an AArch32 process under an AArch64 kernel.
    pub const A32_USR: u64 = 0b10000;
}

/// SPSR bits KCore uses when it enters or injects into EL1.
pub mod spsr {
    /// D, A, I and F masked.
    pub const DAIF: u64 = 0b1111 << 6;
    /// PSTATE.PAN.
    pub const PAN: u64 = 1 << 22;
    /// PSTATE.SSBS.
    pub const SSBS: u64 = 1 << 12;
    /// PSTATE.DIT.
    pub const DIT: u64 = 1 << 24;
    /// Mode field mask, including nRW (bit 4).
    pub const MODE_MASK: u64 = 0x1f;
    /// EL1h with all of DAIF masked: the state a kernel is entered in (booting.rst).
    pub const EL1H_MASKED: u64 = DAIF | super::mode::EL1H;
}

/// Where and how to deliver a synchronous exception to EL1 (Arm ARM D1.3.1, the vector
/// offsets of VBAR_EL1, and the PSTATE an exception entry produces). This is what KCore
/// writes to ELR_EL1/SPSR_EL1/ESR_EL1/FAR_EL1 and to the return state of the trapped EL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// New ELR_EL2: the EL1 vector entry to return into.
    pub vector: u64,
    /// New SPSR_EL2: PSTATE at the vector.
    pub pstate: u64,
    /// ELR_EL1: where the exception was taken from.
    pub elr_el1: u64,
    /// SPSR_EL1: PSTATE at the time of the exception.
    pub spsr_el1: u64,
    /// ESR_EL1: the syndrome EL1 sees.
    pub esr_el1: u64,
}

/// Compute the delivery of a synchronous exception with syndrome `esr_el1` to EL1, for code
/// that was running with PSTATE `spsr` at `elr`. `vbar_el1` and `sctlr_el1` are EL1's.
/// Returns `None` if the interrupted context was not AArch64 EL0/EL1 (KCore runs no AArch32).
pub fn inject_sync_el1(elr: u64, spsr: u64, esr_el1: u64, vbar_el1: u64, sctlr_el1: u64) -> Option<Injection> {
    // VBAR_EL1 offsets: 0x000 current EL with SP_EL0, 0x200 current EL with SP_ELx,
    // 0x400 lower EL using AArch64. Synchronous is the first slot of each group.
    let offset = match spsr & spsr::MODE_MASK {
        mode::EL1T => 0x000,
        mode::EL1H => 0x200,
        mode::EL0T => 0x400,
        mode::A32_USR => 0x600,
        _ => return None,
    };
    let mut pstate = spsr::DAIF | mode::EL1H;
    // PAN is kept, and set on entry when SCTLR_EL1.SPAN == 0 (bit 23).
    pstate |= spsr & spsr::PAN;
    if sctlr_el1 & (1 << 23) == 0 {
        pstate |= spsr::PAN;
    }
    // DIT is kept; SSBS takes SCTLR_EL1.DSSBS (bit 44).
    pstate |= spsr & spsr::DIT;
    if sctlr_el1 & (1 << 44) != 0 {
        pstate |= spsr::SSBS;
    }
    Some(Injection { vector: (vbar_el1 & !0x7ff) + offset, pstate, elr_el1: elr, spsr_el1: spsr, esr_el1 })
}

/// The syndrome of a synchronous external abort that KCore reports to EL1 in place of a
/// stage-2 fault it refuses to resolve. `esr_el2` is the original abort's syndrome; `spsr`
/// tells whether it came from EL0 or EL1. Keeps WnR for data aborts; FSC = 0b010000
/// (synchronous external abort, not on a table walk).
pub const fn external_abort_esr(esr_el2: u64, spsr: u64) -> u64 {
    let m = spsr & spsr::MODE_MASK;
    let from_el0 = m == mode::EL0T || m == mode::A32_USR;
    let is_data = esr_ec(esr_el2) == ec::DABT_LOW;
    let ec = match (is_data, from_el0) {
        (true, true) => ec::DABT_LOW,
        (true, false) => ec::DABT_CUR,
        (false, true) => ec::IABT_LOW,
        (false, false) => ec::IABT_CUR,
    };
    let wnr = if is_data { esr_el2 & (1 << 6) } else { 0 };
    (ec << 26) | ESR_IL | wnr | 0b01_0000
}

/// The syndrome of an Undefined Instruction exception (EC 0, IL set).
pub const UNDEF_ESR: u64 = ESR_IL;

/// Physical address size in bits for an ID_AA64MMFR0_EL1.PARange value.
pub const fn pa_range_bits(parange: u64) -> u32 {
    match parange & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// The PS/PARange encoding of a size in bits (inverse of [`pa_range_bits`]).
pub const fn pa_bits_encoding(bits: u32) -> u64 {
    match bits {
        32 => 0,
        36 => 1,
        40 => 2,
        42 => 3,
        44 => 4,
        48 => 5,
        _ => 6,
    }
}

/// The stage-2 input (IPA) size KCore uses: the CPU's PA size capped at 48 bits (52-bit needs
/// the LPA2 descriptor format, which KCore does not use). `None` below 40 bits: VMs get a
/// 40-bit IPA space (KVM's default, where QEMU's `virt` puts its high PCI window), which must
/// fit the hardware's.
pub const MIN_PA_BITS: u32 = 40;

/// See [`MIN_PA_BITS`].
pub const fn host_ipa_bits(parange: u64) -> Option<u32> {
    let bits = pa_range_bits(parange);
    let bits = if bits > 48 { 48 } else { bits };
    if bits < MIN_PA_BITS { None } else { Some(bits) }
}

/// The level a stage-2 walk of an `ia_bits` input space starts at with a 4 KiB granule. A
/// level-0 start needs an input size above 42 bits (Arm ARM, the stage-2 starting-level
/// checks of VTCR_EL2.{SL0,T0SZ}: QEMU faults every access at level 0 otherwise); smaller
/// spaces start at level 1 with concatenated root tables ([`s2_root_pages`]).
pub const fn s2_start_level(ia_bits: u32) -> u8 {
    if ia_bits > 42 { 0 } else { 1 }
}

/// Pages of a stage-2 root table: 1 for a level-0 root; for a level-1 root, one 512-entry
/// table per 512 GiB of input space, concatenated (2 for 40 bits, 8 for 42), contiguous and
/// aligned to their total size (Arm ARM, concatenated translation tables; VTTBR_EL2.BADDR).
pub const fn s2_root_pages(ia_bits: u32) -> u64 {
    if s2_start_level(ia_bits) == 0 || ia_bits <= 39 { 1 } else { 1 << (ia_bits - 39) }
}

/// VTCR_EL2 for a 4 KiB-granule stage-2 (Arm ARM D17.2.183): T0SZ = 64 - ipa_bits, SL0 per
/// [`s2_start_level`] (0b10 level 0, 0b01 level 1), IRGN0/ORGN0 = WBWA, SH0 = inner,
/// TG0 = 4 KiB, PS = ipa size, VS = 16-bit VMIDs when supported, RES1 bit 31.
pub const fn vtcr_el2(ipa_bits: u32, vmid16: bool) -> u64 {
    let t0sz = (64 - ipa_bits) as u64;
    let sl0 = if s2_start_level(ipa_bits) == 0 { 0b10 << 6 } else { 0b01 << 6 };
    let irgn0 = 0b01 << 8;
    let orgn0 = 0b01 << 10;
    let sh0 = 0b11 << 12;
    let ps = pa_bits_encoding(ipa_bits) << 16;
    let vs = if vmid16 { 1 << 19 } else { 0 };
    (1 << 31) | vs | ps | sh0 | orgn0 | irgn0 | sl0 | t0sz
}

/// VTTBR_EL2 for a root table at `root` and `vmid`.
pub const fn vttbr_el2(root: u64, vmid: u16) -> u64 {
    ((vmid as u64) << 48) | (root & desc::ADDR_MASK)
}

/// TCR_EL2 (E2H = 0 format) for KCore's own 48-bit, 4 KiB-granule identity map:
/// T0SZ = 16, IRGN0/ORGN0 = WBWA, SH0 = inner, TG0 = 4 KiB, PS from the CPU, RES1 bits 31, 23.
pub const fn tcr_el2(pa_bits: u32) -> u64 {
    let ps = pa_bits_encoding(if pa_bits > 48 { 48 } else { pa_bits });
    (1 << 31) | (1 << 23) | (ps << 16) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) | 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_encodings_match_known_values() {
        // Block descriptor for normal RAM as measured in the platform notes: pa | 0x7FD.
        assert_eq!(s2_normal_leaf(0x4000_0000, 1), 0x4000_0000 | 0x7fd);
        assert_eq!(s2_normal_leaf(0x4000_1000, 3), 0x4000_1000 | 0x7ff);
        assert_eq!(s2_device_leaf(0x0900_0000, 2) & 0xfff, 0x4c5);
        assert!(is_leaf(s2_normal_leaf(0, 2), 2));
        assert!(!is_table(s2_normal_leaf(0, 2), 2));
        assert!(is_leaf(s2_normal_leaf(0, 3), 3));
    }

    #[test]
    fn vtcr_start_level_follows_the_ipa_size() {
        // 40 bits: T0SZ 24, SL0 0b01 (level 1, two concatenated root tables), PS 0b010.
        assert_eq!(vtcr_el2(40, false), 0x8002_3558);
        // 44 bits (Cortex-A57): T0SZ 20, SL0 0b10 (level 0), PS 0b100, 16-bit VMIDs.
        assert_eq!(vtcr_el2(44, true), 0x800c_3594);
        assert_eq!(vtcr_el2(48, false) & 0xff, 0x80 | 16);
        assert_eq!((s2_start_level(40), s2_root_pages(40)), (1, 2));
        assert_eq!((s2_start_level(42), s2_root_pages(42)), (1, 8));
        assert_eq!((s2_start_level(44), s2_root_pages(44)), (0, 1));
        assert_eq!((s2_start_level(48), s2_root_pages(48)), (0, 1));
    }

    #[test]
    fn ipa_bits_are_capped_and_checked() {
        assert_eq!(host_ipa_bits(6), Some(48)); // -cpu max: 52-bit PA
        assert_eq!(host_ipa_bits(4), Some(44)); // cortex-a57
        assert_eq!(host_ipa_bits(3), Some(42));
        assert_eq!(host_ipa_bits(2), Some(40)); // cortex-a76, a53
        assert_eq!(host_ipa_bits(1), None); // 36 bits: smaller than a VM's IPA space
    }

    #[test]
    fn fault_ipa_combines_hpfar_and_far() {
        // ESR 0x93810006 at IPA 0x40200000: HPFAR holds IPA>>12 << 4.
        assert_eq!(fault_ipa((0x40200000 >> 12) << 4, 0xffff_0000_0000_0123), 0x4020_0123);
        assert!(is_translation_fault(0x9381_0006));
        assert!(!abort_is_write(0x9381_0006));
    }

    #[test]
    fn external_abort_from_user_is_a_lower_el_data_abort() {
        let esr = external_abort_esr(0x9381_0046, mode::EL0T);
        assert_eq!(esr_ec(esr), ec::DABT_LOW);
        assert_eq!(abort_fsc(esr), 0x10);
        assert!(abort_is_write(esr));
        let esr = external_abort_esr(0x8200_0006, mode::EL1H);
        assert_eq!(esr_ec(esr), ec::IABT_CUR);
    }

    #[test]
    fn injection_uses_the_right_vector_and_masks() {
        let vbar = 0xffff_8000_1001_0800;
        let inj = inject_sync_el1(0x400000, mode::EL0T, 0x1234, vbar, 0).unwrap();
        assert_eq!(inj.vector, vbar + 0x400);
        assert_eq!(inj.pstate & spsr::MODE_MASK, mode::EL1H);
        assert_eq!(inj.pstate & spsr::DAIF, spsr::DAIF);
        assert!(inj.pstate & spsr::PAN != 0, "SPAN=0 sets PAN");
        assert_eq!(inj.elr_el1, 0x400000);
        let inj = inject_sync_el1(0x1000, mode::EL1H | spsr::DAIF, 0, vbar, 1 << 23).unwrap();
        assert_eq!(inj.vector, vbar + 0x200);
        assert_eq!(inj.pstate & spsr::PAN, 0);
        assert_eq!(inject_sync_el1(0, mode::A32_USR, 0, vbar, 0).unwrap().vector, vbar + 0x600);
        assert!(inject_sync_el1(0, 0b10011, 0, vbar, 0).is_none(), "AArch32 kernel modes are refused");
    }
}
