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
use crate::smmu::ops::{SmmuEmul, SmmuOps};
use crate::smmu::queue::{SmmuDev, SmmuInfo, Unsupported};
use crate::smmu::raw::reg;
use crate::spt::mmiosptops::HostDma;
use crate::trap::traphandler::{CpuRun, CpuRuns};
use crate::vcpu::guestcpu::GuestCpu;
use crate::vcpu::vgic::Vgic;
use crate::vm::VmInfo;
use crate::{BLOCK_2M, PAGE_SHIFT, PAGE_SIZE, align_down, align_up};
use core::sync::atomic::AtomicU64;

/// Where KCore's memory goes, decided at boot from the firmware's memory map and the KCore
/// image's own extent.
///
/// KCore keeps two pieces of the RAM region it was loaded into: the low piece around its image
/// (image, BSS, stacks), from the 2 MiB boundary below it (or the region's base, when that is
/// at most 2 MiB further down: the arm64 Image convention loads at base + 2 MiB, and the
/// boot loader's stub below it is nothing the host needs) to the 2 MiB boundary after it; and
/// a high piece, the highest free 2 MiB-aligned window of the region, holding the ownership
/// metadata and the page-table pool. Neither piece may cover what the host needs (`keep`:
/// device tree, kernel, initrd) or what the firmware reserved (`avoid`: UEFI runtime services
/// and reserved memory, the device tree's memory reservations); the low piece is trimmed to
/// page boundaries to step around them, the high piece moves down. Wherever the firmware
/// loaded KCore, the host gets the rest of the region (up to three ranges, [`host_ranges`])
/// plus every other RAM region.
///
/// [`host_ranges`]: MemoryPlan::host_ranges
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
    /// The RAM region KCore was loaded into `[start, end)`.
    pub region: (u64, u64),
    host: [(u64, u64); 3],
}

/// Page-table pool size: a fixed 2 MiB plus enough for 4 KiB-granular maps of all RAM
/// (one 4 KiB table per 2 MiB).
pub const fn pool_bytes(ram_bytes: u64) -> u64 {
    BLOCK_2M + align_up(ram_bytes / 512, PAGE_SIZE)
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The SMMU's pool (layer 9) on a machine with one: the host-DMA table's 4 KiB-granular map
/// of all RAM (one table per 2 MiB, [`pool_bytes`]' share), plus 1 MiB for the stream table
/// (a level-1 table, eight 16 KiB level-2 tables from boot and room for about 50 more, for
/// streams the host's driver configures later), the queues, the root and the doorbell's
/// tables.
pub const fn smmu_pool_bytes(ram_bytes: u64) -> u64 {
    (1 << 20) + align_up(ram_bytes / 512, PAGE_SIZE)
}

impl MemoryPlan {
    /// Plan KCore's memory. `image` is KCore's loaded extent (page aligned); `keep` are
    /// ranges the host needs intact (device tree, initrd, the host kernel) and `avoid` ranges
    /// the firmware reserved: KCore takes neither.
    pub fn new(mb: &MemBlocks, image: (u64, u64), keep: &[(u64, u64)], avoid: &[(u64, u64)]) -> Result<Self> {
        Self::with_extra_pool(mb, image, keep, avoid, 0)
    }

    /// [`MemoryPlan::new`] with `extra` more bytes of table pool (the SMMU's, at the pool's
    /// end: [`smmu_pool_bytes`]).
    pub fn with_extra_pool(
        mb: &MemBlocks,
        image: (u64, u64),
        keep: &[(u64, u64)],
        avoid: &[(u64, u64)],
        extra: u64,
    ) -> Result<Self> {
        let region = *mb.search(image.0).ok_or(Error::InvalidParameter)?;
        let (base, end) = (region.base, region.end());
        if image.1 > end || image.1 <= image.0 || !image.0.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidParameter);
        }
        let obstacles = || keep.iter().chain(avoid).copied().filter(|&(s, e)| e > s && overlaps((s, e), (base, end)));
        let mut lo = align_down(image.0, BLOCK_2M).max(base);
        if lo - base <= BLOCK_2M {
            lo = base;
        }
        let mut hi = align_up(image.1, BLOCK_2M).min(end);
        for (s, e) in obstacles() {
            if overlaps((s, e), image) {
                return Err(Error::Exists);
            }
            if e <= image.0 && e > lo {
                lo = align_up(e, PAGE_SIZE);
            } else if s >= image.1 && s < hi {
                hi = align_down(s, PAGE_SIZE);
            }
        }
        let low = (lo, hi);

        let ram_bytes = mb.total_pages() * PAGE_SIZE;
        let meta = align_up(meta_bytes(mb.total_pages()), PAGE_SIZE);
        let size = align_up(meta + pool_bytes(ram_bytes) + align_up(extra, PAGE_SIZE), BLOCK_2M);
        // The highest 2 MiB-aligned window of `size` bytes that meets no obstacle and not the
        // low piece: start at the top and move below whatever is in the way.
        let mut start = align_down(end.checked_sub(size).ok_or(Error::NoMemory)?, BLOCK_2M);
        loop {
            if start < base {
                return Err(Error::NoMemory);
            }
            let window = (start, start + size);
            let blocker = obstacles().chain([low]).filter(|&r| overlaps(r, window)).map(|r| r.0).min();
            match blocker {
                None => break,
                Some(s) => start = align_down(s.checked_sub(size).ok_or(Error::NoMemory)?, BLOCK_2M),
            }
        }
        let high = (start, start + size);

        // The host's part of the region: what the two pieces leave, in address order.
        let (first, second) = if high.0 < low.0 { (high, low) } else { (low, high) };
        let host = [(base, first.0), (first.1, second.0), (second.1, end)];
        for (s, e) in keep.iter().copied().filter(|&(s, e)| e > s) {
            if overlaps((s, e), low) || overlaps((s, e), high) {
                return Err(Error::Exists);
            }
        }
        Ok(MemoryPlan {
            kcore_low: low,
            kcore_high: high,
            meta_base: high.0,
            pool: (high.0 + meta, high.1),
            region: (base, end),
            host,
        })
    }

    /// What the host gets of the region KCore was loaded into: up to three non-empty
    /// `[start, end)` ranges in address order (below KCore, between its pieces, above them).
    pub fn host_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.host.iter().copied().filter(|&(s, e)| e > s)
    }
}

