//! vCPU registers as the KVM API names them (`KVM_GET/SET_ONE_REG`, `KVM_GET_REG_LIST`; Linux's
//! `arch/arm64/include/uapi/asm/kvm.h` and Documentation/virt/kvm/api.rst, "KVM_SET_ONE_REG"),
//! mapped onto what KCore holds of a non-protected VM's vCPU (GET/SET_VCPU_REG numbers,
//! `docs/ABI.md`) or what the shim answers itself.
//!
//! An arm64 register id is `0x6000_0000_0000_0000 | size << 52 | group << 16 | index`: size
//! 2 (32 bits), 3 (64) or 4 (128); group 0x10 the core registers (`struct kvm_regs`, indexed
//! in 32-bit words), 0x13 the system registers (op0, op1, CRn, CRm, op2 packed in the index).

/// `KVM_REG_ARM64`.
pub const ARM64: u64 = 0x6000_0000_0000_0000;
/// `KVM_REG_SIZE_U32`, `_U64`, `_U128`.
pub const SIZE_U32: u64 = 2 << 52;
/// See [`SIZE_U32`].
pub const SIZE_U64: u64 = 3 << 52;
/// See [`SIZE_U32`].
pub const SIZE_U128: u64 = 4 << 52;
/// `KVM_REG_ARM_CORE`.
pub const CORE: u64 = 0x10 << 16;
/// `KVM_REG_ARM64_SYSREG`.
pub const SYSREG: u64 = 0x13 << 16;

/// The id of core register word `index` (an offset into `struct kvm_regs` in 32-bit words).
pub const fn core(size: u64, index: u64) -> u64 {
    ARM64 | size | CORE | index
}

/// The id of system register (op0, op1, CRn, CRm, op2).
pub const fn sysreg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    ARM64 | SIZE_U64 | SYSREG | (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

/// `KVM_REG_ARM_TIMER_CTL`: the virtual timer's control (CNTV_CTL_EL0).
pub const TIMER_CTL: u64 = sysreg(3, 3, 14, 3, 1);
/// `KVM_REG_ARM_TIMER_CVAL`: its compare value. KVM's uapi gives it CNTV_CVAL_EL0's would-be
/// encoding with CRm 0 (the CNT and CVAL encodings are swapped there, kept for compatibility).
pub const TIMER_CVAL: u64 = sysreg(3, 3, 14, 0, 2);
/// `KVM_REG_ARM_TIMER_CNT`: the guest's virtual counter.
pub const TIMER_CNT: u64 = sysreg(3, 3, 14, 3, 2);
/// MPIDR_EL1.
pub const MPIDR_EL1: u64 = sysreg(3, 0, 0, 0, 5);

/// Where a register lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In KCore's context of the vCPU: GET/SET_VCPU_REG number.
    Kcore(u64),
    /// A 128-bit FP/SIMD register: KCore's numbers of its low and high halves.
    Kcore128(u64, u64),
    /// MPIDR_EL1: the shim answers (KCore gives vCPU n MPIDR 0x8000_0000 | n); writes of that
    /// value are accepted, others refused.
    Mpidr,
    /// An AArch32 banked SPSR (abt, und, irq, fiq): guests have no AArch32 EL1, so these are
    /// zero; writes of zero are accepted (a VMM saves and restores them).
    ZeroSpsr,
    /// `KVM_REG_ARM_TIMER_CNT`, the guest's virtual count: KCore gives every guest
    /// CNTVOFF_EL2 = 0, so it reads as the counter itself; a write (which in KVM moves the
    /// guest's offset) is refused. Not in [`list`], since it does not round-trip.
    Counter,
}

/// A system register's (op0, op1, CRn, CRm, op2).
type Encoding = (u64, u64, u64, u64, u64);

