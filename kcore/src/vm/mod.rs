//! Layers 18-21: VMs: power state, vmid allocation, boot images and their authentication,
//! and the lifecycle calls.
//!
//! Lifecycle: `Unused` -> register -> `Ready` (boot info, image pages, vCPUs) -> verify ->
//! `Verified` (may run) -> power off -> `PowerOff`; a failed verification gives `Invalid`.
//! Destroy takes any registered VM back to `Unused`: every page it owns is scrubbed and
//! returned, its tables and pool pages go back to the host, and its vmid is free again.

pub mod bootaux;
pub mod bootcore;
pub mod bootops;
pub mod mmioguard;
pub mod vmpower;

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

/// vCPUs per VM.
pub const MAX_VCPUS: usize = 8;

/// What registration (this layer) sets in a new vCPU's context page, whose layout layer 27
/// owns and extends: the word holding its run-state flags, and the two states it starts in.
pub mod vcpu_start {
    /// Word index of the flags in a vCPU context page.
    pub const FLAGS_WORD: u64 = 60;
    /// Never ran: reset at the first verified image's load address on its first run (vCPU 0).
    pub const FIRST_RUN: u64 = 1 << 0;
    /// Off: runs only after the guest's PSCI CPU_ON (every other vCPU).
    pub const OFF: u64 = 1 << 3;
}
/// Boot images per VM (kernel, initrd, device tree, ...).
pub const MAX_IMAGES: usize = 4;
/// Largest boot image.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// A VM's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum VmState {
    /// No VM with this vmid.
    Unused = 0,
    /// Registered; boot images and vCPUs may be added.
    Ready = 1,
    /// Images owned by the VM, mapped and authenticated: it may run.
    Verified = 2,
    /// Powered off; it only waits to be destroyed.
    PowerOff = 3,
    /// Image verification failed: it never runs, it can only be destroyed.
    Invalid = 4,
}

impl VmState {
    fn from_u8(v: u8) -> VmState {
        match v {
            1 => VmState::Ready,
            2 => VmState::Verified,
            3 => VmState::PowerOff,
            4 => VmState::Invalid,
            _ => VmState::Unused,
        }
    }
}

/// A VM's kind, chosen at registration (`REGISTER_VM` x2) and fixed for its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VmKind {
    /// SeKVM's VM: its memory becomes its own (the host loses access), its boot images are
    /// authenticated, its registers never leave KCore beyond what one exit needs.
    Protected = 0,
    /// A VM as stock KVM has them: its RAM stays the host's, lent into its stage-2; no
    /// signature; the host may read and set its vCPU registers. It never weakens KCore's or a
    /// protected VM's isolation.
    NonProtected = 1,
}

impl VmKind {
    /// The kind `REGISTER_VM` names with `v`, if any.
    pub const fn from_abi(v: u64) -> Option<VmKind> {
        match v {
            0 => Some(VmKind::Protected),
            1 => Some(VmKind::NonProtected),
            _ => None,
        }
    }
}

/// Guest-physical RAM regions a VM may have (the rest of its IPA space is MMIO).
pub const MAX_RAM_REGIONS: usize = 8;

/// Without a RAM region set by the host, guest IPAs at and above this are RAM and those below
/// are MMIO (the QEMU `virt` layout, which SeKVM fixed too).
pub const LEGACY_RAM_START: u64 = 1 << 30;

/// A vCPU's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Not registered.
    Unused = 0,
    /// Registered, not running.
    Ready = 1,
    /// Running on a CPU.
    Active = 2,
}

impl VcpuState {
    fn from_u8(v: u8) -> VcpuState {
        match v {
            1 => VcpuState::Ready,
            2 => VcpuState::Active,
            _ => VcpuState::Unused,
        }
    }
}

/// One boot image: where it goes, how big it is, its signature, how many pages are in.
#[derive(Debug, Default)]
pub struct ImageSlot {
    load_ipa: AtomicU64,
    bytes: AtomicU64,
    mapped: AtomicU64,
    signature: [AtomicU64; 8],
}

/// A decoded image slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// Guest address of its first byte (page aligned).
    pub load_ipa: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Pages given so far.
    pub mapped: u64,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl Image {
    /// Pages the image spans.
    pub const fn pages(&self) -> u64 {
        self.bytes.div_ceil(crate::PAGE_SIZE)
    }
}

