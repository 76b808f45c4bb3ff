//! Layer 31 (FaultHandler), host part: a host stage-2 fault is either resolved by mapping
//! (lazy identity map) or refused; a refused access gets a synchronous external abort injected
//! into the host, which then handles it like a bus error (SIGBUS for a user process). KCore
//! never stops because of a host access.

use crate::arch::{self, ec};
use crate::error::Error;
use crate::kcore::KCore;
use crate::machine::Machine;

/// The outcome of a host stage-2 fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// Mapped (or already mapped): return to the host to retry the access.
    Resume,
    /// Refused: inject a synchronous external abort into the host.
    InjectAbort(Error),
}

/// Handle a host instruction or data abort taken to EL2 with syndrome `esr`, FAR_EL2 `far` and
/// HPFAR_EL2 `hpfar`.
pub fn host_stage2_fault<M: Machine>(k: &KCore<M>, esr: u64, far: u64, hpfar: u64) -> HostFault {
    let class = arch::esr_ec(esr);
    if class != ec::DABT_LOW && class != ec::IABT_LOW {
        return HostFault::InjectAbort(Error::InvalidParameter);
    }
    if !arch::is_translation_fault(esr) {
        // KCore maps host memory with full permissions and the access flag set, so any other
        // stage-2 fault means the host touched something KCore will not give it.
        return HostFault::InjectAbort(Error::Denied);
    }
    let ipa = arch::fault_ipa(hpfar, far);
    match k.mem().map_page_host(ipa) {
        Ok(_) => HostFault::Resume,
        Err(e) => HostFault::InjectAbort(e),
    }
}
