//! Layers 18-21: the VM lifecycle with real Ed25519 image signatures, every malformed or
//! out-of-order request refused with nothing changed, destroy scrubbing and vmid reuse; and a
//! fuzz-style test of the host hypercall dispatcher: no input panics KCore or breaks an
//! invariant.

mod common;

use common::*;
use kcore::abi;
use kcore::error::Error;
use kcore::invariants;
use kcore::locks::LockId;
use kcore::machine::Machine;
use kcore::mem::pagemgmt::Owner;
use kcore::trap::dispatcher::host_hvc;
use kcore::vm::VmState;
use kcore::{PAGE_SHIFT, PAGE_SIZE};
use proptest::prelude::*;

const LOAD: u64 = 0x8000_0000;
const IMAGE_LEN: usize = 10_000; // three pages, the last one partial
const IMG_PFN: u64 = P0 + 100; // image pages 100, 101, 102
const SIG_PFN: u64 = P0 + 200;
const ROOT_PFN: u64 = P0 + 300;

fn image() -> Vec<u8> {
    (0..IMAGE_LEN).map(|i| (i * 7 + 3) as u8).collect()
}

/// Put `bytes` into consecutive host pages from `pfn`.
fn write_pages(k: &kcore::kcore::KCore<kcore::machine::sim::SimMachine>, pfn: u64, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        k.m.store((pfn << PAGE_SHIFT) + 8 * i as u64, u64::from_le_bytes(w));
    }
}

/// Register a VM and load the test image signed with `sig`.
fn load_vm(k: &kcore::kcore::KCore<kcore::machine::sim::SimMachine>, img: &[u8], sig: &[u8; 64]) -> u64 {
    write_pages(k, SIG_PFN, sig);
    write_pages(k, IMG_PFN, img);
    let vmid = k.register_vm(ROOT_PFN).unwrap() as u64;
    donate_tables(k, vmid);
    k.register_vcpu(vmid, 0).unwrap();
    assert_eq!(k.set_boot_info(vmid, LOAD, img.len() as u64, SIG_PFN), Ok(0));
    for i in 0..3 {
        k.map_image_page(vmid, 0, i, IMG_PFN + i).unwrap();
    }
    vmid
}

/// Top up the VM's table pool as a host does before giving it memory.
fn donate_tables(k: &kcore::kcore::KCore<kcore::machine::sim::SimMachine>, vmid: u64) {
    for p in 0..8 {
        k.mem().donate_to_pool(vmid as u16, ROOT_PFN + 2 + p).unwrap();
    }
}

fn state(k: &kcore::kcore::KCore<kcore::machine::sim::SimMachine>, vmid: u64) -> VmState {
    k.vminfo[vmid as usize - 1].state()
}

#[test]
fn signed_image_verifies_and_the_vm_owns_it() {
    let (k, kp) = bare_kcore();
    let img = image();
    let vmid = load_vm(&k, &img, &sign_image(&kp, LOAD, &img));
    assert_eq!(vmid, 1);
    // The root is two pages on a 40-bit IPA space: 8 KiB aligned, both the host's.
    assert_eq!(k.register_vm(P0 + 501), Err(Error::InvalidParameter));
    k.mem().donate_to_pool(1, P0 + 501).unwrap();
    assert_eq!(k.register_vm(P0 + 500), Err(Error::Denied));
    assert_eq!(k.mem().page(P0 + 500).unwrap().owner, Owner::Host);
    assert_eq!(k.verify_vm(vmid), Ok(()));
    assert_eq!(state(&k, vmid), VmState::Verified);
    for i in 0..3 {
        assert_eq!(k.mem().page(IMG_PFN + i).unwrap().owner, Owner::Vm(1));
        assert_eq!(k.mem().map_page_host((IMG_PFN + i) << PAGE_SHIFT).map(|_| ()), Err(Error::Denied));
    }
    // Set-up calls are over once verified.
    assert_eq!(k.set_boot_info(vmid, LOAD + (16 << 20), 4096, SIG_PFN), Err(Error::BadState));
    assert_eq!(k.register_vcpu(vmid, 1), Err(Error::BadState));
    assert_eq!(k.verify_vm(vmid), Err(Error::BadState));
    invariants::check(&k).unwrap();
}

