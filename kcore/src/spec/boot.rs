//! Specification of layers 18-21 (VMPower, BootCore, BootAux, BootOps): the VM and vCPU state
//! machines and boot images, over the memory specification of layers 16-17.

use super::mem::{AbsMem, Op as MemOp};
use crate::error::{Error, Result};
use crate::kcore::MAX_VMS;
use crate::mem::pagemgmt::{Owner, PageInfo};
use crate::vm::{MAX_IMAGE_BYTES, MAX_IMAGES, MAX_RAM_REGIONS, MAX_VCPUS, VcpuState, VmKind, VmState};
use crate::{PAGE_SHIFT, PAGE_SIZE, Pfn};
use std::collections::{BTreeMap, BTreeSet};

/// One boot image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsImage {
    /// Load IPA.
    pub load_ipa: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Pages given.
    pub mapped: u64,
    /// Signature.
    pub signature: [u8; 64],
}

/// One VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsVm {
    /// Lifecycle state.
    pub state: VmState,
    /// vCPU states.
    pub vcpus: [VcpuState; MAX_VCPUS],
    /// Boot images.
    pub images: Vec<AbsImage>,
    /// Protected or not, from registration on.
    pub kind: VmKind,
    /// The RAM regions the host declared, `(base, size)`, in order.
    pub ram: Vec<(u64, u64)>,
    /// A protected VM's boot argument (vCPU 0's x0 at its first run), set when verified.
    pub boot_arg: u64,
}

impl Default for AbsVm {
    fn default() -> Self {
        AbsVm {
            state: VmState::Unused,
            vcpus: [VcpuState::Unused; MAX_VCPUS],
            images: Vec::new(),
            kind: VmKind::Protected,
            ram: Vec::new(),
            boot_arg: 0,
        }
    }
}

/// The abstract state of layers 18-21.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsBoot {
    /// VMs by vmid (1..=MAX_VMS); absent = unused.
    pub vms: BTreeMap<u16, AbsVm>,
    /// Memory (layers 16-17).
    pub mem: AbsMem,
    /// Pages given to each VM's table pool and its root: all of them go back to the host,
    /// zeroed, when the VM is destroyed.
    pub donated: BTreeMap<u16, BTreeSet<Pfn>>,
}

/// A lifecycle request, arguments as the host gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BootOp {
    RegisterVm { root: Pfn, kind: u64 },
    AddRamRegion { vmid: u64, base: u64, size: u64 },
    RegisterVcpu { vmid: u64, vcpu: u64 },
    SetBootInfo { vmid: u64, load_ipa: u64, bytes: u64, sig_pfn: Pfn },
    MapImagePage { vmid: u64, image: u64, index: u64, pfn: Pfn },
    Verify { vmid: u64, arg: u64 },
    Destroy { vmid: u64 },
    Donate { vmid: u16, pfn: Pfn },
}

/// What the specification needs to know about memory contents: the signature bytes in a
/// host page, and whether an image's signature verifies over the pages it is made of.
pub trait Contents {
    /// The first 64 bytes of page `pfn`.
    fn signature_in(&self, pfn: Pfn) -> [u8; 64];
    /// Does `img`, made of pages `pfns` in order, verify?
    fn verifies(&self, img: &AbsImage, pfns: &[Pfn]) -> bool;
}

fn vmid_ok(v: u64) -> Result<u16> {
    if v == 0 || v > MAX_VMS as u64 { Err(Error::InvalidParameter) } else { Ok(v as u16) }
}

impl AbsBoot {
    fn vm(&self, v: u16) -> AbsVm {
        self.vms.get(&v).cloned().unwrap_or_default()
    }

    /// The result of `op` and the state after it.
    pub fn step(&self, op: BootOp, c: &dyn Contents) -> (Result<u64>, AbsBoot) {
        let mut s = self.clone();
        let r = s.apply(op, c);
        (r, s)
    }

    fn mem_op(&mut self, op: MemOp) -> Result<u64> {
        let (r, next) = self.mem.step(op);
        self.mem = next;
        r
    }

