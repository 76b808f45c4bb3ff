//! Per-CPU EL2 state: feature discovery, KCore's MMU, and the EL2 configuration an EL1 host
//! needs (mirroring what Linux's `init_el2_state` does when it boots at EL2, and the "entered
//! at EL1" requirements of Documentation/arch/arm64/booting.rst). Nothing is left to reset
//! values: on hardware they are UNKNOWN.

use crate::sysreg::{isb, read_sysreg, write_sysreg};
use aarch64_cpu::registers::{
    ID_AA64DFR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64PFR0_EL1, MIDR_EL1, MPIDR_EL1,
    TPIDR_EL2,
};
use bitflags::bitflags;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::arch;
use kcore::locks::locks::MAX_CPUS;
use tock_registers::interfaces::Readable;

bitflags! {
    /// HCR_EL2 bits KCore sets for the host (Arm ARM D17.2.48).
    #[derive(Clone, Copy, Debug)]
    pub struct Hcr: u64 {
        /// Stage-2 translation on.
        const VM = 1 << 0;
        /// Trap SMC to EL2 (the PSCI proxy).
        const TSC = 1 << 19;
        /// EL1 is AArch64.
        const RW = 1 << 31;
        /// Do not trap pointer-authentication key registers.
        const APK = 1 << 40;
        /// Do not trap pointer-authentication instructions.
        const API = 1 << 41;
        /// Allocation tag access at EL1/EL0 (FEAT_MTE2): the host may use MTE as on bare
        /// metal; with it clear its MTE register accesses would trap (guests run with it clear).
        const ATA = 1 << 56;
    }
}

/// CPU features that decide which registers exist.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// ID_AA64MMFR0_EL1.PARange.
    pub parange: u64,
    /// Physical address bits.
    pub pa_bits: u32,
    vmid16: bool,
    pauth: bool,
    hcx: bool,
    mops: bool,
    tcr2: bool,
    sctlr2: bool,
    fgt: bool,
    sve: bool,
    sme: bool,
    mte2: bool,
    gicv3: bool,
    pmu: bool,
    spe: bool,
    trbe: bool,
}

fn field(reg: u64, shift: u32) -> u64 {
    (reg >> shift) & 0xf
}

impl Features {
    /// Read this CPU's ID registers.
    pub fn read() -> Features {
        let mmfr0 = ID_AA64MMFR0_EL1.get();
        let mmfr1 = ID_AA64MMFR1_EL1.get();
        let mmfr3 = read_sysreg!("S3_0_C0_C7_3"); // ID_AA64MMFR3_EL1
        let isar1 = ID_AA64ISAR1_EL1.get();
        let isar2 = read_sysreg!("S3_0_C0_C6_2"); // ID_AA64ISAR2_EL1
        let pfr0 = ID_AA64PFR0_EL1.get();
        let pfr1 = read_sysreg!("id_aa64pfr1_el1");
        let dfr0 = ID_AA64DFR0_EL1.get();
        let parange = field(mmfr0, 0);
        let pmuver = field(dfr0, 8);
        Features {
            parange,
            pa_bits: arch::pa_range_bits(parange),
            vmid16: field(mmfr1, 4) == 2,
            // APA, API, GPA, GPI (ISAR1) or APA3, GPA3 (ISAR2).
            pauth: field(isar1, 4)
                | field(isar1, 8)
                | field(isar1, 24)
                | field(isar1, 28)
                | field(isar2, 12)
                | field(isar2, 8)
                != 0,
            hcx: field(mmfr1, 40) != 0,
            mops: field(isar2, 16) != 0,
            tcr2: field(mmfr3, 0) != 0,
            sctlr2: field(mmfr3, 4) != 0,
            fgt: field(mmfr0, 56) != 0,
            sve: field(pfr0, 32) != 0,
            sme: field(pfr1, 24) != 0,
            mte2: field(pfr1, 8) >= 2,
            gicv3: field(pfr0, 24) != 0,
            pmu: pmuver != 0 && pmuver != 0xf,
            spe: field(dfr0, 32) != 0,
            trbe: field(dfr0, 44) != 0,
        }
    }
}

/// Read the 56 ID registers HCR_EL2.TID3 traps for guests (op0 3, op1 0, CRn 0, CRm 1..=7,
/// op2 0..=7), in `kcore::vcpu::guestcpu::id_index` order. Unallocated encodings in this space
/// read as zero (Arm ARM D23.3.1).
pub fn read_id_regs() -> [u64; kcore::vcpu::guestcpu::ID_REGS] {
    macro_rules! ids {
        ($($crm:literal: $($op2:literal)*;)*) => {{
            let mut r = [0u64; kcore::vcpu::guestcpu::ID_REGS];
            $($({
                let v: u64;
                // SAFETY: reading an ID register at EL2 has no side effects.
                unsafe {
                    core::arch::asm!(concat!("mrs {}, S3_0_C0_C", $crm, "_", $op2), out(reg) v,
                        options(nomem, nostack, preserves_flags))
                };
                r[($crm - 1) * 8 + $op2] = v;
            })*)*
            r
        }};
    }
    ids! {
        1: 0 1 2 3 4 5 6 7;
        2: 0 1 2 3 4 5 6 7;
        3: 0 1 2 3 4 5 6 7;
        4: 0 1 2 3 4 5 6 7;
        5: 0 1 2 3 4 5 6 7;
        6: 0 1 2 3 4 5 6 7;
        7: 0 1 2 3 4 5 6 7;
    }
}

