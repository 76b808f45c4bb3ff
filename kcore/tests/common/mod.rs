//! A small KCore on the simulated machine, shared by the refinement and regression tests.
#![allow(dead_code)]

use kcore::kcore::KCore;
use kcore::machine::Machine;
use kcore::machine::sim::SimMachine;
use kcore::mem::memblock::MemBlocks;
use kcore::psci;
use kcore::pt::ptalloc::PagePool;
use kcore::spec::boot::{AbsImage, AbsVm, Contents};
use kcore::spec::vcpu::{AbsVcpu, AbsVcpus, GuestTrap, Pending, Run};
use kcore::vcpu::vcpuopsaux::VcpuPage;
use kcore::vcpu::{flags, slot};
use kcore::vm::VcpuState;
use kcore::vm::VmState;
use kcore::{PAGE_SHIFT, Pfn};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// RAM: 16 MiB at 1 GiB (4096 pages, 8 chunks of 2 MiB).
pub const RAM: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 16 << 20;
/// First RAM page frame.
pub const P0: u64 = RAM >> 12;
/// KCore's own memory: the top 4 MiB (metadata, then the host table pool).
pub const KMEM: u64 = RAM + (12 << 20);
/// Host pages given to VM roots and table pools at setup: 10 MiB .. 10 MiB + 146 pages.
pub const DONATED: u64 = P0 + 2560;

/// KCore with VMs 1 and 2 created (a two-page root, the 40-bit IPA space's, and 63 pool
/// pages each) and VM 3 given a 16-page pool but no table yet. Returns it with the pool sizes
/// the specification starts from.
pub fn kcore() -> (KCore<SimMachine>, BTreeMap<u16, u64>) {
    let m = SimMachine::new(RAM, RAM_SIZE);
    let mb = MemBlocks::new(&[(RAM, RAM_SIZE)]).unwrap();
    let pool = PagePool::new(KMEM + (1 << 20), RAM + RAM_SIZE);
    let k = KCore::new(m, mb, KMEM, pool, 40).unwrap();
    k.mem().protect_kcore(KMEM, RAM + RAM_SIZE).unwrap();
    k.mem().create_vm_table(1, DONATED).unwrap();
    k.mem().create_vm_table(2, DONATED + 2).unwrap();
    let mut pfn = DONATED + 4;
    for (vmid, n) in [(1u16, 63u64), (2, 63), (3, 16)] {
        for _ in 0..n {
            k.mem().donate_to_pool(vmid, pfn).unwrap();
            pfn += 1;
        }
    }
    let pools = BTreeMap::from([(0, 1000), (1, 63), (2, 63), (3, 16)]);
    (k, pools)
}

/// KCore on the same machine with no VM tables at all (for the VM lifecycle), and the test
/// image-signing key pair (seed 0x42...).
pub fn bare_kcore() -> (KCore<SimMachine>, ed25519_compact::KeyPair) {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x42; 32]));
    let m = SimMachine::new(RAM, RAM_SIZE);
    let mb = MemBlocks::new(&[(RAM, RAM_SIZE)]).unwrap();
    let pool = PagePool::new(KMEM + (1 << 20), RAM + RAM_SIZE);
    let k = KCore::new_with_key(m, mb, KMEM, pool, 40, *kp.pk).unwrap();
    k.mem().protect_kcore(KMEM, RAM + RAM_SIZE).unwrap();
    (k, kp)
}

/// Write `bytes` at the start of page `pfn` (the last word zero-padded).
pub fn write_bytes(k: &KCore<SimMachine>, pfn: Pfn, bytes: &[u8]) {
    for (i, c) in bytes.chunks(8).enumerate() {
        let mut x = [0u8; 8];
        x[..c.len()].copy_from_slice(c);
        k.m.store((pfn << PAGE_SHIFT) + 8 * i as u64, u64::from_le_bytes(x));
    }
}