/// What KCore keeps about one VM. Fields are atomics only so the record can be shared between
/// CPUs without `unsafe`; the VM's `vm(vmid)` lock serialises every access.
#[derive(Debug, Default)]
pub struct VmInfo {
    state: AtomicU8,
    vcpus: [AtomicU8; MAX_VCPUS],
    vcpu_pages: [AtomicU64; MAX_VCPUS],
    image_count: AtomicU8,
    images: [ImageSlot; MAX_IMAGES],
    kind: AtomicU8,
    ram_count: AtomicU8,
    ram_base: [AtomicU64; MAX_RAM_REGIONS],
    ram_size: [AtomicU64; MAX_RAM_REGIONS],
    boot_arg: AtomicU64,
    mmio_guard: mmioguard::MmioGuard,
    shares: ShareCalls,
    cpuif_mapped: AtomicBool,
}

/// How many MEM_SHARE and MEM_UNSHARE calls a VM's guest made, answered and refused, for the
/// report on KCore's console when the VM is destroyed (how much of its memory a protected guest
/// shares with the host, and how often it asks). Only for that log: the specification does not
/// model them, no check compares them, and nothing decides anything by them. Counted with
/// relaxed atomic adds outside the VM's lock (its vCPUs may call at once on different CPUs).
#[derive(Debug, Default)]
pub struct ShareCalls {
    share: AtomicU64,
    share_refused: AtomicU64,
    unshare: AtomicU64,
    unshare_refused: AtomicU64,
}

impl ShareCalls {
    /// Count one MEM_SHARE (`share`) or MEM_UNSHARE call, answered with success (`ok`) or not.
    pub(crate) fn note(&self, share: bool, ok: bool) {
        let c = match (share, ok) {
            (true, true) => &self.share,
            (true, false) => &self.share_refused,
            (false, true) => &self.unshare,
            (false, false) => &self.unshare_refused,
        };
        c.fetch_add(1, Relaxed);
    }
    /// `(MEM_SHARE answered, refused, MEM_UNSHARE answered, refused)` so far.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let l = |c: &AtomicU64| c.load(Relaxed);
        (l(&self.share), l(&self.share_refused), l(&self.unshare), l(&self.unshare_refused))
    }
    /// Say on KCore's console how many calls VM `vmid`, about to be destroyed, made (nothing if
    /// it made none).
    pub(crate) fn report(&self, vmid: u16) {
        let (s, sr, u, ur) = self.counts();
        if s + sr + u + ur != 0 {
            log::info!("VM {vmid} destroyed: MEM_SHARE {s} ({sr} refused), MEM_UNSHARE {u} ({ur} refused)");
        }
    }
    fn clear(&self) {
        for c in [&self.share, &self.share_refused, &self.unshare, &self.unshare_refused] {
            c.store(0, Relaxed);
        }
    }
}

