//! Layer 22 (SmmuRaw): bit-exact SMMUv3 encodings (Arm IHI 0070, "SMMU architecture
//! specification, SMMUv3"): register offsets and fields, stream table entries, commands and
//! events. Pure functions only; nothing here touches the device.

/// Register offsets in the SMMU's two 64 KiB pages (IHI 0070 6.2 and 6.3). Page 1 holds the
/// event and PRI queues' producer and consumer indices.
pub mod reg {
    pub const IDR0: u64 = 0x0;
    pub const IDR1: u64 = 0x4;
    pub const IDR2: u64 = 0x8;
    pub const IDR3: u64 = 0xc;
    pub const IDR4: u64 = 0x10;
    pub const IDR5: u64 = 0x14;
    pub const IIDR: u64 = 0x18;
    pub const AIDR: u64 = 0x1c;
    pub const CR0: u64 = 0x20;
    pub const CR0ACK: u64 = 0x24;
    pub const CR1: u64 = 0x28;
    pub const CR2: u64 = 0x2c;
    pub const STATUSR: u64 = 0x40;
    pub const GBPA: u64 = 0x44;
    pub const AGBPA: u64 = 0x48;
    pub const IRQ_CTRL: u64 = 0x50;
    pub const IRQ_CTRLACK: u64 = 0x54;
    pub const GERROR: u64 = 0x60;
    pub const GERRORN: u64 = 0x64;
    /// 64-bit: the MSI address of global-error interrupts.
    pub const GERROR_IRQ_CFG0: u64 = 0x68;
    pub const GERROR_IRQ_CFG1: u64 = 0x70;
    pub const GERROR_IRQ_CFG2: u64 = 0x74;
    /// 64-bit.
    pub const STRTAB_BASE: u64 = 0x80;
    pub const STRTAB_BASE_CFG: u64 = 0x88;
    /// 64-bit.
    pub const CMDQ_BASE: u64 = 0x90;
    pub const CMDQ_PROD: u64 = 0x98;
    pub const CMDQ_CONS: u64 = 0x9c;
    /// 64-bit.
    pub const EVTQ_BASE: u64 = 0xa0;
    /// 64-bit: the MSI address of event-queue interrupts.
    pub const EVTQ_IRQ_CFG0: u64 = 0xb0;
    pub const EVTQ_IRQ_CFG1: u64 = 0xb8;
    pub const EVTQ_IRQ_CFG2: u64 = 0xbc;
    /// 64-bit.
    pub const PRIQ_BASE: u64 = 0xc0;
    /// 64-bit.
    pub const PRIQ_IRQ_CFG0: u64 = 0xd0;
    pub const PRIQ_IRQ_CFG1: u64 = 0xd8;
    pub const PRIQ_IRQ_CFG2: u64 = 0xdc;
    /// Page 1.
    pub const EVTQ_PROD: u64 = 0x1_00a8;
    /// Page 1.
    pub const EVTQ_CONS: u64 = 0x1_00ac;
    /// Page 1.
    pub const PRIQ_PROD: u64 = 0x1_00c8;
    /// Page 1.
    pub const PRIQ_CONS: u64 = 0x1_00cc;
    /// Bytes of register space (pages 0 and 1).
    pub const SIZE: u64 = 0x2_0000;
}

/// SMMU_IDR0 fields (IHI 0070 6.3.1).
pub mod idr0 {
    pub const S2P: u32 = 1 << 0;
    pub const S1P: u32 = 1 << 1;
    /// TTF[3:2]: translation table formats; 0b10 = AArch64.
    pub const TTF_SHIFT: u32 = 2;
    pub const TTF_AARCH64: u32 = 0b10;
    pub const COHACC: u32 = 1 << 4;
    pub const BTM: u32 = 1 << 5;
    pub const HYP: u32 = 1 << 9;
    pub const ATS: u32 = 1 << 10;
    pub const ASID16: u32 = 1 << 12;
    pub const MSI: u32 = 1 << 13;
    pub const SEV: u32 = 1 << 14;
    pub const PRI: u32 = 1 << 16;
    pub const VMID16: u32 = 1 << 18;
    pub const CD2L: u32 = 1 << 19;
    /// TTENDIAN[22:21]: 0b00 mixed, 0b10 little-endian only.
    pub const TTENDIAN_SHIFT: u32 = 21;
    pub const TTENDIAN_BE: u32 = 0b11;
    /// STALL_MODEL[25:24].
    pub const STALL_MODEL_SHIFT: u32 = 24;
    /// ST_LEVEL[28:27]: 0b01 = 2-level stream tables supported.
    pub const ST_LEVEL_SHIFT: u32 = 27;
}

/// SMMU_IDR1 fields (IHI 0070 6.3.2).
pub mod idr1 {
    pub const SIDSIZE_MASK: u32 = 0x3f;
    pub const EVTQS_SHIFT: u32 = 16;
    pub const CMDQS_SHIFT: u32 = 21;
    pub const QS_MASK: u32 = 0x1f;
    pub const REL: u32 = 1 << 28;
    pub const QUEUES_PRESET: u32 = 1 << 29;
    pub const TABLES_PRESET: u32 = 1 << 30;
    pub const ECMDQ: u32 = 1 << 31;
}

/// SMMU_IDR5 fields (IHI 0070 6.3.6).
pub mod idr5 {
    pub const OAS_MASK: u32 = 0x7;
    pub const GRAN4K: u32 = 1 << 4;
}

