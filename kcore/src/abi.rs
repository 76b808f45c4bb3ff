//! The hypercall ABI between the host (KServ), VMs and KCore: defined once, here.
//!
//! Calls follow the SMC Calling Convention (Arm DEN 0028): `HVC #0` with the function id in
//! w0, arguments in x1..x6, status in x0 (0 or a negative error), results in x1.. . KCore's
//! own calls are fast calls in the *vendor-specific hypervisor service* range (owning entity
//! 6), SMC64 convention: ids `0xC600_0000..=0xC600_FFFF`.

/// Success.
pub const SUCCESS: i64 = 0;
/// SMCCC `NOT_SUPPORTED`: unknown function id.
pub const NOT_SUPPORTED: i64 = -1;
/// SMCCC `NOT_REQUIRED`.
pub const NOT_REQUIRED: i64 = -2;
/// SMCCC `INVALID_PARAMETER`: an argument is out of range or malformed.
pub const INVALID_PARAMETER: i64 = -3;
/// KCore: the caller does not own what it named.
pub const DENIED: i64 = -4;
/// KCore: a pool is exhausted (top up and retry).
pub const NO_MEMORY: i64 = -5;
/// KCore: the object is in the wrong state for this call.
pub const BAD_STATE: i64 = -6;
/// KCore: already exists / already mapped.
pub const EXISTS: i64 = -7;
/// KCore: no such object / nothing mapped.
pub const NOT_FOUND: i64 = -8;
/// KCore: a boot image's signature does not verify.
pub const BAD_SIGNATURE: i64 = -9;

/// SMCCC: `SMCCC_VERSION` (arch service, fast call).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC 1.1: `SMCCC_ARCH_FEATURES`: is the arch service call x1 implemented?
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// SMCCC: vendor-specific hypervisor service, "Call UID query" (returns the UUID in w0..w3).
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_FF01;
/// SMCCC: vendor-specific hypervisor service, "Revision query" (w0 major, w1 minor).
pub const VENDOR_HYP_REVISION: u32 = 0x8600_FF03;

/// KCore: ABI version and features. Returns x0 = 0, x1 = version (major << 16 | minor),
/// x2 = feature bits ([`FEATURE_HOST_STAGE2`], ...), x3 = pages of a VM's stage-2 root, which
/// [`REGISTER_VM`] takes: 1, or 2 on a CPU with 40 bits of physical address (8 with 42).
pub const KCORE_VERSION: u32 = 0xC600_0000;

/// Give host page x2 to the page-table pool of vmid x1 (0 = the host's own stage-2 pool; else
/// a registered VM: a vmid nobody holds answers BAD_STATE). The page becomes KCore's until the
/// VM is destroyed.
pub const DONATE_PAGE: u32 = 0xC600_0001;
/// Register a VM whose stage-2 root is host pages x1.. (as many as [`KCORE_VERSION`] x3 says,
/// x1 aligned to their number; they become KCore's), of kind x2 ([`VM_PROTECTED`] or
/// [`VM_NON_PROTECTED`]). Returns x1 = vmid.
pub const REGISTER_VM: u32 = 0xC600_0002;
/// Register vCPU x2 of VM x1.
pub const REGISTER_VCPU: u32 = 0xC600_0003;
/// Boot image of VM x1: load IPA x2, x3 bytes, signature = the first 64 bytes of host page
/// x4. Returns x1 = image index.
pub const SET_BOOT_INFO: u32 = 0xC600_0004;
/// Give host page x4 to VM x1 as page x3 of image x2 (owned and mapped at once).
pub const MAP_IMAGE_PAGE: u32 = 0xC600_0005;
/// Verify VM x1's images; only a verified VM can run.
pub const VERIFY_VM: u32 = 0xC600_0006;
/// Destroy VM x1: scrub and return all its memory, free its vmid.
pub const DESTROY_VM: u32 = 0xC600_0007;
/// State of VM x1: x1 = VM state (0 unused, 1 ready, 2 verified, 3 powered off, 4 invalid),
/// x2 = bitmap of registered vCPUs.
pub const VM_STATE: u32 = 0xC600_0008;

