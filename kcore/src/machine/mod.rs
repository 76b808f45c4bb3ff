//! Layer 0 (AbstractMachine): the single hardware seam.
//!
//! Everything KCore does to the machine goes through [`Machine`]: 64-bit loads and stores of
//! physical memory (page tables and ownership metadata live in KCore-owned RAM and are reached
//! only this way), page zeroing and cache maintenance, and stage-2 TLB invalidation. On the
//! target, [`hw::Hardware`] does it with KCore's EL2 identity map and real instructions; on the
//! development machine [`sim::SimMachine`] keeps memory in a buffer and records every TLB
//! invalidation so tests can check it happened.

/// Calls `$m!` with every system register KCore reads or writes, as `Variant "assembler
/// name"` pairs in [`SysReg`] order. The first 25 are a vCPU's EL1 state in context-page
/// order (`crate::vcpu::EL1_SYSREGS`), then SP_EL0; the rest in any order.
macro_rules! with_sysregs {
    ($m:ident) => {
        $m! {
            SpEl1 "sp_el1", ElrEl1 "elr_el1", SpsrEl1 "spsr_el1", SctlrEl1 "sctlr_el1",
            Ttbr0El1 "ttbr0_el1", Ttbr1El1 "ttbr1_el1", TcrEl1 "tcr_el1", MairEl1 "mair_el1",
            AmairEl1 "amair_el1", VbarEl1 "vbar_el1", ContextidrEl1 "contextidr_el1",
            TpidrEl0 "tpidr_el0", TpidrEl1 "tpidr_el1", TpidrroEl0 "tpidrro_el0",
            CpacrEl1 "cpacr_el1", EsrEl1 "esr_el1", FarEl1 "far_el1", Afsr0El1 "afsr0_el1",
            Afsr1El1 "afsr1_el1", ParEl1 "par_el1", CntkctlEl1 "cntkctl_el1",
            CsselrEl1 "csselr_el1", MdscrEl1 "mdscr_el1", CntvCtlEl0 "cntv_ctl_el0",
            CntvCvalEl0 "cntv_cval_el0",
            SpEl0 "sp_el0",
            // GICv3 CPU interface registers by encoding (GIC architecture specification,
            // chapter 12): ICC_SRE_EL1, ICH_LR<0-3>_EL2, ICH_VMCR_EL2, ICH_HCR_EL2,
            IccSreEl1 "S3_0_C12_C12_5", IchLr0El2 "S3_4_C12_C12_0", IchLr1El2 "S3_4_C12_C12_1",
            IchLr2El2 "S3_4_C12_C12_2", IchLr3El2 "S3_4_C12_C12_3", IchVmcrEl2 "S3_4_C12_C11_7",
            IchHcrEl2 "S3_4_C12_C11_0",
            // ICH_VTR_EL2 (how many preemption bits, so how many active-priority registers)
            // and the active-priority registers ICH_AP0R<0-3>_EL2, ICH_AP1R<0-3>_EL2.
            IchVtrEl2 "S3_4_C12_C11_1",
            IchAp0r0El2 "S3_4_C12_C8_0", IchAp0r1El2 "S3_4_C12_C8_1", IchAp0r2El2 "S3_4_C12_C8_2",
            IchAp0r3El2 "S3_4_C12_C8_3", IchAp1r0El2 "S3_4_C12_C9_0", IchAp1r1El2 "S3_4_C12_C9_1",
            IchAp1r2El2 "S3_4_C12_C9_2", IchAp1r3El2 "S3_4_C12_C9_3",
            // EL2's own: the exception being handled, and the world-switch controls.
            ElrEl2 "elr_el2", SpsrEl2 "spsr_el2", EsrEl2 "esr_el2", FarEl2 "far_el2",
            HpfarEl2 "hpfar_el2", HcrEl2 "hcr_el2", VttbrEl2 "vttbr_el2", CptrEl2 "cptr_el2",
            CnthctlEl2 "cnthctl_el2", VmpidrEl2 "vmpidr_el2",
            // The EL2 physical timer (Arm ARM D12.8): KCore's alarm for the host's deadline
            // while a guest runs.
            CnthpCtlEl2 "cnthp_ctl_el2", CnthpCvalEl2 "cnthp_cval_el2",
            // Trap controls switched for guests: MDCR_EL2 always; HFGRTR_EL2, HFGWTR_EL2
            // (FEAT_FGT) and HCRX_EL2 (FEAT_HCX) only where they exist. MDSCR_EL1 is also
            // reached directly when a guest's access to it traps. SVCR (FEAT_SME) is read
            // before a guest runs.
            MdcrEl2 "mdcr_el2", HfgrtrEl2 "S3_4_C1_C1_4", HfgwtrEl2 "S3_4_C1_C1_5",
            HcrxEl2 "S3_4_C1_C2_2", SvcrEl0 "S3_3_C4_C2_2",
            // FEAT_MTE2's state registers, switched where it exists: TFSR_EL1, TFSRE0_EL1
            // (tag-check fault status), RGSR_EL1 (random tag seed), GCR_EL1 (tag control).
            TfsrEl1 "S3_0_C5_C6_0", Tfsre0El1 "S3_0_C5_C6_1", RgsrEl1 "S3_0_C1_C0_5", GcrEl1 "S3_0_C1_C0_6"
        }
    };
}

