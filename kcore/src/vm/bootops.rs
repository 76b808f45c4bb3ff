//! Layer 21 (BootOps): the VM lifecycle calls the host makes. Every argument is untrusted and
//! checked; every refusal is an error code with nothing changed.

use super::vmpower::check_vmid;
use super::{Image, MAX_IMAGE_BYTES, MAX_IMAGES, MAX_RAM_REGIONS, MAX_VCPUS, VcpuState, VmKind, VmState};
use crate::error::{Error, Result};
use crate::kcore::KCore;
use crate::machine::Machine;
use crate::mem::pagemgmt::Owner;
use crate::{PAGE_SHIFT, PAGE_SIZE, Pfn};

impl<M: Machine> KCore<M> {
    /// DONATE_PAGE: host page `pfn` to the host's own table pool (`vmid` 0) or a registered
    /// VM's. A vmid nobody holds is refused (BAD_STATE): a page given to it would sit in the
    /// pool of a VM that does not exist until the vmid is reused. The VM's lock keeps it
    /// registered meanwhile.
    pub fn donate_page(&self, vmid: u64, pfn: Pfn) -> Result<()> {
        if vmid == 0 {
            return self.mem().donate_to_pool(0, pfn);
        }
        let vmid = check_vmid(vmid)?;
        let _vm = self.lock_vm(vmid);
        if self.vminfo[vmid as usize - 1].state() == VmState::Unused {
            return Err(Error::BadState);
        }
        self.mem().donate_to_pool(vmid, pfn)
    }

    /// `register_kvm`: a new VM whose stage-2 root is host page(s) `root_pfn..` (they become
    /// KCore's). Returns the vmid.
    pub fn register_vm(&self, root_pfn: Pfn) -> Result<u16> {
        self.register_vm_kind(root_pfn, VmKind::Protected as u64)
    }

    /// `REGISTER_VM` with the VM's kind (`kind`: 0 protected, 1 non-protected). The root is
    /// [`crate::arch::s2_root_pages`] pages (2 on a CPU with 40 bits of physical address),
    /// `root_pfn` aligned to their number.
    pub fn register_vm_kind(&self, root_pfn: Pfn, kind: u64) -> Result<u16> {
        let kind = VmKind::from_abi(kind).ok_or(Error::InvalidParameter)?;
        // Check the pages before claiming a vmid, so the common refusal leaves no trace.
        self.mem().check_root_pages(root_pfn)?;
        let vmid = self.gen_vmid()?;
        let _vm = self.lock_vm(vmid);
        if let Err(e) = self.mem().create_vm_table(vmid, root_pfn) {
            // A page changed hands meanwhile (another CPU); give the vmid back.
            self.release_vm_memory(vmid);
            self.vminfo[vmid as usize - 1].clear();
            return Err(e);
        }
        self.vminfo[vmid as usize - 1].set_kind(kind);
        Ok(vmid)
    }

