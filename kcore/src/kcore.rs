//! KCore's state as a whole, and the boot-time memory plan.

use crate::error::{Error, Result};
use crate::locks::Locks;
use crate::locks::locks::MAX_PT;
use crate::machine::{HOST_VMID, Machine};
use crate::mem::memaux::{KcoreMmio, MemAux};
use crate::mem::memblock::MemBlocks;
use crate::mem::pagemgmt::{PageMeta, meta_bytes};
use crate::pt::nptops::S2Table;
use crate::pt::ptalloc::PagePool;
use crate::trap::traphandler::{CpuRun, CpuRuns};
use crate::vcpu::guestcpu::GuestCpu;
use crate::vcpu::vgic::Vgic;
use crate::vm::VmInfo;
use crate::{BLOCK_2M, PAGE_SIZE, align_down, align_up};

/// Where KCore's memory goes, decided at boot from the firmware's memory map and the KCore
/// image's own extent.
///
/// KCore keeps two pieces of the RAM region it was loaded into: the low piece from the
/// region's base to the 2 MiB boundary after its image (image, BSS, stacks; the boot loader's
/// stub below it), and a high piece at the region's top holding the ownership metadata and
/// the page-table pool. The host gets what lies between, plus every other RAM region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// KCore's low piece `[start, end)`.
    pub kcore_low: (u64, u64),
    /// KCore's high piece `[start, end)`.
    pub kcore_high: (u64, u64),
    /// Ownership metadata: physical address of record 0.
    pub meta_base: u64,
    /// The page-table pool `[start, end)` (EL2 tables, host stage-2 tables).
    pub pool: (u64, u64),
    /// What remains for the host of the region KCore was loaded into.
    pub host_part: (u64, u64),
}

/// Page-table pool size: a fixed 2 MiB plus enough for 4 KiB-granular maps of all RAM
/// (one 4 KiB table per 2 MiB).
pub const fn pool_bytes(ram_bytes: u64) -> u64 {
    BLOCK_2M + align_up(ram_bytes / 512, PAGE_SIZE)
}

impl MemoryPlan {
    /// Plan KCore's memory. `image` is KCore's loaded extent; `keep` are ranges the host needs
    /// intact (device tree, initrd, the host kernel) which must land in the host's part.
    pub fn new(mb: &MemBlocks, image: (u64, u64), keep: &[(u64, u64)]) -> Result<Self> {
        let region = *mb.search(image.0).ok_or(Error::InvalidParameter)?;
        if image.1 > region.end() || image.1 <= image.0 {
            return Err(Error::InvalidParameter);
        }
        let low = (region.base, align_up(image.1, BLOCK_2M));
        let ram_bytes = mb.total_pages() * PAGE_SIZE;
        let meta = align_up(meta_bytes(mb.total_pages()), PAGE_SIZE);
        let high_size = align_up(meta + pool_bytes(ram_bytes), BLOCK_2M);
        let high_start = align_down(region.end().checked_sub(high_size).ok_or(Error::NoMemory)?, BLOCK_2M);
        if high_start <= low.1 {
            return Err(Error::NoMemory);
        }
        let host_part = (low.1, high_start);
        for &(s, e) in keep {
            if mb.search(s).is_some_and(|r| r.base == region.base) && (s < host_part.0 || e > host_part.1) {
                return Err(Error::Exists);
            }
        }
        Ok(MemoryPlan {
            kcore_low: low,
            kcore_high: (high_start, region.end()),
            meta_base: high_start,
            pool: (high_start + meta, region.end()),
            host_part,
        })
    }
}

/// Most VMs: vmids 1..=MAX_VMS.
pub const MAX_VMS: usize = MAX_PT - 1;

/// Everything KCore knows, generic over the machine it runs on.
pub struct KCore<M: Machine> {
    /// Layer 0.
    pub m: M,
    /// Layers 1-4.
    pub locks: Locks,
    /// Layer 13.
    pub mb: MemBlocks,
    /// Layer 15.
    pub meta: PageMeta,
    /// The host's stage-2 table (layers 5-8).
    pub host: S2Table,
    /// VM stage-2 tables, vmid 1.. at index 0..; a table exists once its root is allocated.
    pub vms: [S2Table; MAX_VMS],
    /// Per-VM state (layers 18-21), vmid 1.. at index 0.. .
    pub vminfo: [VmInfo; MAX_VMS],
    /// The Ed25519 public key VM images must be signed with.
    pub vm_key: [u8; 32],
    /// What runs on each CPU (layer 34).
    pub runs: CpuRuns,
    /// The CPU as guests see it (layer 27): features and sanitised ID registers.
    pub guest_cpu: GuestCpu,
    /// The machine's GIC, as the world switch drives the guest's virtual CPU interface
    /// (layer 29): GICv3 unless boot found a GICv2.
    pub vgic: Vgic,
    /// Device memory that is KCore's alone (GICv2: GICH and GICV), kept from the host.
    pub kcore_mmio: KcoreMmio,
    /// KCore's zero page (from the host's table pool, never written): what the host kernel
    /// reads in place of a page a VM owns (see [`MemAux::map_zero_host`]).
    pub zero_page: u64,
}

