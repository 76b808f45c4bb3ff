//! Specification of layers 16-17 (MemAux, MemOps): the ownership state machine.

use crate::Pfn;
use crate::arch::desc;
use crate::error::{Error, Result};
use crate::kcore::{KCore, MAX_VMS};
use crate::machine::Machine;
use crate::mem::memops::pfn_range_is_valid;
use crate::mem::pagemgmt::{CHUNK_PAGES, MAX_SHARE_COUNT, Owner, PageInfo};
use crate::{PAGE_SHIFT, PAGE_SIZE};
use std::collections::{BTreeMap, BTreeSet};

/// One 4 KiB page of a VM's stage-2 map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbsLeaf {
    /// The page it maps to.
    pub pfn: Pfn,
    /// Level of the leaf that maps it (2: part of a 2 MiB block, 3: a page).
    pub level: u8,
    /// A device mapping.
    pub device: bool,
}

/// The abstract memory state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsMem {
    /// IPA size of every stage-2 table.
    pub ia_bits: u32,
    /// The record of every RAM page.
    pub pages: BTreeMap<Pfn, PageInfo>,
    /// RAM pages the host stage-2 maps (identity).
    pub host_mapped: BTreeSet<Pfn>,
    /// RAM pages the host may not map where its stage-2 maps KCore's zero page (a host kernel
    /// read was there).
    pub host_zero: BTreeSet<Pfn>,
    /// VMs with a stage-2 table.
    pub vm_tables: BTreeSet<u16>,
    /// Pool pages left for each VM's tables below the root.
    pub pools: BTreeMap<u16, u64>,
    /// Per VM, its tables below the root as (level, first IPA they translate).
    pub vm_table_pages: BTreeSet<(u16, u8, u64)>,
    /// Per VM and gfn, what its stage-2 maps there.
    pub vm_maps: BTreeMap<(u16, u64), AbsLeaf>,
    /// Per VM, the 2 MiB gfn blocks that hold a level-3 table (tables are never freed, so a
    /// block once split can no longer take a 2 MiB leaf).
    pub vm_split: BTreeSet<(u16, u64)>,
}

/// One request to layers 16-17, with arguments as a caller (the host, a VM) gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    HostFault { ipa: u64 },
    // A host stage-2 translation fault on a plain data read by the host kernel (EL1).
    HostKernelRead { ipa: u64 },
    Donate { vmid: u16, pfn: Pfn },
    CreateVm { vmid: u16, root: Pfn },
    Assign { vmid: u16, gfn: u64, pfn: Pfn },
    Map { vmid: u16, gfn: u64, pfn: Pfn, level: u8 },
    ProtMap { vmid: u16, gfn: u64, pfn: Pfn, level: u8 },
    Grant { vmid: u16, pfn: Pfn },
    Revoke { vmid: u16, pfn: Pfn },
    Scrub { vmid: u16, pfn: Pfn },
    MapIo { vmid: u16, gpa: u64, pa: u64 },
    ClearRange { vmid: u16, pfn: Pfn, n: u64 },
    ShareRange { vmid: u16, gpa: u64, size: u64, up: bool },
    Lend { vmid: u16, gfn: u64, pfn: Pfn },
    Reclaim { vmid: u16, gfn: u64 },
}

const fn pages_at(level: u8) -> u64 {
    if level == 2 { CHUNK_PAGES } else { 1 }
}

impl AbsMem {
    fn table(&self, vmid: u16) -> Result<()> {
        if vmid as usize > MAX_VMS { Err(Error::InvalidParameter) } else { Ok(()) }
    }

    fn vm(&self, vmid: u16) -> Result<()> {
        if vmid == 0 {
            return Err(Error::InvalidParameter);
        }
        self.table(vmid)?;
        if self.vm_tables.contains(&vmid) { Ok(()) } else { Err(Error::NotFound) }
    }

    fn page(&self, pfn: Pfn) -> Result<PageInfo> {
        self.pages.get(&pfn).copied().ok_or(Error::InvalidParameter)
    }

    fn check_gfn(&self, gfn: u64, pages: u64) -> Result<()> {
        let ipa = gfn.checked_mul(PAGE_SIZE).ok_or(Error::InvalidParameter)?;
        let end = ipa.checked_add(pages * PAGE_SIZE).ok_or(Error::InvalidParameter)?;
        if gfn >> 36 != 0 || end > 1u64 << self.ia_bits { Err(Error::InvalidParameter) } else { Ok(()) }
    }

