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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;
    use crate::mem::memblock::MemBlocks;
    use crate::pt::ptalloc::PagePool;

    const KMEM: u64 = 0x4000_0000;

    fn kcore() -> KCore<SimMachine> {
        let m = SimMachine::new(KMEM, 4 << 20);
        let mb = MemBlocks::new(&[(KMEM, 64 << 20)]).unwrap();
        let k = KCore::new(m, mb, KMEM, PagePool::new(KMEM + (1 << 20), KMEM + (4 << 20)), 40).unwrap();
        k.mem().protect_kcore(KMEM, KMEM + (4 << 20)).unwrap();
        k
    }

    /// ESR of a data abort from a lower EL: translation fault at level 3, read.
    const DABT_TRANSLATION: u64 = (ec::DABT_LOW << 26) | arch::ESR_IL | 0b00_0111;
    fn hpfar(ipa: u64) -> u64 {
        (ipa >> 12) << 4
    }

    #[test]
    fn host_ram_fault_is_resolved() {
        let k = kcore();
        let ipa = KMEM + (8 << 20);
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa)), HostFault::Resume);
        assert!(k.host.expect_npt().walk(&k.m, ipa).is_some());
    }

    #[test]
    fn kcore_memory_fault_injects_an_abort_and_maps_nothing() {
        let k = kcore();
        let ipa = KMEM + 0x2000;
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa)), HostFault::InjectAbort(Error::Denied));
        assert!(k.host.expect_npt().walk(&k.m, ipa).is_none());
    }

    #[test]
    fn permission_faults_and_foreign_classes_are_refused() {
        let k = kcore();
        let ipa = KMEM + (8 << 20);
        let perm = (ec::DABT_LOW << 26) | arch::ESR_IL | 0b00_1111;
        assert_eq!(host_stage2_fault(&k, perm, ipa, hpfar(ipa)), HostFault::InjectAbort(Error::Denied));
        let hvc = ec::HVC64 << 26;
        assert_eq!(host_stage2_fault(&k, hvc, ipa, hpfar(ipa)), HostFault::InjectAbort(Error::InvalidParameter));
    }
}