/// The EL1 system registers KCore switches, in its GET/SET_VCPU_REG numbering from 34 (after
/// x0..x30, SP_EL0, PC, PSTATE), with their (op0, op1, CRn, CRm, op2). SP_EL1, ELR_EL1 and
/// SPSR_EL1 (34..=36) are core registers in the KVM API.
const EL1: [(u64, Encoding); 22] = [
    (37, (3, 0, 1, 0, 0)),  // SCTLR_EL1
    (38, (3, 0, 2, 0, 0)),  // TTBR0_EL1
    (39, (3, 0, 2, 0, 1)),  // TTBR1_EL1
    (40, (3, 0, 2, 0, 2)),  // TCR_EL1
    (41, (3, 0, 10, 2, 0)), // MAIR_EL1
    (42, (3, 0, 10, 3, 0)), // AMAIR_EL1
    (43, (3, 0, 12, 0, 0)), // VBAR_EL1
    (44, (3, 0, 13, 0, 1)), // CONTEXTIDR_EL1
    (45, (3, 3, 13, 0, 2)), // TPIDR_EL0
    (46, (3, 0, 13, 0, 4)), // TPIDR_EL1
    (47, (3, 3, 13, 0, 3)), // TPIDRRO_EL0
    (48, (3, 0, 1, 0, 2)),  // CPACR_EL1
    (49, (3, 0, 5, 2, 0)),  // ESR_EL1
    (50, (3, 0, 6, 0, 0)),  // FAR_EL1
    (51, (3, 0, 5, 1, 0)),  // AFSR0_EL1
    (52, (3, 0, 5, 1, 1)),  // AFSR1_EL1
    (53, (3, 0, 7, 4, 0)),  // PAR_EL1
    (54, (3, 0, 14, 1, 0)), // CNTKCTL_EL1
    (55, (3, 2, 0, 0, 0)),  // CSSELR_EL1
    (56, (2, 0, 0, 2, 2)),  // MDSCR_EL1
    (57, (3, 3, 14, 3, 1)), // CNTV_CTL_EL0 (= KVM_REG_ARM_TIMER_CTL)
    (58, (3, 3, 14, 0, 2)), // CNTV_CVAL_EL0 (as KVM_REG_ARM_TIMER_CVAL)
];

/// Core-register word offsets in `struct kvm_regs` (`user_pt_regs` then SP_EL1, ELR_EL1,
/// SPSR[5], then `user_fpsimd_state`).
const CORE_SP: u64 = 0x3e;
const CORE_PC: u64 = 0x40;
const CORE_PSTATE: u64 = 0x42;
const CORE_SP_EL1: u64 = 0x44;
const CORE_ELR_EL1: u64 = 0x46;
const CORE_SPSR: u64 = 0x48;
const CORE_VREGS: u64 = 0x54;
const CORE_FPSR: u64 = 0xd4;
const CORE_FPCR: u64 = 0xd5;

/// Where register `id` lives, or `None` if this shim does not offer it (KVM answers
/// `-ENOENT` for an id that is not in the list).
pub fn place(id: u64) -> Option<Place> {
    let size = id & (0xf << 52);
    let index = id & 0xffff;
    match (id & !(0xf << 52) & !0xffff, size) {
        (x, SIZE_U64) if x == ARM64 | CORE => match index {
            i if i < CORE_SP && i.is_multiple_of(2) => Some(Place::Kcore(i / 2)), // x0..x30
            CORE_SP => Some(Place::Kcore(31)),
            CORE_PC => Some(Place::Kcore(32)),
            CORE_PSTATE => Some(Place::Kcore(33)),
            CORE_SP_EL1 => Some(Place::Kcore(34)),
            CORE_ELR_EL1 => Some(Place::Kcore(35)),
            CORE_SPSR => Some(Place::Kcore(36)), // SPSR_EL1
            i if i > CORE_SPSR && i < CORE_VREGS && i.is_multiple_of(2) => Some(Place::ZeroSpsr),
            _ => None,
        },
        (x, SIZE_U128) if x == ARM64 | CORE => match index {
            i if (CORE_VREGS..CORE_FPSR).contains(&i) && (i - CORE_VREGS).is_multiple_of(4) => {
                let n = (i - CORE_VREGS) / 4;
                Some(Place::Kcore128(64 + 2 * n, 65 + 2 * n))
            }
            _ => None,
        },
        (x, SIZE_U32) if x == ARM64 | CORE => match index {
            CORE_FPSR => Some(Place::Kcore(128)),
            CORE_FPCR => Some(Place::Kcore(129)),
            _ => None,
        },
        (x, SIZE_U64) if x == ARM64 | SYSREG => {
            if id == MPIDR_EL1 {
                return Some(Place::Mpidr);
            }
            if id == TIMER_CNT {
                return Some(Place::Counter);
            }
            EL1.iter().find(|(_, r)| sysreg(r.0, r.1, r.2, r.3, r.4) == id).map(|(n, _)| Place::Kcore(*n))
        }
        _ => None,
    }
}

