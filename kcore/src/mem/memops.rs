//! Layer 17 (MemOps): operations over ranges, built from layer 16's transitions. Each checks
//! the whole range first and changes nothing if any page fails, holding `s2page` throughout.

use super::memaux::{MemAux, pages_at};
use super::pagemgmt::{MAX_SHARE_COUNT, Owner};
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::{Gfn, PAGE_SHIFT, PAGE_SIZE, Pfn};

/// Longest range one call may cover (bounds the time KCore spends in one hypercall).
pub const MAX_RANGE_PAGES: u64 = 1 << 18; // 1 GiB

/// Check `[pfn, pfn + n)` for overflow and size (pKVM's `pfn_range_is_valid`).
pub fn pfn_range_is_valid(pfn: Pfn, n: u64) -> bool {
    n <= MAX_RANGE_PAGES && pfn.checked_add(n).is_some_and(|end| end <= 1 << 36)
}

impl<M: Machine> MemAux<'_, M> {
    /// `prot_and_map_vm_s2pt`: give VM `vmid` the host pages behind a 4 KiB (`level` 3) or
    /// 2 MiB (`level` 2) mapping at `gfn` and map them. Every page is checked first (bug 3:
    /// all 512 pages of a block, not only the first), so a refusal changes nothing.
    pub fn prot_and_map_vm(&self, vmid: u16, gfn: Gfn, pfn: Pfn, level: u8) -> Result<()> {
        let s2 = self.lock_s2page();
        self.check_map_vm_locked(&s2, vmid, gfn, pfn, level)?;
        for i in 0..pages_at(level) {
            self.check_assign_locked(&s2, vmid, gfn + i, pfn + i)?;
        }
        for i in 0..pages_at(level) {
            self.assign_pfn_to_vm_locked(&s2, vmid, gfn + i, pfn + i);
        }
        self.map_pfn_vm_locked(&s2, vmid, gfn, pfn, level);
        Ok(())
    }

    /// `clear_vm_range`: scrub every page of `[pfn, pfn + n)` that VM `vmid` owns and return
    /// it to the host, and give back every page the host lent it (unmapped, not scrubbed: the
    /// host's own memory); other pages are left alone. Returns how many were scrubbed.
    pub fn clear_vm_range(&self, vmid: u16, pfn: Pfn, n: u64) -> Result<u64> {
        if vmid == 0 || !pfn_range_is_valid(pfn, n) {
            return Err(Error::InvalidParameter);
        }
        self.table(vmid)?;
        let s2 = self.lock_s2page();
        let mut scrubbed = 0;
        for p in pfn..pfn + n {
            match self.meta.get(self.m, self.mb, p).map(|i| i.owner) {
                Some(Owner::Vm(v)) if v == vmid => {
                    self.clear_vm_page_locked(&s2, vmid, p);
                    scrubbed += 1;
                }
                Some(Owner::Lent(v)) if v == vmid => self.reclaim_lent_locked(&s2, vmid, p),
                _ => {}
            }
        }
        Ok(scrubbed)
    }

    /// `grant_stage2_sg_gpa` (`up`) / `revoke_stage2_sg_gpa`: grant or revoke every page of
    /// `[gpa, gpa + size)` mapped in VM `vmid`'s stage-2 (unmapped pages are skipped). All or
    /// nothing: if any mapped page cannot change, none does. Returns how many changed.
    pub fn share_gpa_range(&self, vmid: u16, gpa: u64, size: u64, up: bool) -> Result<u64> {
        if vmid == 0
            || !gpa.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
            || !pfn_range_is_valid(gpa >> 12, size >> 12)
        {
            return Err(Error::InvalidParameter);
        }
        let t = self.vm(vmid)?;
        let npt = t.expect_npt();
        let s2 = self.lock_s2page();
        let backing = |g: u64| {
            let ipa = g << PAGE_SHIFT;
            npt.walk(self.m, ipa).map(|leaf| leaf.output(ipa) >> PAGE_SHIFT).filter(|&p| {
                // Device mappings have no record; only the VM's own RAM can be shared.
                self.meta.get(self.m, self.mb, p).is_some_and(|i| i.owner == Owner::Vm(vmid))
            })
        };
        let first = gpa >> PAGE_SHIFT;
        let pages = size >> PAGE_SHIFT;
        for g in first..first + pages {
            if let Some(p) = backing(g) {
                let count = self.page(p)?.count;
                if (up && count >= MAX_SHARE_COUNT) || (!up && count == 0) {
                    return Err(Error::BadState);
                }
            }
        }
        let mut changed = 0;
        for g in first..first + pages {
            if let Some(p) = backing(g) {
                self.share_locked(&s2, p, up);
                changed += 1;
            }
        }
        Ok(changed)
    }
}
