//! Specification of layers 27-28 (VCPUOpsAux, VCPUOps): one VM's vCPUs as small state machines
//! (off / ready / active; first run; a pending MMIO read or page fault) with their registers,
//! and what each guest trap does: which registers change, and what leaves for the host.

use crate::abi;
use crate::error::{Error, Result};
use crate::psci;
use crate::vcpu::vcpuops::{Exit, ExitAction, GUEST_MMIO_LIMIT};
use crate::vm::mmioguard::MMIO_GUARD_RANGES;
use std::collections::BTreeSet;

/// The value a load of `8 << size_log2` bits puts in a register: the low bits of `value`,
/// sign- or zero-extended (written independently of the code it checks).
fn loaded(value: u64, size_log2: u64, sign: bool) -> u64 {
    match (size_log2, sign) {
        (0, false) => value as u8 as u64,
        (0, true) => value as u8 as i8 as i64 as u64,
        (1, false) => value as u16 as u64,
        (1, true) => value as u16 as i16 as i64 as u64,
        (2, false) => value as u32 as u64,
        (2, true) => value as u32 as i32 as i64 as u64,
        _ => value,
    }
}

/// A vCPU's run state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Waits for the guest's CPU_ON.
    Off,
    /// May run; `first` = it has never run.
    Ready { first: bool },
    /// Running.
    Active,
}

/// What the vCPU owes the host or the host owes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Nothing.
    None,
    /// An MMIO read into `rt` of `size_log2`, sign-extended or not.
    Read { rt: u64, size_log2: u64, sign: bool },
    /// A page fault at `ipa` for the host to back.
    Fault { ipa: u64 },
}

/// One vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsVcpu {
    /// Run state.
    pub run: Run,
    /// x0..x30.
    pub x: [u64; 31],
    /// PC.
    pub pc: u64,
    /// Pending exchange with the host.
    pub pending: Pending,
}

/// A guest trap, as the generator produces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestTrap {
    /// HVC with x0..x3 as given.
    Hvc([u64; 4]),
    /// A store of register `rt` (`size_log2`) to device address `ipa`.
    MmioWrite { ipa: u64, rt: u64, size_log2: u64 },
    /// A load into `rt` from device address `ipa`.
    MmioRead { ipa: u64, rt: u64, size_log2: u64, sign: bool },
    /// A translation fault on RAM at `ipa`.
    RamFault { ipa: u64 },
    /// WFI.
    Wfi,
    /// A trapped MSR/MRS or system instruction: (op0, op1, CRn, CRm, op2), its register
    /// `rt`, and whether it reads.
    Sysreg { reg: (u64, u64, u64, u64, u64), rt: u64, read: bool },
}

/// The VM's vCPUs and what the specification needs of the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsVcpus {
    /// vCPUs by index.
    pub vcpus: Vec<AbsVcpu>,
    /// The first image's load address (vCPU 0's entry).
    pub entry: u64,
    /// What a protected VM's vCPU 0 finds in x0 at its first run (VERIFY_VM x2).
    pub boot_arg: u64,
    /// Where verified images lie, `[start, end)`.
    pub images: Vec<(u64, u64)>,
    /// The VM powered off.
    pub off: bool,
    /// What the guest reads from the ID registers (op0 3, op1 0, CRn 0, CRm 1..=7, op2,
    /// at `(CRm - 1) * 8 + op2`): layer 27's sanitised table for this CPU.
    pub ids: [u64; 56],
    /// MDSCR_EL1 as the CPU holds it while the running guest has it.
    pub mdscr: u64,
    /// A protected VM (else non-protected: registers visible to the host, no images).
    pub protected: bool,
    /// The RAM regions the host declared (none: RAM from 1 GiB up).
    pub ram: Vec<(u64, u64)>,
    /// The VM's IPA space ends here.
    pub ipa_limit: u64,
    /// The pages (their IPAs) a protected VM enrolled as MMIO with MMIO_GUARD.
    pub guard: BTreeSet<u64>,
    /// It uses the MMIO guard (it enrolled a page): MMIO it did not enrol is refused.
    pub guard_used: bool,
}