/// Sign `image` for loading at `load_ipa`, as the signing tool does.
pub fn sign_image(kp: &ed25519_compact::KeyPair, load_ipa: u64, image: &[u8]) -> [u8; 64] {
    let mut msg = kcore::vm::bootaux::signed_header(load_ipa, image.len() as u64).to_vec();
    msg.extend_from_slice(image);
    *kp.sk.sign(msg, None)
}

/// Answers the boot specification's questions about memory contents from the simulated
/// machine, verifying signatures one-shot (independently of KCore's streaming path).
pub struct Oracle<'a> {
    pub k: &'a KCore<SimMachine>,
    pub pk: ed25519_compact::PublicKey,
}

impl Oracle<'_> {
    fn bytes(&self, pfn: Pfn, len: usize) -> Vec<u8> {
        (0..len.div_ceil(8))
            .flat_map(|w| self.k.m.load((pfn << PAGE_SHIFT) + 8 * w as u64).to_le_bytes())
            .take(len)
            .collect()
    }
}

impl Contents for Oracle<'_> {
    fn signature_in(&self, pfn: Pfn) -> [u8; 64] {
        self.bytes(pfn, 64).try_into().unwrap()
    }
    fn verifies(&self, img: &AbsImage, pfns: &[Pfn]) -> bool {
        let mut msg = kcore::vm::bootaux::signed_header(img.load_ipa, img.bytes).to_vec();
        for (i, p) in pfns.iter().enumerate() {
            let len = (img.bytes - 4096 * i as u64).min(4096) as usize;
            msg.extend(self.bytes(*p, len));
        }
        self.pk.verify(msg, &ed25519_compact::Signature::new(img.signature)).is_ok()
    }
}

/// The VMs of the boot specification's state, read from KCore's per-VM records.
pub fn abstract_vms(k: &KCore<SimMachine>) -> BTreeMap<u16, AbsVm> {
    let mut vms = BTreeMap::new();
    for (i, info) in k.vminfo.iter().enumerate() {
        if info.state() == VmState::Unused {
            continue;
        }
        let images = (0..info.image_count())
            .map(|j| {
                let im = info.image(j);
                AbsImage { load_ipa: im.load_ipa, bytes: im.bytes, mapped: im.mapped, signature: im.signature }
            })
            .collect();
        let vcpus = std::array::from_fn(|v| info.vcpu(v));
        let ram = info.ram_regions().collect();
        let boot_arg = info.boot_arg();
        vms.insert(i as u16 + 1, AbsVm { state: info.state(), vcpus, images, kind: info.kind(), ram, boot_arg });
    }
    vms
}

/// ESR_EL2 of a data abort from a lower EL (translation fault, level 3).
pub fn esr_dabt(write: bool, rt: u64, size: u64, sign: bool, isv: bool) -> u64 {
    (0x24 << 26)
        | (1 << 25)
        | ((isv as u64) << 24)
        | (size << 22)
        | ((sign as u64) << 21)
        | (rt << 16)
        | ((write as u64) << 6)
        | 0x07
}

/// The vCPUs of VM `vmid` as KCore holds them, as many as `spec` has. A vCPU running in
/// `live` (index, x0..x30, PC of its trap frame) is read from there: its registers reach the
/// page only when it exits.
pub fn vcpus_of(k: &KCore<SimMachine>, vmid: u16, spec: &AbsVcpus, live: Option<(usize, [u64; 31], u64)>) -> AbsVcpus {
    let info = &k.vminfo[vmid as usize - 1];
    let vcpus = (0..spec.vcpus.len())
        .map(|v| {
            let page = VcpuPage { pa: info.vcpu_page(v) };
            let f = page.get(&k.m, slot::FLAGS);
            let run = if info.vcpu(v) == VcpuState::Active {
                Run::Active
            } else if f & flags::OFF != 0 {
                Run::Off
            } else {
                Run::Ready { first: f & flags::FIRST_RUN != 0 }
            };
            let pending = if f & flags::MMIO_READ_PENDING != 0 {
                Pending::Read {
                    rt: (f >> flags::MMIO_RT_SHIFT) & 0x1f,
                    size_log2: (f >> flags::MMIO_SIZE_SHIFT) & 3,
                    sign: f & flags::MMIO_SIGN != 0,
                }
            } else if f & flags::PAGE_FAULT_PENDING != 0 {
                Pending::Fault { ipa: page.get(&k.m, slot::EXIT_IPA) & !0xfff }
            } else {
                Pending::None
            };
            let (x, pc) = match live {
                Some((l, x, pc)) if l == v => (x, pc),
                _ => (std::array::from_fn(|i| page.x(&k.m, i as u64)), page.get(&k.m, slot::PC)),
            };
            AbsVcpu { run, x, pc, pending }
        })
        .collect();
    // The enrolment table as the set of pages it covers (tests enrol a few pages at most).
    let table = info.mmio_guard();
    let guard = table.ranges().flat_map(|(start, end)| (start..end).step_by(4096)).collect();
    AbsVcpus {
        vcpus,
        off: info.state() == kcore::vm::VmState::PowerOff,
        guard,
        guard_used: table.in_use(),
        ..spec.clone()
    }
}