/// SMMU_CR0 (and CR0ACK) bits (IHI 0070 6.3.9).
pub mod cr0 {
    pub const SMMUEN: u32 = 1 << 0;
    pub const PRIQEN: u32 = 1 << 1;
    pub const EVTQEN: u32 = 1 << 2;
    pub const CMDQEN: u32 = 1 << 3;
    pub const ATSCHK: u32 = 1 << 4;
}

/// SMMU_CR1 for tables and queues in Normal inner-shareable write-back memory, as KCore's
/// (and Linux's) are: TABLE_SH/OC/IC = ISH/WB/WB, QUEUE_SH/OC/IC = ISH/WB/WB (IHI 0070 6.3.11).
pub const CR1_WB_ISH: u32 = (0b11 << 10) | (0b01 << 8) | (0b01 << 6) | (0b11 << 4) | (0b01 << 2) | 0b01;
/// SMMU_CR2: PTM (private TLB maintenance: the CPU's broadcast TLBIs do not reach the SMMU)
/// and RECINVSID (record C_BAD_STREAMID events); E2H = 0 (IHI 0070 6.3.12).
pub const CR2_PTM_RECINVSID: u32 = (1 << 2) | (1 << 1);

/// SMMU_GBPA (IHI 0070 6.3.14): UPDATE starts and reports an update; ABORT makes every
/// transaction abort while SMMUEN is 0 (instead of bypassing).
pub mod gbpa {
    pub const UPDATE: u32 = 1 << 31;
    pub const ABORT: u32 = 1 << 20;
}

/// SMMU_GERROR bits (IHI 0070 6.3.17); GERRORN acknowledges by toggling the same bits.
pub mod gerror {
    pub const CMDQ_ERR: u32 = 1 << 0;
    pub const EVTQ_ABT_ERR: u32 = 1 << 2;
    pub const PRIQ_ABT_ERR: u32 = 1 << 3;
    pub const SFM_ERR: u32 = 1 << 8;
    /// Every architected error bit.
    pub const ALL: u32 = 0x1fd;
}

/// The RA (read-allocate) hint of STRTAB_BASE, CMDQ_BASE and EVTQ_BASE.
pub const BASE_RA: u64 = 1 << 62;
/// Address bits [51:6] of STRTAB_BASE and of an L1 stream table descriptor.
pub const ADDR_MASK_51_6: u64 = ((1 << 52) - 1) & !0x3f;
/// Address bits [51:5] of CMDQ_BASE / EVTQ_BASE.
pub const ADDR_MASK_51_5: u64 = ((1 << 52) - 1) & !0x1f;

/// SMMU_STRTAB_BASE_CFG for a 2-level table of `log2size` stream ID bits whose level-2 tables
/// each hold 2^`split` entries (IHI 0070 6.3.24: FMT[17:16] = 0b01, SPLIT[10:6], LOG2SIZE[5:0]).
pub const fn strtab_cfg_2level(log2size: u32, split: u32) -> u32 {
    (1 << 16) | (split << 6) | log2size
}

/// An L1 stream table descriptor pointing at a level-2 table of 2^`split` STEs at `l2`
/// (IHI 0070 5.1.2: L2Ptr[51:6], Span[4:0] = split + 1).
pub const fn l1_desc(l2: u64, split: u32) -> u64 {
    (l2 & ADDR_MASK_51_6) | (split as u64 + 1)
}

/// SMMU_CMDQ_BASE / SMMU_EVTQ_BASE for a queue of 2^`log2size` entries at `base`.
pub const fn queue_base(base: u64, log2size: u32) -> u64 {
    BASE_RA | (base & ADDR_MASK_51_5) | log2size as u64
}

/// CMDQ_CONS.ERR[30:24]: why the command at CONS stopped the queue (IHI 0070 7.1).
pub const CONS_ERR_SHIFT: u32 = 24;
pub const CONS_ERR_MASK: u32 = 0x7f << CONS_ERR_SHIFT;
/// CERROR_ILL: an illegal command.
pub const CERROR_ILL: u32 = 1;

/// Bytes of a stream table entry.
pub const STE_BYTES: u64 = 64;
/// A stream table entry: eight 64-bit words (IHI 0070 5.2).
pub type Ste = [u64; 8];

/// STE fields (IHI 0070 5.2).
pub mod ste {
    /// dword 0: V.
    pub const V: u64 = 1 << 0;
    /// dword 0: Config[3:1].
    pub const CONFIG_SHIFT: u32 = 1;
    pub const CONFIG_MASK: u64 = 0b111 << CONFIG_SHIFT;
    pub const CONFIG_ABORT: u64 = 0b000;
    pub const CONFIG_BYPASS: u64 = 0b100;
    pub const CONFIG_S1: u64 = 0b101;
    pub const CONFIG_S2: u64 = 0b110;
    pub const CONFIG_NESTED: u64 = 0b111;
    /// dword 1: SHCFG[45:44] = 0b01, use the incoming shareability.
    pub const SHCFG_INCOMING: u64 = 0b01 << 44;
    /// dword 2: S2VMID[15:0], VTCR[50:32], S2AA64, S2PTW (stage-1 walks of Device memory
    /// fault), S2R (record stage-2 faults).
    pub const S2VMID_MASK: u64 = 0xffff;
    pub const VTCR_SHIFT: u32 = 32;
    pub const VTCR_MASK: u64 = 0x7ffff;
    pub const S2AA64: u64 = 1 << 51;
    pub const S2PTW: u64 = 1 << 54;
    pub const S2R: u64 = 1 << 58;
    /// dword 3: S2TTB[51:4].
    pub const S2TTB_MASK: u64 = ((1 << 52) - 1) & !0xf;
}

