//! KCore's security invariants (DESIGN section 4), checked over the concrete state: the
//! ownership records and the page tables themselves. Run after every operation in the tests
//! and after every host trap in debug builds of the EL2 binary; a violation there is fatal.
//!
//! 1. KCore's pages (image, metadata, table pools, every table page) are mapped in no stage-2.
//! 2. The host stage-2 is an identity map of device space, host-owned pages (including those
//!    it lent to a non-protected VM), and pages a VM shared (count > 0); the one other leaf it
//!    may hold is KCore's zero page (all zeros), read-only and never executable, at a RAM page
//!    the host may not map (what the host kernel reads there).
//! 3. A VM's stage-2 maps RAM only where that VM owns the page, or (a non-protected VM) the
//!    host lent it the page, and the page's gfn is that address (so a page is mapped at one
//!    gfn at most, and in one VM at most). A protected VM never maps a lent page.
//! 4. Page 0 is never RAM; the 2 MiB block counters match the records.
//! 5. VMs: a vCPU context page is KCore's; only a verified VM has an active vCPU; a verified
//!    VM's boot images are its own pages at their load addresses; at most as many vCPUs are
//!    active as there are CPUs (each runs on one CPU: VCPU_RUN makes it active only from ready).
//! 6. MMIO guard: only a protected VM has enrolled MMIO, at most `MMIO_GUARD_RANGES` ranges;
//!    while none of its vCPUs runs (only a running vCPU enrols), they are sorted, non-empty,
//!    page aligned, apart (touching ranges are one), inside the IPA space and outside its RAM.
//! 7. KCore's device memory (GICv2: GICH and GICV; the SMMU's registers) is in no host leaf;
//!    a VM maps of it only GICV, page for page at the guest's GIC CPU interface window, as a
//!    device leaf.
//! 8. Host DMA, once KCore took an SMMU: the host-DMA table is an identity map of exactly the
//!    RAM pages the host owns (including those it lent), as Normal 4 KiB leaves, plus Device
//!    leaves only outside RAM and KCore's device memory (the MSI doorbell); its table pages
//!    are KCore's; every STE of KCore's stream table is invalid, abort, or has stage 2 on
//!    through it in VMID 0 (a shadow of the host's STE, layer 25's `shadow_is_safe`). With
//!    layer 12's invalidation this is SeKVM's "a page with DMA mappings is never given to a
//!    VM", checked on the tables the hardware walks.

use crate::kcore::KCore;
use crate::machine::Machine;
use crate::mem::pagemgmt::{CHUNK_PAGES, Owner};
use crate::pt::nptops::S2Table;
use crate::{PAGE_SHIFT, Pfn};

