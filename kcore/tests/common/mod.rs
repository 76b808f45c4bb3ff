//! A small KCore on the simulated machine, shared by the refinement and regression tests.
#![allow(dead_code)]

use kcore::kcore::KCore;
use kcore::machine::sim::SimMachine;
use kcore::mem::memblock::MemBlocks;
use kcore::pt::ptalloc::PagePool;
use std::collections::BTreeMap;

/// RAM: 16 MiB at 1 GiB (4096 pages, 8 chunks of 2 MiB).
pub const RAM: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 16 << 20;
/// First RAM page frame.
pub const P0: u64 = RAM >> 12;
/// KCore's own memory: the top 4 MiB (metadata, then the host table pool).
pub const KMEM: u64 = RAM + (12 << 20);
/// Host pages given to VM table pools at setup: 10 MiB .. 10 MiB + 144 pages.
pub const DONATED: u64 = P0 + 2560;

/// KCore with VMs 1 and 2 created (64 pool pages each) and VM 3 given a 16-page pool but no
/// table yet. Returns it with the pool sizes the specification starts from.
pub fn kcore() -> (KCore<SimMachine>, BTreeMap<u16, u64>) {
    let m = SimMachine::new(RAM, RAM_SIZE);
    let mb = MemBlocks::new(&[(RAM, RAM_SIZE)]).unwrap();
    let pool = PagePool::new(KMEM + (1 << 20), RAM + RAM_SIZE);
    let k = KCore::new(m, mb, KMEM, pool, 40).unwrap();
    k.mem().protect_kcore(KMEM, RAM + RAM_SIZE).unwrap();
    let mut pfn = DONATED;
    for (vmid, n) in [(1u16, 64u64), (2, 64), (3, 16)] {
        for _ in 0..n {
            k.mem().donate_to_pool(vmid, pfn).unwrap();
            pfn += 1;
        }
    }
    k.mem().create_vm_table(1).unwrap();
    k.mem().create_vm_table(2).unwrap();
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

/// Sign `image` for loading at `load_ipa`, as the signing tool does.
pub fn sign_image(kp: &ed25519_compact::KeyPair, load_ipa: u64, image: &[u8]) -> [u8; 64] {
    let mut msg = kcore::vm::bootaux::signed_header(load_ipa, image.len() as u64).to_vec();
    msg.extend_from_slice(image);
    *kp.sk.sign(msg, None)
}