/// Every register id this shim offers (`KVM_GET_REG_LIST`), in the order it lists them: the
/// core registers, then MPIDR_EL1 and the EL1 system registers. Each one round-trips through
/// [`place`].
pub fn list() -> impl Iterator<Item = u64> {
    let gprs = (0..31).map(|n| core(SIZE_U64, 2 * n));
    let specials = [CORE_SP, CORE_PC, CORE_PSTATE, CORE_SP_EL1, CORE_ELR_EL1].map(|i| core(SIZE_U64, i));
    let spsrs = (0..5).map(|n| core(SIZE_U64, CORE_SPSR + 2 * n));
    let vregs = (0..32).map(|n| core(SIZE_U128, CORE_VREGS + 4 * n));
    let fp = [CORE_FPSR, CORE_FPCR].map(|i| core(SIZE_U32, i));
    let sys = core::iter::once(MPIDR_EL1).chain(EL1.iter().map(|(_, r)| sysreg(r.0, r.1, r.2, r.3, r.4)));
    gprs.chain(specials).chain(spsrs).chain(vregs).chain(fp).chain(sys)
}

/// How many registers [`list`] gives.
pub const LIST_LEN: usize = 31 + 5 + 5 + 32 + 2 + 1 + 22;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_qemu_uses_map_where_expected() {
        // The ids stock QEMU and kvmtool set and get at start-up (reference: kvm-api-surface).
        assert_eq!(place(0x6030_0000_0010_0042), Some(Place::Kcore(33)), "pstate");
        assert_eq!(place(0x6030_0000_0010_0000), Some(Place::Kcore(0)), "x0");
        assert_eq!(place(0x6030_0000_0010_0006), Some(Place::Kcore(3)), "x3");
        assert_eq!(place(0x6030_0000_0010_003c), Some(Place::Kcore(30)), "x30");
        assert_eq!(place(0x6030_0000_0010_0040), Some(Place::Kcore(32)), "pc");
        assert_eq!(place(0x6030_0000_0010_0044), Some(Place::Kcore(34)), "sp_el1");
        assert_eq!(place(0x6030_0000_0013_c005), Some(Place::Mpidr), "MPIDR_EL1");
        assert_eq!(place(0x6030_0000_0013_c080), Some(Place::Kcore(37)), "SCTLR_EL1");
        assert_eq!(place(0x6020_0000_0010_00d4), Some(Place::Kcore(128)), "fpsr");
        assert_eq!(place(0x6020_0000_0010_00d5), Some(Place::Kcore(129)), "fpcr");
        assert_eq!(place(0x6040_0000_0010_0054), Some(Place::Kcore128(64, 65)), "V0");
        assert_eq!(place(0x6040_0000_0010_00d0), Some(Place::Kcore128(126, 127)), "V31");
        assert_eq!(TIMER_CNT, 0x6030_0000_0013_df1a);
        assert_eq!(place(TIMER_CTL), Some(Place::Kcore(57)));
        assert_eq!(place(TIMER_CVAL), Some(Place::Kcore(58)));
        assert_eq!(place(0x6030_0000_0010_004a), Some(Place::ZeroSpsr), "spsr[1]");
        assert_eq!(place(TIMER_CNT), Some(Place::Counter), "read by QEMU whenever the VM stops");
        assert!(!list().any(|id| id == TIMER_CNT), "listed ids must round-trip");
    }

    #[test]
    fn malformed_ids_are_not_registers() {
        assert_eq!(place(0x6030_0000_0010_0001), None, "odd word of x0");
        assert_eq!(place(0x6020_0000_0010_0000), None, "x0 as 32 bits");
        assert_eq!(place(0x6040_0000_0010_0056), None, "inside V0");
        assert_eq!(place(0x6030_0000_0010_00d4), None, "fpsr as 64 bits");
        assert_eq!(place(0x6030_0000_0014_0000), None, "firmware pseudo-registers are not offered yet");
        assert_eq!(place(0x4030_0000_0010_0000), None, "not arm64");
        assert_eq!(place(0), None);
        assert_eq!(place(u64::MAX), None);
    }

    #[test]
    fn kcore_numbers_name_the_same_registers() {
        // KCore's numbering (docs/ABI.md) is its context layout: check it names what the
        // table says, so the two cannot drift apart.
        let names = [
            "sctlr_el1",
            "ttbr0_el1",
            "ttbr1_el1",
            "tcr_el1",
            "mair_el1",
            "amair_el1",
            "vbar_el1",
            "contextidr_el1",
            "tpidr_el0",
            "tpidr_el1",
            "tpidrro_el0",
            "cpacr_el1",
            "esr_el1",
            "far_el1",
            "afsr0_el1",
            "afsr1_el1",
            "par_el1",
            "cntkctl_el1",
            "csselr_el1",
            "mdscr_el1",
            "cntv_ctl_el0",
            "cntv_cval_el0",
        ];
        assert_eq!(kcore::vcpu::slot::SYSREGS, 34);
        for ((n, _), name) in EL1.iter().zip(names) {
            assert_eq!(kcore::vcpu::EL1_SYSREGS[(*n - 34) as usize].name(), name);
        }
        assert_eq!(kcore::vcpu::EL1_SYSREGS[0].name(), "sp_el1");
        assert_eq!(kcore::vcpu::EL1_SYSREGS[1].name(), "elr_el1");
        assert_eq!(kcore::vcpu::EL1_SYSREGS[2].name(), "spsr_el1");
        assert_eq!(kcore::vcpu::slot::FP, 64);
    }

    #[test]
    fn the_list_round_trips() {
        let ids: std::vec::Vec<u64> = list().collect();
        assert_eq!(ids.len(), LIST_LEN);
        let mut kcore_regs = std::collections::BTreeSet::new();
        for id in &ids {
            match place(*id) {
                Some(Place::Kcore(n)) => assert!(kcore_regs.insert(n), "{id:#x} maps to {n} twice"),
                Some(Place::Kcore128(lo, hi)) => assert!(kcore_regs.insert(lo) && kcore_regs.insert(hi)),
                Some(_) => {}
                None => panic!("{id:#x} is listed but has no place"),
            }
        }
        // Every register KCore offers a VMM is listed once: x0..x30, SP_EL0, PC, PSTATE, the
        // 25 EL1 registers, the q registers, FPSR, FPCR.
        let expected: std::collections::BTreeSet<u64> = (0..=58).chain(64..=129).collect();
        assert_eq!(kcore_regs, expected);
    }
}