impl<M: Machine> KCore<M> {
    /// Set up KCore's state on `m`: metadata at `meta_base` (zeroed here: every page starts
    /// host-owned), and the host stage-2 root taken from `pool`. The pool must lie in
    /// KCore-owned memory.
    pub fn new(m: M, mb: MemBlocks, meta_base: u64, pool: PagePool, ipa_bits: u32) -> Result<Self> {
        Self::new_with_key(m, mb, meta_base, pool, ipa_bits, [0; 32])
    }

    /// [`KCore::new`] with the Ed25519 key VM images must be signed with.
    pub fn new_with_key(
        m: M,
        mb: MemBlocks,
        meta_base: u64,
        pool: PagePool,
        ipa_bits: u32,
        vm_key: [u8; 32],
    ) -> Result<Self> {
        let meta_len = align_up(meta_bytes(mb.total_pages()), PAGE_SIZE);
        for page in (0..meta_len).step_by(PAGE_SIZE as usize) {
            m.zero_page(meta_base + page);
        }
        let host = S2Table::new(HOST_VMID, ipa_bits, pool);
        let vms = core::array::from_fn(|i| S2Table::new(i as u16 + 1, ipa_bits, PagePool::new(0, 0)));
        let vminfo = core::array::from_fn(|_| VmInfo::default());
        let runs = core::array::from_fn(|_| CpuRun::default());
        let k = KCore {
            m,
            locks: Locks::new(),
            mb,
            meta: PageMeta { base: meta_base },
            host,
            vms,
            vminfo,
            vm_key,
            runs,
            guest_cpu: GuestCpu::default(),
            vgic: Vgic::default(),
            kcore_mmio: KcoreMmio::default(),
            zero_page: 0,
        };
        k.host.init_root(&k.m, &k.locks)?;
        // Zeroed by the pool; KCore-owned like every pool page, and never written again.
        let zero_page = k.host.pool.alloc(&k.m)?;
        Ok(KCore { zero_page, ..k })
    }

    /// Boot found a GICv2 with the virtualization extensions: its virtual interface control
    /// frame `gich` and virtual CPU interface `gicv` (`(start, end)`, page aligned) become
    /// KCore's alone (never in the host's stage-2), and guests get their CPU interface from
    /// GICV ([`crate::vcpu::vgic`]). Boot only, before the host runs.
    pub fn configure_gic_v2(&self, gich: (u64, u64), gicv: (u64, u64)) -> Result<()> {
        if self.mb.intersects(gich.0, gich.1) || self.mb.intersects(gicv.0, gicv.1) {
            return Err(Error::InvalidParameter);
        }
        self.kcore_mmio.add(gich.0, gich.1)?;
        self.kcore_mmio.add(gicv.0, gicv.1)?;
        self.vgic.configure_v2(gicv.0);
        Ok(())
    }

    /// Layers 16-17 over this state.
    pub fn mem(&self) -> MemAux<'_, M> {
        MemAux {
            m: &self.m,
            locks: &self.locks,
            mb: &self.mb,
            meta: &self.meta,
            host: &self.host,
            vms: &self.vms,
            zero_page: self.zero_page,
            kcore_mmio: &self.kcore_mmio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BLOCK_1G;

    #[test]
    fn plan_for_qemu_virt_with_1g() {
        let mb = MemBlocks::new(&[(0x4000_0000, BLOCK_1G)]).unwrap();
        let plan = MemoryPlan::new(&mb, (0x4020_0000, 0x4035_0000), &[(0x4800_0000, 0x4810_0000)]).unwrap();
        assert_eq!(plan.kcore_low, (0x4000_0000, 0x4040_0000));
        // 2 MiB of metadata + 4 MiB of pool, rounded to 2 MiB.
        assert_eq!(plan.kcore_high, (0x8000_0000 - 3 * BLOCK_2M, 0x8000_0000));
        assert_eq!(plan.pool.0 - plan.meta_base, BLOCK_2M);
        assert_eq!(plan.host_part, (0x4040_0000, 0x8000_0000 - 3 * BLOCK_2M));
    }

    #[test]
    fn plan_refuses_to_cover_what_the_host_needs() {
        let mb = MemBlocks::new(&[(0x4000_0000, 64 << 20)]).unwrap();
        assert_eq!(MemoryPlan::new(&mb, (0x4020_0000, 0x4030_0000), &[(0x43f0_0000, 0x4400_0000)]), Err(Error::Exists));
        let tiny = MemBlocks::new(&[(0x4000_0000, 4 << 20)]).unwrap();
        assert_eq!(MemoryPlan::new(&tiny, (0x4020_0000, 0x4030_0000), &[]), Err(Error::NoMemory));
    }
}
