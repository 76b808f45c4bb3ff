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