/// How many separate runs of consecutive pages `pages` makes: the enrolment table's ranges.
pub fn page_runs(pages: &BTreeSet<u64>) -> usize {
    let mut prev: Option<u64> = None;
    let mut runs = 0;
    for &p in pages {
        if prev.is_none_or(|q| q + 4096 != p) {
            runs += 1;
        }
        prev = Some(p);
    }
    runs
}

impl AbsVcpus {
    /// Is `ipa` guest RAM (a fault there is the host's to back), or MMIO?
    pub fn is_ram(&self, ipa: u64) -> bool {
        if self.ram.is_empty() {
            return ipa >= GUEST_MMIO_LIMIT;
        }
        self.ram.iter().any(|&(b, s)| ipa >= b && ipa - b < s)
    }

    /// Is a guest access at `ipa` outside its RAM refused (an external abort, the host never
    /// hears of it)? Once the guest uses the MMIO guard, everything it did not enrol.
    pub fn mmio_refused(&self, ipa: u64) -> bool {
        self.guard_used && !self.guard.contains(&(ipa & !0xfff))
    }

    /// MMIO_GUARD of the page at `ipa` (x2, x3 = `rest`): 0, INVALID_PARAMETER (-3) for
    /// anything but an aligned page of the VM's IPA space outside its RAM (or non-zero
    /// `rest`), NO_MEMORY (-5) if it would make one range too many; NOT_SUPPORTED for a
    /// non-protected VM.
    fn mmio_guard(&mut self, ipa: u64, rest: [u64; 2]) -> i64 {
        if !self.protected {
            return abi::NOT_SUPPORTED;
        }
        if rest != [0, 0] || !ipa.is_multiple_of(4096) || ipa >= self.ipa_limit || self.is_ram(ipa) {
            return abi::INVALID_PARAMETER;
        }
        let mut with = self.guard.clone();
        with.insert(ipa);
        if page_runs(&with) > MMIO_GUARD_RANGES {
            return abi::NO_MEMORY;
        }
        self.guard = with;
        self.guard_used = true;
        abi::SUCCESS
    }

    /// The context word a GET/SET_VCPU_REG register number names (`docs/ABI.md`): x0..x30,
    /// SP_EL0, PC, PSTATE, the 25 EL1 registers (0..=58), q0..q31, FPSR, FPCR (64..=129).
    fn reg_known(reg: u64) -> bool {
        reg <= 58 || (64..=129).contains(&reg)
    }

    /// GET_VCPU_REG of a register this model holds (x0..x30: 0..=30, PC: 32); `None` for
    /// one it does not (the check compares only the result's Ok/Err then). A vCPU that never
    /// ran is reset first.
    pub fn get_reg(&self, vcpu: u64, reg: u64) -> (Result<Option<u64>>, AbsVcpus) {
        let mut s = self.clone();
        if let Err(e) = s.reg_access(vcpu, reg, None) {
            return (Err(e), self.clone());
        }
        let v = &mut s.vcpus[vcpu as usize];
        if v.run == (Run::Ready { first: true }) {
            *v = AbsVcpu { run: Run::Ready { first: false }, x: [0; 31], pc: 0, pending: Pending::None };
        }
        let r = match reg {
            0..=30 => Some(v.x[reg as usize]),
            32 => Some(v.pc),
            _ => None,
        };
        (Ok(r), s)
    }

    /// SET_VCPU_REG: the state after (a vCPU that never ran is reset first).
    pub fn set_reg(&self, vcpu: u64, reg: u64, value: u64) -> (Result<()>, AbsVcpus) {
        let mut s = self.clone();
        if let Err(e) = s.reg_access(vcpu, reg, Some(value)) {
            return (Err(e), self.clone());
        }
        let v = &mut s.vcpus[vcpu as usize];
        if v.run == (Run::Ready { first: true }) {
            *v = AbsVcpu { run: Run::Ready { first: false }, x: [0; 31], pc: 0, pending: Pending::None };
        }
        match reg {
            0..=30 => v.x[reg as usize] = value,
            32 => v.pc = value,
            _ => {}
        }
        (Ok(()), s)
    }