/// Run vCPU x2 of VM x1 until it needs the host; x3 = the value of a pending MMIO read.
/// Returns x1 = exit reason (1 MMIO: x2 IPA, x3 = size log2 << 1 | write, x4 = value written;
/// 2 page fault: x2 = page IPA; 3 WFI; 4 host interrupt; 5 guest powered off).
pub const VCPU_RUN: u32 = 0xC600_0009;
/// Back the page vCPU x2 of VM x1 last faulted on with host page x3.
pub const MAP_VM_PAGE: u32 = 0xC600_000A;
/// Deliver virtual interrupt x3 (0..1019) to vCPU x2 of VM x1 on its next run; x4 = its
/// priority (bits 7:0) and level-triggered (bit 8).
pub const INJECT_IRQ: u32 = 0xC600_000B;
/// The list registers of vCPU x2 of VM x1: x1..x4 = state, group, priority, EOI and INTID of
/// each (what the host put there, and the state the guest moved it to).
pub const VCPU_IRQ_STATE: u32 = 0xC600_0011;

/// VCPU_RUN x4 bit 1: x5..x7 carry up to three interrupts to inject before the run (each 0,
/// or bit 63 with the INTID in 31:0 and INJECT_IRQ's attributes in 40:32), and the run's exit
/// reports the first three list registers in x5..x7 as VCPU_IRQ_STATE does: the two calls
/// the host would otherwise make around each run, folded into it.
pub const RUN_LRS_IN_REGS: u64 = 1 << 1;
/// The VCPU_RUN injection word's valid bit (x5..x7 with [`RUN_LRS_IN_REGS`]).
pub const RUN_INJECT_VALID: u64 = 1 << 63;
/// Non-protected VM x1: lend host page x3 to it at guest address x2 (in a RAM region).
pub const LEND_PAGE: u32 = 0xC600_000C;
/// Non-protected VM x1: take back the page lent at guest address x2. Returns x1 = its pfn.
pub const RECLAIM_PAGE: u32 = 0xC600_000D;
/// Non-protected VM x1: register x3 of vCPU x2 ([`crate::vcpu::vcpuops::reg_slot`]).
/// Returns x1 = its value.
pub const GET_VCPU_REG: u32 = 0xC600_000E;
/// Non-protected VM x1: set register x3 of vCPU x2 to x4.
pub const SET_VCPU_REG: u32 = 0xC600_000F;
/// VM x1 (being set up): guest addresses [x2, x2 + x3) are RAM; the rest is MMIO.
pub const ADD_RAM_REGION: u32 = 0xC600_0010;

/// REGISTER_VM x2: a protected VM (SeKVM's).
pub const VM_PROTECTED: u64 = 0;
/// REGISTER_VM x2: a non-protected VM (host-owned memory lent to it, registers visible).
pub const VM_NON_PROTECTED: u64 = 1;

/// Guest calls (VM -> KCore), pKVM's KVM vendor-hypervisor service so pKVM guests work
/// unchanged: the features bitmap (function numbers), answered in x0..x3.
pub const GUEST_KVM_FEATURES: u32 = 0x8600_0000;
/// Guest: protection granule in bytes (x1..x3 must be 0).
pub const GUEST_HYP_MEMINFO: u32 = 0xC600_0002;
/// Guest: share the granule at IPA x1 with the host.
pub const GUEST_MEM_SHARE: u32 = 0xC600_0003;
/// Guest: stop sharing the granule at IPA x1.
pub const GUEST_MEM_UNSHARE: u32 = 0xC600_0004;
/// Guest: declare the granule at IPA x1 MMIO (must lie in the guest's device space).
pub const GUEST_MMIO_GUARD: u32 = 0xC600_0007;
/// Guest, SeKVM's ABI: grant the host every mapped page of [x1, x1 + x2).
pub const GUEST_SEKVM_GRANT: u32 = 0x0008_1000;
/// Guest, SeKVM's ABI: revoke [x1, x1 + x2).
pub const GUEST_SEKVM_REVOKE: u32 = 0x0008_2000;
/// The UID guests see for the vendor-hypervisor service: KVM's
/// (`28b46fb6-2ec5-11e9-a9ca-4b564d003a74`), since KCore speaks KVM's guest ABI.
pub const GUEST_KVM_UID: [u32; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];