#[test]
fn a_bad_signature_is_refused_for_good() {
    let (k, kp) = bare_kcore();
    let img = image();
    let mut sig = sign_image(&kp, LOAD, &img);
    sig[5] ^= 1;
    let vmid = load_vm(&k, &img, &sig);
    assert_eq!(k.verify_vm(vmid), Err(Error::BadSignature));
    assert_eq!(state(&k, vmid), VmState::Invalid);
    assert_eq!(k.verify_vm(vmid), Err(Error::BadState), "no second try");
    assert!(!k.vm_powered_on(vmid as u16));
}

#[test]
fn a_changed_byte_or_another_load_address_is_refused() {
    let (k, kp) = bare_kcore();
    let img = image();
    let sig = sign_image(&kp, LOAD, &img);
    let mut tampered = img.clone();
    tampered[9_999] ^= 0x80; // the last byte, in the partial last page
    let vmid = load_vm(&k, &tampered, &sig);
    assert_eq!(k.verify_vm(vmid), Err(Error::BadSignature));
    k.destroy_vm(vmid).unwrap();

    // The same bytes signed for another address.
    let sig = sign_image(&kp, LOAD + PAGE_SIZE, &img);
    let vmid = load_vm(&k, &img, &sig);
    assert_eq!(k.verify_vm(vmid), Err(Error::BadSignature));
}

#[test]
fn an_incomplete_image_cannot_be_verified_yet() {
    let (k, kp) = bare_kcore();
    let img = image();
    write_pages(&k, SIG_PFN, &sign_image(&kp, LOAD, &img));
    write_pages(&k, IMG_PFN, &img);
    let vmid = k.register_vm(ROOT_PFN).unwrap() as u64;
    donate_tables(&k, vmid);
    k.set_boot_info(vmid, LOAD, img.len() as u64, SIG_PFN).unwrap();
    k.map_image_page(vmid, 0, 0, IMG_PFN).unwrap();
    k.map_image_page(vmid, 0, 2, IMG_PFN + 2).unwrap();
    assert_eq!(k.verify_vm(vmid), Err(Error::BadState));
    assert_eq!(state(&k, vmid), VmState::Ready);
    k.map_image_page(vmid, 0, 1, IMG_PFN + 1).unwrap();
    assert_eq!(k.verify_vm(vmid), Ok(()));
}

#[test]
fn destroy_scrubs_everything_and_the_vmid_is_reused() {
    let (k, kp) = bare_kcore();
    let img = image();
    let vmid = load_vm(&k, &img, &sign_image(&kp, LOAD, &img));
    k.verify_vm(vmid).unwrap();
    k.mem().donate_to_pool(vmid as u16, P0 + 400).unwrap();
    let before_host = (0..4096).filter(|p| k.mem().page(P0 + p).unwrap().owner == Owner::Host).count();
    assert_eq!(k.destroy_vm(vmid), Ok(()));
    assert_eq!(state(&k, vmid), VmState::Unused);
    for p in [IMG_PFN, IMG_PFN + 1, IMG_PFN + 2, ROOT_PFN, ROOT_PFN + 1, ROOT_PFN + 8, P0 + 400] {
        assert_eq!(k.mem().page(p).unwrap().owner, Owner::Host, "pfn {p:#x}");
        assert!(k.m.page_is_zero(p << PAGE_SHIFT), "pfn {p:#x} returned unscrubbed");
    }
    // Image pages, the root, intermediate tables and the spare pool page all came back.
    let after_host = (0..4096).filter(|p| k.mem().page(P0 + p).unwrap().owner == Owner::Host).count();
    assert!(after_host > before_host + 3 + 1, "{before_host} -> {after_host}");
    assert!(k.vms[0].npt().is_none());
    invariants::check(&k).unwrap();
    assert_eq!(k.destroy_vm(vmid), Err(Error::BadState));
    // The vmid is free again, and works as new.
    let vmid2 = load_vm(&k, &img, &sign_image(&kp, LOAD, &img));
    assert_eq!(vmid2, vmid);
    assert_eq!(k.verify_vm(vmid2), Ok(()));
}