/// A broken invariant, with where it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A page-table page of `vmid`'s table is not KCore-owned RAM.
    TablePageNotKCore { vmid: u16, table: u64 },
    /// A host leaf maps `ipa` somewhere else.
    HostNotIdentity { ipa: u64, pa: u64 },
    /// The host maps KCore's zero page other than read-only and non-executable at RAM it may
    /// not map, or the zero page is not zero or not KCore's.
    HostZeroPageMisused { ipa: u64 },
    /// More host leaves map the zero page than KCore counts (a VM's teardown would skip
    /// removing some that went stale).
    ZeroLeavesUncounted { leaves: u64, counted: u64 },
    /// The host maps a RAM page it may not use.
    HostMapsForeign { pfn: Pfn, owner: Owner },
    /// A host device-typed leaf covers RAM, or a normal leaf covers non-RAM.
    HostWrongMemoryType { ipa: u64 },
    /// VM `vmid` maps at `gfn` a RAM page it does not own at that gfn.
    VmMapsForeign { vmid: u16, gfn: u64, pfn: Pfn, owner: Owner },
    /// A VM maps RAM with a device leaf.
    VmDeviceLeafOnRam { vmid: u16, gfn: u64 },
    /// Page 0 is RAM.
    PageZeroIsRam,
    /// A 2 MiB block counter disagrees with the records.
    ChunkCounter { chunk: Pfn, stored: u64, actual: u64 },
    /// A vCPU context page of VM `vmid` is not KCore's.
    VcpuPageNotKCore { vmid: u16, vcpu: usize },
    /// A vCPU of a VM that is not verified is active.
    ActiveVcpuOfUnverifiedVm { vmid: u16 },
    /// A page of a verified VM's boot image is not the VM's, or not at its place.
    ImagePageNotOwned { vmid: u16, gfn: u64 },
    /// More vCPUs active than CPUs.
    TooManyActiveVcpus { active: usize },
    /// A protected VM maps a page the host lent (the host could read the VM's memory).
    LentToProtectedVm { vmid: u16, gfn: u64 },
    /// VM `vmid`'s MMIO-guard table is malformed, or held by a VM that may not have one.
    MmioGuardMalformed { vmid: u16 },
    /// The host maps KCore's device memory at `ipa`, or VM `vmid` maps it other than as its
    /// GIC CPU interface (`vmid` 0: the host).
    KcoreMmioMapped { vmid: u16, ipa: u64 },
    /// The host-DMA table maps `ipa` though it is not a page the host owns (or not to
    /// itself, or not as it should: a device leaf on RAM, a normal leaf elsewhere).
    HostDmaForeign { ipa: u64 },
    /// A host-owned page is missing from the host-DMA table (its devices would fault).
    HostDmaMissing { pfn: Pfn },
    /// A page of the host-DMA table, or of KCore's stream table, is not KCore's.
    HostDmaTablePage { pa: u64 },
    /// The STE of stream `sid` in KCore's stream table lets DMA around the host-DMA table.
    StreamNotHostDma { sid: u32 },
}

fn is_device_leaf(d: u64) -> bool {
    d & (0b1111 << 2) == crate::arch::desc::S2_MEMATTR_DEVICE
}

/// Check every invariant; the first violation found is returned.
pub fn check<M: Machine>(k: &KCore<M>) -> core::result::Result<(), Violation> {
    check_scoped(k, false)
}

