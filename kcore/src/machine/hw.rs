//! The real machine: KCore at EL2 with an identity map of RAM (VA == PA), so a physical
//! address is also a pointer. This is the only module of the `kcore` crate with `unsafe` and
//! assembly.

use super::Machine;
use crate::PAGE_SIZE;
use core::arch::asm;

/// The hardware, as seen from KCore at EL2.
pub struct Hardware {
    /// Reads the calling CPU's index (kept by `boot/` in TPIDR_EL2).
    pub cpu_index: fn() -> usize,
}

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
