//! Layer 32 (TrapDispatcher), host part: the host's hypercalls. Every id not listed in
//! `docs/ABI.md` answers SMCCC `NOT_SUPPORTED`; nothing the host passes can stop KCore.

use crate::abi;
use crate::kcore::KCore;
use crate::machine::Machine;

/// Handle a host `HVC #0`; `x` holds x0..x7 on entry and the results on return.
pub fn host_hvc<M: Machine>(_k: &KCore<M>, x: &mut [u64; 8]) {
    let id = x[0] as u32;
    match id {
        abi::KCORE_VERSION => {
            x[0] = abi::SUCCESS as u64;
            x[1] = (abi::ABI_MAJOR << 16) | abi::ABI_MINOR;
            x[2] = abi::FEATURE_HOST_STAGE2;
        }
        abi::VENDOR_HYP_CALL_UID => {
            for (r, w) in x.iter_mut().zip(abi::KCORE_UID) {
                *r = w as u64;
            }
        }
        abi::VENDOR_HYP_REVISION => {
            x[0] = abi::ABI_MAJOR;
            x[1] = abi::ABI_MINOR;
        }
        _ => x[0] = abi::NOT_SUPPORTED as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;
    use crate::mem::memblock::MemBlocks;
    use crate::pt::ptalloc::PagePool;

    fn kcore() -> KCore<SimMachine> {
        let m = SimMachine::new(0x4000_0000, 4 << 20);
        let mb = MemBlocks::new(&[(0x4000_0000, 64 << 20)]).unwrap();
        KCore::new(m, mb, 0x4000_0000, PagePool::new(0x4010_0000, 0x4040_0000), 40).unwrap()
    }

    #[test]
    fn version_reports_abi_and_features() {
        let k = kcore();
        let mut x = [abi::KCORE_VERSION as u64, 9, 9, 9, 0, 0, 0, 0];
        host_hvc(&k, &mut x);
        assert_eq!(&x[..3], &[0, 1, abi::FEATURE_HOST_STAGE2]);
    }

    #[test]
    fn uid_is_reported_in_four_words() {
        let k = kcore();
        let mut x = [abi::VENDOR_HYP_CALL_UID as u64, 0, 0, 0, 0, 0, 0, 0];
        host_hvc(&k, &mut x);
        assert_eq!(x[..4], abi::KCORE_UID.map(u64::from));
        assert_eq!(x[0], 0x787e_0a1f);
    }

    #[test]
    fn every_other_id_is_not_supported() {
        let k = kcore();
        for id in [0u64, 0xC600_0001, 0xC600_FFFF, 0x8400_0000, 0x8000_0000, u64::MAX, 0x1_C600_0000] {
            let mut x = [id, 1, 2, 3, 4, 5, 6, 7];
            host_hvc(&k, &mut x);
            if id as u32 == abi::KCORE_VERSION {
                continue; // upper bits are ignored, as SMCCC says
            }
            assert_eq!(x[0] as i64, abi::NOT_SUPPORTED, "id {id:#x}");
        }
    }
}
