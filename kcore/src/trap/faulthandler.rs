//! Layer 31 (FaultHandler), host part: a host stage-2 fault is either resolved by mapping
//! (lazy identity map) or refused; a refused access gets a synchronous external abort injected
//! into the host, which then handles it like a bus error (SIGBUS for a user process). One
//! exception keeps the host alive: a read by the host *kernel* of a page a VM owns gets
//! KCore's zero page instead (Linux kills the kernel task on a kernel-mode external abort, and
//! ordinary paths such as `/proc/PID/mem` reach guest pages from kernel mode). KCore never
//! stops because of a host access.

use crate::arch::{self, ec};
use crate::error::Error;
use crate::kcore::KCore;
use crate::machine::Machine;

/// The outcome of a host stage-2 fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// Mapped: return to the host to retry the access.
    Resume,
    /// KCore's table maps it already (another CPU mapped it first): retry. The same CPU
    /// faulting again and again on a page KCore maps is a KCore bug (the tables disagree
    /// with what the hardware walks), which the trap handler makes fatal.
    AlreadyMapped,
    /// A host kernel read of a VM's page: KCore's zero page is mapped there; retry.
    ReadsZero,
    /// Refused: inject a synchronous external abort into the host.
    InjectAbort(Error),
}

/// Handle a host instruction or data abort taken to EL2 with syndrome `esr`, FAR_EL2 `far` and
/// HPFAR_EL2 `hpfar`; `from_el1` says the host kernel (not a user process) made the access.
pub fn host_stage2_fault<M: Machine>(k: &KCore<M>, esr: u64, far: u64, hpfar: u64, from_el1: bool) -> HostFault {
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
        Ok(m) if m.already => HostFault::AlreadyMapped,
        Ok(_) => HostFault::Resume,
        Err(Error::Denied) if from_el1 && is_plain_data_read(esr) => match k.mem().map_zero_host(ipa) {
            Ok(_) => HostFault::ReadsZero,
            Err(e) => HostFault::InjectAbort(e),
        },
        Err(e) => HostFault::InjectAbort(e),
    }
}