/// Config of an STE.
pub const fn ste_config(s: &Ste) -> u64 {
    (s[0] & ste::CONFIG_MASK) >> ste::CONFIG_SHIFT
}

/// Is the STE valid?
pub const fn ste_valid(s: &Ste) -> bool {
    s[0] & ste::V != 0
}

/// The stage-2 translation fields of an STE (dwords 2 and 3) for a stage-2 table at `root`
/// with VTCR value `vtcr` (VTCR_EL2's layout: T0SZ, SL0, IRGN0, ORGN0, SH0, TG0, PS; only bits
/// [18:0] are used) in `vmid`: AArch64 tables, stage-1 walks that reach Device memory fault
/// (S2PTW), stage-2 faults recorded (S2R) so the event queue says what was refused.
pub const fn s2_words(vmid: u16, vtcr: u64, root: u64) -> (u64, u64) {
    let dw2 = vmid as u64 | ((vtcr & ste::VTCR_MASK) << ste::VTCR_SHIFT) | ste::S2AA64 | ste::S2PTW | ste::S2R;
    (dw2, root & ste::S2TTB_MASK)
}

/// A valid stage-2-only STE: every transaction of the stream is translated by the stage-2
/// table at `root` alone (no stage 1). SHCFG uses the incoming shareability.
pub const fn ste_s2_only(vmid: u16, vtcr: u64, root: u64) -> Ste {
    let (dw2, dw3) = s2_words(vmid, vtcr, root);
    [ste::V | (ste::CONFIG_S2 << ste::CONFIG_SHIFT), ste::SHCFG_INCOMING, dw2, dw3, 0, 0, 0, 0]
}

/// A valid STE that aborts every transaction of its stream (Config = abort).
pub const STE_ABORT: Ste = [ste::V, 0, 0, 0, 0, 0, 0, 0];

/// Bytes of a command.
pub const CMD_BYTES: u64 = 16;
/// A command queue entry: two 64-bit words (IHI 0070 4.1).
pub type Cmd = [u64; 2];

/// Command opcodes (IHI 0070 4.1.1), dword 0 bits [7:0].
pub mod op {
    pub const PREFETCH_CONFIG: u8 = 0x01;
    pub const PREFETCH_ADDR: u8 = 0x02;
    pub const CFGI_STE: u8 = 0x03;
    pub const CFGI_STE_RANGE: u8 = 0x04;
    pub const CFGI_CD: u8 = 0x05;
    pub const CFGI_CD_ALL: u8 = 0x06;
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    pub const TLBI_NH_ALL: u8 = 0x10;
    pub const TLBI_NH_ASID: u8 = 0x11;
    pub const TLBI_NH_VA: u8 = 0x12;
    pub const TLBI_NH_VAA: u8 = 0x13;
    pub const TLBI_EL3_ALL: u8 = 0x18;
    pub const TLBI_EL3_VA: u8 = 0x1a;
    pub const TLBI_EL2_ALL: u8 = 0x20;
    pub const TLBI_EL2_ASID: u8 = 0x21;
    pub const TLBI_EL2_VA: u8 = 0x22;
    pub const TLBI_EL2_VAA: u8 = 0x23;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2a;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const ATC_INV: u8 = 0x40;
    pub const PRI_RESP: u8 = 0x41;
    pub const RESUME: u8 = 0x44;
    pub const STALL_TERM: u8 = 0x45;
    pub const SYNC: u8 = 0x46;
}

/// The opcode of a command.
pub const fn cmd_opcode(c: &Cmd) -> u8 {
    c[0] as u8
}

/// The commands KCore itself issues, encoded (IHI 0070 4.3-4.7).
pub mod cmd {
    use super::{Cmd, op};

    /// CMD_CFGI_STE: re-read the STE of `sid` (Leaf = 1: only the STE, not an L1 descriptor).
    pub const fn cfgi_ste(sid: u32) -> Cmd {
        [op::CFGI_STE as u64 | (sid as u64) << 32, 1]
    }
    /// CMD_CFGI_STE with Leaf = 0: the STE of `sid` and the level-1 descriptor that leads
    /// to it.
    pub const fn cfgi_ste_l1(sid: u32) -> Cmd {
        [op::CFGI_STE as u64 | (sid as u64) << 32, 0]
    }
    /// CMD_CFGI_ALL: CMD_CFGI_STE_RANGE with Range = 31, every stream's configuration.
    pub const fn cfgi_all() -> Cmd {
        [op::CFGI_STE_RANGE as u64, 31]
    }
    /// CMD_TLBI_S12_VMALL: every stage-1 and stage-2 (and combined) entry of `vmid`. A
    /// stage-2 invalidation by IPA alone need not remove combined nested entries (measured on
    /// QEMU: a nested translation outlived CMD_TLBI_S2_IPA + CMD_SYNC).
    pub const fn tlbi_s12_vmall(vmid: u16) -> Cmd {
        [op::TLBI_S12_VMALL as u64 | (vmid as u64) << 32, 0]
    }
    /// CMD_TLBI_NSNH_ALL: every non-secure, non-hypervisor entry.
    pub const fn tlbi_nsnh_all() -> Cmd {
        [op::TLBI_NSNH_ALL as u64, 0]
    }
    /// CMD_SYNC with CS = 0 (no signal): completion is seen as CMDQ_CONS passing it.
    pub const fn sync() -> Cmd {
        [op::SYNC as u64, 0]
    }
}