/// Check every invariant; with `recent_dma`, invariant 8 examines only the pages whose
/// host-DMA mapping changed since it last ran (all of them when more did than KCore keeps
/// track of, or the first time): what the debug build does after every host trap.
fn check_scoped<M: Machine>(k: &KCore<M>, recent_dma: bool) -> core::result::Result<(), Violation> {
    let owner = |pfn: Pfn| k.meta.owner(&k.m, &k.mb, pfn);
    if owner(0).is_some() {
        return Err(Violation::PageZeroIsRam);
    }
    if owner(k.zero_page >> PAGE_SHIFT) != Some(Owner::KCore) || (0..512).any(|w| k.m.load(k.zero_page + w * 8) != 0) {
        return Err(Violation::HostZeroPageMisused { ipa: k.zero_page });
    }
    let mut err = None;
    let mut note = |v: Violation| {
        err.get_or_insert(v);
    };
    for t in core::iter::once(&k.host).chain(k.vms.iter()) {
        check_tables(k, t, &mut note);
    }
    if let Some(npt) = k.host.npt() {
        let mut zero_leaves = 0;
        npt.for_each_leaf(&k.m, |ipa, leaf| {
            if leaf.output(ipa) == k.zero_page {
                zero_leaves += 1;
                let want = crate::arch::s2_zero_leaf(k.zero_page);
                let not_hosts = k.meta.get(&k.m, &k.mb, ipa >> PAGE_SHIFT).is_some_and(|i| !i.host_may_map());
                if leaf.level != 3 || leaf.desc != want || !not_hosts {
                    note(Violation::HostZeroPageMisused { ipa });
                }
                return;
            }
            if leaf.output(ipa) != ipa {
                note(Violation::HostNotIdentity { ipa, pa: leaf.output(ipa) });
                return;
            }
            if k.kcore_mmio.intersects(ipa, ipa + leaf.size()) {
                note(Violation::KcoreMmioMapped { vmid: 0, ipa });
            }
            let device = is_device_leaf(leaf.desc);
            if device && k.mb.intersects(ipa, ipa + leaf.size()) {
                note(Violation::HostWrongMemoryType { ipa });
            }
            if device {
                return;
            }
            for pfn in (ipa >> PAGE_SHIFT)..((ipa + leaf.size()) >> PAGE_SHIFT) {
                match k.meta.get(&k.m, &k.mb, pfn) {
                    None => note(Violation::HostWrongMemoryType { ipa }),
                    Some(i) if i.owner.is_hosts() => {}
                    Some(i) if matches!(i.owner, Owner::Vm(_)) && i.count > 0 => {}
                    Some(i) => note(Violation::HostMapsForeign { pfn, owner: i.owner }),
                }
            }
        });
        let counted = k.zero_leaves.load(core::sync::atomic::Ordering::Relaxed);
        if zero_leaves > counted {
            note(Violation::ZeroLeavesUncounted { leaves: zero_leaves, counted });
        }
    }
    for t in k.vms.iter() {
        let Some(npt) = t.npt() else { continue };
        let protected = k.vminfo[t.vmid as usize - 1].kind() == crate::vm::VmKind::Protected;
        npt.for_each_leaf(&k.m, |ipa, leaf| {
            let first = leaf.output(ipa) >> PAGE_SHIFT;
            let out = leaf.output(ipa);
            if k.kcore_mmio.intersects(out, out + leaf.size())
                && (leaf.level != 3 || !is_device_leaf(leaf.desc) || k.vgic.guest_cpuif_page(ipa) != Some(out))
            {
                note(Violation::KcoreMmioMapped { vmid: t.vmid, ipa });
            }
            for i in 0..leaf.size() >> PAGE_SHIFT {
                let (gfn, pfn) = ((ipa >> PAGE_SHIFT) + i, first + i);
                match k.meta.get(&k.m, &k.mb, pfn) {
                    None => {}
                    Some(_) if is_device_leaf(leaf.desc) => note(Violation::VmDeviceLeafOnRam { vmid: t.vmid, gfn }),
                    Some(info) if info.owner == Owner::Vm(t.vmid) && info.gfn == gfn => {}
                    Some(info) if info.owner == Owner::Lent(t.vmid) && info.gfn == gfn && !protected => {}
                    Some(info) if info.owner == Owner::Lent(t.vmid) && info.gfn == gfn => {
                        note(Violation::LentToProtectedVm { vmid: t.vmid, gfn })
                    }
                    Some(info) => note(Violation::VmMapsForeign { vmid: t.vmid, gfn, pfn, owner: info.owner }),
                }
            }
        });
    }
    for r in k.mb.regions() {
        let first = r.base >> PAGE_SHIFT;
        let end = r.end() >> PAGE_SHIFT;
        let mut chunk = first.next_multiple_of(CHUNK_PAGES);
        while chunk < end {
            let actual = (chunk..(chunk + CHUNK_PAGES).min(end))
                .filter(|&p| {
                    k.meta.get(&k.m, &k.mb, p).is_some_and(|i| match i.owner {
                        Owner::Host => i.count != 0,
                        Owner::Lent(_) => false,
                        _ => true,
                    })
                })
                .count() as u64;
            let stored = k.meta.chunk_blockers(&k.m, &k.mb, chunk).unwrap_or(0);
            if stored != actual {
                note(Violation::ChunkCounter { chunk, stored, actual });
            }
            chunk += CHUNK_PAGES;
        }
    }
    check_vms(k, &mut note);
    check_host_dma(k, recent_dma, &mut note);
    match err {
        Some(v) => Err(v),
        None => Ok(()),
    }
}