/// ABI major version.
pub const ABI_MAJOR: u64 = 0;
/// ABI minor version.
pub const ABI_MINOR: u64 = 6;

/// Feature bit: the host runs under a KCore-owned stage-2 table.
pub const FEATURE_HOST_STAGE2: u64 = 1 << 0;
/// Feature bit: VM lifecycle and image authentication calls (REGISTER_VM .. VM_STATE).
pub const FEATURE_VM_LIFECYCLE: u64 = 1 << 1;
/// Feature bit: running vCPUs (VCPU_RUN, MAP_VM_PAGE).
pub const FEATURE_VCPU_RUN: u64 = 1 << 2;
/// Feature bit: non-protected VMs (REGISTER_VM x2 = 1, LEND_PAGE, RECLAIM_PAGE,
/// GET/SET_VCPU_REG) and per-VM layouts (ADD_RAM_REGION).
pub const FEATURE_NON_PROTECTED: u64 = 1 << 3;
/// Feature bit: guests see a sanitised CPU (hidden features refused in KCore); SGI writes
/// and EL1 physical timer accesses are exits (8, 9); the host's timer deadline preempts
/// guests.
pub const FEATURE_FULL_GUESTS: u64 = 1 << 4;
/// Feature bit, set only on a machine whose GIC is a GICv2 (GIC architecture v2, with the
/// virtualization extensions): guests get the GICv2 virtual CPU interface at
/// [`crate::vcpu::vgic::GUEST_GICC`] and their distributor is a GICv2 one (GICD_SGIR writes are
/// MMIO exits; there is no SGI exit). Clear on a GICv3. Not part of [`FEATURES`]: it describes
/// the machine, not this KCore.
pub const FEATURE_GICV2: u64 = 1 << 5;
/// Every feature this KCore has.
pub const FEATURES: u64 =
    FEATURE_HOST_STAGE2 | FEATURE_VM_LIFECYCLE | FEATURE_VCPU_RUN | FEATURE_NON_PROTECTED | FEATURE_FULL_GUESTS;

/// KCore's vendor-hypervisor UID, `1f0a7e78-2a96-46e6-8a0f-af2034a27b98`, as the four 32-bit
/// words SMCCC returns in w0..w3 (bytes in UUID order, little-endian within each word).
pub const KCORE_UID: [u32; 4] =
    uid_words([0x1f, 0x0a, 0x7e, 0x78, 0x2a, 0x96, 0x46, 0xe6, 0x8a, 0x0f, 0xaf, 0x20, 0x34, 0xa2, 0x7b, 0x98]);

const fn uid_words(b: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        w[i] = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        i += 1;
    }
    w
}

/// Is `id` an SMCCC fast call (bit 31)?
pub const fn is_fast_call(id: u32) -> bool {
    id & (1 << 31) != 0
}

/// The SMCCC owning entity of `id` (bits 29:24).
pub const fn owner(id: u32) -> u32 {
    (id >> 24) & 0x3f
}

/// SMCCC owning entity: standard secure service (PSCI lives here).
pub const OWNER_STANDARD: u32 = 4;
/// SMCCC owning entity: vendor-specific hypervisor service.
pub const OWNER_VENDOR_HYP: u32 = 6;