    /// May the host read or (with `value`) write register `reg` of `vcpu`? Only of a
    /// non-protected VM, a registered vCPU that is not running, a register of the ABI's
    /// numbering; PSTATE only AArch64 EL0t/EL1t/EL1h with architected flags.
    fn reg_access(&self, vcpu: u64, reg: u64, value: Option<u64>) -> Result<()> {
        if self.protected {
            return Err(Error::Denied);
        }
        if !Self::reg_known(reg) {
            return Err(Error::InvalidParameter);
        }
        if let (33, Some(p)) = (reg, value) {
            let flags = (0xf << 28)
                | (1 << 24)
                | (1 << 23)
                | (1 << 22)
                | (1 << 21)
                | (1 << 13)
                | (1 << 12)
                | (0b11 << 10)
                | (0xf << 6);
            if p & !(flags | 0x1f) != 0 || ![0b0000, 0b0100, 0b0101].contains(&(p & 0x1f)) {
                return Err(Error::InvalidParameter);
            }
        }
        if vcpu >= crate::vm::MAX_VCPUS as u64 {
            return Err(Error::InvalidParameter);
        }
        match self.vcpus.get(vcpu as usize) {
            None => Err(Error::NotFound),
            Some(v) if v.run == Run::Active => Err(Error::BadState),
            Some(_) => Ok(()),
        }
    }

    /// VCPU_RUN's preparation: the result and the state after.
    pub fn run(&self, vcpu: usize, value: u64) -> (Result<()>, AbsVcpus) {
        let mut s = self.clone();
        let r = s.apply_run(vcpu, value);
        (r, if r.is_ok() { s } else { self.clone() })
    }

    fn apply_run(&mut self, vcpu: usize, value: u64) -> Result<()> {
        if vcpu >= crate::vm::MAX_VCPUS {
            return Err(Error::InvalidParameter);
        }
        if self.off {
            return Err(Error::BadState);
        }
        // A protected VM starts in its verified image; a non-protected one where the host set
        // it (0 if it set nothing).
        let (entry, arg) = if self.protected { (self.entry, self.boot_arg) } else { (0, 0) };
        let v = self.vcpus.get_mut(vcpu).ok_or(Error::NotFound)?;
        match v.run {
            Run::Off | Run::Active => return Err(Error::BadState),
            Run::Ready { first: true } => {
                v.x = [0; 31];
                v.x[0] = arg;
                v.pc = entry;
            }
            Run::Ready { first: false } => {
                if let Pending::Read { rt, size_log2, sign } = v.pending {
                    if rt < 31 {
                        v.x[rt as usize] = loaded(value, size_log2, sign);
                    }
                    v.pc += 4;
                }
            }
        }
        v.pending = Pending::None;
        v.run = Run::Active;
        Ok(())
    }

    /// A trap of the active vCPU `vcpu`: the action and the state after (the vCPU stays
    /// active; the caller ends the run).
    pub fn trap(&self, vcpu: usize, t: GuestTrap) -> (ExitAction, AbsVcpus) {
        let mut s = self.clone();
        let a = s.apply_trap(vcpu, t);
        (a, s)
    }