fn check_host_dma<M: Machine>(k: &KCore<M>, recent: bool, note: &mut impl FnMut(Violation)) {
    use crate::smmu::queue::{L2_TABLES, SPLIT};
    use crate::smmu::raw;
    let Some(w) = k.dma.table.walker() else { return };
    let changed = k.dma.changed_since_checked();
    if recent && let Some(pages) = changed {
        for pfn in pages {
            let hosts = k.meta.owner(&k.m, &k.mb, pfn).is_some_and(|o| o.is_hosts());
            match (hosts, k.dma.maps(&k.m, pfn)) {
                (true, false) => note(Violation::HostDmaMissing { pfn }),
                (false, true) => note(Violation::HostDmaForeign { ipa: pfn << PAGE_SHIFT }),
                _ => {}
            }
        }
        return;
    }
    let kcores = |pa: u64| k.meta.owner(&k.m, &k.mb, pa >> PAGE_SHIFT) == Some(Owner::KCore);
    w.npt.for_each_table(&k.m, |t, _, _| {
        if !kcores(t) {
            note(Violation::HostDmaTablePage { pa: t });
        }
    });
    let mut mapped = 0u64;
    w.for_each_leaf(&k.m, |ipa, d| {
        let page = ipa + crate::PAGE_SIZE;
        if d & crate::arch::desc::ADDR_MASK != ipa {
            note(Violation::HostDmaForeign { ipa });
        } else if is_device_leaf(d) {
            if k.mb.intersects(ipa, page) || k.kcore_mmio.intersects(ipa, page) {
                note(Violation::HostDmaForeign { ipa });
            }
        } else if d != crate::arch::s2_normal_leaf(ipa, 3) {
            note(Violation::HostDmaForeign { ipa });
        } else {
            match k.meta.owner(&k.m, &k.mb, ipa >> PAGE_SHIFT) {
                Some(o) if o.is_hosts() => mapped += 1,
                _ => note(Violation::HostDmaForeign { ipa }),
            }
        }
    });
    // Every leaf checked above maps a host page; so the table misses one exactly when there
    // are more host pages than leaves (then find it, for the report).
    let host_pages = || k.mb.regions().iter().flat_map(|r| (r.base >> PAGE_SHIFT)..(r.end() >> PAGE_SHIFT));
    let hosts = |pfn: Pfn| k.meta.owner(&k.m, &k.mb, pfn).is_some_and(|o| o.is_hosts());
    if host_pages().filter(|&p| hosts(p)).count() as u64 != mapped
        && let Some(pfn) = host_pages().find(|&p| hosts(p) && !k.dma.maps(&k.m, p))
    {
        note(Violation::HostDmaMissing { pfn });
    }
    let (strtab, Some(ste)) = (k.dma.dev.strtab(), k.dma.stream_ste()) else { return };
    if strtab == 0 {
        return;
    }
    if !kcores(strtab) {
        note(Violation::HostDmaTablePage { pa: strtab });
    }
    // The first L2_TABLES level-2 tables are there from boot; others once the host configured
    // one of their streams; the rest of the level-1 table is invalid (those streams refused).
    for t in 0..k.dma.dev.streams() >> SPLIT {
        let l1 = k.m.load(strtab + 8 * t);
        if l1 == 0 && t >= u64::from(L2_TABLES) {
            continue;
        }
        let l2 = l1 & raw::ADDR_MASK_51_6;
        if l1 != raw::l1_desc(l2, SPLIT) || (0..4).any(|p| !kcores(l2 + p * crate::PAGE_SIZE)) {
            note(Violation::HostDmaTablePage { pa: l2 });
            continue;
        }
        for i in 0..1u64 << SPLIT {
            let at = l2 + i * raw::STE_BYTES;
            let s: raw::Ste = core::array::from_fn(|w| k.m.load(at + 8 * w as u64));
            if !crate::smmu::aux::shadow_is_safe(&s, (ste[2], ste[3])) {
                note(Violation::StreamNotHostDma { sid: ((t << SPLIT) + i) as u32 });
            }
        }
    }
}

