//! The host's PSCI calls (Arm DEN 0022). The host's SMCs are trapped (HCR_EL2.TSC); KCore
//! forwards them to firmware, except the calls that would start a CPU at a host-chosen entry
//! point: firmware starts CPUs at the highest non-secure EL, EL2, which must be KCore. Those
//! are rewritten so the CPU enters KCore first, which then enters the host's entry point at EL1.

use crate::locks::locks::MAX_CPUS;
use core::sync::atomic::{AtomicU64, Ordering};

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC32.
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xC400_0003;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000A;
/// PSCI `MIGRATE_INFO_TYPE`.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// MIGRATE_INFO_TYPE's answer: no Trusted OS that needs migrating (PSCI 5.7.2, value 2).
pub const TOS_NOT_PRESENT_MP: i64 = 2;
/// SYSTEM_SUSPEND, SMC32.
pub const SYSTEM_SUSPEND_32: u32 = 0x8400_000E;
/// SYSTEM_SUSPEND, SMC64.
pub const SYSTEM_SUSPEND_64: u32 = 0xC400_000E;

/// PSCI return code INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// PSCI return code ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// PSCI return code INVALID_ADDRESS.
pub const INVALID_ADDRESS: i64 = -9;
/// AFFINITY_INFO, SMC32.
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xC400_0004;

/// MPIDR affinity fields Aff3..Aff0.
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

/// CPU_SUSPEND power_state, original format: StateType bit 16 set = power down.
const POWER_STATE_POWERDOWN: u64 = 1 << 16;

/// The CPUs of the machine: index (KCore's numbering) to MPIDR affinity.
#[derive(Clone, Copy, Debug)]
pub struct CpuTable {
    mpidr: [u64; MAX_CPUS],
    count: usize,
}

impl CpuTable {
    /// From the MPIDR values of the device tree's cpu nodes (extra CPUs beyond
    /// [`MAX_CPUS`] are dropped and reported by the caller).
    pub fn new(mpidrs: impl IntoIterator<Item = u64>) -> Self {
        let mut t = CpuTable { mpidr: [0; MAX_CPUS], count: 0 };
        for m in mpidrs.into_iter().take(MAX_CPUS) {
            t.mpidr[t.count] = m & MPIDR_AFF_MASK;
            t.count += 1;
        }
        t
    }

