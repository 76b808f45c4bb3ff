//! Layer 16 (MemAux): the checked ownership transitions.
//!
//! Every transition takes the `s2page` lock, checks every precondition, and only then changes
//! anything, so a refused request leaves no trace. Table updates happen under `pt(vmid)`,
//! nested inside `s2page` (lock order s2page -> pt). Each function has a `_locked` core for
//! layer 17, which composes several under one `s2page` hold.
//!
//! | transition | precondition | effect |
//! |---|---|---|
//! | `map_page_host` | RAM owned by the host, or a VM page it shared; or device space | identity-mapped in the host stage-2 |
//! | `map_zero_host` | RAM the host may not map (a VM's unshared page, KCore's) | KCore's zero page mapped there read-only, never executable (the host kernel reads zeros) |
//! | `donate_to_pool` | host page, share count 0 | KCore-owned, unmapped from the host, a page of a table pool |
//! | `assign_pfn_to_vm` | host page with count 0 (no DMA), or already the VM's at that gfn | VM-owned at gfn; unmapped from the host |
//! | `map_pfn_vm` | the VM owns every page at the matching gfn; nothing mapped there | mapped in the VM stage-2 (4 KiB, or a 2 MiB block) |
//! | `grant_vm_page` / `revoke_vm_page` | VM page; count below the cap / above 0 | count +1 (from 0: the zero page unmapped) / -1 (at 0 unmapped from the host) |
//! | `clear_vm_page` | VM page | unmapped from the VM and host, zeroed and cleaned to PoC, host-owned |
//! | `map_vm_io` | the physical address is not RAM and not KCore's device memory; nothing mapped there | device mapping in the VM stage-2 |
//! | `map_vm_cpuif` | (KCore's own call) a page of the GICv2 virtual CPU interface; nothing mapped there | device mapping in the VM stage-2 |
//! | `lend_pfn_to_vm` | host page, count 0, lent to no VM; nothing mapped at gfn | lent to the (non-protected) VM at gfn and mapped there; the host keeps its access |
//! | `reclaim_lent_page` | the page mapped at gfn is lent to that VM | unmapped from the VM (TLB invalidated); plainly the host's again |

use super::memblock::MemBlocks;
use super::pagemgmt::{CHUNK_PAGES, MAX_SHARE_COUNT, Owner, PageInfo, PageMeta};
use crate::arch::{self, level_size};
use crate::error::{Error, Result};
use crate::locks::{LockGuard, LockId, Locks};
use crate::machine::Machine;
use crate::pt::nptops::S2Table;
use crate::spt::mmiosptops::HostDma;
use crate::{BLOCK_2M, Gfn, PAGE_SHIFT, PAGE_SIZE, Pfn, align_down};
use core::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};

/// What a successful host fault mapping installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMapping {
    /// First IPA (= PA) of the mapping.
    pub base: u64,
    /// Level of the leaf (1: 1 GiB, 2: 2 MiB, 3: 4 KiB).
    pub level: u8,
    /// Device memory (vs RAM).
    pub device: bool,
    /// Another CPU had mapped it already.
    pub already: bool,
}

/// Device memory that is KCore's alone (the GICv2 virtual interface frames, GICH and GICV;
/// the SMMU's registers):
/// never mapped in the host's stage-2 (an access there is refused like one to KCore's RAM),
/// never given to a VM by the host; at most [`KcoreMmio::MAX`] ranges, set at boot.
#[derive(Debug, Default)]
pub struct KcoreMmio {
    ranges: [(AtomicU64, AtomicU64); KcoreMmio::MAX],
}

impl KcoreMmio {
    /// How many ranges KCore keeps.
    pub const MAX: usize = 4;

    /// Keep `[start, end)` (page aligned) from the host. Boot only, before the host runs.
    pub fn add(&self, start: u64, end: u64) -> Result<()> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end <= start {
            return Err(Error::InvalidParameter);
        }
        let free = self.ranges.iter().find(|r| r.1.load(Relaxed) == 0).ok_or(Error::NoMemory)?;
        free.0.store(start, Relaxed);
        free.1.store(end, Relaxed);
        Ok(())
    }

    /// Does `[start, end)` overlap a range KCore keeps?
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|r| {
            let (s, e) = (r.0.load(Relaxed), r.1.load(Relaxed));
            s < end && start < e
        })
    }

    /// The ranges kept, `(start, end)`.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|r| (r.0.load(Relaxed), r.1.load(Relaxed))).filter(|r| r.1 != 0)
    }
}

/// The memory state MemAux works on.
pub struct MemAux<'a, M: Machine> {
    /// The machine.
    pub m: &'a M,
    /// KCore's locks.
    pub locks: &'a Locks,
    /// RAM regions.
    pub mb: &'a MemBlocks,
    /// Ownership records.
    pub meta: &'a PageMeta,
    /// The host's stage-2 table.
    pub host: &'a S2Table,
    /// VM stage-2 tables (vmid 1 at index 0).
    pub vms: &'a [S2Table],
    /// KCore's zero page, the host kernel's view of a page a VM owns.
    pub zero_page: u64,
    /// An upper bound on the host leaves that map the zero page ([`KCore::zero_leaves`]).
    ///
    /// [`KCore::zero_leaves`]: crate::kcore::KCore::zero_leaves
    pub zero_leaves: &'a AtomicU64,
    /// Device memory that is KCore's alone.
    pub kcore_mmio: &'a KcoreMmio,
    /// The host's DMA (layers 9-12): which pages the host's devices reach.
    pub dma: &'a HostDma,
}