macro_rules! declare_sysregs {
    ($($v:ident $name:literal),* $(,)?) => {
        /// A system register KCore reads or writes through [`Machine::read_sysreg`] and
        /// [`Machine::write_sysreg`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum SysReg {
            $(#[doc = concat!("`", $name, "`")] $v,)*
        }

        impl SysReg {
            /// Every register, in order.
            pub const ALL: &'static [SysReg] = &[$(SysReg::$v,)*];

            /// The register's name as the assembler knows it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(SysReg::$v => $name,)*
                }
            }
        }
    };
}

with_sysregs!(declare_sysregs);

/// How many [`SysReg`]s there are.
pub const SYSREG_COUNT: usize = SysReg::ALL.len();

/// A CPU's FP/SIMD registers as KCore stores them: q0..q31 (two words each, low first), then
/// FPSR and FPCR.
pub type FpRegs = [u64; FP_WORDS];
/// Words in [`FpRegs`].
pub const FP_WORDS: usize = 66;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hw;
#[cfg(not(target_os = "none"))]
pub mod sim;
#[cfg(not(target_os = "none"))]
pub mod simsmmu;

/// What a CPU does on each turn of a wait for another CPU (a ticket not yet served): YIELD
/// at EL2, the standard hint elsewhere.
#[inline(always)]
pub fn spin_wait_hint() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    hw::yield_hint();
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    core::hint::spin_loop();
}

/// The stage-2 VMID KCore gives the host. VMs get 1.. .
pub const HOST_VMID: u16 = 0;

/// The hardware operations the layers above are built on.
///
/// Physical addresses passed here are always inside KCore's view of RAM and 8-byte aligned for
/// word accesses; callers above check that before calling (a bad address is a KCore bug, and
/// implementations halt on it).
pub trait Machine: Sync {
    /// Load the 64-bit word at physical address `pa`.
    fn load(&self, pa: u64) -> u64;
    /// Store `val` to the 64-bit word at physical address `pa`.
    fn store(&self, pa: u64, val: u64);
    /// Zero the 4 KiB page at `pa` and clean it to the point of coherency, so a later
    /// non-cacheable observer (DMA, a guest with caches off) sees zeros.
    fn zero_page(&self, pa: u64);
    /// Make prior page-table stores visible to the table walkers of all CPUs
    /// (`DSB ISHST`; Arm ARM D8.2.6, "Ordering of translation table updates").
    fn publish_table_writes(&self);
    /// Invalidate stage-2 (and combined stage-1+2) TLB entries for `ipa` in `vmid`, on all CPUs
    /// of the inner-shareable domain, and wait for completion.
    fn tlb_flush_ipa(&self, vmid: u16, ipa: u64);
    /// Invalidate all stage-1+2 TLB entries of `vmid` on all CPUs, and wait for completion.
    fn tlb_flush_vmid(&self, vmid: u16);
    /// The index of the executing CPU (0.. as KCore numbered them at boot).
    fn cpu_index(&self) -> usize;
    /// Read system register `r` of the executing CPU.
    fn read_sysreg(&self, r: SysReg) -> u64;
    /// Write system register `r` of the executing CPU. Writes that change how the CPU
    /// executes take effect after [`Machine::sync_context`].
    fn write_sysreg(&self, r: SysReg, val: u64);
    /// Context synchronisation (`ISB`): prior system-register writes take effect.
    fn sync_context(&self);
    /// Store the executing CPU's FP/SIMD registers in `dst`.
    fn fp_save(&self, dst: &mut FpRegs);
    /// Load the executing CPU's FP/SIMD registers from `src`.
    fn fp_load(&self, src: &FpRegs);
    /// Store the executing CPU's FP/SIMD registers in KCore memory at `pa`
    /// ([`FP_WORDS`] words, 16-byte aligned).
    fn fp_save_to(&self, pa: u64);
    /// Load the executing CPU's FP/SIMD registers from KCore memory at `pa`.
    fn fp_load_from(&self, pa: u64);
    /// Enable private interrupt `intid` (a PPI, 16..32) of the executing CPU: in its GICv3
    /// redistributor (GICR_ISENABLER0), or on a GICv2 in the distributor's banked
    /// GICD_ISENABLER0 (GIC architecture v2, 4.3.5). Write-one-to-set either way, so a host
    /// that configures the same registers loses nothing.
    fn enable_private_irq(&self, intid: u32);
    /// Read the 32-bit register at offset `off` of the executing CPU's GICv2 virtual
    /// interface control frame (GICH, banked per CPU; GIC architecture v2, 5.3). Only on a
    /// GICv2 machine (a call elsewhere is a KCore bug, and implementations halt on it).
    fn gich_read(&self, off: u64) -> u32;
    /// Write the 32-bit register at offset `off` of the executing CPU's GICH frame.
    fn gich_write(&self, off: u64, val: u32);
    /// Read the `bytes`-wide (4 or 8) register at offset `off` of the SMMUv3 KCore took at
    /// boot (its two 64 KiB pages; IHI 0070 6.2). Only on a machine with one (a call
    /// elsewhere, or a bad offset or size, is a KCore bug, and implementations halt on it).
    fn smmu_read(&self, off: u64, bytes: u8) -> u64;
    /// Write the `bytes`-wide (4 or 8) SMMU register at offset `off`.
    fn smmu_write(&self, off: u64, bytes: u8, val: u64);
    /// Make shared peripheral interrupt `intid` (32..1020) pending in the GIC distributor
    /// (GICD_ISPENDR<n>, write-one-to-set; GICv3 12.9.23, GIC v2 4.3.7): how KCore signals
    /// the host an interrupt a device it emulates would raise.
    fn pend_spi(&self, intid: u32);
}