    /// KCore's index of the CPU with affinity `mpidr`.
    pub fn index_of(&self, mpidr: u64) -> Option<usize> {
        self.mpidr[..self.count].iter().position(|&m| m == mpidr & MPIDR_AFF_MASK)
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No CPUs?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Where the host wants each CPU to continue once KCore has set it up.
#[derive(Debug)]
pub struct HostEntries {
    entry: [AtomicU64; MAX_CPUS],
    context: [AtomicU64; MAX_CPUS],
}

impl Default for HostEntries {
    fn default() -> Self {
        Self::new()
    }
}

impl HostEntries {
    /// None recorded.
    pub const fn new() -> Self {
        HostEntries { entry: [const { AtomicU64::new(0) }; MAX_CPUS], context: [const { AtomicU64::new(0) }; MAX_CPUS] }
    }

    /// Record the host's entry point and context id for CPU `index`.
    pub fn set(&self, index: usize, entry: u64, context: u64) {
        self.entry[index].store(entry, Ordering::Relaxed);
        // Release: the CPU that reads the entry (after firmware starts it) sees both.
        self.context[index].store(context, Ordering::Release);
    }

    /// The host's `(entry, context)` for CPU `index`.
    pub fn get(&self, index: usize) -> (u64, u64) {
        let context = self.context[index].load(Ordering::Acquire);
        (self.entry[index].load(Ordering::Relaxed), context)
    }
}

/// What to do with one host SMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSmc {
    /// Pass x0..x3 to firmware unchanged.
    Forward,
    /// Call firmware with this function id and these arguments instead.
    Rewrite([u64; 4]),
    /// Answer the host with this x0 without calling firmware.
    Reply(i64),
    /// Answer the host with these x0..x3 without calling firmware.
    ReplyWords([u64; 4]),
}

/// Decide how to handle the host SMC with registers `x` issued on CPU `this_cpu`.
/// `kcore_entry` is the physical address where firmware must start CPUs.
pub fn host_smc(cpus: &CpuTable, entries: &HostEntries, kcore_entry: u64, this_cpu: usize, x: [u64; 4]) -> HostSmc {
    let id = x[0] as u32;
    match id {
        CPU_ON_32 | CPU_ON_64 => {
            let (target, entry, context) = args(id, x);
            let Some(index) = cpus.index_of(target) else { return HostSmc::Reply(INVALID_PARAMETERS) };
            entries.set(index, entry, context);
            HostSmc::Rewrite([x[0], target, kcore_entry, index as u64])
        }
        CPU_SUSPEND_32 | CPU_SUSPEND_64 if x[1] & POWER_STATE_POWERDOWN != 0 => {
            let (_, entry, context) = args(id, x);
            entries.set(this_cpu, entry, context);
            HostSmc::Rewrite([x[0], x[1], kcore_entry, this_cpu as u64])
        }
        SYSTEM_SUSPEND_32 | SYSTEM_SUSPEND_64 => {
            let (entry, context, _) = args(id, x);
            entries.set(this_cpu, entry, context);
            HostSmc::Rewrite([x[0], kcore_entry, this_cpu as u64, 0])
        }
        // The vendor-specific hypervisor service's UID is the hypervisor's to answer, on
        // either conduit. Over SMC it lets host software find KCore safely: where no
        // hypervisor is, firmware answers NOT_SUPPORTED, while an HVC would be undefined.
        crate::abi::VENDOR_HYP_CALL_UID => HostSmc::ReplyWords(crate::abi::KCORE_UID.map(u64::from)),
        _ => HostSmc::Forward,
    }
}

/// x1..x3, truncated to 32 bits for SMC32 calls (SMCCC: the upper halves are ignored).
fn args(id: u32, x: [u64; 4]) -> (u64, u64, u64) {
    let mask = if id & (1 << 30) != 0 { u64::MAX } else { u32::MAX as u64 };
    (x[1] & mask, x[2] & mask, x[3] & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_on_is_rewritten_to_enter_kcore() {
        let cpus = CpuTable::new([0x8000_0000, 0x8000_0001]);
        let e = HostEntries::new();
        let r = host_smc(&cpus, &e, 0x4020_0040, 0, [CPU_ON_64 as u64, 1, 0x4123_0000, 0x77]);
        assert_eq!(r, HostSmc::Rewrite([CPU_ON_64 as u64, 1, 0x4020_0040, 1]));
        assert_eq!(e.get(1), (0x4123_0000, 0x77));
    }

    #[test]
    fn the_vendor_hypervisor_uid_is_kcores_over_smc_too() {
        let cpus = CpuTable::new([0, 1]);
        let e = HostEntries::new();
        let r = host_smc(&cpus, &e, 0, 0, [crate::abi::VENDOR_HYP_CALL_UID as u64, 0, 0, 0]);
        assert_eq!(r, HostSmc::ReplyWords(crate::abi::KCORE_UID.map(u64::from)));
        // Other vendor-hypervisor calls still go to firmware (nothing of KCore's over SMC).
        assert_eq!(host_smc(&cpus, &e, 0, 0, [0xC600_0000, 0, 0, 0]), HostSmc::Forward);
    }

    #[test]
    fn cpu_on_of_unknown_cpu_is_refused_without_firmware() {
        let cpus = CpuTable::new([0, 1]);
        let e = HostEntries::new();
        let r = host_smc(&cpus, &e, 0x4020_0040, 0, [CPU_ON_64 as u64, 0x100, 0x4123_0000, 0]);
        assert_eq!(r, HostSmc::Reply(INVALID_PARAMETERS));
        assert_eq!(e.get(0), (0, 0));
    }

    #[test]
    fn power_down_suspend_is_rewritten_standby_is_not() {
        let cpus = CpuTable::new([0, 1]);
        let e = HostEntries::new();
        let r = host_smc(&cpus, &e, 0x4020_0040, 1, [CPU_SUSPEND_64 as u64, 1 << 16, 0x4100_0000, 5]);
        assert_eq!(r, HostSmc::Rewrite([CPU_SUSPEND_64 as u64, 1 << 16, 0x4020_0040, 1]));
        assert_eq!(e.get(1), (0x4100_0000, 5));
        assert_eq!(host_smc(&cpus, &e, 0, 1, [CPU_SUSPEND_64 as u64, 0, 1, 2]), HostSmc::Forward);
        assert_eq!(host_smc(&cpus, &e, 0, 0, [CPU_OFF as u64, 0, 0, 0]), HostSmc::Forward);
        assert_eq!(host_smc(&cpus, &e, 0, 0, [PSCI_VERSION as u64, 0, 0, 0]), HostSmc::Forward);
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let cpus = CpuTable::new([0, 1]);
        let e = HostEntries::new();
        let r =
            host_smc(&cpus, &e, 0x4020_0040, 0, [CPU_ON_32 as u64, 0xdead_0000_0000_0001, 0xffff_0000_4100_0000, 0]);
        assert_eq!(r, HostSmc::Rewrite([CPU_ON_32 as u64, 1, 0x4020_0040, 1]));
        assert_eq!(e.get(1).0, 0x4100_0000);
    }
}