    /// May the host map `pfn`?
    pub fn host_may_map(&self, pfn: Pfn) -> bool {
        match self.pages.get(&pfn) {
            // Its own pages (lent ones too: the host keeps access), and pages a VM shares.
            Some(i) => {
                matches!(i.owner, Owner::Host | Owner::Lent(_)) || (matches!(i.owner, Owner::Vm(_)) && i.count > 0)
            }
            None => true,
        }
    }

    fn check_map_vm(&self, vmid: u16, gfn: u64, pfn: Pfn, level: u8) -> Result<()> {
        self.vm(vmid)?;
        if level != 2 && level != 3 || !gfn.is_multiple_of(pages_at(level)) || !pfn.is_multiple_of(pages_at(level)) {
            return Err(Error::InvalidParameter);
        }
        self.check_gfn(gfn, pages_at(level))?;
        let block = gfn / CHUNK_PAGES;
        let mapped = self.vm_maps.contains_key(&(vmid, gfn));
        let blocked = level == 2
            && (self.vm_split.contains(&(vmid, block))
                || (gfn..gfn + CHUNK_PAGES).any(|g| self.vm_maps.contains_key(&(vmid, g))));
        if mapped || blocked {
            return Err(Error::Exists);
        }
        if self.missing_tables(vmid, gfn << PAGE_SHIFT, level).len() as u64
            > self.pools.get(&vmid).copied().unwrap_or(0)
        {
            return Err(Error::NoMemory);
        }
        Ok(())
    }

    /// The tables (below the root, down to `level`) a leaf at `ipa` needs that VM `vmid` does
    /// not have yet.
    fn missing_tables(&self, vmid: u16, ipa: u64, level: u8) -> Vec<(u16, u8, u64)> {
        (crate::arch::s2_start_level(self.ia_bits) + 1..=level)
            .map(|l| (vmid, l, ipa & !((1u64 << (12 + 9 * (4 - l as u32))) - 1)))
            .filter(|t| !self.vm_table_pages.contains(t))
            .collect()
    }

    fn check_assign(&self, vmid: u16, gfn: u64, pfn: Pfn) -> Result<()> {
        self.vm(vmid)?;
        self.check_gfn(gfn, 1)?;
        let i = self.page(pfn)?;
        match i.owner {
            Owner::Host if i.count == 0 => Ok(()),
            Owner::Vm(v) if v == vmid && i.gfn == gfn => Ok(()),
            _ => Err(Error::Denied),
        }
    }

    fn assign(&mut self, vmid: u16, gfn: u64, pfn: Pfn) {
        if self.pages[&pfn].owner != Owner::Vm(vmid) {
            self.pages.insert(pfn, PageInfo { owner: Owner::Vm(vmid), count: 0, gfn });
            self.host_mapped.remove(&pfn);
        }
    }

    fn map(&mut self, vmid: u16, gfn: u64, pfn: Pfn, level: u8, device: bool) {
        for t in self.missing_tables(vmid, gfn << PAGE_SHIFT, level) {
            self.vm_table_pages.insert(t);
            *self.pools.get_mut(&vmid).expect("checked") -= 1;
        }
        for i in 0..pages_at(level) {
            self.vm_maps.insert((vmid, gfn + i), AbsLeaf { pfn: pfn + i, level, device });
        }
        if level == 3 {
            self.vm_split.insert((vmid, gfn / CHUNK_PAGES));
        }
    }

    fn check_share(&self, vmid: u16, pfn: Pfn, up: bool) -> Result<()> {
        self.table(vmid)?;
        let i = self.page(pfn)?;
        if vmid == 0 || i.owner != Owner::Vm(vmid) {
            return Err(Error::Denied);
        }
        match up {
            true if i.count >= MAX_SHARE_COUNT => Err(Error::BadState),
            false if i.count == 0 => Err(Error::BadState),
            _ => Ok(()),
        }
    }

    fn share(&mut self, pfn: Pfn, up: bool) -> u64 {
        let i = self.pages[&pfn];
        let count = if up { i.count + 1 } else { i.count - 1 };
        self.pages.insert(pfn, PageInfo { count, ..i });
        if count == 0 {
            self.host_mapped.remove(&pfn);
        }
        count
    }