fn check_vms<M: Machine>(k: &KCore<M>, note: &mut impl FnMut(Violation)) {
    use crate::vm::{MAX_VCPUS, VcpuState, VmState};
    let mut active = 0;
    for (i, info) in k.vminfo.iter().enumerate() {
        let vmid = i as u16 + 1;
        let state = info.state();
        for v in 0..MAX_VCPUS {
            if info.vcpu(v) == VcpuState::Unused {
                continue;
            }
            if k.meta.owner(&k.m, &k.mb, info.vcpu_page(v) >> PAGE_SHIFT) != Some(Owner::KCore) {
                note(Violation::VcpuPageNotKCore { vmid, vcpu: v });
            }
            if info.vcpu(v) == VcpuState::Active {
                active += 1;
                if state != VmState::Verified {
                    note(Violation::ActiveVcpuOfUnverifiedVm { vmid });
                }
            }
        }
        let running = (0..MAX_VCPUS).any(|v| info.vcpu(v) == VcpuState::Active);
        check_mmio_guard(k, vmid, info, running, note);
        if state == VmState::Verified
            && let Some(npt) = k.vms[i].npt()
        {
            for img in 0..info.image_count() {
                let image = info.image(img);
                for p in 0..image.pages() {
                    let ipa = image.load_ipa + p * crate::PAGE_SIZE;
                    let gfn = ipa >> PAGE_SHIFT;
                    let ok = npt.walk(&k.m, ipa).is_some_and(|leaf| {
                        let info = k.meta.get(&k.m, &k.mb, leaf.output(ipa) >> PAGE_SHIFT);
                        info.is_some_and(|i| i.owner == Owner::Vm(vmid) && i.gfn == gfn)
                    });
                    if !ok {
                        note(Violation::ImagePageNotOwned { vmid, gfn });
                    }
                }
            }
        }
    }
    if active > crate::locks::locks::MAX_CPUS {
        note(Violation::TooManyActiveVcpus { active });
    }
}

/// Invariant 6 for VM `vmid` (`running`: one of its vCPUs is in the guest, which may be in
/// the middle of an enrolment: only the bound is checked then).
fn check_mmio_guard<M: Machine>(
    k: &KCore<M>,
    vmid: u16,
    info: &crate::vm::VmInfo,
    running: bool,
    note: &mut impl FnMut(Violation),
) {
    use crate::vm::{VmKind, VmState, mmioguard::MMIO_GUARD_RANGES};
    let g = info.mmio_guard();
    let may_have = info.state() != VmState::Unused && info.kind() == VmKind::Protected;
    if g.stored_len() > MMIO_GUARD_RANGES || (!may_have && g.in_use()) {
        note(Violation::MmioGuardMalformed { vmid });
    }
    if running {
        return;
    }
    let limit = 1u64 << k.host.ia_bits;
    let mut prev_end = None;
    for (start, end) in g.ranges() {
        let aligned = start.is_multiple_of(crate::PAGE_SIZE) && end.is_multiple_of(crate::PAGE_SIZE);
        let ordered = start < end && end <= limit && prev_end.is_none_or(|p| p < start);
        // Overlap with RAM, decided without walking the range page by page: a RAM region
        // that overlaps it holds one of its end pages or starts inside it.
        let ram = aligned
            && ordered
            && (info.is_ram(start)
                || info.is_ram(end - crate::PAGE_SIZE)
                || info.ram_regions().any(|(base, _)| start <= base && base < end)
                || (info.ram_regions().count() == 0 && end > crate::vm::LEGACY_RAM_START));
        if !aligned || !ordered || ram {
            note(Violation::MmioGuardMalformed { vmid });
        }
        prev_end = Some(end);
    }
}

fn check_tables<M: Machine>(k: &KCore<M>, t: &S2Table, note: &mut impl FnMut(Violation)) {
    let Some(npt) = t.npt() else { return };
    npt.for_each_table(&k.m, |table, _, _| {
        // Table pages come from KCore's reserve or donated pages; either way KCore's. A table
        // outside RAM would be a KCore bug too.
        if k.meta.owner(&k.m, &k.mb, table >> PAGE_SHIFT) != Some(Owner::KCore) {
            note(Violation::TablePageNotKCore { vmid: t.vmid, table });
        }
    });
}

/// [`check`] while holding `s2page`, so no transition is half done (every transition holds it
/// from its first check to its last write), with invariant 8 over the host-DMA table's recent
/// changes only. For use while other CPUs run: after every host trap in debug builds.
pub fn check_quiesced<M: Machine>(k: &KCore<M>) -> core::result::Result<(), Violation> {
    let _s2 = k.locks.acquire(crate::locks::LockId::S2Page, k.m.cpu_index());
    check_scoped(k, true)
}