/// Event record fields (IHI 0070 7.3): type, stream ID, and for translation faults the
/// input address, whether stage 2 faulted and the faulting IPA.
pub mod evt {
    /// Bytes of an event record.
    pub const BYTES: u64 = 32;
    pub const C_BAD_STREAMID: u8 = 0x02;
    pub const C_BAD_STE: u8 = 0x04;
    pub const F_TRANSLATION: u8 = 0x10;
    pub const F_ADDR_SIZE: u8 = 0x11;
    pub const F_ACCESS: u8 = 0x12;
    pub const F_PERMISSION: u8 = 0x13;
    /// dword 1 bit 39: the fault came from stage 2.
    pub const S2: u64 = 1 << 39;
}

/// One event record, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event type (dword 0 bits [7:0]).
    pub kind: u8,
    /// StreamID (dword 0 bits [63:32]).
    pub sid: u32,
    /// The transaction's input address (dword 2).
    pub input: u64,
    /// A stage-2 fault (translation, access, permission, address size).
    pub stage2: bool,
    /// The faulting IPA of a stage-2 fault (dword 3 bits [51:12]).
    pub ipa: u64,
}

impl Event {
    /// Decode a 32-byte event record.
    pub const fn decode(w: [u64; 4]) -> Event {
        Event {
            kind: w[0] as u8,
            sid: (w[0] >> 32) as u32,
            input: w[2],
            stage2: w[1] & evt::S2 != 0,
            ipa: w[3] & (((1 << 52) - 1) & !0xfff),
        }
    }
}