    fn apply_trap(&mut self, vcpu: usize, t: GuestTrap) -> ExitAction {
        match t {
            GuestTrap::Hvc(x) => self.hvc(vcpu, x),
            GuestTrap::Wfi => {
                self.vcpus[vcpu].pc += 4;
                // The models run the guest with its timer off (CNTV_CTL_EL0 = 0): no deadline.
                ExitAction::ToHost(Exit::Wfi { wfe: false, deadline: u64::MAX })
            }
            GuestTrap::Sysreg { reg, rt, read } => self.sysreg(vcpu, reg, rt, read),
            GuestTrap::RamFault { ipa } if self.is_ram(ipa) => {
                self.vcpus[vcpu].pending = Pending::Fault { ipa: ipa & !0xfff };
                ExitAction::ToHost(Exit::PageFault { ipa: ipa & !0xfff })
            }
            GuestTrap::RamFault { .. } => ExitAction::InjectAbort,
            GuestTrap::MmioWrite { ipa, .. } | GuestTrap::MmioRead { ipa, .. }
                if !self.is_ram(ipa) && self.mmio_refused(ipa) =>
            {
                ExitAction::InjectAbort
            }
            GuestTrap::MmioWrite { ipa, rt, size_log2 } if !self.is_ram(ipa) => {
                let v = &mut self.vcpus[vcpu];
                let reg = if rt < 31 { v.x[rt as usize] } else { 0 };
                v.pc += 4;
                ExitAction::ToHost(Exit::Mmio { ipa, write: true, size_log2, value: loaded(reg, size_log2, false) })
            }
            GuestTrap::MmioRead { ipa, rt, size_log2, sign } if !self.is_ram(ipa) => {
                self.vcpus[vcpu].pending = Pending::Read { rt, size_log2, sign };
                ExitAction::ToHost(Exit::Mmio { ipa, write: false, size_log2, value: 0 })
            }
            GuestTrap::MmioWrite { ipa, .. } | GuestTrap::MmioRead { ipa, .. } => {
                self.vcpus[vcpu].pending = Pending::Fault { ipa: ipa & !0xfff };
                ExitAction::ToHost(Exit::PageFault { ipa: ipa & !0xfff })
            }
        }
    }

