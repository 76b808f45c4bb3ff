//! Layer 27 (VCPUOpsAux): vCPU context primitives: reading and writing the context page, the
//! first-run reset, and decoding what an exit needs.

use super::{SYSREG_SCTLR, flags, slot};
use crate::arch::{self, ec, spsr};
use crate::machine::Machine;

/// A vCPU context page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuPage {
    /// Physical address of the page (KCore-owned).
    pub pa: u64,
}

impl VcpuPage {
    /// Read word `i`.
    pub fn get<M: Machine>(&self, m: &M, i: u64) -> u64 {
        debug_assert!(i < slot::WORDS);
        m.load(self.pa + 8 * i)
    }
    /// Write word `i`.
    pub fn set<M: Machine>(&self, m: &M, i: u64, v: u64) {
        debug_assert!(i < slot::WORDS);
        m.store(self.pa + 8 * i, v)
    }
    /// General-purpose register `n` (0..=30; 31 reads as zero, XZR).
    pub fn x<M: Machine>(&self, m: &M, n: u64) -> u64 {
        if n < 31 { self.get(m, slot::X0 + n) } else { 0 }
    }
    /// Write general-purpose register `n` (writes to 31, XZR, are dropped).
    pub fn set_x<M: Machine>(&self, m: &M, n: u64, v: u64) {
        if n < 31 {
            self.set(m, slot::X0 + n, v)
        }
    }

    /// `reset_gp_regs` + `reset_sys_regs`: the state a vCPU starts in: at `entry` (which the
    /// caller checked lies in a verified image) in EL1h with interrupts masked, x0 = `arg`,
    /// everything else zero, MMU off. Virtual interrupts already queued for it (list
    /// registers) are kept: the host may inject before the vCPU first runs.
    pub fn reset<M: Machine>(&self, m: &M, entry: u64, arg: u64) {
        for i in 0..slot::LRS {
            self.set(m, i, 0);
        }
        self.set(m, slot::X0, arg);
        self.set(m, slot::PC, entry);
        self.set(m, slot::PSTATE, spsr::EL1H_MASKED);
        // SCTLR_EL1: MMU and caches off, little-endian, RES1 bits (as a kernel expects).
        self.set(m, slot::SYSREGS + SYSREG_SCTLR, 0x30d0_0800);
    }

    /// Advance the guest's PC past the trapped (32-bit) instruction.
    pub fn skip_instruction<M: Machine>(&self, m: &M) {
        self.set(m, slot::PC, self.get(m, slot::PC).wrapping_add(4));
    }
}

/// A guest's general-purpose registers and PC as a trap sees them: the EL2 trap frame while
/// KCore handles the trap in place, or the context page.
pub trait GuestRegs {
    /// Register `n` (31 reads as zero, XZR).
    fn x(&self, n: u64) -> u64;
    /// Write register `n` (writes to 31 are dropped).
    fn set_x(&mut self, n: u64, v: u64);
    /// The PC.
    fn pc(&self) -> u64;
    /// Set the PC.
    fn set_pc(&mut self, v: u64);
    /// Step over the trapped 32-bit instruction.
    fn skip(&mut self) {
        let pc = self.pc();
        self.set_pc(pc.wrapping_add(4));
    }
}

/// A context page seen through [`GuestRegs`].
pub struct PageRegs<'a, M: Machine> {
    /// The page.
    pub page: VcpuPage,
    /// The machine it lives in.
    pub m: &'a M,
}

impl<M: Machine> GuestRegs for PageRegs<'_, M> {
    fn x(&self, n: u64) -> u64 {
        self.page.x(self.m, n)
    }
    fn set_x(&mut self, n: u64, v: u64) {
        self.page.set_x(self.m, n, v)
    }
    fn pc(&self) -> u64 {
        self.page.get(self.m, slot::PC)
    }
    fn set_pc(&mut self, v: u64) {
        self.page.set(self.m, slot::PC, v)
    }
}

