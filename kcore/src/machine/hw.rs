//! The real machine: KCore at EL2 with an identity map of RAM (VA == PA), so a physical
//! address is also a pointer. This is the only module of the `kcore` crate with `unsafe` and
//! assembly.

use super::{FpRegs, Machine, SysReg};
use crate::PAGE_SIZE;
use core::arch::asm;

/// The hardware, as seen from KCore at EL2.
pub struct Hardware {
    /// Reads the calling CPU's index (kept by `boot/` in TPIDR_EL2).
    pub cpu_index: fn() -> usize,
    /// Stores q0..q31, FPSR, FPCR at the given address (528 bytes); assembly in `boot/`,
    /// which is built with FP/SIMD instructions enabled.
    pub fp_save: unsafe extern "C" fn(u64),
    /// Loads them from the given address.
    pub fp_load: unsafe extern "C" fn(u64),
    /// The physical address of the frame holding the calling CPU's IGROUPR0 and ISENABLER0
    /// for its private interrupts, mapped as device memory in KCore's EL2 map; 0 if this
    /// CPU has none. GICv3: its redistributor's SGI/PPI frame (RD_base + 64 KiB), found by
    /// `boot/` from GICR_TYPER. GICv2: the distributor, whose registers for interrupts 0-31
    /// are banked per CPU (GIC architecture v2, 4.3).
    pub ppi_frame: fn() -> u64,
    /// GICv2: the GICH frame (banked per CPU), mapped as device memory in KCore's EL2 map
    /// and in no other stage of translation; 0 on a GICv3 machine. (Not a flag beside it: a
    /// `bool` here would give `Hardware` a niche that moves it to the end of `KCore`, and
    /// every access to the machine would pay for the larger offset.)
    pub gich: u64,
    /// The SMMUv3's register frame (two 64 KiB pages) KCore took at boot, mapped as device
    /// memory in KCore's EL2 map and in no other stage of translation; 0 if there is none.
    pub smmu: u64,
    /// The GIC distributor, mapped as device memory in KCore's EL2 map (for
    /// [`Machine::pend_spi`]); 0 if KCore never pends an interrupt.
    pub gicd: u64,
}

/// IGROUPR0 and ISENABLER0, at the same offsets in a GICv3 redistributor's SGI/PPI frame
/// (GICv3 architecture, 12.11) and a GICv2 distributor (GIC architecture v2, 4.3.4, 4.3.5).
const GICR_IGROUPR0: u64 = 0x80;
const GICR_ISENABLER0: u64 = 0x100;

macro_rules! read_match {
    ($($v:ident $name:literal),* $(,)?) => {
        /// `MRS` of `r`.
        #[inline(always)]
        fn mrs(r: SysReg) -> u64 {
            let v: u64;
            match r {
                $(SysReg::$v => {
                    // SAFETY: reading a system register at EL2 has no memory effects; every
                    // register listed exists on the CPUs KCore supports, except the GICv3
                    // CPU-interface ones (ICC_*, ICH_*), which layer 29 reaches only on a GICv3
                    // machine (`crate::vcpu::vgic`), and the FGT/HCX/SME ones, reached only
                    // where the CPU has them.
                    unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nostack, nomem)) }
                })*
            }
            v
        }

        /// `MSR` of `r`.
        #[inline(always)]
        fn msr(r: SysReg, v: u64) {
            match r {
                $(SysReg::$v => {
                    // SAFETY: KCore owns EL2; the layers above write only EL1 state being
                    // switched, the GIC's virtual interface and EL2's own controls, none of
                    // which changes KCore's own translation or stack.
                    unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack)) }
                })*
            }
        }
    };
}

with_sysregs!(read_match);