/// The host kernel read a VM's image page, its root table, a spare pool page and its vCPU
/// page (KCore's zero page got mapped at each); when the VM goes, every one of them is the
/// host's again, mapped by the host as its own: no zero page is left behind.
#[test]
fn destroy_takes_back_the_zero_page_the_host_kernel_read() {
    let (k, kp) = bare_kcore();
    let img = image();
    let vmid = load_vm(&k, &img, &sign_image(&kp, LOAD, &img));
    k.verify_vm(vmid).unwrap();
    k.mem().donate_to_pool(vmid as u16, P0 + 400).unwrap();
    let vcpu = k.vminfo[vmid as usize - 1].vcpu_page(0) >> PAGE_SHIFT;
    let read = [IMG_PFN, ROOT_PFN, P0 + 400, vcpu];
    for p in read {
        assert_eq!(k.mem().map_page_host(p << PAGE_SHIFT).map(|_| ()), Err(Error::Denied));
        assert!(k.mem().map_zero_host(p << PAGE_SHIFT).is_ok(), "pfn {p:#x}");
        let leaf = k.host.expect_npt().walk(&k.m, p << PAGE_SHIFT).unwrap();
        assert_eq!(leaf.output(p << PAGE_SHIFT), k.zero_page);
    }
    invariants::check(&k).unwrap();
    assert_eq!(k.destroy_vm(vmid), Ok(()));
    for p in read {
        assert_eq!(k.mem().page(p).unwrap().owner, Owner::Host, "pfn {p:#x}");
        assert!(k.host.expect_npt().walk(&k.m, p << PAGE_SHIFT).is_none(), "pfn {p:#x} still maps the zero page");
    }
    invariants::check(&k).unwrap();
}

#[test]
fn malformed_requests_are_refused_with_nothing_changed() {
    let (k, kp) = bare_kcore();
    let img = image();
    // A root page the host does not own: no vmid is used up.
    assert_eq!(k.register_vm(KMEM >> PAGE_SHIFT), Err(Error::Denied));
    assert_eq!(k.register_vm(0), Err(Error::InvalidParameter));
    let vmid = load_vm(&k, &img, &sign_image(&kp, LOAD, &img));
    assert_eq!(vmid, 1);
    // The root is two pages on a 40-bit IPA space: 8 KiB aligned, both the host's.
    assert_eq!(k.register_vm(P0 + 501), Err(Error::InvalidParameter));
    k.mem().donate_to_pool(1, P0 + 501).unwrap();
    assert_eq!(k.register_vm(P0 + 500), Err(Error::Denied));
    assert_eq!(k.mem().page(P0 + 500).unwrap().owner, Owner::Host);
    for bad in [0u64, 64, 65, u64::MAX] {
        assert_eq!(k.register_vcpu(bad, 0), Err(Error::InvalidParameter));
        assert_eq!(k.set_boot_info(bad, LOAD, 1, SIG_PFN), Err(Error::InvalidParameter));
        assert_eq!(k.map_image_page(bad, 0, 0, P0), Err(Error::InvalidParameter));
        assert_eq!(k.verify_vm(bad), Err(Error::InvalidParameter));
        assert_eq!(k.destroy_vm(bad), Err(Error::InvalidParameter));
    }
    assert_eq!(k.register_vcpu(2, 0), Err(Error::BadState), "vmid 2 is not registered");
    assert_eq!(k.register_vcpu(vmid, 8), Err(Error::InvalidParameter));
    assert_eq!(k.register_vcpu(vmid, 0), Err(Error::Exists), "double register");
    for (ipa, len) in
        [(LOAD + 1, 10), (LOAD, 0), (LOAD, (256 << 20) + 1), (u64::MAX - 4095, 8192), ((1 << 40) - 4096, 8192)]
    {
        assert_eq!(k.set_boot_info(vmid, ipa, len, SIG_PFN), Err(Error::InvalidParameter), "{ipa:#x}+{len}");
    }
    assert_eq!(k.set_boot_info(vmid, LOAD + 8192, 100, SIG_PFN), Err(Error::Exists), "overlaps image 0");
    assert_eq!(
        k.set_boot_info(vmid, 0x1000_0000, 100, KMEM >> PAGE_SHIFT),
        Err(Error::Denied),
        "signature from KCore memory"
    );
    assert_eq!(k.set_boot_info(vmid, 0x1000_0000, 100, IMG_PFN), Err(Error::Denied), "signature from a VM page");
    for i in 1..4 {
        assert_eq!(k.set_boot_info(vmid, 0x1000_0000 * i, 100, SIG_PFN), Ok(i as usize));
    }
    assert_eq!(k.set_boot_info(vmid, 0x5000_0000, 100, SIG_PFN), Err(Error::NoMemory), "a fifth image");
    assert_eq!(k.map_image_page(vmid, 0, 3, P0 + 500), Err(Error::InvalidParameter), "past the image");
    assert_eq!(k.map_image_page(vmid, 9, 0, P0 + 500), Err(Error::InvalidParameter), "no such image");
    assert_eq!(k.map_image_page(vmid, 0, 0, P0 + 500), Err(Error::Exists), "page 0 is in already");
    assert_eq!(k.map_image_page(vmid, 1, 0, IMG_PFN), Err(Error::Denied), "a page of image 0");
    assert_eq!(k.map_image_page(vmid, 1, 0, KMEM >> PAGE_SHIFT), Err(Error::Denied), "KCore's page");
    assert_eq!(k.mem().page(P0 + 500).unwrap().owner, Owner::Host);
    invariants::check(&k).unwrap();
}