    /// `ADD_RAM_REGION`: guest addresses `[base, base + size)` of VM `vmid` are RAM (the rest of
    /// its IPA space is MMIO). Only while the VM is being set up: the layout is fixed before
    /// it first runs. Regions are page aligned, inside the IPA space, and do not overlap.
    pub fn add_ram_region(&self, vmid: u64, base: u64, size: u64) -> Result<()> {
        let vmid = check_vmid(vmid)?;
        let end = base.checked_add(size).ok_or(Error::InvalidParameter)?;
        if !base.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
            return Err(Error::InvalidParameter);
        }
        if end > 1u64 << self.host.ia_bits {
            return Err(Error::InvalidParameter);
        }
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Ready {
            return Err(Error::BadState);
        }
        if info.ram_regions().any(|(b, s)| base < b + s && b < end) {
            return Err(Error::Exists);
        }
        if info.ram_regions().count() == MAX_RAM_REGIONS {
            return Err(Error::NoMemory);
        }
        info.push_ram_region(base, size);
        Ok(())
    }

    /// `register_vcpu`: vCPU `vcpuid` of a VM that is still being set up.
    pub fn register_vcpu(&self, vmid: u64, vcpuid: u64) -> Result<()> {
        let vmid = check_vmid(vmid)?;
        if vcpuid >= MAX_VCPUS as u64 {
            return Err(Error::InvalidParameter);
        }
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Ready {
            return Err(Error::BadState);
        }
        if info.vcpu(vcpuid as usize) != VcpuState::Unused {
            return Err(Error::Exists);
        }
        // The vCPU's registers live in a KCore page from the VM's (donated) pool.
        let mem = self.mem();
        let table = mem.table(vmid)?;
        let page = {
            let _pt = self.locks.acquire(crate::locks::LockId::Pt(vmid), self.m.cpu_index());
            table.pool.alloc(&self.m)?
        };
        // vCPU 0 boots the VM; the others wait, off, for the guest's PSCI CPU_ON.
        let start = if vcpuid == 0 { super::vcpu_start::FIRST_RUN } else { super::vcpu_start::OFF };
        self.m.store(page + 8 * super::vcpu_start::FLAGS_WORD, start);
        info.set_vcpu_page(vcpuid as usize, page);
        info.set_vcpu(vcpuid as usize, VcpuState::Ready);
        Ok(())
    }

    /// `set_boot_info`: announce an image of `bytes` bytes to be loaded at `load_ipa`, signed
    /// with the 64-byte signature at the start of host page `sig_pfn` (copied now). Returns the
    /// image's index.
    pub fn set_boot_info(&self, vmid: u64, load_ipa: u64, bytes: u64, sig_pfn: Pfn) -> Result<usize> {
        let vmid = check_vmid(vmid)?;
        let ia_bits = self.host.ia_bits;
        let end = load_ipa.checked_add(bytes).ok_or(Error::InvalidParameter)?;
        if !load_ipa.is_multiple_of(PAGE_SIZE) || bytes == 0 || bytes > MAX_IMAGE_BYTES || end > 1u64 << ia_bits {
            return Err(Error::InvalidParameter);
        }
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        // A non-protected VM has no authenticated images: the host loads it as it likes.
        if info.state() != VmState::Ready || info.kind() != VmKind::Protected {
            return Err(Error::BadState);
        }
        if info.image_count() == MAX_IMAGES {
            return Err(Error::NoMemory);
        }
        for i in 0..info.image_count() {
            let other = info.image(i);
            if load_ipa < other.load_ipa + other.pages() * PAGE_SIZE && other.load_ipa < end {
                return Err(Error::Exists);
            }
        }
        let mut signature = [0u8; 64];
        {
            // The signature is copied out of a page the host owns, under s2page, once: later
            // changes by the host do not matter.
            let mem = self.mem();
            let s2 = mem.lock_s2page();
            let page = mem.page(sig_pfn)?;
            if page.owner != Owner::Host {
                return Err(Error::Denied);
            }
            for (w, chunk) in signature.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&self.m.load((sig_pfn << PAGE_SHIFT) + 8 * w as u64).to_le_bytes());
            }
            drop(s2);
        }
        Ok(info.push_image(Image { load_ipa, bytes, mapped: 0, signature }))
    }

    /// `remap_vm_image`, KCore style: host page `pfn` becomes page `index` of image `image`.
    pub fn map_image_page(&self, vmid: u64, image: u64, index: u64, pfn: Pfn) -> Result<()> {
        let vmid = check_vmid(vmid)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() != VmState::Ready {
            return Err(Error::BadState);
        }
        if image >= MAX_IMAGES as u64 {
            return Err(Error::InvalidParameter);
        }
        self.load_image_page(info, vmid, image as usize, index, pfn)
    }

    /// `verify_and_load_images`: check every image's signature; only then may the VM run.
    /// A failure is final: the VM becomes `Invalid` and can only be destroyed. A non-protected
    /// VM has nothing to verify: this only ends its set-up (its layout is then fixed).
    pub fn verify_vm(&self, vmid: u64) -> Result<()> {
        self.verify_vm_with(vmid, 0)
    }

    /// [`KCore::verify_vm`] with VERIFY_VM's x2: for a protected VM, what vCPU 0 finds in x0
    /// at its first run (its boot argument); ignored for a non-protected one, whose host sets
    /// its registers itself.
    pub fn verify_vm_with(&self, vmid: u64, boot_arg: u64) -> Result<()> {
        let vmid = check_vmid(vmid)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() == VmState::Ready && info.kind() == VmKind::NonProtected {
            info.set_state(VmState::Verified);
            return Ok(());
        }
        if info.state() != VmState::Ready || info.image_count() == 0 {
            return Err(Error::BadState);
        }
        for i in 0..info.image_count() {
            let img = info.image(i);
            if img.mapped != img.pages() {
                return Err(Error::BadState);
            }
        }
        for i in 0..info.image_count() {
            if let Err(e) = self.verify_image(vmid, &info.image(i), &self.vm_key) {
                info.set_state(VmState::Invalid);
                return Err(e);
            }
        }
        info.set_boot_arg(boot_arg);
        info.set_state(VmState::Verified);
        Ok(())
    }

    /// Destroy VM `vmid`: it stops being runnable, every page it owns is scrubbed and returned
    /// to the host, its table and pool pages go back to the host zeroed, and the vmid is free.
    pub fn destroy_vm(&self, vmid: u64) -> Result<()> {
        let vmid = check_vmid(vmid)?;
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() == VmState::Unused {
            return Err(Error::BadState);
        }
        if (0..MAX_VCPUS).any(|v| info.vcpu(v) == VcpuState::Active) {
            return Err(Error::BadState);
        }
        info.set_state(VmState::PowerOff);
        self.release_vm_memory(vmid);
        info.shares().report(vmid);
        info.mmio_guard().report(vmid);
        info.clear();
        Ok(())
    }

    /// Scrub and return every page VM `vmid` owns, then its table and pool pages. Caller
    /// holds `vm(vmid)`.
    fn release_vm_memory(&self, vmid: u16) {
        let mem = self.mem();
        for r in self.mb.regions() {
            let first = r.base >> PAGE_SHIFT;
            let pages = r.size >> PAGE_SHIFT;
            let mut p = first;
            while p < first + pages {
                let n = (first + pages - p).min(crate::mem::memops::MAX_RANGE_PAGES);
                mem.clear_vm_range(vmid, p, n).expect("valid range of a valid vmid");
                p += n;
            }
        }
        let s2 = mem.lock_s2page();
        let info = &self.vminfo[vmid as usize - 1];
        for v in 0..MAX_VCPUS {
            let pa = info.vcpu_page(v);
            if pa != 0 {
                self.m.zero_page(pa);
                mem.give_back_to_host(pa >> PAGE_SHIFT);
            }
        }
        let table = mem.table(vmid).expect("valid vmid");
        table.release(&self.m, &self.locks, |pa| {
            self.m.zero_page(pa);
            mem.give_back_to_host(pa >> PAGE_SHIFT);
        });
        // The host kernel may have read some of those pages as KCore's zero page.
        mem.drop_stale_zero_leaves(&s2);
        drop(s2);
    }
}
