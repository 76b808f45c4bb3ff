//! Layer 19 (BootCore): vmid allocation under the `core` lock. vmids are reused once a VM is
//! destroyed. (SeKVM's second job here, the EL2 image remap window, has no counterpart: KCore
//! reads images through the VM's own stage-2 after taking the pages, so its EL2 mappings stay
//! written once.)

use super::VmState;
use crate::error::{Error, Result};
use crate::kcore::KCore;
use crate::locks::LockId;
use crate::machine::Machine;

impl<M: Machine> KCore<M> {
    /// `gen_vmid`: claim the lowest unused vmid (its state becomes `Ready`).
    pub fn gen_vmid(&self) -> Result<u16> {
        let _core = self.locks.acquire(LockId::Core, self.m.cpu_index());
        for (i, info) in self.vminfo.iter().enumerate() {
            let vmid = i as u16 + 1;
            // Only this path leaves `Unused`, and only under `core`; every other transition
            // holds `vm(vmid)`, and `destroy` returns a VM to `Unused` as its very last write.
            // (`vm` ranks before `core`, so the vm lock cannot be taken here.)
            if info.state() == VmState::Unused {
                info.set_state(VmState::Ready);
                return Ok(vmid);
            }
        }
        Err(Error::NoMemory)
    }
}