// ---------------------------------------------------------------- dispatcher fuzzing

const IDS: [u32; 22] = [
    abi::VCPU_RUN,
    abi::INJECT_IRQ,
    abi::VCPU_IRQ_STATE,
    abi::LEND_PAGE,
    abi::RECLAIM_PAGE,
    abi::GET_VCPU_REG,
    abi::SET_VCPU_REG,
    abi::ADD_RAM_REGION,
    abi::MAP_VM_PAGE,
    abi::KCORE_VERSION,
    abi::DONATE_PAGE,
    abi::REGISTER_VM,
    abi::REGISTER_VCPU,
    abi::SET_BOOT_INFO,
    abi::MAP_IMAGE_PAGE,
    abi::VERIFY_VM,
    abi::DESTROY_VM,
    abi::VM_STATE,
    abi::VENDOR_HYP_CALL_UID,
    0xC600_0042,
    0x8400_0003,
    0,
];

fn arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..4,
        3 => (0u64..4096).prop_map(|p| P0 + p),
        1 => Just(KMEM >> PAGE_SHIFT),
        2 => prop_oneof![Just(LOAD), Just(0u64), Just(1 << 40), Just(u64::MAX), Just(0xfff), Just(4096 * 3)],
        // Register numbers, PSTATE values, RAM region sizes, interrupt attributes.
        1 => prop_oneof![Just(32u64), Just(33), Just(60), Just(0x3c5), Just(0x3c9), Just(1 << 20), Just(0x1a0)],
        1 => any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Random host hypercalls: no panic, an SMCCC status in x0, invariants and locks intact
    /// after every call.
    #[test]
    fn no_host_hypercall_breaks_kcore(calls in prop::collection::vec(((0..IDS.len()), prop::array::uniform7(arg())), 1..64)) {
        let (k, kp) = bare_kcore();
        // Give the fuzzer something signed to find.
        let img = image();
        write_pages(&k, SIG_PFN, &sign_image(&kp, LOAD, &img));
        write_pages(&k, IMG_PFN, &img);
        for (i, args) in calls {
            let mut x = [IDS[i] as u64, args[0], args[1], args[2], args[3], args[4], args[5], args[6]];
            if let kcore::trap::dispatcher::HostCall::Run { vmid, vcpu, .. } = host_hvc(&k, &mut x) {
                // No guest runs in this test: the vCPU stops at once, as on a host interrupt.
                k.finish_run(vmid, vcpu);
                x[0] = 0;
            }
            let status = x[0] as i64;
            prop_assert!((abi::BAD_SIGNATURE..=0).contains(&status) || IDS[i] == abi::VENDOR_HYP_CALL_UID,
                "status {status} for {:#x}", IDS[i]);
            if let Err(v) = invariants::check(&k) {
                prop_assert!(false, "after {:#x} {:?}: {:?}", IDS[i], args, v);
            }
            for id in [LockId::S2Page, LockId::Core, LockId::Pt(0), LockId::Pt(1), LockId::Vm(1), LockId::Vm(2)] {
                prop_assert_eq!(k.locks.holder(id), None);
            }
        }
    }
}