impl VmInfo {
    /// A vCPU's run has put the GIC CPU interface in the VM's stage-2 (on a GICv2 machine;
    /// on a GICv3 there is nothing to put), so later runs need not look.
    pub fn cpuif_mapped(&self) -> bool {
        self.cpuif_mapped.load(Relaxed)
    }
    pub(crate) fn set_cpuif_mapped(&self) {
        self.cpuif_mapped.store(true, Relaxed);
    }
    /// What vCPU 0 of a protected VM finds in x0 at its first run (VERIFY_VM x2: its boot
    /// argument, Linux's device-tree address; untrusted input for the guest alone).
    pub fn boot_arg(&self) -> u64 {
        self.boot_arg.load(Relaxed)
    }
    /// See [`VmInfo::boot_arg`].
    pub(crate) fn set_boot_arg(&self, arg: u64) {
        self.boot_arg.store(arg, Relaxed);
    }
    /// The MMIO the guest enrolled with MMIO_GUARD (a protected VM's; empty otherwise).
    pub fn mmio_guard(&self) -> &mmioguard::MmioGuard {
        &self.mmio_guard
    }
    /// The guest's MEM_SHARE and MEM_UNSHARE calls so far (for the log only).
    pub fn shares(&self) -> &ShareCalls {
        &self.shares
    }
    /// The VM's kind.
    pub fn kind(&self) -> VmKind {
        if self.kind.load(Relaxed) == VmKind::NonProtected as u8 { VmKind::NonProtected } else { VmKind::Protected }
    }
    /// Set the VM's kind (layer 21 does at registration; checks of the layers below set it
    /// directly).
    pub fn set_kind(&self, k: VmKind) {
        self.kind.store(k as u8, Relaxed);
    }
    /// The RAM regions the host declared, `(base IPA, bytes)`.
    pub fn ram_regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let n = (self.ram_count.load(Relaxed) as usize).min(MAX_RAM_REGIONS);
        (0..n).map(|i| (self.ram_base[i].load(Relaxed), self.ram_size[i].load(Relaxed)))
    }
    /// Is guest address `ipa` RAM (else MMIO)? The host's regions if it declared any, else
    /// [`LEGACY_RAM_START`] and above.
    pub fn is_ram(&self, ipa: u64) -> bool {
        if self.ram_count.load(Relaxed) == 0 {
            return ipa >= LEGACY_RAM_START;
        }
        self.ram_regions().any(|(base, size)| ipa >= base && ipa - base < size)
    }
    pub(crate) fn push_ram_region(&self, base: u64, size: u64) -> usize {
        let i = self.ram_count.load(Relaxed) as usize;
        self.ram_base[i].store(base, Relaxed);
        self.ram_size[i].store(size, Relaxed);
        self.ram_count.store(i as u8 + 1, Relaxed);
        i
    }
    /// The VM's state.
    pub fn state(&self) -> VmState {
        VmState::from_u8(self.state.load(Relaxed))
    }
    pub(crate) fn set_state(&self, s: VmState) {
        self.state.store(s as u8, Relaxed);
    }
    /// The state of vCPU `i` (< [`MAX_VCPUS`]).
    pub fn vcpu(&self, i: usize) -> VcpuState {
        VcpuState::from_u8(self.vcpus[i].load(Relaxed))
    }
    pub(crate) fn set_vcpu(&self, i: usize, s: VcpuState) {
        self.vcpus[i].store(s as u8, Relaxed);
    }
    /// Physical address of vCPU `i`'s context page (0 if not registered).
    pub fn vcpu_page(&self, i: usize) -> u64 {
        self.vcpu_pages[i].load(Relaxed)
    }
    pub(crate) fn set_vcpu_page(&self, i: usize, pa: u64) {
        self.vcpu_pages[i].store(pa, Relaxed);
    }
    /// Number of images.
    pub fn image_count(&self) -> usize {
        self.image_count.load(Relaxed) as usize
    }
    /// Image `i` (< [`VmInfo::image_count`]).
    pub fn image(&self, i: usize) -> Image {
        let s = &self.images[i];
        let mut signature = [0u8; 64];
        for (chunk, w) in signature.chunks_exact_mut(8).zip(&s.signature) {
            chunk.copy_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        Image {
            load_ipa: s.load_ipa.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            mapped: s.mapped.load(Relaxed),
            signature,
        }
    }
    pub(crate) fn push_image(&self, img: Image) -> usize {
        let i = self.image_count();
        let s = &self.images[i];
        s.load_ipa.store(img.load_ipa, Relaxed);
        s.bytes.store(img.bytes, Relaxed);
        s.mapped.store(img.mapped, Relaxed);
        for (w, chunk) in s.signature.iter().zip(img.signature.chunks_exact(8)) {
            w.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), Relaxed);
        }
        self.image_count.store(i as u8 + 1, Relaxed);
        i
    }
    pub(crate) fn count_mapped(&self, i: usize) {
        self.images[i].mapped.fetch_add(1, Relaxed);
    }
    /// Forget everything (the vmid becomes free).
    pub(crate) fn clear(&self) {
        for v in &self.vcpus {
            v.store(0, Relaxed);
        }
        for p in &self.vcpu_pages {
            p.store(0, Relaxed);
        }
        self.image_count.store(0, Relaxed);
        self.ram_count.store(0, Relaxed);
        self.boot_arg.store(0, Relaxed);
        self.cpuif_mapped.store(false, Relaxed);
        self.mmio_guard.clear();
        self.shares.clear();
        self.set_kind(VmKind::Protected);
        self.set_state(VmState::Unused);
    }
}
