//! Layer 18 (VMPower): a VM's power state, read and changed under its `vm` lock.

use super::VmState;
use crate::error::{Error, Result};
use crate::kcore::{KCore, MAX_VMS};
use crate::locks::{LockGuard, LockId};
use crate::machine::Machine;

/// Validate a VM id from outside (1..=MAX_VMS).
pub fn check_vmid(vmid: u64) -> Result<u16> {
    if vmid == 0 || vmid > MAX_VMS as u64 { Err(Error::InvalidParameter) } else { Ok(vmid as u16) }
}

impl<M: Machine> KCore<M> {
    /// Take VM `vmid`'s lock (vmid already validated).
    pub fn lock_vm(&self, vmid: u16) -> LockGuard<'_> {
        self.locks.acquire(LockId::Vm(vmid), self.m.cpu_index())
    }

    /// `get_vm_poweron`: may VM `vmid` run (verified and not powered off)?
    pub fn vm_powered_on(&self, vmid: u16) -> bool {
        let _vm = self.lock_vm(vmid);
        self.vminfo[vmid as usize - 1].state() == VmState::Verified
    }

    /// `set_vm_poweroff`: VM `vmid` stops for good (PSCI SYSTEM_OFF, or the host's destroy).
    pub fn set_vm_poweroff(&self, vmid: u16) -> Result<()> {
        let _vm = self.lock_vm(vmid);
        let info = &self.vminfo[vmid as usize - 1];
        if info.state() == VmState::Unused {
            return Err(Error::BadState);
        }
        info.set_state(VmState::PowerOff);
        Ok(())
    }
}