/// The device pages the generated guests enrol with MMIO_GUARD and access: the UART's and
/// the eleven after it.
pub const GUARD_BASE: u64 = 0x0900_0000;
pub const GUARD_PAGES: u64 = 12;

/// MMIO_GUARD calls: mostly pages of the window (so some are enrolled twice and neighbours
/// join), and the refused kinds: unaligned, RAM, the IPA space's last page and beyond, x2 or
/// x3 not zero.
pub fn mmio_guard_call(load: u64) -> impl Strategy<Value = GuestTrap> {
    let ipa = prop_oneof![
        8 => (0..GUARD_PAGES).prop_map(|k| GUARD_BASE + k * 4096),
        1 => Just(GUARD_BASE + 0x18),
        1 => Just(load),
        1 => Just(0u64),
        1 => Just((1u64 << 40) - 4096),
        1 => Just(1u64 << 40),
        1 => Just(!0xfffu64),
    ];
    let rest = prop_oneof![8 => Just([0u64, 0]), 1 => Just([1, 0]), 1 => Just([0, 1])];
    (ipa, rest).prop_map(|(ipa, r)| GuestTrap::Hvc([0xC600_0007, ipa, r[0], r[1]]))
}

/// A device address for an MMIO access: the UART's registers mostly, else anywhere in the
/// enrolment window.
fn mmio_ipa() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(GUARD_BASE),
        2 => Just(GUARD_BASE + 0x18),
        3 => (0..GUARD_PAGES, 0u64..512).prop_map(|(k, w)| GUARD_BASE + k * 4096 + w * 8),
    ]
}