/// EL2 register values shared by all CPUs, computed once by the boot CPU.
#[derive(Clone, Copy, Debug)]
pub struct El2Regs {
    ttbr0_el2: u64,
    tcr_el2: u64,
    vtcr_el2: u64,
    vttbr_el2: u64,
    hcr_el2: u64,
}

impl El2Regs {
    /// Values for KCore's EL2 table at `el2_root` and the host stage-2 at `host_root`.
    pub fn new(f: &Features, el2_root: u64, host_root: u64, ipa_bits: u32) -> El2Regs {
        let mut hcr = Hcr::RW | Hcr::TSC | Hcr::VM;
        if f.pauth {
            hcr |= Hcr::API | Hcr::APK;
        }
        if f.mte2 {
            hcr |= Hcr::ATA;
        }
        El2Regs {
            ttbr0_el2: el2_root,
            tcr_el2: arch::tcr_el2(f.pa_bits),
            vtcr_el2: arch::vtcr_el2(ipa_bits, f.vmid16),
            vttbr_el2: arch::vttbr_el2(host_root, kcore::machine::HOST_VMID),
            hcr_el2: hcr.bits(),
        }
    }
}

/// SCTLR_EL2 RES1 bits (4, 5, 11, 16, 18, 22, 23, 28, 29).
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// SCTLR_EL2: M (MMU), C (data cache), SA (stack alignment check), I (instruction cache),
/// WXN (writable implies never-execute).
const SCTLR_EL2_ON: u64 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12) | (1 << 19);

/// Turn on KCore's EL2 MMU with the shared identity map.
pub fn enable_mmu(r: &El2Regs) {
    write_sysreg!("mair_el2", arch::mair::VALUE);
    write_sysreg!("tcr_el2", r.tcr_el2);
    write_sysreg!("ttbr0_el2", r.ttbr0_el2);
    isb();
    // SAFETY: invalidating EL2 TLB entries and barriers have no memory-safety preconditions;
    // nothing of the new map can be cached yet.
    unsafe { core::arch::asm!("dsb ish", "tlbi alle2", "dsb ish", "isb", options(nostack)) };
    write_sysreg!("sctlr_el2", SCTLR_EL2_RES1 | SCTLR_EL2_ON);
    isb();
}

/// Program the EL2 controls for an EL1 host on this CPU (traps off except SMC; timers, GIC
/// system registers, FP/SVE/SME, debug and fine-grained traps opened to EL1).
pub fn setup_host_el2(f: &Features) {
    // CPTR_EL2 (E2H = 0): RES1 bits 13, 9, 7:0; TFP, TZ, TSM, TTA, TAM, TCPAC all 0.
    write_sysreg!("cptr_el2", 0x22ff);
    isb();
    if f.sve {
        write_sysreg!("S3_4_C1_C2_0", 0xf); // ZCR_EL2.LEN: the largest vector length for EL1
    }
    if f.sme {
        write_sysreg!("S3_4_C1_C2_6", (1 << 31) | 0xf); // SMCR_EL2: FA64 | LEN
    }
    if f.hcx {
        let mut hcrx = 0u64;
        if f.mops {
            hcrx |= 1 << 11; // MSCEn: memcpy/memset instructions at EL0/EL1 (kernels >= 6.5)
        }
        if f.tcr2 {
            hcrx |= 1 << 14; // TCR2En
        }
        if f.sctlr2 {
            hcrx |= 1 << 15; // SCTLR2En
        }
        write_sysreg!("S3_4_C1_C2_2", hcrx); // HCRX_EL2
    }
    if f.fgt {
        // Fine-grained traps all off; with SME the negative-polarity nSMPRI_EL1 (54) and
        // nTPIDR2_EL0 (55) bits must be set to not trap.
        let n_bits = if f.sme { (1 << 54) | (1 << 55) } else { 0 };
        write_sysreg!("S3_4_C1_C1_4", n_bits); // HFGRTR_EL2
        write_sysreg!("S3_4_C1_C1_5", n_bits); // HFGWTR_EL2
        write_sysreg!("S3_4_C1_C1_6", 0); // HFGITR_EL2
        write_sysreg!("S3_4_C3_C1_4", 0); // HDFGRTR_EL2
        write_sysreg!("S3_4_C3_C1_5", 0); // HDFGWTR_EL2
    }
    // EL1 may use the physical counter and timer; no virtual offset. KCore's own timer (the
    // EL2 physical timer, armed only while a guest runs) starts off.
    write_sysreg!("cnthctl_el2", 0b11);
    write_sysreg!("cntvoff_el2", 0);
    write_sysreg!("cnthp_ctl_el2", 0);
    if f.gicv3 {
        // ICC_SRE_EL2: SRE | DFB | DIB | Enable (lower ELs may use the system registers).
        write_sysreg!("S3_4_C12_C9_5", 0xf);
        isb();
        write_sysreg!("S3_4_C12_C11_0", 0); // ICH_HCR_EL2: no virtual CPU interface for the host
    }
    let mut mdcr = 0u64;
    if f.pmu {
        mdcr |= (read_sysreg!("pmcr_el0") >> 11) & 0x1f; // HPMN = PMCR_EL0.N: all counters to EL1
    }
    if f.spe {
        mdcr |= 0b11 << 12; // E2PB: the profiling buffer belongs to EL1
    }
    if f.trbe {
        mdcr |= 0b11 << 24; // E2TB: the trace buffer belongs to EL1
    }
    write_sysreg!("mdcr_el2", mdcr);
    write_sysreg!("hstr_el2", 0);
    write_sysreg!("vpidr_el2", MIDR_EL1.get());
    write_sysreg!("vmpidr_el2", MPIDR_EL1.get());
    // SCTLR_EL1: MMU off, little-endian, RES1 bits (booting.rst: the kernel sets it up).
    write_sysreg!("sctlr_el1", 0x30d0_0800);
    isb();
}