impl Machine for Hardware {
    fn load(&self, pa: u64) -> u64 {
        // SAFETY: callers pass 8-byte aligned addresses of KCore-owned RAM (page tables and
        // metadata), which KCore's EL2 identity map covers for its whole lifetime.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }

    fn store(&self, pa: u64, val: u64) {
        // SAFETY: as for `load`; the page-table and metadata locks held by the caller make
        // this the only writer of that word.
        unsafe { core::ptr::write_volatile(pa as *mut u64, val) }
    }

    fn zero_page(&self, pa: u64) {
        let p = pa as *mut u64;
        for i in 0..(PAGE_SIZE / 8) as usize {
            // SAFETY: `pa` is a page KCore owns (being scrubbed or allocated for tables),
            // covered by the EL2 identity map; i stays within the page.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
        }
        // Clean to the point of coherency so observers with caches off see the zeros.
        let mut line = pa;
        while line < pa + PAGE_SIZE {
            // SAFETY: `dc cvac` on a mapped address only affects cache state.
            unsafe { asm!("dc cvac, {}", in(reg) line, options(nostack)) };
            line += 64;
        }
        // SAFETY: a barrier has no memory-safety preconditions.
        unsafe { asm!("dsb ish", options(nostack)) };
    }

    fn publish_table_writes(&self) {
        // SAFETY: barriers have no memory-safety preconditions.
        unsafe { asm!("dsb ishst", "isb", options(nostack)) };
    }

    fn tlb_flush_ipa(&self, vmid: u16, ipa: u64) {
        with_vmid(vmid, || {
            // Arm ARM D8.13.5: invalidate the stage-2 entry by IPA, then all combined
            // stage-1+2 entries of this VMID (they may cache the old output address).
            // SAFETY: TLB maintenance has no memory-safety preconditions.
            unsafe {
                asm!(
                    "dsb ishst",
                    "tlbi ipas2e1is, {ipa}",
                    "dsb ish",
                    "tlbi vmalle1is",
                    "dsb ish",
                    "isb",
                    ipa = in(reg) ipa >> 12,
                    options(nostack)
                )
            };
        });
    }

    fn tlb_flush_vmid(&self, vmid: u16) {
        with_vmid(vmid, || {
            // SAFETY: TLB maintenance has no memory-safety preconditions.
            unsafe { asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
        });
    }

    fn cpu_index(&self) -> usize {
        (self.cpu_index)()
    }

    #[inline(always)]
    fn read_sysreg(&self, r: SysReg) -> u64 {
        mrs(r)
    }

    #[inline(always)]
    fn write_sysreg(&self, r: SysReg, val: u64) {
        msr(r, val)
    }

    fn sync_context(&self) {
        // SAFETY: a context synchronisation barrier has no memory-safety preconditions.
        unsafe { asm!("isb", options(nostack)) };
    }

    fn fp_save(&self, dst: &mut FpRegs) {
        // SAFETY: `dst` is 528 writable bytes (66 words) KCore owns; FP/SIMD is not trapped
        // at EL2 (CPTR_EL2.TFP = 0) and KCore's own code never uses those registers.
        unsafe { (self.fp_save)(dst.as_mut_ptr() as u64) }
    }

    fn fp_load(&self, src: &FpRegs) {
        // SAFETY: as for `fp_save`; the routine only reads the 528 bytes at `src`.
        unsafe { (self.fp_load)(src.as_ptr() as u64) }
    }

    fn fp_save_to(&self, pa: u64) {
        // SAFETY: callers pass the FP area of a vCPU context page, KCore memory covered by
        // the EL2 identity map; as for `fp_save` otherwise.
        unsafe { (self.fp_save)(pa) }
    }

    fn fp_load_from(&self, pa: u64) {
        // SAFETY: as for `fp_save_to`.
        unsafe { (self.fp_load)(pa) }
    }

    fn enable_private_irq(&self, intid: u32) {
        let base = (self.ppi_frame)();
        if base == 0 || !(16..32).contains(&intid) {
            return;
        }
        let bit = 1u32 << intid;
        // SAFETY: `base` is this CPU's redistributor SGI frame or the GICv2 distributor, which
        // `boot/` mapped as device memory in KCore's EL2 map; IGROUPR0 and ISENABLER0 are
        // 32-bit registers. GICv3: group 1 (non-secure IRQ, as the host's own interrupts are):
        // only this CPU's code programs its private interrupts, and the host is not running on
        // it now. GICv2: the group is the host's configuration (without the security
        // extensions every interrupt signals IRQ), left as it is.
        unsafe {
            if self.gich == 0 {
                let group = (base + GICR_IGROUPR0) as *mut u32;
                let g = core::ptr::read_volatile(group);
                if g & bit == 0 {
                    core::ptr::write_volatile(group, g | bit);
                }
            }
            core::ptr::write_volatile((base + GICR_ISENABLER0) as *mut u32, bit)
        }
    }

    fn gich_read(&self, off: u64) -> u32 {
        assert!(self.gich != 0 && off < 0x200 && off.is_multiple_of(4), "GICH read at {off:#x}");
        // SAFETY: `gich` is the GICH frame `boot/` mapped as device memory in KCore's EL2 map
        // (checked non-zero: a GICv2 machine); `off` is a 32-bit register inside its first
        // 512 bytes (GIC architecture v2, 5.3.1).
        unsafe { core::ptr::read_volatile((self.gich + off) as *const u32) }
    }

    fn gich_write(&self, off: u64, val: u32) {
        assert!(self.gich != 0 && off < 0x200 && off.is_multiple_of(4), "GICH write at {off:#x}");
        // SAFETY: as for `gich_read`; the frame controls only the guest's virtual CPU
        // interface, never KCore's memory.
        unsafe { core::ptr::write_volatile((self.gich + off) as *mut u32, val) }
    }

    fn smmu_read(&self, off: u64, bytes: u8) -> u64 {
        let ok = self.smmu != 0 && off < crate::smmu::raw::reg::SIZE && off.is_multiple_of(u64::from(bytes));
        assert!(ok && (bytes == 4 || bytes == 8), "SMMU read at {off:#x} ({bytes} bytes)");
        let a = self.smmu + off;
        // SAFETY: `smmu` is the SMMU's register frame `boot/` mapped as device memory in
        // KCore's EL2 map (checked non-zero); `off` is a naturally aligned 32- or 64-bit
        // register inside its two pages (IHI 0070 6.2: 64-bit registers may be read whole).
        unsafe {
            if bytes == 8 {
                core::ptr::read_volatile(a as *const u64)
            } else {
                u64::from(core::ptr::read_volatile(a as *const u32))
            }
        }
    }

    fn pend_spi(&self, intid: u32) {
        assert!(self.gicd != 0 && (32..1020).contains(&intid), "pend SPI {intid}");
        let a = self.gicd + 0x200 + u64::from(intid / 32) * 4;
        // SAFETY: `gicd` is the distributor `boot/` mapped as device memory in KCore's EL2
        // map (checked non-zero); GICD_ISPENDR<n> is a 32-bit write-one-to-set register, so
        // the write pends this interrupt and changes no other state.
        unsafe { core::ptr::write_volatile(a as *mut u32, 1 << (intid % 32)) }
    }

    fn smmu_write(&self, off: u64, bytes: u8, val: u64) {
        let ok = self.smmu != 0 && off < crate::smmu::raw::reg::SIZE && off.is_multiple_of(u64::from(bytes));
        assert!(ok && (bytes == 4 || bytes == 8), "SMMU write at {off:#x} ({bytes} bytes)");
        let a = self.smmu + off;
        // SAFETY: as for `smmu_read`; the frame controls the SMMU, which reaches memory only
        // through the tables and queues KCore gives it.
        unsafe {
            if bytes == 8 {
                core::ptr::write_volatile(a as *mut u64, val)
            } else {
                core::ptr::write_volatile(a as *mut u32, val as u32)
            }
        }
    }
}

/// Run `f` with VTTBR_EL2.VMID = `vmid` (TLBI by IPA acts on the current VMID), restoring the
/// previous VTTBR_EL2 afterwards.
fn with_vmid(vmid: u16, f: impl FnOnce()) {
    let old: u64;
    // SAFETY: reading VTTBR_EL2 at EL2 has no side effects.
    unsafe { asm!("mrs {}, vttbr_el2", out(reg) old, options(nostack, nomem)) };
    let cur = (old >> 48) as u16;
    if cur == vmid {
        f();
        return;
    }
    let tmp = (old & !(0xffff << 48)) | ((vmid as u64) << 48);
    // SAFETY: KCore runs at EL2 with stage-2 translation not in use by its own accesses;
    // changing the VMID only retargets TLB maintenance, and the old value is restored below.
    unsafe { asm!("msr vttbr_el2, {}", "isb", in(reg) tmp, options(nostack)) };
    f();
    // SAFETY: as above.
    unsafe { asm!("msr vttbr_el2, {}", "isb", in(reg) old, options(nostack)) };
}

/// The hint for a CPU waiting on another one (a lock held elsewhere): YIELD (Arm ARM C6.2),
/// which tells the hardware (and an emulator running CPUs in turn) that this one makes no
/// progress. (`core::hint::spin_loop` is an ISB on AArch64, which an emulator runs on.)
pub fn yield_hint() {
    // SAFETY: YIELD is a hint with no architectural effect.
    unsafe { asm!("yield", options(nostack, nomem, preserves_flags)) };
}