/// The output address size IDR5.OAS encodes, in bits (IHI 0070 6.3.6).
pub const fn oas_bits(idr5: u32) -> u32 {
    match idr5 & idr5::OAS_MASK {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_values_decode_as_measured() {
        // What the stock driver writes on QEMU virt (reference/smmuv3.md 1.2): CR1 0xd75,
        // CR2 0x6, STRTAB_BASE_CFG 0x10210.
        assert_eq!(CR1_WB_ISH, 0xd75);
        assert_eq!(CR2_PTM_RECINVSID, 0x6);
        assert_eq!(strtab_cfg_2level(16, 8), 0x10210);
        // QEMU's IDR5 (0x74) says 44-bit output and a 4 KiB granule.
        assert_eq!(oas_bits(0x74), 44);
        assert_ne!(0x74 & idr5::GRAN4K, 0);
    }

    #[test]
    fn stage2_only_ste_has_kcore_fields() {
        let vtcr = crate::arch::vtcr_el2(44, false);
        let s = ste_s2_only(0, vtcr, 0x4123_4000);
        assert!(ste_valid(&s));
        assert_eq!(ste_config(&s), ste::CONFIG_S2);
        assert_eq!(s[2] & ste::S2VMID_MASK, 0);
        assert_eq!((s[2] >> ste::VTCR_SHIFT) & 0x3f, 20, "T0SZ for 44 bits");
        assert_ne!(s[2] & ste::S2AA64, 0);
        assert_eq!(s[3], 0x4123_4000);
        assert_eq!(ste_config(&STE_ABORT), ste::CONFIG_ABORT);
        assert!(ste_valid(&STE_ABORT));
    }

    #[test]
    fn commands_encode_their_fields() {
        assert_eq!(cmd_opcode(&cmd::cfgi_ste(0x18)), op::CFGI_STE);
        assert_eq!(cmd::cfgi_ste(0x18)[0] >> 32, 0x18);
        assert_eq!(cmd::cfgi_all()[1], 31);
        assert_eq!(cmd::tlbi_s12_vmall(3)[0], 0x28 | 3 << 32);
        assert_eq!(cmd_opcode(&cmd::sync()), op::SYNC);
        assert_eq!(l1_desc(0x4000_4000, 8), 0x4000_4009);
        assert_eq!(queue_base(0x4000_8000, 8), BASE_RA | 0x4000_8008);
    }

    #[test]
    fn event_decodes_a_stage2_translation_fault() {
        let e = Event::decode([0x18 << 32 | 0x10, evt::S2, 0x4020_0000, 0x4020_0000]);
        assert_eq!((e.kind, e.sid, e.stage2, e.ipa), (evt::F_TRANSLATION, 0x18, true, 0x4020_0000));
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 22, second part: every command the host's driver may put in its queue, decoded into
// fields and re-encoded canonically from those fields only, and the STE fields the shadow
// transform reads.
// ---------------------------------------------------------------------------------------------

/// Command fields (IHI 0070 4.1-4.7). Positions are within dword 0 (`*_0_*`) or dword 1
/// (`*_1_*`) of a command.
pub mod cmdf {
    /// dword 0 bit 11: SSV, the SubstreamID field is valid.
    pub const SSV: u64 = 1 << 11;
    /// dword 0 bits \[31:12\]: SubstreamID.
    pub const SSID_SHIFT: u32 = 12;
    pub const SSID_MASK: u64 = 0xf_ffff;
    /// dword 0 bits \[63:32\]: StreamID.
    pub const SID_SHIFT: u32 = 32;
    /// dword 0 bits \[47:32\]: VMID of a TLB invalidation.
    pub const VMID_SHIFT: u32 = 32;
    /// dword 0 bits \[63:48\]: ASID of a TLB invalidation.
    pub const ASID_SHIFT: u32 = 48;
    /// dword 0 bits \[16:12\] and \[24:20\]: NUM and SCALE of a range invalidation (IHI 0070 4.4.1).
    pub const NUM_SHIFT: u32 = 12;
    pub const SCALE_SHIFT: u32 = 20;
    pub const NUM_SCALE_MASK: u64 = 0x1f;
    /// dword 1 bit 0: Leaf.
    pub const LEAF: u64 = 1;
    /// dword 1 bits \[9:8\], \[11:10\]: TTL and TG of an address invalidation.
    pub const TTL_SHIFT: u32 = 8;
    pub const TG_SHIFT: u32 = 10;
    /// dword 1 bits \[63:12\]: a virtual address (also the address of PREFETCH_ADDR, ATC_INV).
    pub const VA_MASK: u64 = !0xfff;
    /// dword 1 bits \[51:12\]: an intermediate physical address.
    pub const IPA_MASK: u64 = ((1 << 52) - 1) & !0xfff;
    /// dword 1 bits \[4:0\]: Range of CFGI_STE_RANGE, Size of PREFETCH_ADDR.
    pub const RANGE_MASK: u64 = 0x1f;
    /// dword 1 bits \[5:0\]: Size of ATC_INV.
    pub const ATC_SIZE_MASK: u64 = 0x3f;
    /// dword 0 bit 9: Global of ATC_INV.
    pub const ATC_GLOBAL: u64 = 1 << 9;
    /// dword 0 bits \[13:12\]: CS of CMD_SYNC, Resp of CMD_RESUME; dword 1 bits \[13:12\]: Resp of
    /// CMD_PRI_RESP.
    pub const CS_SHIFT: u32 = 12;
    /// dword 0 bits \[23:22\], \[27:24\]: MSH and MSIAttr of CMD_SYNC.
    pub const MSH_SHIFT: u32 = 22;
    pub const MSIATTR_SHIFT: u32 = 24;
    /// dword 1 bits \[51:2\]: MSIAddress of CMD_SYNC.
    pub const MSIADDR_MASK: u64 = ((1 << 52) - 1) & !0x3;
    /// dword 1 bits \[8:0\]: PRGIndex (group) of CMD_PRI_RESP.
    pub const PRI_GRPID_MASK: u64 = 0x1ff;
    /// dword 1 bits \[15:0\]: STAG of CMD_RESUME.
    pub const STAG_MASK: u64 = 0xffff;
}

/// CMD_SYNC completion signal (IHI 0070 4.7.3): CS field values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncCs {
    /// No signal: completion is seen as CMDQ_CONS passing the command.
    None,
    /// An MSI write of MSIData to MSIAddress (a raw physical address).
    Irq,
    /// A send-event (wake-up for WFE).
    Sev,
}

/// The address part of a TLB invalidation by address (IHI 0070 4.4): the address (bits
/// \[63:12\] of a VA, or \[51:12\] of an IPA), Leaf, TTL, TG and the range form's NUM and SCALE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbiAddr {
    pub addr: u64,
    pub leaf: bool,
    pub ttl: u8,
    pub tg: u8,
    pub num: u8,
    pub scale: u8,
}

/// A decoded command. Every field is one the architecture gives the command; bits a command
/// does not define are dropped by [`Command::decode`] and written as zero by
/// [`Command::encode`], so a re-encoded command carries nothing the decoder did not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    PrefetchAddr {
        sid: u32,
        ssid: Option<u32>,
        size: u8,
        addr: u64,
    },
    /// CMD_CFGI_STE; `leaf` = 0 also invalidates a cached L1 descriptor.
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// CMD_CFGI_STE_RANGE: the 2^(range+1) stream IDs from `sid` rounded down to that size;
    /// range 31 is CMD_CFGI_ALL.
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    CfgiVmsPidm {
        vmid: u16,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        at: TlbiAddr,
    },
    TlbiNhVaa {
        vmid: u16,
        at: TlbiAddr,
    },
    TlbiEl3All,
    TlbiEl3Va {
        at: TlbiAddr,
    },
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        at: TlbiAddr,
    },
    TlbiEl2Vaa {
        at: TlbiAddr,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        at: TlbiAddr,
    },
    TlbiNsnhAll,
    AtcInv {
        sid: u32,
        ssid: Option<u32>,
        global: bool,
        size: u8,
        addr: u64,
    },
    PriResp {
        sid: u32,
        ssid: Option<u32>,
        grpid: u16,
        resp: u8,
    },
    Resume {
        sid: u32,
        resp: u8,
        stag: u16,
    },
    StallTerm {
        sid: u32,
    },
    /// CMD_SYNC; `msi` = (MSH, MSIAttr, MSIData, MSIAddress), meaningful with CS = IRQ.
    Sync {
        cs: SyncCs,
        msh: u8,
        msiattr: u8,
        msidata: u32,
        msiaddr: u64,
    },
}

const fn field(w: u64, shift: u32, mask: u64) -> u64 {
    (w >> shift) & mask
}

const fn ssid_of(w0: u64) -> Option<u32> {
    if w0 & cmdf::SSV != 0 { Some(field(w0, cmdf::SSID_SHIFT, cmdf::SSID_MASK) as u32) } else { None }
}