/// Put the host under its stage-2 table on this CPU.
pub fn enable_host_stage2(r: &El2Regs) {
    write_sysreg!("vtcr_el2", r.vtcr_el2);
    write_sysreg!("vttbr_el2", r.vttbr_el2);
    isb();
    write_sysreg!("hcr_el2", r.hcr_el2);
    isb();
    // SAFETY: TLB maintenance has no memory-safety preconditions.
    unsafe { core::arch::asm!("tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
}

/// SPSR_EL2 for entering the host: EL1h with D, A, I, F masked.
pub fn set_host_return_state() {
    write_sysreg!("spsr_el2", arch::spsr::EL1H_MASKED);
}

/// Each CPU's frame with its private interrupts' enables, by KCore's CPU index (0: not
/// found): its GICv3 redistributor's SGI/PPI frame, or the GICv2 distributor (banked).
static REDIST_SGI: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Find the executing CPU's frame for its private interrupts' enables: on a GICv2 the
/// distributor itself (GICD_ISENABLER0 is banked per CPU; GIC architecture v2, 4.3.5); on a
/// GICv3 its redistributor's SGI/PPI frame.
pub fn find_ppi_frame(gic: &crate::platform::Gic) {
    match *gic {
        crate::platform::Gic::V3 { gicr, .. } => find_redistributor(gicr),
        crate::platform::Gic::V2 { gicd, .. } => REDIST_SGI[current_index()].store(gicd.0, Ordering::Relaxed),
    }
}

/// Find the executing CPU's redistributor in the region `gicr` (mapped as device memory in
/// KCore's EL2 map) by matching GICR_TYPER.Affinity_Value with MPIDR_EL1 (GICv3 architecture,
/// 12.11.36: Aff3.Aff2.Aff1.Aff0 in bits 63:32; Last in bit 4; VLPIS in bit 1 means four
/// 64 KiB frames per redistributor instead of two), and remember its SGI/PPI frame.
fn find_redistributor(gicr: (u64, u64)) {
    let mpidr = MPIDR_EL1.get();
    let aff = (((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff);
    let (mut rd, end) = (gicr.0, gicr.0 + gicr.1);
    while rd + 0x2_0000 <= end {
        // SAFETY: `rd` lies inside the redistributor region the device tree names, which
        // KCore's EL2 map covers as device memory; GICR_TYPER is a read-only 64-bit register.
        let typer = unsafe { core::ptr::read_volatile((rd + 8) as *const u64) };
        if typer >> 32 == aff {
            REDIST_SGI[current_index()].store(rd + 0x1_0000, Ordering::Relaxed);
            return;
        }
        if typer & (1 << 4) != 0 {
            break;
        }
        rd += if typer & (1 << 1) != 0 { 0x4_0000 } else { 0x2_0000 };
    }
    log::warn!("no GIC redistributor for MPIDR {mpidr:#x}: the host's tick cannot preempt guests on this CPU");
}

/// The executing CPU's redistributor SGI/PPI frame, or the GICv2 distributor (0 if none
/// was found).
pub fn redistributor_sgi_frame() -> u64 {
    REDIST_SGI[current_index()].load(Ordering::Relaxed)
}

/// KCore's index of the executing CPU (kept in TPIDR_EL2 by `entry.S`).
pub fn current_index() -> usize {
    TPIDR_EL2.get() as usize
}