    /// A trapped system-register access, as `docs/ABI.md`'s feature table says: ID registers
    /// answered from the sanitised table (read-only), debug registers emulated (read as zero,
    /// writes ignored; OSLSR_EL1 reads 0b1000; MDSCR_EL1 is the CPU's, never with MDE (bit
    /// 15) or KDE (bit 13)), SGI register writes and EL1 physical timer accesses to the host,
    /// set/way cache maintenance ignored, everything else an Undefined Instruction.
    fn sysreg(&mut self, vcpu: usize, reg: (u64, u64, u64, u64, u64), rt: u64, read: bool) -> ExitAction {
        let (op0, op1, crn, crm, op2) = reg;
        let v = &mut self.vcpus[vcpu];
        let value = if rt < 31 { v.x[rt as usize] } else { 0 };
        let give = |v: &mut AbsVcpu, x: u64| {
            if rt < 31 {
                v.x[rt as usize] = x;
            }
            v.pc += 4;
            ExitAction::Resume
        };
        match (op0, op1, crn, crm, op2, read) {
            (3, 0, 0, 1..=7, _, true) => give(v, self.ids[((crm - 1) * 8 + op2) as usize]),
            (3, 0, 0, 1..=7, _, false) => ExitAction::InjectUndef,
            (2, 0, 0, 2, 2, true) => give(v, self.mdscr),
            (2, 0, 0, 2, 2, false) => {
                self.mdscr = value & !((1 << 15) | (1 << 13));
                v.pc += 4;
                ExitAction::Resume
            }
            (2, 0, 1, 1, 4, true) => give(v, 0b1000),
            (2, 0, 1, 1, 4, false) => ExitAction::InjectUndef,
            (2, 0 | 3, ..) if read => give(v, 0),
            (2, 0 | 3, ..) => {
                v.pc += 4;
                ExitAction::Resume
            }
            (3, 0, 12, 11, 5..=7, false) => {
                v.pc += 4;
                let which = [1, 2, 0][(op2 - 5) as usize];
                ExitAction::ToHost(Exit::Sgi { reg: which, value })
            }
            (1, 0, 7, 6 | 10 | 14, 2, false) => {
                v.pc += 4;
                ExitAction::Resume
            }
            (3, 3, 14, 2, 0..=2, _) => {
                let iss = (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (crm << 1);
                if read {
                    v.pending = Pending::Read { rt, size_log2: 3, sign: false };
                    ExitAction::ToHost(Exit::SysReg { iss, write: false, value: 0 })
                } else {
                    v.pc += 4;
                    ExitAction::ToHost(Exit::SysReg { iss, write: true, value })
                }
            }
            _ => ExitAction::InjectUndef,
        }
    }

    fn hvc(&mut self, vcpu: usize, x: [u64; 4]) -> ExitAction {
        let id = x[0] as u32;
        let ret = |s: &mut AbsVcpus, v: i64| {
            s.vcpus[vcpu].x[0] = v as u64;
            ExitAction::Resume
        };
        match id {
            psci::PSCI_VERSION | abi::SMCCC_VERSION => ret(self, 0x1_0001),
            psci::CPU_ON_32 | psci::CPU_ON_64 => {
                let (target, entry, ctx) = (x[1] & psci::MPIDR_AFF_MASK, x[2], x[3]);
                let code = if target as usize >= self.vcpus.len() {
                    psci::INVALID_PARAMETERS
                } else if self.protected && !self.images.iter().any(|&(s, e)| entry >= s && entry < e) {
                    psci::INVALID_ADDRESS
                } else if self.vcpus[target as usize].run != Run::Off {
                    psci::ALREADY_ON
                } else {
                    let t = &mut self.vcpus[target as usize];
                    t.x = [0; 31];
                    t.x[0] = ctx;
                    t.pc = entry;
                    t.pending = Pending::None;
                    t.run = Run::Ready { first: false };
                    0
                };
                self.vcpus[vcpu].x[0] = code as u64;
                if code == 0 { ExitAction::ToHost(Exit::VcpuStarted { vcpu: target }) } else { ExitAction::Resume }
            }
            psci::CPU_OFF => {
                self.vcpus[vcpu].run = Run::Off;
                ExitAction::ToHost(Exit::VcpuOff)
            }
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
                let t = x[1] & psci::MPIDR_AFF_MASK;
                let v = match self.vcpus.get(t as usize) {
                    None => psci::INVALID_PARAMETERS,
                    Some(c) => (c.run == Run::Off) as i64,
                };
                ret(self, v)
            }
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                self.off = true;
                ExitAction::ToHost(Exit::Shutdown)
            }
            // Discovery: PSCI_FEATURES knows the PSCI calls answered here and SMCCC_VERSION;
            // MIGRATE_INFO_TYPE says no Trusted OS needs migrating (2); SMCCC_ARCH_FEATURES
            // knows only itself.
            psci::PSCI_FEATURES => {
                let known = [0x8400_0000u64, 0x8400_000A, 0x8400_0008, 0x8400_0009, 0xC400_0003, 0x8400_0002];
                let more = [0xC400_0004u64, 0x8400_0006, 0x8000_0000];
                ret(self, if known.contains(&x[1]) || more.contains(&x[1]) { 0 } else { -1 })
            }
            psci::MIGRATE_INFO_TYPE => ret(self, 2),
            // pKVM's services: its memory-protection calls (2, 3, 4) and the MMIO guard (7)
            // for protected VMs only.
            0x8600_0000 => {
                let v = &mut self.vcpus[vcpu];
                v.x[0] = if self.protected { 0b1001_1101 } else { 1 };
                v.x[1..4].fill(0);
                ExitAction::Resume
            }
            0xC600_0002 if !self.protected => ret(self, abi::NOT_SUPPORTED),
            0xC600_0002 => ret(self, if x[1..4] == [0, 0, 0] { 4096 } else { abi::INVALID_PARAMETER }),
            abi::SMCCC_ARCH_FEATURES => ret(self, if x[1] == 0x8000_0001 { 0 } else { -1 }),
            0xC600_0007 => {
                let r = self.mmio_guard(x[1], [x[2], x[3]]);
                ret(self, r)
            }
            _ => ret(self, abi::NOT_SUPPORTED),
        }
    }

    /// The run ends (the host gets control back).
    pub fn finish(&mut self, vcpu: usize) {
        if self.vcpus[vcpu].run == Run::Active {
            self.vcpus[vcpu].run = Run::Ready { first: false };
        }
    }
}