const fn ssid_bits(ssid: Option<u32>) -> u64 {
    match ssid {
        Some(s) => cmdf::SSV | ((s as u64 & cmdf::SSID_MASK) << cmdf::SSID_SHIFT),
        None => 0,
    }
}

impl TlbiAddr {
    const fn decode(c: &Cmd, addr_mask: u64) -> TlbiAddr {
        TlbiAddr {
            addr: c[1] & addr_mask,
            leaf: c[1] & cmdf::LEAF != 0,
            ttl: field(c[1], cmdf::TTL_SHIFT, 3) as u8,
            tg: field(c[1], cmdf::TG_SHIFT, 3) as u8,
            num: field(c[0], cmdf::NUM_SHIFT, cmdf::NUM_SCALE_MASK) as u8,
            scale: field(c[0], cmdf::SCALE_SHIFT, cmdf::NUM_SCALE_MASK) as u8,
        }
    }

    /// (dword 0 bits, dword 1).
    const fn encode(&self, addr_mask: u64) -> (u64, u64) {
        let w0 = ((self.num as u64 & cmdf::NUM_SCALE_MASK) << cmdf::NUM_SHIFT)
            | ((self.scale as u64 & cmdf::NUM_SCALE_MASK) << cmdf::SCALE_SHIFT);
        let w1 = (self.addr & addr_mask)
            | (self.leaf as u64)
            | ((self.ttl as u64 & 3) << cmdf::TTL_SHIFT)
            | ((self.tg as u64 & 3) << cmdf::TG_SHIFT);
        (w0, w1)
    }
}

