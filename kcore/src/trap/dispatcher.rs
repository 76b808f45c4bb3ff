//! Layer 32 (TrapDispatcher), host part: the host's hypercalls. Every register is untrusted:
//! each call range-checks its arguments and answers an error code; every id not listed in
//! `docs/ABI.md` answers SMCCC `NOT_SUPPORTED`. Nothing the host passes can stop KCore.

use crate::abi;
use crate::error::{Error, Result};
use crate::kcore::KCore;
use crate::machine::Machine;
use crate::vm::MAX_VCPUS;
use crate::vm::vmpower::check_vmid;

/// What the caller (the EL2 trap glue) must do after a host hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCall {
    /// Return to the host; `x` holds the results.
    Done,
    /// Switch to the guest: vCPU `vcpu` of VM `vmid` is prepared and marked active; when it
    /// stops, call [`KCore::finish_run`] and report its exit.
    Run { vmid: u16, vcpu: usize, page: u64, report_lrs: bool },
}

/// Handle a host `HVC #0`; `x` holds x0..x7 on entry and the results on return.
pub fn host_hvc<M: Machine>(k: &KCore<M>, x: &mut [u64; 8]) -> HostCall {
    let id = x[0] as u32;
    if id == abi::VCPU_RUN {
        let inject = [x[5], x[6], x[7]];
        return match k.prepare_run_with(x[1], x[2], x[3], x[4], &inject) {
            Ok((vmid, vcpu, page)) => {
                HostCall::Run { vmid, vcpu, page: page.pa, report_lrs: x[4] & abi::RUN_LRS_IN_REGS != 0 }
            }
            Err(e) => {
                x[0] = e.code() as u64;
                HostCall::Done
            }
        };
    }
    let r: Result<Option<u64>> = match id {
        abi::KCORE_VERSION => {
            x[1] = (abi::ABI_MAJOR << 16) | abi::ABI_MINOR;
            let gicv2 = matches!(k.vgic.kind(), crate::vcpu::vgic::GicKind::V2 { .. });
            x[2] = abi::FEATURES | if gicv2 { abi::FEATURE_GICV2 } else { 0 };
            x[3] = k.host.root_pages();
            Ok(None)
        }
        abi::VENDOR_HYP_CALL_UID => {
            for (r, w) in x.iter_mut().zip(abi::KCORE_UID) {
                *r = w as u64;
            }
            return HostCall::Done;
        }
        abi::VENDOR_HYP_REVISION => {
            x[0] = abi::ABI_MAJOR;
            x[1] = abi::ABI_MINOR;
            return HostCall::Done;
        }
        abi::MAP_VM_PAGE => k.map_vm_page(x[1], x[2], x[3]).map(|_| None),
        abi::INJECT_IRQ => k.inject_irq_with(x[1], x[2], x[3], x[4]).map(|_| None),
        abi::VCPU_IRQ_STATE => k.vcpu_irq_state(x[1], x[2]).map(|lrs| {
            x[1..5].copy_from_slice(&lrs);
            None
        }),
        abi::DONATE_PAGE => k.donate_page(x[1], x[2]).map(|_| None),
        abi::REGISTER_VM => k.register_vm_kind(x[1], x[2]).map(|v| Some(v as u64)),
        abi::ADD_RAM_REGION => k.add_ram_region(x[1], x[2], x[3]).map(|_| None),
        abi::LEND_PAGE => k.lend_page(x[1], x[2], x[3]).map(|_| None),
        abi::RECLAIM_PAGE => k.reclaim_page(x[1], x[2]).map(Some),
        abi::GET_VCPU_REG => k.get_vcpu_reg(x[1], x[2], x[3]).map(Some),
        abi::SET_VCPU_REG => k.set_vcpu_reg(x[1], x[2], x[3], x[4]).map(|_| None),
        abi::REGISTER_VCPU => k.register_vcpu(x[1], x[2]).map(|_| None),
        abi::SET_BOOT_INFO => k.set_boot_info(x[1], x[2], x[3], x[4]).map(|i| Some(i as u64)),
        abi::MAP_IMAGE_PAGE => k.map_image_page(x[1], x[2], x[3], x[4]).map(|_| None),
        abi::VERIFY_VM => k.verify_vm_with(x[1], x[2]).map(|_| None),
        abi::DESTROY_VM => k.destroy_vm(x[1]).map(|_| None),
        abi::VM_STATE => vm_state(k, x),
        _ => Err(Error::NotSupported),
    };
    match r {
        Ok(v) => {
            x[0] = abi::SUCCESS as u64;
            if let Some(v) = v {
                x[1] = v;
            }
        }
        Err(e) => x[0] = e.code() as u64,
    }
    HostCall::Done
}

fn vm_state<M: Machine>(k: &KCore<M>, x: &mut [u64; 8]) -> Result<Option<u64>> {
    let vmid = check_vmid(x[1])?;
    let _vm = k.lock_vm(vmid);
    let info = &k.vminfo[vmid as usize - 1];
    x[2] = (0..MAX_VCPUS).filter(|&v| info.vcpu(v) != crate::vm::VcpuState::Unused).fold(0, |m, v| m | 1 << v);
    Ok(Some(info.state() as u64))
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
        // A 40-bit IPA space: a VM's root is two concatenated level-1 tables.
        assert_eq!(&x[..4], &[0, 6, abi::FEATURES, 2]);
    }

    #[test]
    fn version_says_when_the_gic_is_a_gicv2() {
        let k = kcore();
        k.vgic.configure_v2(0x0804_0000);
        let mut x = [abi::KCORE_VERSION as u64, 9, 9, 9, 0, 0, 0, 0];
        host_hvc(&k, &mut x);
        assert_eq!(x[2], abi::FEATURES | abi::FEATURE_GICV2);
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
        for id in [0u64, 0xC600_0012, 0xC600_FFFF, 0x8400_0000, 0x8000_0000, u64::MAX, 0x8600_0000] {
            let mut x = [id, 1, 2, 3, 4, 5, 6, 7];
            host_hvc(&k, &mut x);
            assert_eq!(x[0] as i64, abi::NOT_SUPPORTED, "id {id:#x}");
        }
    }
}