/// Why boot could not take the SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// The device lacks what KCore needs.
    Unsupported(Unsupported),
    /// Its registers, memory or doorbells do not fit, or KCore's pool ran out.
    Setup(Error),
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
    /// At least as many as the host stage-2 leaves that map the zero page (0: none, so a
    /// VM's teardown need not sweep for them).
    pub zero_leaves: AtomicU64,
    /// The host's DMA (layers 9-12): KCore's SMMU, if boot took one, and the host-DMA table.
    pub dma: HostDma,
    /// The SMMU as the host's driver sees it (layer 26), when KCore emulates it.
    pub smmu: SmmuEmul,
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
            zero_leaves: AtomicU64::new(0),
            dma: HostDma::new(),
            smmu: SmmuEmul::new(),
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

    /// Boot found an SMMUv3 with registers at `regs` (`(start, end)`, page aligned): take it
    /// (before the host runs, after KCore's own memory is protected). Its registers become
    /// KCore's alone; the host-DMA table, built in `pool` (KCore's memory, `(start, end)`),
    /// maps every page the host owns and the MSI doorbell pages `doorbells` (physical
    /// addresses of pages that are not RAM), and every stream goes through it, stage 2 only.
    /// With `emulate`, the host's accesses to the registers are then emulated (layer 26):
    /// its own driver programs the SMMU through KCore; otherwise the device is KCore's
    /// alone (and boot hides it from the host) and KCore records DMA faults itself.
    pub fn take_smmu(
        &self,
        regs: (u64, u64),
        pool: (u64, u64),
        doorbells: &[u64],
        emulate: bool,
    ) -> core::result::Result<SmmuInfo, SmmuError> {
        if self.mb.intersects(regs.0, regs.1) {
            return Err(SmmuError::Setup(Error::InvalidParameter));
        }
        self.kcore_mmio.add(regs.0, regs.1).map_err(SmmuError::Setup)?;
        let info = SmmuDev::probe(&self.m, self.host.ia_bits).map_err(SmmuError::Unsupported)?;
        // The table's input size: the host's IPA size, capped at what the SMMU outputs.
        let ia_bits = self.host.ia_bits.min(info.oas_bits);
        let top = self.mb.regions().iter().map(|r| r.base + r.size).max().unwrap_or(0);
        if top > 1 << ia_bits || doorbells.iter().any(|&d| d >= 1 << ia_bits || self.mb.intersects(d, d + PAGE_SIZE)) {
            return Err(SmmuError::Setup(Error::InvalidParameter));
        }
        let t = &self.dma.table;
        t.pool.set_range(pool.0, pool.1);
        t.init(&self.m, ia_bits).map_err(SmmuError::Setup)?;
        {
            let _s2 = self.locks.acquire(crate::locks::LockId::S2Page, self.m.cpu_index());
            for r in self.mb.regions() {
                for pfn in r.base >> PAGE_SHIFT..(r.base + r.size) >> PAGE_SHIFT {
                    if self.meta.owner(&self.m, &self.mb, pfn).is_some_and(|o| o.is_hosts()) {
                        t.set(&self.m, pfn, false).map_err(SmmuError::Setup)?;
                    }
                }
            }
            for &d in doorbells {
                t.set(&self.m, d >> PAGE_SHIFT, true).map_err(SmmuError::Setup)?;
            }
        }
        self.m.publish_table_writes();
        let ste = self.dma.stream_ste().ok_or(SmmuError::Setup(Error::BadState))?;
        // What the host's driver will see, read before KCore changes anything.
        let ids = [reg::IDR0, reg::IDR1, reg::IDR3, reg::GBPA].map(|r| self.m.smmu_read(r, 4) as u32);
        self.dma.dev.take(&self.m, t.pool.pages(), info, &ste, !emulate).map_err(SmmuError::Setup)?;
        if emulate {
            self.smmu.start(regs.0, ids[0], ids[1], ids[2], crate::smmu::ops::gbpa_reset(ids[3]));
        }
        Ok(info)
    }

    /// Log every DMA the SMMU refused since the last call (its event queue; KCore's while the
    /// host has no SMMU of its own).
    pub fn log_dma_faults(&self) {
        while let Some(e) = self.dma.dev.next_event(&self.m, &self.locks) {
            log::warn!(
                "SMMU: device DMA refused: event {:#x}, stream {:#x}, address {:#x}{}",
                e.kind,
                e.sid,
                e.input,
                if e.stage2 { " (stage 2: not the host's)" } else { "" }
            );
        }
    }

    /// Layer 26 over this state.
    pub fn smmu_ops(&self) -> SmmuOps<'_, M> {
        SmmuOps { m: &self.m, locks: &self.locks, mb: &self.mb, meta: &self.meta, dma: &self.dma, emul: &self.smmu }
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
            zero_leaves: &self.zero_leaves,
            kcore_mmio: &self.kcore_mmio,
            dma: &self.dma,
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
        let plan = MemoryPlan::new(&mb, (0x4020_0000, 0x4035_0000), &[(0x4800_0000, 0x4810_0000)], &[]).unwrap();
        assert_eq!(plan.kcore_low, (0x4000_0000, 0x4040_0000));
        // 2 MiB of metadata + 4 MiB of pool, rounded to 2 MiB.
        assert_eq!(plan.kcore_high, (0x8000_0000 - 3 * BLOCK_2M, 0x8000_0000));
        assert_eq!(plan.pool.0 - plan.meta_base, BLOCK_2M);
        assert!(plan.host_ranges().eq([(0x4040_0000, 0x8000_0000 - 3 * BLOCK_2M)]));
    }

    #[test]
    fn plan_refuses_to_cover_what_the_host_needs() {
        let mb = MemBlocks::new(&[(0x4000_0000, 64 << 20)]).unwrap();
        assert_eq!(
            MemoryPlan::new(&mb, (0x4020_0000, 0x4030_0000), &[(0x402f_0000, 0x4400_0000)], &[]),
            Err(Error::Exists)
        );
        let tiny = MemBlocks::new(&[(0x4000_0000, 4 << 20)]).unwrap();
        assert_eq!(MemoryPlan::new(&tiny, (0x4020_0000, 0x4030_0000), &[], &[]), Err(Error::NoMemory));
    }

    /// As UEFI firmware leaves it: KCore loaded high at a 4 KiB boundary the firmware chose,
    /// the kernel and initrd above it, runtime services regions at the top and one just below
    /// KCore. KCore's pieces step around all of them and the host gets three ranges.
    #[test]
    fn plan_for_an_image_the_firmware_placed() {
        let mb = MemBlocks::new(&[(0x4000_0000, BLOCK_1G)]).unwrap();
        let image = (0x7b43_5000, 0x7b59_0000);
        let keep = [(0x7c00_0000, 0x7d40_0000), (0x7d40_0000, 0x7e00_0000), (0x7bf0_0000, 0x7bf1_0000)];
        let avoid = [(0x7f80_0000, 0x7fa0_0000), (0x7ff0_0000, 0x8000_0000), (0x7b40_0000, 0x7b41_0000)];
        let plan = MemoryPlan::new(&mb, image, &keep, &avoid).unwrap();
        assert_eq!(plan.kcore_low, (0x7b41_0000, 0x7b60_0000));
        // The highest free window: below the runtime region at 0x7f80_0000, above the initrd.
        assert_eq!(plan.kcore_high, (0x7f80_0000 - 3 * BLOCK_2M, 0x7f80_0000));
        assert!(plan.host_ranges().eq([
            (0x4000_0000, 0x7b41_0000),
            (0x7b60_0000, 0x7f80_0000 - 3 * BLOCK_2M),
            (0x7f80_0000, 0x8000_0000)
        ]));
        for r in keep.iter().chain(&avoid) {
            assert!(!overlaps(*r, plan.kcore_low) && !overlaps(*r, plan.kcore_high));
        }
        assert_eq!(MemoryPlan::new(&mb, image, &[(0x7b50_0000, 0x7b50_1000)], &[]), Err(Error::Exists));
        // With no room above, the high piece goes below KCore.
        let crowded = [(0x7b60_0000, 0x8000_0000)];
        let plan = MemoryPlan::new(&mb, image, &[], &crowded).unwrap();
        assert_eq!(plan.kcore_high, (0x7b40_0000 - 3 * BLOCK_2M, 0x7b40_0000));
    }
}