    fn scrub(&mut self, vmid: u16, pfn: Pfn) {
        let i = self.pages[&pfn];
        if let Some(leaf) = self.vm_maps.get(&(vmid, i.gfn)).copied()
            && leaf.pfn == pfn
        {
            // The whole leaf goes: one page, or the 2 MiB block around it.
            let first = if leaf.level == 2 { i.gfn - i.gfn % CHUNK_PAGES } else { i.gfn };
            for g in first..first + pages_at(leaf.level) {
                self.vm_maps.remove(&(vmid, g));
            }
        }
        self.host_mapped.remove(&pfn);
        self.pages.insert(pfn, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
    }

    /// A lent page goes back: no longer mapped in the VM, plainly the host's.
    fn give_back(&mut self, vmid: u16, pfn: Pfn) {
        let i = self.pages[&pfn];
        if self.vm_maps.get(&(vmid, i.gfn)).is_some_and(|l| l.pfn == pfn) {
            self.vm_maps.remove(&(vmid, i.gfn));
        }
        self.pages.insert(pfn, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
    }

    fn backing(&self, vmid: u16, gfn: u64) -> Option<Pfn> {
        let leaf = self.vm_maps.get(&(vmid, gfn))?;
        self.pages.get(&leaf.pfn).filter(|i| !leaf.device && i.owner == Owner::Vm(vmid)).map(|_| leaf.pfn)
    }

    /// The specified result of `op` and the state after it. A returned value is the count for
    /// grant/revoke, the pages changed for range operations, 0 otherwise.
    pub fn step(&self, op: Op) -> (Result<u64>, AbsMem) {
        let mut s = self.clone();
        let r = s.apply(op);
        if r.is_err() {
            return (r, self.clone());
        }
        // The zero page stays only where the host may not map the page: any change that gives
        // the host the page (a share, a scrub, a KCore page given back) takes it away.
        let keep = s.host_zero.iter().copied().filter(|p| s.pages.contains_key(p) && !s.host_may_map(*p)).collect();
        s.host_zero = keep;
        (r, s)
    }

    fn apply(&mut self, op: Op) -> Result<u64> {
        match op {
            Op::HostFault { ipa } => {
                if ipa >> self.ia_bits != 0 {
                    return Err(Error::InvalidParameter);
                }
                if self.host_may_map(ipa >> PAGE_SHIFT) { Ok(0) } else { Err(Error::Denied) }
            }
            Op::HostKernelRead { ipa } => {
                // Mapped as any host fault would be; RAM the host may not map reads as zeros (1).
                match self.apply(Op::HostFault { ipa }) {
                    Err(Error::Denied) => {}
                    r => return r,
                }
                self.host_zero.insert(ipa >> PAGE_SHIFT);
                Ok(1)
            }
            Op::Donate { vmid, pfn } => {
                self.table(vmid)?;
                let i = self.page(pfn)?;
                if i.owner != Owner::Host || i.count != 0 {
                    return Err(Error::Denied);
                }
                self.pages.insert(pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
                self.host_mapped.remove(&pfn);
                *self.pools.entry(vmid).or_default() += 1;
                Ok(0)
            }
            Op::CreateVm { vmid, root } => {
                if vmid == 0 {
                    return Err(Error::InvalidParameter);
                }
                self.table(vmid)?;
                if self.vm_tables.contains(&vmid) {
                    return Err(Error::Exists);
                }
                // The root is the host's pages `root..`: as many as the IPA size needs,
                // aligned to their number; they become KCore's.
                let n = crate::arch::s2_root_pages(self.ia_bits);
                if !root.is_multiple_of(n) {
                    return Err(Error::InvalidParameter);
                }
                for pfn in root..root.saturating_add(n) {
                    let i = self.page(pfn)?;
                    if i.owner != Owner::Host || i.count != 0 {
                        return Err(Error::Denied);
                    }
                }
                for pfn in root..root + n {
                    self.pages.insert(pfn, PageInfo { owner: Owner::KCore, count: 0, gfn: 0 });
                    self.host_mapped.remove(&pfn);
                }
                self.vm_tables.insert(vmid);
                Ok(0)
            }
            Op::Assign { vmid, gfn, pfn } => {
                self.check_assign(vmid, gfn, pfn)?;
                self.assign(vmid, gfn, pfn);
                Ok(0)
            }
            Op::Map { vmid, gfn, pfn, level } => {
                self.check_map_vm(vmid, gfn, pfn, level)?;
                for i in 0..pages_at(level) {
                    let info = self.page(pfn + i)?;
                    if info.owner != Owner::Vm(vmid) || info.gfn != gfn + i {
                        return Err(Error::Denied);
                    }
                }
                self.map(vmid, gfn, pfn, level, false);
                Ok(0)
            }
            Op::ProtMap { vmid, gfn, pfn, level } => {
                self.check_map_vm(vmid, gfn, pfn, level)?;
                for i in 0..pages_at(level) {
                    self.check_assign(vmid, gfn + i, pfn + i)?;
                }
                for i in 0..pages_at(level) {
                    self.assign(vmid, gfn + i, pfn + i);
                }
                self.map(vmid, gfn, pfn, level, false);
                Ok(0)
            }
            Op::Grant { vmid, pfn } | Op::Revoke { vmid, pfn } => {
                let up = matches!(op, Op::Grant { .. });
                self.check_share(vmid, pfn, up)?;
                Ok(self.share(pfn, up))
            }
            Op::Scrub { vmid, pfn } => {
                if vmid == 0 {
                    return Err(Error::InvalidParameter);
                }
                self.table(vmid)?;
                if self.page(pfn)?.owner != Owner::Vm(vmid) {
                    return Err(Error::Denied);
                }
                self.scrub(vmid, pfn);
                Ok(0)
            }
            Op::MapIo { vmid, gpa, pa } => {
                if gpa % PAGE_SIZE != 0 || pa % PAGE_SIZE != 0 || pa >> 48 != 0 {
                    return Err(Error::InvalidParameter);
                }
                if self.pages.contains_key(&(pa >> PAGE_SHIFT)) {
                    return Err(Error::Denied);
                }
                self.check_map_vm(vmid, gpa >> PAGE_SHIFT, pa >> PAGE_SHIFT, 3)?;
                self.map(vmid, gpa >> PAGE_SHIFT, pa >> PAGE_SHIFT, 3, true);
                Ok(0)
            }
            Op::ClearRange { vmid, pfn, n } => {
                if vmid == 0 || !pfn_range_is_valid(pfn, n) {
                    return Err(Error::InvalidParameter);
                }
                self.table(vmid)?;
                let mine: Vec<Pfn> =
                    (pfn..pfn + n).filter(|p| self.pages.get(p).is_some_and(|i| i.owner == Owner::Vm(vmid))).collect();
                for &p in &mine {
                    self.scrub(vmid, p);
                }
                // Pages the host lent it go back unmapped, unscrubbed (the host's memory).
                let lent: Vec<Pfn> = (pfn..pfn + n)
                    .filter(|p| self.pages.get(p).is_some_and(|i| i.owner == Owner::Lent(vmid)))
                    .collect();
                for &p in &lent {
                    self.give_back(vmid, p);
                }
                Ok(mine.len() as u64)
            }
            Op::Lend { vmid, gfn, pfn } => {
                // Only a plain host page, never one in use by DMA or lent already; then the
                // same checks as any 4 KiB VM mapping.
                let i = self.page(pfn)?;
                if i.owner != Owner::Host || i.count != 0 {
                    return Err(Error::Denied);
                }
                self.check_map_vm(vmid, gfn, pfn, 3)?;
                self.pages.insert(pfn, PageInfo { owner: Owner::Lent(vmid), count: 0, gfn });
                self.map(vmid, gfn, pfn, 3, false);
                Ok(0)
            }
            Op::Reclaim { vmid, gfn } => {
                self.vm(vmid)?;
                self.check_gfn(gfn, 1)?;
                let leaf = *self.vm_maps.get(&(vmid, gfn)).ok_or(Error::NotFound)?;
                match self.pages.get(&leaf.pfn) {
                    Some(i) if i.owner == Owner::Lent(vmid) && i.gfn == gfn => {}
                    _ => return Err(Error::Denied),
                }
                self.give_back(vmid, leaf.pfn);
                Ok(leaf.pfn)
            }
            Op::ShareRange { vmid, gpa, size, up } => {
                if vmid == 0
                    || gpa % PAGE_SIZE != 0
                    || size % PAGE_SIZE != 0
                    || !pfn_range_is_valid(gpa >> 12, size >> 12)
                {
                    return Err(Error::InvalidParameter);
                }
                self.vm(vmid)?;
                let gfns = (gpa >> PAGE_SHIFT)..((gpa + size) >> PAGE_SHIFT);
                let backed: Vec<Pfn> = gfns.filter_map(|g| self.backing(vmid, g)).collect();
                for &p in &backed {
                    let count = self.pages[&p].count;
                    if (up && count >= MAX_SHARE_COUNT) || (!up && count == 0) {
                        return Err(Error::BadState);
                    }
                }
                for &p in &backed {
                    self.share(p, up);
                }
                Ok(backed.len() as u64)
            }
        }
    }
}

/// Run `op` on the real code.
pub fn run<M: Machine>(k: &KCore<M>, op: Op) -> Result<u64> {
    let mem = k.mem();
    match op {
        Op::HostFault { ipa } => mem.map_page_host(ipa).map(|_| 0),
        Op::HostKernelRead { ipa } => match mem.map_page_host(ipa) {
            Err(Error::Denied) => mem.map_zero_host(ipa).map(|_| 1),
            r => r.map(|_| 0),
        },
        Op::Donate { vmid, pfn } => mem.donate_to_pool(vmid, pfn).map(|_| 0),
        Op::CreateVm { vmid, root } => mem.create_vm_table(vmid, root).map(|_| 0),
        Op::Assign { vmid, gfn, pfn } => mem.assign_pfn_to_vm(vmid, gfn, pfn).map(|_| 0),
        Op::Map { vmid, gfn, pfn, level } => mem.map_pfn_vm(vmid, gfn, pfn, level).map(|_| 0),
        Op::ProtMap { vmid, gfn, pfn, level } => mem.prot_and_map_vm(vmid, gfn, pfn, level).map(|_| 0),
        Op::Grant { vmid, pfn } => mem.grant_vm_page(vmid, pfn),
        Op::Revoke { vmid, pfn } => mem.revoke_vm_page(vmid, pfn),
        Op::Scrub { vmid, pfn } => mem.clear_vm_page(vmid, pfn).map(|_| 0),
        Op::MapIo { vmid, gpa, pa } => mem.map_vm_io(vmid, gpa, pa).map(|_| 0),
        Op::ClearRange { vmid, pfn, n } => mem.clear_vm_range(vmid, pfn, n),
        Op::ShareRange { vmid, gpa, size, up } => mem.share_gpa_range(vmid, gpa, size, up),
        Op::Lend { vmid, gfn, pfn } => mem.lend_pfn_to_vm(vmid, gfn, pfn).map(|_| 0),
        Op::Reclaim { vmid, gfn } => mem.reclaim_lent_page(vmid, gfn),
    }
}

/// The abstraction function: the abstract state a concrete KCore represents. Pool counts
/// cannot be recovered from the tables and are taken from `pools`.
pub fn abstraction<M: Machine>(k: &KCore<M>, pools: &BTreeMap<u16, u64>) -> AbsMem {
    let mut pages = BTreeMap::new();
    for r in k.mb.regions() {
        for pfn in (r.base >> PAGE_SHIFT)..(r.end() >> PAGE_SHIFT) {
            pages.insert(pfn, k.meta.get(&k.m, &k.mb, pfn).expect("RAM has a record"));
        }
    }
    let device = |d: u64| d & (0b1111 << 2) == desc::S2_MEMATTR_DEVICE;
    let mut host_mapped = BTreeSet::new();
    let mut host_zero = BTreeSet::new();
    k.host.expect_npt().for_each_leaf(&k.m, |ipa, leaf| {
        if leaf.output(ipa) == k.zero_page {
            host_zero.insert(ipa >> PAGE_SHIFT);
        } else if !device(leaf.desc) {
            let first = leaf.output(ipa) >> PAGE_SHIFT;
            host_mapped.extend(first..first + (leaf.size() >> PAGE_SHIFT));
        }
    });
    let mut vm_tables = BTreeSet::new();
    let mut vm_maps = BTreeMap::new();
    let mut vm_split = BTreeSet::new();
    let mut vm_table_pages = BTreeSet::new();
    for t in k.vms.iter() {
        let Some(npt) = t.npt() else { continue };
        vm_tables.insert(t.vmid);
        npt.for_each_leaf(&k.m, |ipa, leaf| {
            let (g, p) = (ipa >> PAGE_SHIFT, leaf.output(ipa) >> PAGE_SHIFT);
            for i in 0..leaf.size() >> PAGE_SHIFT {
                vm_maps.insert((t.vmid, g + i), AbsLeaf { pfn: p + i, level: leaf.level, device: device(leaf.desc) });
            }
        });
        npt.for_each_table(&k.m, |_, level, ipa| {
            if level == 3 {
                vm_split.insert((t.vmid, ipa >> (PAGE_SHIFT + 9)));
            }
            if level > npt.start_level() {
                vm_table_pages.insert((t.vmid, level, ipa));
            }
        });
    }
    AbsMem {
        ia_bits: k.host.ia_bits,
        pages,
        host_mapped,
        host_zero,
        vm_tables,
        pools: pools.clone(),
        vm_maps,
        vm_split,
        vm_table_pages,
    }
}