impl Command {
    /// Decode a command queue entry. `None` for an opcode the architecture does not define
    /// and for reserved encodings (CMD_SYNC with CS = 0b11, CMD_PRI_RESP with Resp = 0b11):
    /// the SMMU reports those as CERROR_ILL (IHI 0070 4.1.3).
    pub const fn decode(c: Cmd) -> Option<Command> {
        let w0 = c[0];
        let sid = (w0 >> cmdf::SID_SHIFT) as u32;
        let vmid = (w0 >> cmdf::VMID_SHIFT) as u16;
        let asid = (w0 >> cmdf::ASID_SHIFT) as u16;
        let va = TlbiAddr::decode(&c, cmdf::VA_MASK);
        Some(match cmd_opcode(&c) {
            op::PREFETCH_CONFIG => Command::PrefetchConfig { sid, ssid: ssid_of(w0) },
            op::PREFETCH_ADDR => Command::PrefetchAddr {
                sid,
                ssid: ssid_of(w0),
                size: (c[1] & cmdf::RANGE_MASK) as u8,
                addr: c[1] & cmdf::VA_MASK,
            },
            op::CFGI_STE => Command::CfgiSte { sid, leaf: c[1] & cmdf::LEAF != 0 },
            op::CFGI_STE_RANGE => Command::CfgiSteRange { sid, range: (c[1] & cmdf::RANGE_MASK) as u8 },
            op::CFGI_CD => Command::CfgiCd {
                sid,
                ssid: field(w0, cmdf::SSID_SHIFT, cmdf::SSID_MASK) as u32,
                leaf: c[1] & cmdf::LEAF != 0,
            },
            op::CFGI_CD_ALL => Command::CfgiCdAll { sid },
            op::CFGI_VMS_PIDM => Command::CfgiVmsPidm { vmid },
            op::TLBI_NH_ALL => Command::TlbiNhAll { vmid },
            op::TLBI_NH_ASID => Command::TlbiNhAsid { vmid, asid },
            op::TLBI_NH_VA => Command::TlbiNhVa { vmid, asid, at: va },
            op::TLBI_NH_VAA => Command::TlbiNhVaa { vmid, at: va },
            op::TLBI_EL3_ALL => Command::TlbiEl3All,
            op::TLBI_EL3_VA => Command::TlbiEl3Va { at: va },
            op::TLBI_EL2_ALL => Command::TlbiEl2All,
            op::TLBI_EL2_ASID => Command::TlbiEl2Asid { asid },
            op::TLBI_EL2_VA => Command::TlbiEl2Va { asid, at: va },
            op::TLBI_EL2_VAA => Command::TlbiEl2Vaa { at: va },
            op::TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid },
            op::TLBI_S2_IPA => Command::TlbiS2Ipa { vmid, at: TlbiAddr::decode(&c, cmdf::IPA_MASK) },
            op::TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            op::ATC_INV => Command::AtcInv {
                sid,
                ssid: ssid_of(w0),
                global: w0 & cmdf::ATC_GLOBAL != 0,
                size: (c[1] & cmdf::ATC_SIZE_MASK) as u8,
                addr: c[1] & cmdf::VA_MASK,
            },
            op::PRI_RESP => {
                let resp = field(c[1], cmdf::CS_SHIFT, 3) as u8;
                if resp == 3 {
                    return None;
                }
                Command::PriResp { sid, ssid: ssid_of(w0), grpid: (c[1] & cmdf::PRI_GRPID_MASK) as u16, resp }
            }
            op::RESUME => {
                Command::Resume { sid, resp: field(w0, cmdf::CS_SHIFT, 3) as u8, stag: (c[1] & cmdf::STAG_MASK) as u16 }
            }
            op::STALL_TERM => Command::StallTerm { sid },
            op::SYNC => {
                let cs = match field(w0, cmdf::CS_SHIFT, 3) {
                    0 => SyncCs::None,
                    1 => SyncCs::Irq,
                    2 => SyncCs::Sev,
                    _ => return None,
                };
                Command::Sync {
                    cs,
                    msh: field(w0, cmdf::MSH_SHIFT, 3) as u8,
                    msiattr: field(w0, cmdf::MSIATTR_SHIFT, 0xf) as u8,
                    msidata: (w0 >> 32) as u32,
                    msiaddr: c[1] & cmdf::MSIADDR_MASK,
                }
            }
            _ => return None,
        })
    }

    /// The opcode of this command.
    pub const fn opcode(&self) -> u8 {
        match self {
            Command::PrefetchConfig { .. } => op::PREFETCH_CONFIG,
            Command::PrefetchAddr { .. } => op::PREFETCH_ADDR,
            Command::CfgiSte { .. } => op::CFGI_STE,
            Command::CfgiSteRange { .. } => op::CFGI_STE_RANGE,
            Command::CfgiCd { .. } => op::CFGI_CD,
            Command::CfgiCdAll { .. } => op::CFGI_CD_ALL,
            Command::CfgiVmsPidm { .. } => op::CFGI_VMS_PIDM,
            Command::TlbiNhAll { .. } => op::TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => op::TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => op::TLBI_NH_VA,
            Command::TlbiNhVaa { .. } => op::TLBI_NH_VAA,
            Command::TlbiEl3All => op::TLBI_EL3_ALL,
            Command::TlbiEl3Va { .. } => op::TLBI_EL3_VA,
            Command::TlbiEl2All => op::TLBI_EL2_ALL,
            Command::TlbiEl2Asid { .. } => op::TLBI_EL2_ASID,
            Command::TlbiEl2Va { .. } => op::TLBI_EL2_VA,
            Command::TlbiEl2Vaa { .. } => op::TLBI_EL2_VAA,
            Command::TlbiS12Vmall { .. } => op::TLBI_S12_VMALL,
            Command::TlbiS2Ipa { .. } => op::TLBI_S2_IPA,
            Command::TlbiNsnhAll => op::TLBI_NSNH_ALL,
            Command::AtcInv { .. } => op::ATC_INV,
            Command::PriResp { .. } => op::PRI_RESP,
            Command::Resume { .. } => op::RESUME,
            Command::StallTerm { .. } => op::STALL_TERM,
            Command::Sync { .. } => op::SYNC,
        }
    }

    /// The canonical encoding: the opcode and this command's fields, every other bit zero.
    pub fn encode(&self) -> Cmd {
        let opc = self.opcode() as u64;
        let sid_w = |sid: u32| (sid as u64) << cmdf::SID_SHIFT;
        let vmid_w = |vmid: u16| (vmid as u64) << cmdf::VMID_SHIFT;
        let asid_w = |asid: u16| (asid as u64) << cmdf::ASID_SHIFT;
        let (w0, w1) = match *self {
            Command::PrefetchConfig { sid, ssid } => (sid_w(sid) | ssid_bits(ssid), 0),
            Command::PrefetchAddr { sid, ssid, size, addr } => {
                (sid_w(sid) | ssid_bits(ssid), (addr & cmdf::VA_MASK) | (size as u64 & cmdf::RANGE_MASK))
            }
            Command::CfgiSte { sid, leaf } => (sid_w(sid), leaf as u64),
            Command::CfgiSteRange { sid, range } => (sid_w(sid), range as u64 & cmdf::RANGE_MASK),
            Command::CfgiCd { sid, ssid, leaf } => {
                (sid_w(sid) | ((ssid as u64 & cmdf::SSID_MASK) << cmdf::SSID_SHIFT), leaf as u64)
            }
            Command::CfgiCdAll { sid } => (sid_w(sid), 0),
            Command::CfgiVmsPidm { vmid } | Command::TlbiNhAll { vmid } | Command::TlbiS12Vmall { vmid } => {
                (vmid_w(vmid), 0)
            }
            Command::TlbiNhAsid { vmid, asid } => (vmid_w(vmid) | asid_w(asid), 0),
            Command::TlbiNhVa { vmid, asid, at } => {
                let (a0, a1) = at.encode(cmdf::VA_MASK);
                (vmid_w(vmid) | asid_w(asid) | a0, a1)
            }
            Command::TlbiNhVaa { vmid, at } => {
                let (a0, a1) = at.encode(cmdf::VA_MASK);
                (vmid_w(vmid) | a0, a1)
            }
            Command::TlbiEl3All | Command::TlbiEl2All | Command::TlbiNsnhAll => (0, 0),
            Command::TlbiEl3Va { at } | Command::TlbiEl2Vaa { at } => at.encode(cmdf::VA_MASK),
            Command::TlbiEl2Asid { asid } => (asid_w(asid), 0),
            Command::TlbiEl2Va { asid, at } => {
                let (a0, a1) = at.encode(cmdf::VA_MASK);
                (asid_w(asid) | a0, a1)
            }
            Command::TlbiS2Ipa { vmid, at } => {
                let (a0, a1) = at.encode(cmdf::IPA_MASK);
                (vmid_w(vmid) | a0, a1)
            }
            Command::AtcInv { sid, ssid, global, size, addr } => (
                sid_w(sid) | ssid_bits(ssid) | if global { cmdf::ATC_GLOBAL } else { 0 },
                (addr & cmdf::VA_MASK) | (size as u64 & cmdf::ATC_SIZE_MASK),
            ),
            Command::PriResp { sid, ssid, grpid, resp } => (
                sid_w(sid) | ssid_bits(ssid),
                (grpid as u64 & cmdf::PRI_GRPID_MASK) | ((resp as u64 & 3) << cmdf::CS_SHIFT),
            ),
            Command::Resume { sid, resp, stag } => (sid_w(sid) | ((resp as u64 & 3) << cmdf::CS_SHIFT), stag as u64),
            Command::StallTerm { sid } => (sid_w(sid), 0),
            Command::Sync { cs, msh, msiattr, msidata, msiaddr } => {
                let cs = match cs {
                    SyncCs::None => 0u64,
                    SyncCs::Irq => 1,
                    SyncCs::Sev => 2,
                };
                (
                    (cs << cmdf::CS_SHIFT)
                        | ((msh as u64 & 3) << cmdf::MSH_SHIFT)
                        | ((msiattr as u64 & 0xf) << cmdf::MSIATTR_SHIFT)
                        | ((msidata as u64) << 32),
                    msiaddr & cmdf::MSIADDR_MASK,
                )
            }
        };
        [opc | w0, w1]
    }
}