/// A data read: not a write (WnR), not a cache maintenance instruction (CM, ISS bit 8) and
/// not a stage-1 table walk (S1PTW), per the data abort ISS (Arm ARM D24.2.40).
fn is_plain_data_read(esr: u64) -> bool {
    arch::esr_ec(esr) == ec::DABT_LOW
        && !arch::abort_is_write(esr)
        && esr & (1 << 8) == 0
        && !arch::abort_on_s1_walk(esr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;
    use crate::mem::memblock::MemBlocks;
    use crate::pt::ptalloc::PagePool;

    const KMEM: u64 = 0x4000_0000;

    fn kcore() -> KCore<SimMachine> {
        let m = SimMachine::new(KMEM, 16 << 20);
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
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa), true), HostFault::Resume);
        assert!(k.host.expect_npt().walk(&k.m, ipa).is_some());
    }

    #[test]
    fn kcore_memory_fault_injects_an_abort_and_maps_nothing() {
        let k = kcore();
        let ipa = KMEM + 0x2000;
        // From a user process (a SIGBUS there), and any write.
        let write = DABT_TRANSLATION | (1 << 6);
        for (esr, el1) in [(DABT_TRANSLATION, false), (write, true)] {
            assert_eq!(host_stage2_fault(&k, esr, ipa, hpfar(ipa), el1), HostFault::InjectAbort(Error::Denied));
            assert!(k.host.expect_npt().walk(&k.m, ipa).is_none());
        }
        // The host kernel reading it reads zeros.
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa), true), HostFault::ReadsZero);
        assert_eq!(k.host.expect_npt().walk(&k.m, ipa).unwrap().output(ipa), k.zero_page);
        crate::invariants::check(&k).unwrap();
    }

    /// A VM's page (gfn 0 of VM 1), not shared.
    fn vm_page(k: &KCore<SimMachine>) -> u64 {
        let pfn = (KMEM + (8 << 20)) >> 12;
        k.mem().create_vm_table(1, pfn + 2).unwrap();
        for p in [1, 4, 5] {
            k.mem().donate_to_pool(1, pfn + p).unwrap();
        }
        k.mem().assign_pfn_to_vm(1, 0, pfn).unwrap();
        k.m.fill_page(pfn << 12, 0x5a);
        pfn << 12
    }

    #[test]
    fn a_host_kernel_read_of_a_vm_page_reads_kcore_zero_page() {
        let k = kcore();
        let ipa = vm_page(&k);
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa + 8, hpfar(ipa), true), HostFault::ReadsZero);
        let leaf = k.host.expect_npt().walk(&k.m, ipa).unwrap();
        assert_eq!((leaf.output(ipa), leaf.level), (k.zero_page, 3));
        assert_eq!(leaf.desc & arch::desc::S2AP_RW, arch::desc::S2AP_RO, "read-only");
        assert_ne!(leaf.desc & arch::desc::S2_XN, 0, "never executable");
        assert!(k.m.page_is_zero(k.zero_page));
        // Once the VM shares the page, the zero page goes and the host maps the page itself.
        assert_eq!(k.mem().grant_vm_page(1, ipa >> 12), Ok(1));
        assert!(k.host.expect_npt().walk(&k.m, ipa).is_none());
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa), true), HostFault::Resume);
        assert_eq!(k.host.expect_npt().walk(&k.m, ipa).unwrap().output(ipa), ipa);
        crate::invariants::check(&k).unwrap();
    }

    #[test]
    fn writes_user_reads_fetches_and_walks_of_a_vm_page_are_refused() {
        let k = kcore();
        let ipa = vm_page(&k);
        let write = DABT_TRANSLATION | (1 << 6);
        let cache_op = DABT_TRANSLATION | (1 << 8);
        let s1_walk = DABT_TRANSLATION | (1 << 7);
        let fetch = (ec::IABT_LOW << 26) | arch::ESR_IL | 0b00_0111;
        for (esr, el1) in [(write, true), (cache_op, true), (s1_walk, true), (fetch, true), (DABT_TRANSLATION, false)] {
            assert_eq!(
                host_stage2_fault(&k, esr, ipa, hpfar(ipa), el1),
                HostFault::InjectAbort(Error::Denied),
                "{esr:#x}"
            );
            assert!(k.host.expect_npt().walk(&k.m, ipa).is_none());
        }
        // A write after the zero page is there is a permission fault: refused.
        assert_eq!(host_stage2_fault(&k, DABT_TRANSLATION, ipa, hpfar(ipa), true), HostFault::ReadsZero);
        let perm_write = (ec::DABT_LOW << 26) | arch::ESR_IL | (1 << 6) | 0b00_1111;
        assert_eq!(host_stage2_fault(&k, perm_write, ipa, hpfar(ipa), true), HostFault::InjectAbort(Error::Denied));
        // Scrubbed back to the host: the zero page goes, the page is the host's again.
        k.mem().clear_vm_page(1, ipa >> 12).unwrap();
        assert!(k.host.expect_npt().walk(&k.m, ipa).is_none());
        crate::invariants::check(&k).unwrap();
    }

    #[test]
    fn permission_faults_and_foreign_classes_are_refused() {
        let k = kcore();
        let ipa = KMEM + (8 << 20);
        let perm = (ec::DABT_LOW << 26) | arch::ESR_IL | 0b00_1111;
        assert_eq!(host_stage2_fault(&k, perm, ipa, hpfar(ipa), true), HostFault::InjectAbort(Error::Denied));
        let hvc = ec::HVC64 << 26;
        assert_eq!(host_stage2_fault(&k, hvc, ipa, hpfar(ipa), true), HostFault::InjectAbort(Error::InvalidParameter));
    }
}