/// Guest traps of every kind the vCPU specification knows, for a VM whose one image lies at
/// `[load, load + len)`: PSCI and unknown hypercalls, MMIO_GUARD enrolments, MMIO stores and
/// loads (enrolled or not), RAM faults (backed, refused and in the device window), WFI,
/// trapped system registers.
pub fn guest_trap(load: u64, len: u64) -> impl Strategy<Value = GuestTrap> {
    let hvc_id = prop_oneof![
        Just(psci::PSCI_VERSION as u64),
        Just(psci::CPU_ON_64 as u64),
        Just(psci::CPU_OFF as u64),
        Just(psci::AFFINITY_INFO_64 as u64),
        Just(psci::SYSTEM_OFF as u64),
        Just(0x8000_0000u64),
        Just(0xC600_1234u64),
        Just(0x8600_0000u64),
        Just(0xC600_0002u64),
    ];
    let entry = prop_oneof![Just(load), Just(load + 0x40), Just(load + len), Just(0x1000u64)];
    // Discovery calls and what they ask about.
    let query_id = prop_oneof![Just(0x8400_000Au64), Just(0x8000_0001u64), Just(0x8400_0006u64)];
    let query = prop_oneof![
        Just(0x8000_0000u64),
        Just(0x8000_0001u64),
        Just(0x8000_8000u64),
        Just(0x8400_0006u64),
        Just(0xC400_0003u64),
        Just(0x1_8400_0000u64),
        Just(0x8400_0001u64),
    ];
    prop_oneof![
        4 => (hvc_id, 0u64..3, entry, any::<u64>()).prop_map(|(id, a, e, c)| GuestTrap::Hvc([id, a, e, c])),
        1 => (query_id, query).prop_map(|(id, q)| GuestTrap::Hvc([id, q, 0, 0])),
        2 => mmio_guard_call(load),
        3 => (mmio_ipa(), 0u64..32, 0u64..4).prop_map(|(ipa, rt, size_log2)| GuestTrap::MmioWrite { ipa, rt, size_log2 }),
        2 => (mmio_ipa(), 0u64..32, 0u64..4, any::<bool>()).prop_map(|(ipa, rt, size_log2, sign)| GuestTrap::MmioRead { ipa, rt, size_log2, sign }),
        2 => prop_oneof![Just(load + 0x10_0000), Just(load + 0x10_0000 + 0x123), Just(load + 0x20_0000), Just(0x0800_0000u64),
            Just(0x9000_0000u64), Just(load + (16 << 20))]
            .prop_map(|ipa| GuestTrap::RamFault { ipa }),
        1 => Just(GuestTrap::Wfi),
        // Mostly through x0..x3, which hypercalls fill with varied values.
        3 => (sysreg(), prop_oneof![3 => 0u64..4, 1 => 0u64..32], any::<bool>())
            .prop_map(|(reg, rt, read)| GuestTrap::Sysreg { reg, rt, read }),
    ]
}

/// System registers a guest's trapped accesses name: the whole ID block, the debug registers
/// KCore emulates, trace, the SGI registers, set/way maintenance (and a neighbour that is
/// not), the EL1 physical timer, PMU, pointer-authentication keys, MIDR, and anything.
fn sysreg() -> impl Strategy<Value = (u64, u64, u64, u64, u64)> {
    prop_oneof![
        3 => (1u64..8, 0u64..8).prop_map(|(crm, op2)| (3, 0, 0, crm, op2)),
        4 => prop_oneof![
            Just((2u64, 0u64, 0u64, 2u64, 2u64)),
            Just((2, 0, 1, 1, 4)),
            Just((2, 0, 0, 0, 4)),
            Just((2, 0, 1, 0, 4)),
            Just((2, 3, 0, 4, 0)),
            Just((2, 1, 0, 1, 0)),
            Just((3, 0, 12, 11, 5)),
            Just((3, 0, 12, 11, 6)),
            Just((3, 0, 12, 11, 7)),
            Just((1, 0, 7, 14, 2)),
            Just((1, 0, 7, 6, 1)),
            Just((3, 3, 14, 2, 1)),
            Just((3, 3, 14, 2, 2)),
            Just((3, 3, 9, 12, 0)),
            Just((3, 0, 2, 1, 0)),
            Just((3, 0, 0, 0, 0)),
        ],
        1 => (0u64..4, 0u64..8, 0u64..16, 0u64..16, 0u64..8),
    ]
}

/// ESR_EL2 of a trapped MSR/MRS (EC 0x18) of `reg` through `rt`.
pub fn esr_sysreg(reg: (u64, u64, u64, u64, u64), rt: u64, read: bool) -> u64 {
    let (op0, op1, crn, crm, op2) = reg;
    (0x18 << 26)
        | (1 << 25)
        | (op0 << 20)
        | (op2 << 17)
        | (op1 << 14)
        | (crn << 10)
        | (rt << 5)
        | (crm << 1)
        | read as u64
}

/// Give `k` the ID registers QEMU 10's `-cpu max` has (measured) and return the table guests
/// read (layer 27's sanitised values).
pub fn configure_guest_cpu(k: &KCore<SimMachine>) -> [u64; 56] {
    k.guest_cpu.configure(&kcore::vcpu::guestcpu::qemu_max_id_regs(), 40);
    std::array::from_fn(|i| k.guest_cpu.id_reg(i))
}