/// STE fields the shadow transform reads or writes (IHI 0070 5.2), beyond [`ste`].
pub mod stef {
    /// dword 0 bits \[5:4\]: S1Fmt.
    pub const S1FMT_MASK: u64 = 0b11 << 4;
    /// dword 0 bits \[51:6\]: S1ContextPtr.
    pub const S1CTXPTR_MASK: u64 = ((1 << 52) - 1) & !0x3f;
    /// dword 0 bits \[63:59\]: S1CDMax.
    pub const S1CDMAX_MASK: u64 = 0x1f << 59;
    /// dword 1 bits \[1:0\], \[3:2\], \[5:4\], \[7:6\]: S1DSS, S1CIR, S1COR, S1CSH.
    pub const S1DSS_MASK: u64 = 0b11;
    pub const S1CIR_MASK: u64 = 0b11 << 2;
    pub const S1COR_MASK: u64 = 0b11 << 4;
    pub const S1CSH_MASK: u64 = 0b11 << 6;
    /// dword 1 bit 27: S1STALLD, stall faults of stage 1 disabled.
    pub const S1STALLD: u64 = 1 << 27;
    /// dword 1 bits \[29:28\]: EATS (ATS translated requests).
    pub const EATS_MASK: u64 = 0b11 << 28;
    /// dword 1 bits \[31:30\]: STRW (StreamWorld); 0b00 = NS-EL1.
    pub const STRW_MASK: u64 = 0b11 << 30;
    /// dword 1 bits \[45:44\]: SHCFG.
    pub const SHCFG_MASK: u64 = 0b11 << 44;
}

/// The stage-1 fields of dword 0 an STE may carry into a nested shadow: S1Fmt, S1ContextPtr
/// (an IPA once stage 2 is on), S1CDMax.
pub const fn ste_s1_dw0(s: &Ste) -> u64 {
    s[0] & (stef::S1FMT_MASK | stef::S1CTXPTR_MASK | stef::S1CDMAX_MASK)
}

/// The dword-1 fields a shadow keeps: S1DSS, S1CIR, S1COR, S1CSH and SHCFG (S1STALLD is
/// decided by the shadow transform).
pub const fn ste_dw1_kept(s: &Ste) -> u64 {
    s[1] & (stef::S1DSS_MASK | stef::S1CIR_MASK | stef::S1COR_MASK | stef::S1CSH_MASK | stef::SHCFG_MASK)
}

/// EATS of an STE.
pub const fn ste_eats(s: &Ste) -> u64 {
    (s[1] & stef::EATS_MASK) >> 28
}

/// STRW of an STE.
pub const fn ste_strw(s: &Ste) -> u64 {
    (s[1] & stef::STRW_MASK) >> 30
}

/// S2VMID of an STE.
pub const fn ste_s2vmid(s: &Ste) -> u16 {
    (s[2] & ste::S2VMID_MASK) as u16
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn linux_commands_decode() {
        // CFGI_ALL as Linux issues it at reset, and KCore's own.
        assert_eq!(Command::decode(cmd::cfgi_all()), Some(Command::CfgiSteRange { sid: 0, range: 31 }));
        assert_eq!(Command::decode(cmd::cfgi_ste(0x18)), Some(Command::CfgiSte { sid: 0x18, leaf: true }));
        // CMD_SYNC with CS = SEV (Linux without MSI polling).
        let sync = [op::SYNC as u64 | 2 << 12, 0];
        assert_eq!(
            Command::decode(sync),
            Some(Command::Sync { cs: SyncCs::Sev, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0 })
        );
        // TLBI_NH_VA: ASID 5, VMID 0, leaf, VA 0xffff_e000.
        let va = [op::TLBI_NH_VA as u64 | 5 << 48, 0xffff_e000 | 1];
        let d = Command::decode(va).unwrap();
        assert_eq!(d.encode(), va);
        // Reserved CS and undefined opcodes.
        assert_eq!(Command::decode([op::SYNC as u64 | 3 << 12, 0]), None);
        assert_eq!(Command::decode([0x47, 0]), None);
        assert_eq!(Command::decode([0, 0]), None);
    }

    #[test]
    fn undefined_bits_are_dropped() {
        let noisy = [op::CFGI_STE as u64 | 0x18 << 32 | 0xfff_ff00, 0xffff_ffff_ffff_fff1];
        assert_eq!(Command::decode(noisy).unwrap().encode(), cmd::cfgi_ste(0x18));
    }
}