    fn apply(&mut self, op: BootOp, c: &dyn Contents) -> Result<u64> {
        match op {
            BootOp::RegisterVm { root, kind } => {
                // 0 protected, 1 non-protected; nothing else.
                let kind = match kind {
                    0 => VmKind::Protected,
                    1 => VmKind::NonProtected,
                    _ => return Err(Error::InvalidParameter),
                };
                // The root's pages (2 on a 40-bit IPA space), aligned, the host's, unshared.
                let n = crate::arch::s2_root_pages(self.mem.ia_bits);
                if !root.is_multiple_of(n) {
                    return Err(Error::InvalidParameter);
                }
                for pfn in root..root.saturating_add(n) {
                    let info = self.mem.pages.get(&pfn).copied().ok_or(Error::InvalidParameter)?;
                    if info.owner != Owner::Host || info.count != 0 {
                        return Err(Error::Denied);
                    }
                }
                let vmid =
                    (1..=MAX_VMS as u16).find(|v| self.vm(*v).state == VmState::Unused).ok_or(Error::NoMemory)?;
                self.mem_op(MemOp::CreateVm { vmid, root })?;
                self.donated.entry(vmid).or_default().extend(root..root + n);
                self.vms.insert(vmid, AbsVm { state: VmState::Ready, kind, ..AbsVm::default() });
                Ok(vmid as u64)
            }
            BootOp::AddRamRegion { vmid, base, size } => {
                // Page-aligned, non-empty, inside the IPA space; only while being set up; no
                // overlap; at most MAX_RAM_REGIONS.
                let v = vmid_ok(vmid)?;
                let end = base.checked_add(size).ok_or(Error::InvalidParameter)?;
                if base % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || size == 0 || end > 1u64 << self.mem.ia_bits {
                    return Err(Error::InvalidParameter);
                }
                let mut vm = self.vm(v);
                if vm.state != VmState::Ready {
                    return Err(Error::BadState);
                }
                if vm.ram.iter().any(|&(b, s)| base < b + s && b < end) {
                    return Err(Error::Exists);
                }
                if vm.ram.len() == MAX_RAM_REGIONS {
                    return Err(Error::NoMemory);
                }
                vm.ram.push((base, size));
                self.vms.insert(v, vm);
                Ok(0)
            }
            BootOp::RegisterVcpu { vmid, vcpu } => {
                let v = vmid_ok(vmid)?;
                if vcpu >= MAX_VCPUS as u64 {
                    return Err(Error::InvalidParameter);
                }
                let mut vm = self.vm(v);
                if vm.state != VmState::Ready {
                    return Err(Error::BadState);
                }
                if vm.vcpus[vcpu as usize] != VcpuState::Unused {
                    return Err(Error::Exists);
                }
                // Its context page comes from the VM's pool (and goes back on destroy).
                let pool = self.mem.pools.entry(v).or_default();
                if *pool == 0 {
                    return Err(Error::NoMemory);
                }
                *pool -= 1;
                vm.vcpus[vcpu as usize] = VcpuState::Ready;
                self.vms.insert(v, vm);
                Ok(0)
            }
            BootOp::SetBootInfo { vmid, load_ipa, bytes, sig_pfn } => {
                let v = vmid_ok(vmid)?;
                let end = load_ipa.checked_add(bytes).ok_or(Error::InvalidParameter)?;
                if load_ipa % PAGE_SIZE != 0 || bytes == 0 || bytes > MAX_IMAGE_BYTES || end > 1u64 << self.mem.ia_bits
                {
                    return Err(Error::InvalidParameter);
                }
                let mut vm = self.vm(v);
                // Only a protected VM has authenticated images.
                if vm.state != VmState::Ready || vm.kind != VmKind::Protected {
                    return Err(Error::BadState);
                }
                if vm.images.len() == MAX_IMAGES {
                    return Err(Error::NoMemory);
                }
                if vm
                    .images
                    .iter()
                    .any(|o| load_ipa < o.load_ipa + o.bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE && o.load_ipa < end)
                {
                    return Err(Error::Exists);
                }
                let page = self.mem.pages.get(&sig_pfn).copied().ok_or(Error::InvalidParameter)?;
                if page.owner != Owner::Host {
                    return Err(Error::Denied);
                }
                vm.images.push(AbsImage { load_ipa, bytes, mapped: 0, signature: c.signature_in(sig_pfn) });
                self.vms.insert(v, vm);
                Ok(self.vms[&v].images.len() as u64 - 1)
            }
            BootOp::MapImagePage { vmid, image, index, pfn } => {
                let v = vmid_ok(vmid)?;
                let mut vm = self.vm(v);
                if vm.state != VmState::Ready {
                    return Err(Error::BadState);
                }
                if image >= MAX_IMAGES as u64 || image as usize >= vm.images.len() {
                    return Err(Error::InvalidParameter);
                }
                let img = &vm.images[image as usize];
                if index >= img.bytes.div_ceil(PAGE_SIZE) {
                    return Err(Error::InvalidParameter);
                }
                let gfn = (img.load_ipa >> PAGE_SHIFT) + index;
                self.mem_op(MemOp::ProtMap { vmid: v, gfn, pfn, level: 3 })?;
                vm.images[image as usize].mapped += 1;
                self.vms.insert(v, vm);
                Ok(0)
            }
            BootOp::Verify { vmid, arg } => {
                let v = vmid_ok(vmid)?;
                let mut vm = self.vm(v);
                // A non-protected VM has nothing to verify: its set-up just ends.
                if vm.state == VmState::Ready && vm.kind == VmKind::NonProtected {
                    vm.state = VmState::Verified;
                    self.vms.insert(v, vm);
                    return Ok(0);
                }
                if vm.state != VmState::Ready || vm.images.is_empty() {
                    return Err(Error::BadState);
                }
                if vm.images.iter().any(|i| i.mapped != i.bytes.div_ceil(PAGE_SIZE)) {
                    return Err(Error::BadState);
                }
                for img in &vm.images {
                    let pfns: Vec<Pfn> = (0..img.bytes.div_ceil(PAGE_SIZE))
                        .map(|i| self.mem.vm_maps[&(v, (img.load_ipa >> PAGE_SHIFT) + i)].pfn)
                        .collect();
                    if !c.verifies(img, &pfns) {
                        vm.state = VmState::Invalid;
                        self.vms.insert(v, vm);
                        return Err(Error::BadSignature);
                    }
                }
                vm.boot_arg = arg;
                vm.state = VmState::Verified;
                self.vms.insert(v, vm);
                Ok(0)
            }
            BootOp::Destroy { vmid } => {
                let v = vmid_ok(vmid)?;
                let vm = self.vm(v);
                // A VM with a vCPU running (on some CPU) is not destroyed under it.
                if vm.state == VmState::Unused || vm.vcpus.contains(&VcpuState::Active) {
                    return Err(Error::BadState);
                }
                // Every page the VM owns is scrubbed; its table and pool pages return.
                let owned: Vec<Pfn> =
                    self.mem.pages.iter().filter(|(_, i)| i.owner == Owner::Vm(v)).map(|(p, _)| *p).collect();
                for p in owned {
                    self.mem_op(MemOp::Scrub { vmid: v, pfn: p })?;
                }
                // Pages the host lent it are the host's again, as they are.
                for i in self.mem.pages.values_mut().filter(|i| i.owner == Owner::Lent(v)) {
                    *i = PageInfo { owner: Owner::Host, count: 0, gfn: 0 };
                }
                self.mem.vm_tables.remove(&v);
                self.mem.vm_maps.retain(|(vm, _), _| *vm != v);
                self.mem.vm_split.retain(|(vm, _)| *vm != v);
                self.mem.vm_table_pages.retain(|(vm, _, _)| *vm != v);
                self.mem.pools.insert(v, 0);
                for p in self.donated.remove(&v).unwrap_or_default() {
                    self.mem.pages.insert(p, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
                }
                self.vms.remove(&v);
                Ok(0)
            }
            BootOp::Donate { vmid, pfn } => {
                // Only to the host's own pool or a VM that exists.
                if vmid != 0 && self.vm(vmid).state == VmState::Unused {
                    return Err(Error::BadState);
                }
                self.mem_op(MemOp::Donate { vmid, pfn })?;
                if vmid != 0 {
                    self.donated.entry(vmid).or_default().insert(pfn);
                }
                Ok(0)
            }
        }
    }
}
