//! Layer 0 (AbstractMachine): the single hardware seam.
//!
//! Everything KCore does to the machine goes through [`Machine`]: 64-bit loads and stores of
//! physical memory (page tables and ownership metadata live in KCore-owned RAM and are reached
//! only this way), page zeroing and cache maintenance, and stage-2 TLB invalidation. On the
//! target, [`hw::Hardware`] does it with KCore's EL2 identity map and real instructions; on the
//! development machine [`sim::SimMachine`] keeps memory in a buffer and records every TLB
//! invalidation so tests can check it happened.

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hw;
#[cfg(not(target_os = "none"))]
pub mod sim;

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
}