/// What a guest data abort on a non-RAM address asks for, decoded from KCore's own saved
/// ESR (never from anything the host supplies; SeKVM's artifact read it from KServ's copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// Write (vs read).
    pub write: bool,
    /// Access size log2 (0..=3).
    pub size_log2: u64,
    /// Register transferred (31 = XZR).
    pub rt: u64,
    /// Sign-extend a read.
    pub sign_extend: bool,
}

/// Decode an MMIO data abort; `None` if the syndrome carries no instruction information
/// (ISV = 0: KCore cannot emulate it) or it is not a data abort.
pub fn decode_mmio(esr: u64) -> Option<MmioAccess> {
    if arch::esr_ec(esr) != ec::DABT_LOW || esr & (1 << 24) == 0 {
        return None;
    }
    Some(MmioAccess {
        write: arch::abort_is_write(esr),
        size_log2: (esr >> 22) & 3,
        rt: (esr >> 16) & 0x1f,
        sign_extend: esr & (1 << 21) != 0,
    })
}

/// The value a pending MMIO read gives register Rt: `value` truncated to the access size and
/// sign- or zero-extended.
pub fn mmio_read_value(value: u64, size_log2: u64, sign_extend: bool) -> u64 {
    let bits = 8u32 << size_log2;
    if bits == 64 {
        return value;
    }
    let v = value & ((1u64 << bits) - 1);
    if sign_extend && v >> (bits - 1) & 1 == 1 { v | !((1u64 << bits) - 1) } else { v }
}

/// Encode a pending MMIO read into the flags word.
pub fn pending_read_flags(a: &MmioAccess) -> u64 {
    flags::MMIO_READ_PENDING
        | (a.rt << flags::MMIO_RT_SHIFT)
        | (a.size_log2 << flags::MMIO_SIZE_SHIFT)
        | if a.sign_extend { flags::MMIO_SIGN } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::sim::SimMachine;

    #[test]
    fn reset_starts_at_the_entry_in_el1h_masked() {
        let m = SimMachine::new(0x4000_0000, 4096);
        m.fill_page(0x4000_0000, 0xff);
        let p = VcpuPage { pa: 0x4000_0000 };
        p.reset(&m, 0x8000_0000, 7);
        assert_eq!(p.get(&m, slot::PC), 0x8000_0000);
        assert_eq!(p.get(&m, slot::PSTATE), 0x3c5);
        assert_eq!(p.x(&m, 0), 7);
        assert_eq!(p.x(&m, 5), 0);
        assert_eq!(p.x(&m, 31), 0, "xzr");
        p.skip_instruction(&m);
        assert_eq!(p.get(&m, slot::PC), 0x8000_0004);
    }

    #[test]
    fn mmio_syndromes_decode() {
        // str w1, [x0] to device memory: EC 0x24, ISV, SAS=2 (word), SRT=1, WnR.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (1 << 16) | (1 << 6) | 0x07;
        assert_eq!(decode_mmio(esr), Some(MmioAccess { write: true, size_log2: 2, rt: 1, sign_extend: false }));
        // ldrsb x3, [x0]: SAS=0, SSE, SRT=3.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (3 << 16) | 0x07;
        let a = decode_mmio(esr).unwrap();
        assert_eq!((a.write, a.size_log2, a.rt, a.sign_extend), (false, 0, 3, true));
        assert_eq!(mmio_read_value(0x1ff, 0, true), u64::MAX);
        assert_eq!(mmio_read_value(0x17f, 0, true), 0x7f);
        assert_eq!(mmio_read_value(0xdead_beef_1234, 1, false), 0x1234);
        assert_eq!(mmio_read_value(u64::MAX, 3, false), u64::MAX);
        // ISV clear: not emulable.
        assert_eq!(decode_mmio((0x24 << 26) | 0x07), None);
        assert_eq!(decode_mmio((0x20 << 26) | (1 << 24)), None);
        let f = pending_read_flags(&a);
        assert_eq!((f >> flags::MMIO_RT_SHIFT) & 0x1f, 3);
    }
}