/// Pages a leaf at `level` (2 or 3) covers.
pub const fn pages_at(level: u8) -> u64 {
    if level == 2 { CHUNK_PAGES } else { 1 }
}

impl<M: Machine> MemAux<'_, M> {
    /// Take the `s2page` lock for a sequence of `_locked` calls.
    pub fn lock_s2page(&self) -> LockGuard<'_> {
        self.locks.acquire(LockId::S2Page, self.m.cpu_index())
    }

    fn check_s2page(&self, g: &LockGuard<'_>) {
        assert_eq!(g.id(), LockId::S2Page, "caller must hold s2page");
    }

    /// The stage-2 table of `vmid` (0 = host), whether or not it has a root yet.
    pub fn table(&self, vmid: u16) -> Result<&S2Table> {
        match vmid {
            0 => Ok(self.host),
            v => self.vms.get(v as usize - 1).ok_or(Error::InvalidParameter),
        }
    }

    /// The stage-2 table of VM `vmid`, which must exist.
    pub fn vm(&self, vmid: u16) -> Result<&S2Table> {
        if vmid == 0 {
            return Err(Error::InvalidParameter);
        }
        let t = self.table(vmid)?;
        t.npt().ok_or(Error::NotFound)?;
        Ok(t)
    }

    /// The record of `pfn`; [`Error::InvalidParameter`] if it is not RAM.
    pub fn page(&self, pfn: Pfn) -> Result<PageInfo> {
        self.meta.get(self.m, self.mb, pfn).ok_or(Error::InvalidParameter)
    }

    fn check_gfn(&self, t: &S2Table, gfn: Gfn, pages: u64) -> Result<u64> {
        let ipa = gfn.checked_mul(PAGE_SIZE).ok_or(Error::InvalidParameter)?;
        let end = ipa.checked_add(pages * PAGE_SIZE).ok_or(Error::InvalidParameter)?;
        if gfn >> 36 != 0 || end > 1u64 << t.ia_bits {
            return Err(Error::InvalidParameter);
        }
        Ok(ipa)
    }

    /// Mark every RAM page of `[start, end)` as KCore's and make sure the host does not map
    /// it. Used at boot for KCore's image, stacks, metadata and table pools.
    pub fn protect_kcore(&self, start: u64, end: u64) -> Result<()> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end < start {
            return Err(Error::InvalidParameter);
        }
        let _s2 = self.lock_s2page();
        let mut pa = start;
        while pa < end {
            let pfn = pa >> PAGE_SHIFT;
            if self.meta.get(self.m, self.mb, pfn).is_some() {
                self.leave_host(pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
            }
            pa += PAGE_SIZE;
        }
        Ok(())
    }

    /// `map_page_host`: resolve a host stage-2 translation fault at `ipa` by identity-mapping
    /// the largest block around it that stays inside one kind of memory: RAM the host may map
    /// (host-owned, or a VM page shared with the host, page by page), or device memory (any
    /// range with no RAM in it and none of KCore's device memory). RAM the host may not touch,
    /// and KCore's device memory ([`KcoreMmio`]), give [`Error::Denied`].
    pub fn map_page_host(&self, ipa: u64) -> Result<HostMapping> {
        let npt = self.host.expect_npt();
        if !npt.covers(ipa) {
            return Err(Error::InvalidParameter);
        }
        if self.kcore_mmio.intersects(ipa, ipa + 1) {
            return Err(Error::Denied);
        }
        let cpu = self.m.cpu_index();
        // s2page stays held while the table is updated, so the page cannot change hands
        // between the ownership check and the mapping (SeKVM's proof-found race, bug 1).
        let _s2 = self.lock_s2page();
        let _pt = self.locks.acquire(LockId::Pt(self.host.vmid), cpu);
        let min_level = npt.first_non_table_level(self.m, ipa).max(1);
        let pfn = ipa >> PAGE_SHIFT;
        let (level, device) = match self.meta.get(self.m, self.mb, pfn) {
            Some(info) => {
                let shared = matches!(info.owner, Owner::Vm(_)) && info.count > 0;
                if !info.owner.is_hosts() && !shared {
                    return Err(Error::Denied);
                }
                let level = if shared { 3 } else { self.largest_host_ram_level(ipa, min_level) };
                (level, false)
            }
            None => (self.largest_device_level(ipa, min_level), true),
        };
        let base = align_down(ipa, level_size(level));
        if let Some(leaf) = npt.walk(self.m, ipa) {
            // Resolved by another CPU between the fault and now.
            return Ok(HostMapping { base: align_down(ipa, leaf.size()), level: leaf.level, device, already: true });
        }
        let d = if device { arch::s2_device_leaf(base, level) } else { arch::s2_normal_leaf(base, level) };
        self.host.map_locked(self.m, base, level, d)?;
        Ok(HostMapping { base, level, device, already: false })
    }

    /// `map_zero_host`: the host kernel read RAM it may not map (a VM's page the VM does not
    /// share, or KCore's: a vCPU context, a table, a pool page it donated). Instead of an
    /// abort (which kills the kernel: Linux treats a kernel-mode external abort as fatal to the
    /// task, and a read through `/proc/PID/mem`, `process_vm_readv` or `/proc/kcore` would
    /// oops the host), map KCore's zero page read-only and never executable at that IPA: the
    /// host reads zeros and learns nothing. A write or a fetch then takes a permission fault,
    /// which KCore refuses. The leaf goes when the page changes hands (shared, or scrubbed back
    /// to the host, a KCore page given back). Fails with `Denied` for any other page.
    pub fn map_zero_host(&self, ipa: u64) -> Result<HostMapping> {
        let npt = self.host.expect_npt();
        if !npt.covers(ipa) {
            return Err(Error::InvalidParameter);
        }
        let cpu = self.m.cpu_index();
        let _s2 = self.lock_s2page();
        let _pt = self.locks.acquire(LockId::Pt(self.host.vmid), cpu);
        match self.meta.get(self.m, self.mb, ipa >> PAGE_SHIFT) {
            Some(info) if !info.host_may_map() => {}
            _ => return Err(Error::Denied),
        }
        let base = align_down(ipa, PAGE_SIZE);
        if npt.walk(self.m, ipa).is_some() {
            // Mapped by another CPU between the fault and now.
            return Ok(HostMapping { base, level: 3, device: false, already: true });
        }
        self.host.map_locked(self.m, base, 3, arch::s2_zero_leaf(self.zero_page))?;
        self.zero_leaves.fetch_add(1, Ordering::Relaxed);
        Ok(HostMapping { base, level: 3, device: false, already: false })
    }

    /// Remove the zero page from every host page the host may map again (KCore pages a VM's
    /// teardown gave back, which leave KCore in bulk): one sweep of the host's table, skipped
    /// when the host never read a foreign page. Caller holds `s2page` (the count and the
    /// leaves change only under it).
    pub fn drop_stale_zero_leaves(&self, s2: &LockGuard<'_>) {
        self.check_s2page(s2);
        if self.zero_leaves.load(Ordering::Relaxed) == 0 {
            return;
        }
        let zero = self.zero_page;
        let mut kept = 0;
        self.host.clear_leaves(self.m, self.locks, |ipa, leaf| {
            if leaf.output(ipa) != zero {
                return false;
            }
            let stale = self.meta.get(self.m, self.mb, ipa >> PAGE_SHIFT).is_some_and(|i| i.host_may_map());
            kept += u64::from(!stale);
            stale
        });
        self.zero_leaves.store(kept, Ordering::Relaxed);
    }

    /// The largest level (>= `min_level`) whose block around `ipa` is RAM of one region with
    /// every page plainly host-owned.
    fn largest_host_ram_level(&self, ipa: u64, min_level: u8) -> u8 {
        let region = self.mb.search(ipa).expect("caller checked RAM");
        for level in min_level..3 {
            let size = level_size(level);
            let base = align_down(ipa, size);
            if base < region.base || base + size > region.end() {
                continue;
            }
            let chunks = size / BLOCK_2M;
            let first = base >> PAGE_SHIFT;
            let clear =
                (0..chunks).all(|c| self.meta.chunk_blockers(self.m, self.mb, first + c * CHUNK_PAGES) == Some(0));
            if clear {
                return level;
            }
        }
        3
    }

    /// The largest level (>= `min_level`) whose block around `ipa` holds no RAM and none of
    /// KCore's device memory.
    fn largest_device_level(&self, ipa: u64, min_level: u8) -> u8 {
        for level in min_level..3 {
            let size = level_size(level);
            let base = align_down(ipa, size);
            if !self.mb.intersects(base, base + size) && !self.kcore_mmio.intersects(base, base + size) {
                return level;
            }
        }
        3
    }

    /// Give host page `pfn` to KCore as a page-table page for the pool of `vmid` (0 = host).
    pub fn donate_to_pool(&self, vmid: u16, pfn: Pfn) -> Result<()> {
        let s2 = self.lock_s2page();
        self.donate_to_pool_locked(&s2, vmid, pfn)
    }

    /// [`MemAux::donate_to_pool`] under a held `s2page`.
    pub fn donate_to_pool_locked(&self, s2: &LockGuard<'_>, vmid: u16, pfn: Pfn) -> Result<()> {
        self.check_s2page(s2);
        let t = self.table(vmid)?;
        let info = self.page(pfn)?;
        if info.owner != Owner::Host || info.count != 0 {
            return Err(Error::Denied);
        }
        // No CPU of the host's and no device writes it once it is KCore's (it is zeroed next).
        self.leave_host(pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
        let _pt = self.locks.acquire(LockId::Pt(vmid), self.m.cpu_index());
        self.m.zero_page(pfn << PAGE_SHIFT);
        t.pool.add(self.m, pfn << PAGE_SHIFT);
        Ok(())
    }

    /// `assign_pfn_to_vm`: VM `vmid` takes host page `pfn`, to be mapped at `gfn`.
    pub fn assign_pfn_to_vm(&self, vmid: u16, gfn: Gfn, pfn: Pfn) -> Result<()> {
        let s2 = self.lock_s2page();
        self.check_assign_locked(&s2, vmid, gfn, pfn)?;
        self.assign_pfn_to_vm_locked(&s2, vmid, gfn, pfn);
        Ok(())
    }

    /// Would [`MemAux::assign_pfn_to_vm`] succeed? Changes nothing.
    pub fn check_assign_locked(&self, s2: &LockGuard<'_>, vmid: u16, gfn: Gfn, pfn: Pfn) -> Result<()> {
        self.check_s2page(s2);
        let t = self.vm(vmid)?;
        self.check_gfn(t, gfn, 1)?;
        let info = self.page(pfn)?;
        match info.owner {
            // A host page with a share count is mapped by host DMA: never given away.
            Owner::Host if info.count == 0 => Ok(()),
            Owner::Vm(v) if v == vmid && info.gfn == gfn => Ok(()),
            _ => Err(Error::Denied),
        }
    }

    /// Perform a checked assignment ([`MemAux::check_assign_locked`] returned `Ok`).
    pub fn assign_pfn_to_vm_locked(&self, s2: &LockGuard<'_>, vmid: u16, gfn: Gfn, pfn: Pfn) {
        self.check_s2page(s2);
        let info = self.page(pfn).expect("checked");
        if info.owner == Owner::Vm(vmid) {
            return;
        }
        // Before the VM can map it.
        self.leave_host(pfn, PageInfo { owner: Owner::Vm(vmid), count: 0, gfn });
    }

    /// `map_pfn_vm`: map `pfn` at `gfn` in VM `vmid`'s stage-2, as a 4 KiB page (`level` 3)
    /// or a 2 MiB block (`level` 2, both aligned, every one of the 512 pages checked).
    pub fn map_pfn_vm(&self, vmid: u16, gfn: Gfn, pfn: Pfn, level: u8) -> Result<()> {
        let s2 = self.lock_s2page();
        self.check_map_vm_locked(&s2, vmid, gfn, pfn, level)?;
        for i in 0..pages_at(level) {
            let info = self.page(pfn + i)?;
            if info.owner != Owner::Vm(vmid) || info.gfn != gfn + i {
                return Err(Error::Denied);
            }
        }
        self.map_pfn_vm_locked(&s2, vmid, gfn, pfn, level);
        Ok(())
    }

    /// The table-side checks of a VM mapping of `pfn` at `gfn`/`level`: valid arguments (both
    /// aligned to the leaf size: a block descriptor ignores the low bits, so an unaligned pfn
    /// would map pages nobody checked), nothing mapped in the way (never overwrite a live
    /// entry: bug 2), and enough pool pages for the tables. Changes nothing.
    pub fn check_map_vm_locked(&self, s2: &LockGuard<'_>, vmid: u16, gfn: Gfn, pfn: Pfn, level: u8) -> Result<()> {
        self.check_s2page(s2);
        let t = self.vm(vmid)?;
        if level != 2 && level != 3 || !gfn.is_multiple_of(pages_at(level)) || !pfn.is_multiple_of(pages_at(level)) {
            return Err(Error::InvalidParameter);
        }
        let ipa = self.check_gfn(t, gfn, pages_at(level))?;
        let _pt = self.locks.acquire(LockId::Pt(vmid), self.m.cpu_index());
        let npt = t.expect_npt();
        if npt.walk(self.m, ipa).is_some() || npt.first_non_table_level(self.m, ipa) > level {
            return Err(Error::Exists);
        }
        if t.tables_needed(self.m, ipa, level) > t.pool.available() {
            return Err(Error::NoMemory);
        }
        Ok(())
    }

    /// Install a checked VM mapping (normal memory, RW, executable; KServ's wishes for
    /// permissions are not taken).
    pub fn map_pfn_vm_locked(&self, s2: &LockGuard<'_>, vmid: u16, gfn: Gfn, pfn: Pfn, level: u8) {
        self.check_s2page(s2);
        let t = self.vm(vmid).expect("checked");
        let (ipa, pa) = (gfn << PAGE_SHIFT, pfn << PAGE_SHIFT);
        let _pt = self.locks.acquire(LockId::Pt(vmid), self.m.cpu_index());
        t.map_locked(self.m, ipa, level, arch::s2_normal_leaf(pa, level)).expect("checked VM mapping");
    }

    /// `grant_vm_page`: VM `vmid` shares its page `pfn` with the host (count + 1).
    pub fn grant_vm_page(&self, vmid: u16, pfn: Pfn) -> Result<u64> {
        let s2 = self.lock_s2page();
        self.check_share_locked(&s2, vmid, pfn, true)?;
        Ok(self.share_locked(&s2, pfn, true))
    }

    /// `revoke_vm_page`: VM `vmid` takes back one grant of `pfn`; at 0 the host loses it.
    pub fn revoke_vm_page(&self, vmid: u16, pfn: Pfn) -> Result<u64> {
        let s2 = self.lock_s2page();
        self.check_share_locked(&s2, vmid, pfn, false)?;
        Ok(self.share_locked(&s2, pfn, false))
    }

    /// Would a grant (`up`) or revoke succeed? Changes nothing.
    pub fn check_share_locked(&self, s2: &LockGuard<'_>, vmid: u16, pfn: Pfn, up: bool) -> Result<()> {
        self.check_s2page(s2);
        self.table(vmid)?;
        let info = self.page(pfn)?;
        if vmid == 0 || info.owner != Owner::Vm(vmid) {
            return Err(Error::Denied);
        }
        match up {
            true if info.count >= MAX_SHARE_COUNT => Err(Error::BadState),
            false if info.count == 0 => Err(Error::BadState),
            _ => Ok(()),
        }
    }

    /// Perform a checked grant or revoke; returns the new count.
    pub fn share_locked(&self, s2: &LockGuard<'_>, pfn: Pfn, up: bool) -> u64 {
        self.check_s2page(s2);
        let info = self.page(pfn).expect("checked");
        let count = if up { info.count + 1 } else { info.count - 1 };
        self.meta.set(self.m, self.mb, pfn, PageInfo { count, ..info });
        if up && count == 1 {
            // The host may have KCore's zero page there (map_zero_host); it gets the page.
            self.host.clear_pfn_host(self.m, self.locks, pfn);
        }
        if count == 0 {
            self.host.clear_pfn_host(self.m, self.locks, pfn);
        }
        count
    }

    /// `clear_vm_page`: scrub VM `vmid`'s page `pfn` and give it back to the host.
    pub fn clear_vm_page(&self, vmid: u16, pfn: Pfn) -> Result<()> {
        let s2 = self.lock_s2page();
        self.check_clear_locked(&s2, vmid, pfn)?;
        self.clear_vm_page_locked(&s2, vmid, pfn);
        Ok(())
    }

    /// Would [`MemAux::clear_vm_page`] succeed? Changes nothing.
    pub fn check_clear_locked(&self, s2: &LockGuard<'_>, vmid: u16, pfn: Pfn) -> Result<()> {
        self.check_s2page(s2);
        if vmid == 0 {
            return Err(Error::InvalidParameter);
        }
        self.table(vmid)?;
        if self.page(pfn)?.owner != Owner::Vm(vmid) { Err(Error::Denied) } else { Ok(()) }
    }

    /// Perform a checked scrub: unmap from the VM (a block around it goes whole) and from the
    /// host, zero and clean to PoC, then hand to the host.
    pub fn clear_vm_page_locked(&self, s2: &LockGuard<'_>, vmid: u16, pfn: Pfn) {
        self.check_s2page(s2);
        let info = self.page(pfn).expect("checked");
        let t = self.table(vmid).expect("checked");
        let ipa = info.gfn << PAGE_SHIFT;
        if let Some(leaf) = t.npt().and_then(|npt| npt.walk(self.m, ipa))
            && leaf.output(ipa) == pfn << PAGE_SHIFT
        {
            t.unmap(self.m, self.locks, ipa);
        }
        self.host.clear_pfn_host(self.m, self.locks, pfn);
        self.m.zero_page(pfn << PAGE_SHIFT);
        self.give_back_to_host(pfn);
    }

    /// Page `pfn` stops being the host's (becomes `info`'s): out of the host's stage-2 (with
    /// the TLB invalidation) and out of the host-DMA table (with the SMMU's, completed), so
    /// neither the host's CPUs nor its devices reach it when this returns. Every transition
    /// that takes a page from the host goes through here. Caller holds `s2page`.
    fn leave_host(&self, pfn: Pfn, info: PageInfo) {
        self.meta.set(self.m, self.mb, pfn, info);
        self.host.clear_pfn_host(self.m, self.locks, pfn);
        self.dma.unmap(self.m, self.locks, pfn);
    }

    /// Page `pfn` (scrubbed) is plainly the host's again, its devices' too. The host-DMA
    /// table mapped it at boot, so its tables exist and nothing is allocated; a failure is a
    /// broken invariant. Caller holds `s2page`.
    pub fn give_back_to_host(&self, pfn: Pfn) {
        self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
        if let Err(e) = self.dma.map(self.m, self.locks, pfn, false) {
            panic!("host-DMA table: cannot map returned page {pfn:#x}: {e:?}");
        }
    }

    /// `lend_pfn_to_vm`: lend host page `pfn` to (non-protected) VM `vmid` at `gfn` and map it
    /// there. The page stays the host's to access (a VMM doing virtio needs that); it cannot be
    /// lent to a second VM, donated or assigned until [`MemAux::reclaim_lent_page`].
    pub fn lend_pfn_to_vm(&self, vmid: u16, gfn: Gfn, pfn: Pfn) -> Result<()> {
        let s2 = self.lock_s2page();
        let info = self.page(pfn)?;
        // A page with a share count is in use by host DMA; one lent already is some VM's.
        if info.owner != Owner::Host || info.count != 0 {
            return Err(Error::Denied);
        }
        self.check_map_vm_locked(&s2, vmid, gfn, pfn, 3)?;
        self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::Lent(vmid), count: 0, gfn });
        self.map_pfn_vm_locked(&s2, vmid, gfn, pfn, 3);
        Ok(())
    }

    /// `reclaim_lent_page`: VM `vmid` gives back the lent page mapped at `gfn`: unmapped from
    /// its stage-2 (with TLB invalidation) before the record says the host's alone. Returns
    /// the page.
    pub fn reclaim_lent_page(&self, vmid: u16, gfn: Gfn) -> Result<Pfn> {
        let s2 = self.lock_s2page();
        let t = self.vm(vmid)?;
        let ipa = self.check_gfn(t, gfn, 1)?;
        let leaf = t.walk(self.m, self.locks, ipa).ok_or(Error::NotFound)?;
        let pfn = leaf.output(ipa) >> PAGE_SHIFT;
        match self.meta.get(self.m, self.mb, pfn) {
            Some(info) if info.owner == Owner::Lent(vmid) && info.gfn == gfn => {}
            _ => return Err(Error::Denied),
        }
        self.reclaim_lent_locked(&s2, vmid, pfn);
        Ok(pfn)
    }

    /// Give back lent page `pfn` of VM `vmid` (its record says so): unmapped from the VM,
    /// then the host's alone.
    pub fn reclaim_lent_locked(&self, s2: &LockGuard<'_>, vmid: u16, pfn: Pfn) {
        self.check_s2page(s2);
        let info = self.page(pfn).expect("lent page is RAM");
        assert_eq!(info.owner, Owner::Lent(vmid), "reclaiming a page not lent to this VM");
        let t = self.table(vmid).expect("valid vmid");
        let ipa = info.gfn << PAGE_SHIFT;
        if let Some(leaf) = t.npt().and_then(|npt| npt.walk(self.m, ipa))
            && leaf.output(ipa) == pfn << PAGE_SHIFT
        {
            t.unmap(self.m, self.locks, ipa);
        }
        self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
    }

    /// `map_vm_io`: map device (non-RAM) page `pa` at `gpa` in VM `vmid`.
    pub fn map_vm_io(&self, vmid: u16, gpa: u64, pa: u64) -> Result<()> {
        let s2 = self.lock_s2page();
        if !gpa.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) || pa >> 48 != 0 {
            return Err(Error::InvalidParameter);
        }
        if self.meta.get(self.m, self.mb, pa >> PAGE_SHIFT).is_some() || self.kcore_mmio.intersects(pa, pa + PAGE_SIZE)
        {
            return Err(Error::Denied);
        }
        self.map_device_page_locked(&s2, vmid, gpa, pa)
    }

    /// `map_vm_cpuif`: map page `pa` of the GICv2 virtual CPU interface (GICV, one of
    /// KCore's device ranges) at `gpa` in VM `vmid`, where the guest expects its GIC CPU
    /// interface. KCore's own decision (layer 28, on the guest's fault there), never the
    /// host's.
    pub fn map_vm_cpuif(&self, vmid: u16, gpa: u64, pa: u64) -> Result<()> {
        let s2 = self.lock_s2page();
        if !gpa.is_multiple_of(PAGE_SIZE) || !self.kcore_mmio.intersects(pa, pa + PAGE_SIZE) {
            return Err(Error::InvalidParameter);
        }
        self.map_device_page_locked(&s2, vmid, gpa, pa)
    }

    /// Map device page `pa` at `gpa` in VM `vmid` if the gfn is free and tables can be had.
    fn map_device_page_locked(&self, s2: &LockGuard<'_>, vmid: u16, gpa: u64, pa: u64) -> Result<()> {
        self.check_map_vm_locked(s2, vmid, gpa >> PAGE_SHIFT, pa >> PAGE_SHIFT, 3)?;
        let t = self.vm(vmid)?;
        let _pt = self.locks.acquire(LockId::Pt(vmid), self.m.cpu_index());
        t.map_locked(self.m, gpa, 3, arch::s2_device_leaf(pa, 3)).expect("checked device mapping");
        Ok(())
    }

    /// Would [`MemAux::create_vm_table`] succeed? Changes nothing: `vmid` is a VM's table
    /// without a root, `root_pfn` is aligned to the root's size (2 pages on a 40-bit CPU,
    /// [`crate::arch::s2_root_pages`]) and every page of it is the host's, unshared.
    pub fn check_vm_root(&self, vmid: u16, root_pfn: Pfn) -> Result<()> {
        if vmid == 0 {
            return Err(Error::InvalidParameter);
        }
        if self.table(vmid)?.npt().is_some() {
            return Err(Error::Exists);
        }
        self.check_root_pages(root_pfn)
    }

    /// Could host pages `root_pfn..` be a VM's stage-2 root? `root_pfn` aligned to the number
    /// of pages a root takes (every table has the host's IPA size), each page the host's and
    /// unshared. Changes nothing.
    pub fn check_root_pages(&self, root_pfn: Pfn) -> Result<()> {
        let pages = self.host.root_pages();
        if !root_pfn.is_multiple_of(pages) {
            return Err(Error::InvalidParameter);
        }
        for pfn in root_pfn..root_pfn.saturating_add(pages) {
            let info = self.page(pfn)?;
            if info.owner != Owner::Host || info.count != 0 {
                return Err(Error::Denied);
            }
        }
        Ok(())
    }

    /// Create VM `vmid`'s stage-2 root from host pages `root_pfn..` (as many as a root
    /// takes), which become KCore's ([`MemAux::check_vm_root`]).
    pub fn create_vm_table(&self, vmid: u16, root_pfn: Pfn) -> Result<()> {
        let s2 = self.lock_s2page();
        self.check_s2page(&s2);
        self.check_vm_root(vmid, root_pfn)?;
        let t = self.table(vmid)?;
        for pfn in root_pfn..root_pfn + t.root_pages() {
            self.leave_host(pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
        }
        t.init_root_at(self.m, self.locks, root_pfn << PAGE_SHIFT).expect("root checked under s2page");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcore::KCore;
    use crate::machine::sim::SimMachine;
    use crate::pt::ptalloc::PagePool;
    use crate::{BLOCK_1G, BLOCK_2M};

    const RAM: u64 = 0x4000_0000;
    /// KCore's own memory in these tests: metadata and tables at the top of a 2 GiB machine.
    const KMEM: u64 = 0xbf00_0000;

    /// A machine with RAM [1 GiB, 3 GiB); KCore's metadata and pool in its last 16 MiB.
    fn kcore() -> KCore<SimMachine> {
        let m = SimMachine::new(KMEM, 16 << 20);
        let mb = MemBlocks::new(&[(RAM, 2 * BLOCK_1G)]).unwrap();
        let pool = PagePool::new(KMEM + (8 << 20), KMEM + (16 << 20));
        let k = KCore::new(m, mb, KMEM, pool, 40).unwrap();
        k.mem().protect_kcore(KMEM, KMEM + (16 << 20)).unwrap();
        k
    }

    #[test]
    fn host_ram_gets_the_largest_block_that_holds_only_host_pages() {
        let k = kcore();
        // The first GiB holds no KCore page: one 1 GiB block.
        let m = k.mem().map_page_host(RAM + 0x1234).unwrap();
        assert_eq!((m.base, m.level, m.device, m.already), (RAM, 1, false, false));
        // The second GiB holds KCore's memory at its top: 2 MiB blocks below it.
        let m = k.mem().map_page_host(RAM + BLOCK_1G + 5 * BLOCK_2M + 8).unwrap();
        assert_eq!((m.base, m.level), (RAM + BLOCK_1G + 5 * BLOCK_2M, 2));
        let leaf = k.host.expect_npt().walk(&k.m, RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000).unwrap();
        assert_eq!(leaf.output(RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000), RAM + BLOCK_1G + 5 * BLOCK_2M + 0x1000);
        // Mapping again is recognised as done.
        assert!(k.mem().map_page_host(RAM + 0x5000).unwrap().already);
    }

    #[test]
    fn kcore_pages_are_refused_and_never_mapped() {
        let k = kcore();
        for pa in [KMEM, KMEM + 0x1000, KMEM + (16 << 20) - 8] {
            assert_eq!(k.mem().map_page_host(pa), Err(Error::Denied));
            assert!(k.host.expect_npt().walk(&k.m, pa).is_none());
        }
    }

    #[test]
    fn a_page_next_to_kcore_is_mapped_alone() {
        let k = kcore();
        // Protect one page in the middle of the first GiB: its 2 MiB chunk and its GiB can no
        // longer be block-mapped, so the neighbours map as 4 KiB pages and 2 MiB blocks.
        let hole = RAM + 3 * BLOCK_2M + 0x7000;
        k.mem().protect_kcore(hole, hole + PAGE_SIZE).unwrap();
        let m = k.mem().map_page_host(hole + PAGE_SIZE).unwrap();
        assert_eq!((m.base, m.level), (hole + PAGE_SIZE, 3));
        let m = k.mem().map_page_host(RAM).unwrap();
        assert_eq!((m.base, m.level), (RAM, 2));
        assert_eq!(k.mem().map_page_host(hole), Err(Error::Denied));
    }

    #[test]
    fn protecting_a_mapped_page_unmaps_it_with_tlb_invalidation() {
        let k = kcore();
        k.mem().map_page_host(RAM).unwrap();
        k.m.take_tlb_log();
        k.mem().protect_kcore(RAM + BLOCK_2M, RAM + BLOCK_2M + PAGE_SIZE).unwrap();
        assert!(k.host.expect_npt().walk(&k.m, RAM).is_none(), "the 1 GiB block around it is gone");
        assert_eq!(k.m.take_tlb_log(), vec![crate::machine::sim::TlbOp::Ipa { vmid: 0, ipa: RAM }]);
        assert_eq!(k.mem().map_page_host(RAM + BLOCK_2M), Err(Error::Denied));
        assert_eq!(k.mem().map_page_host(RAM).unwrap().level, 2);
    }

    #[test]
    fn device_memory_is_mapped_as_device_in_blocks_that_avoid_ram() {
        let k = kcore();
        let uart = 0x0900_0000;
        let m = k.mem().map_page_host(uart).unwrap();
        assert_eq!((m.base, m.level, m.device), (0, 1, true));
        let leaf = k.host.expect_npt().walk(&k.m, uart).unwrap();
        assert_eq!(leaf.desc & crate::arch::desc::S2_MEMATTR_DEVICE, crate::arch::desc::S2_MEMATTR_DEVICE);
        assert_ne!(leaf.desc & crate::arch::desc::S2_XN, 0);
        // High PCIe space far above RAM.
        let m = k.mem().map_page_host(0x80_0000_0000 + 0x10).unwrap();
        assert_eq!((m.level, m.device), (1, true));
    }

    #[test]
    fn kcore_device_memory_is_never_the_hosts_nor_a_vms_by_the_hosts_choice() {
        let k = kcore();
        // QEMU virt's GICv2 virtual interface frames.
        let (gich, gicv) = (0x0803_0000, 0x0804_0000);
        k.configure_gic_v2((gich, gich + 0x1_0000), (gicv, gicv + 0x1_0000)).unwrap();
        assert_eq!(k.mem().map_page_host(gich + 0x100), Err(Error::Denied));
        assert_eq!(k.mem().map_page_host(gicv + 0xfffc), Err(Error::Denied));
        assert!(k.host.expect_npt().walk(&k.m, gich).is_none());
        // The rest of the device space still maps, in blocks that stop short of them.
        let m = k.mem().map_page_host(0x0900_0000).unwrap();
        assert_eq!((m.base, m.level, m.device), (0x0900_0000, 2, true));
        let m = k.mem().map_page_host(0x0801_0000).unwrap();
        assert_eq!((m.base, m.level, m.device), (0x0801_0000, 3, true), "the GICC page next to them");
        assert_eq!(k.mem().map_page_host(gich), Err(Error::Denied), "still refused");
        // Neither the host's nor anyone's to give a VM.
        assert_eq!(k.mem().map_vm_io(1, 0x0801_0000, gicv), Err(Error::Denied));
        assert_eq!(k.mem().map_vm_io(1, 0x0801_0000, gich), Err(Error::Denied));
        // Ranges are page aligned, disjoint from RAM, four at most.
        k.kcore_mmio.add(0x1000, 0x2000).unwrap();
        k.kcore_mmio.add(0x3000, 0x4000).unwrap();
        assert_eq!(k.kcore_mmio.add(0x5000, 0x6000), Err(Error::NoMemory));
        assert_eq!(k.configure_gic_v2((RAM, RAM + 0x1000), (gicv, gicv + 0x1000)), Err(Error::InvalidParameter));
        assert_eq!(k.kcore_mmio.ranges().count(), 4);
    }

    #[test]
    fn addresses_outside_the_ipa_space_are_invalid() {
        let k = kcore();
        assert_eq!(k.mem().map_page_host(1 << 40), Err(Error::InvalidParameter));
        assert_eq!(k.mem().map_page_host(u64::MAX), Err(Error::InvalidParameter));
    }

    #[test]
    fn shared_vm_pages_map_one_page_at_a_time() {
        let k = kcore();
        let pfn = (RAM + 0x10_0000) >> PAGE_SHIFT;
        let mine = PageInfo { owner: Owner::Vm(3), count: 0, gfn: 0x10 };
        k.meta.set(&k.m, &k.mb, pfn, mine);
        assert_eq!(k.mem().map_page_host(pfn << PAGE_SHIFT), Err(Error::Denied));
        k.meta.set(&k.m, &k.mb, pfn, PageInfo { count: 1, ..mine });
        let m = k.mem().map_page_host(pfn << PAGE_SHIFT).unwrap();
        assert_eq!((m.base, m.level), (pfn << PAGE_SHIFT, 3));
    }

    #[test]
    fn concurrent_faults_on_the_same_range_map_once() {
        let k = std::sync::Arc::new(kcore());
        let threads: Vec<_> = (0..4)
            .map(|cpu| {
                let k = k.clone();
                std::thread::spawn(move || {
                    SimMachine::set_cpu(cpu);
                    (0..64u64)
                        .map(|i| k.mem().map_page_host(RAM + BLOCK_1G + i * BLOCK_2M).unwrap().already)
                        .filter(|&a| !a)
                        .count()
                })
            })
            .collect();
        let fresh: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(fresh, 64, "each 2 MiB block is installed exactly once");
    }
}