/// [`place`] for the module's C glue, packed in one word: 0 for no such register, else the
/// kind in bits 63:56 (1 KCore register `lo`, 2 a 128-bit register in KCore's `lo` and `hi`,
/// 3 MPIDR_EL1, 4 an AArch32 banked SPSR, 5 the virtual counter) with `hi` in bits 31:16 and `lo` in bits 15:0.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_reg_place(id: u64) -> u64 {
    match place(id) {
        None => 0,
        Some(Place::Kcore(n)) => (1 << 56) | n,
        Some(Place::Kcore128(lo, hi)) => (2 << 56) | (hi << 16) | lo,
        Some(Place::Mpidr) => 3 << 56,
        Some(Place::ZeroSpsr) => 4 << 56,
        Some(Place::Counter) => 5 << 56,
    }
}

/// `KVM_GET_REG_LIST` for the module's glue: how many ids [`list`] gives.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_reg_list_len() -> u64 {
    LIST_LEN as u64
}

/// The `i`th id of [`list`], or 0 past its end.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_reg_list_at(i: u64) -> u64 {
    usize::try_from(i).ok().and_then(|i| list().nth(i)).unwrap_or(0)
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    #[test]
    fn packed_places() {
        assert_eq!(kserv_core_reg_place(0x6030_0000_0010_0040), (1 << 56) | 32);
        assert_eq!(kserv_core_reg_place(0x6040_0000_0010_0058), (2 << 56) | (67 << 16) | 66, "V1");
        assert_eq!(kserv_core_reg_place(MPIDR_EL1), 3 << 56);
        assert_eq!(kserv_core_reg_place(TIMER_CNT), 5 << 56);
        assert_eq!(kserv_core_reg_place(1), 0);
    }

    #[test]
    fn the_list_by_index() {
        let n = kserv_core_reg_list_len();
        assert_eq!(n as usize, list().count());
        assert!((0..n).all(|i| kserv_core_reg_list_at(i) == list().nth(i as usize).unwrap()));
        assert!((0..n).all(|i| kserv_core_reg_place(kserv_core_reg_list_at(i)) != 0));
        assert_eq!(kserv_core_reg_list_at(n), 0);
        assert_eq!(kserv_core_reg_list_at(u64::MAX), 0);
    }
}
