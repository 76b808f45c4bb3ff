//! Layer 33 (TrapHandlerRaw): the registers around a trap. `boot/`'s vectors save the
//! interrupted context's general registers, ELR_EL2 and SPSR_EL2 in a [`TrapFrame`] and
//! restore them from it on `ERET`; this layer says which vector was taken ([`Vector`]), reads
//! the exception's syndrome, and delivers exceptions to EL1 (the host's or the running
//! guest's) by writing its exception registers and redirecting the frame.

use crate::arch;
use crate::kcore::KCore;
use crate::machine::{Machine, SysReg};
use crate::vcpu::vcpuopsaux::GuestRegs;

/// The registers `boot/src/entry.S` saves on every exception; layout shared with the
/// assembly (offsets asserted below).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TrapFrame {
    /// x0..x30 of the interrupted context.
    pub x: [u64; 31],
    /// ELR_EL2: where the context resumes.
    pub elr: u64,
    /// SPSR_EL2: its PSTATE.
    pub spsr: u64,
    /// Keeps the frame a multiple of 16 bytes (the stack's alignment).
    pub pad: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 272);
const _: () = assert!(core::mem::offset_of!(TrapFrame, elr) == 248);
const _: () = assert!(core::mem::offset_of!(TrapFrame, spsr) == 256);

/// A guest's registers while KCore handles its trap are the trap frame: most guest traps are
/// answered in place, without copying them anywhere.
impl GuestRegs for TrapFrame {
    fn x(&self, n: u64) -> u64 {
        if n < 31 { self.x[n as usize] } else { 0 }
    }
    fn set_x(&mut self, n: u64, v: u64) {
        if n < 31 {
            self.x[n as usize] = v;
        }
    }
    fn pc(&self) -> u64 {
        self.elr
    }
    fn set_pc(&mut self, v: u64) {
        self.elr = v;
    }
}

/// The vector entry an exception came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vector {
    /// From EL2 itself (slots 0-7): an exception in KCore, which never happens by design.
    Own,
    /// Synchronous, from EL1/EL0 (AArch64 slot 8 or AArch32 slot 12).
    LowerSync,
    /// IRQ from a lower EL.
    LowerIrq,
    /// FIQ from a lower EL.
    LowerFiq,
    /// SError from a lower EL.
    LowerSError,
}

/// Decode a vector slot number, 0..16 in table order. Arm ARM D1.3.1: four groups of four
/// entries (current EL with SP_EL0, current EL with SP_ELx, lower EL in AArch64, lower EL in
/// AArch32), each in the order synchronous, IRQ, FIQ, SError.
pub const fn vector(slot: u64) -> Vector {
    if slot < 8 || slot > 15 {
        return Vector::Own;
    }
    match slot % 4 {
        0 => Vector::LowerSync,
        1 => Vector::LowerIrq,
        2 => Vector::LowerFiq,
        _ => Vector::LowerSError,
    }
}

/// The syndrome of the exception being handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2 (aborts only; 0 otherwise).
    pub far: u64,
    /// HPFAR_EL2 (aborts only; 0 otherwise).
    pub hpfar: u64,
}

impl<M: Machine> KCore<M> {
    /// Read the syndrome of the synchronous exception being handled. FAR_EL2 and HPFAR_EL2
    /// are read only for aborts (they are UNKNOWN otherwise, and this is the hypercall path).
    pub fn syndrome(&self) -> Syndrome {
        let esr = self.m.read_sysreg(SysReg::EsrEl2);
        if matches!(arch::esr_ec(esr), arch::ec::DABT_LOW | arch::ec::IABT_LOW) {
            Syndrome { esr, far: self.m.read_sysreg(SysReg::FarEl2), hpfar: self.m.read_sysreg(SysReg::HpfarEl2) }
        } else {
            Syndrome { esr, far: 0, hpfar: 0 }
        }
    }

    /// Deliver a synchronous exception with syndrome `esr_el1` (and fault address `far`, for
    /// aborts) to the EL1 whose state is loaded: the host's, or the running guest's. As the
    /// hardware would (Arm ARM D1.10.2): ESR_EL1, FAR_EL1, ELR_EL1 = the faulting PC,
    /// SPSR_EL1 = its PSTATE, and the context resumes at VBAR_EL1's synchronous vector for
    /// the mode it was in, in EL1h with interrupts masked.
    pub fn inject_sync(&self, frame: &mut TrapFrame, esr_el1: u64, far: Option<u64>) {
        let m = &self.m;
        let vbar = m.read_sysreg(SysReg::VbarEl1);
        let sctlr = m.read_sysreg(SysReg::SctlrEl1);
        // HCR_EL2.RW = 1 for the host and every guest: EL1 is AArch64, so a trap comes from
        // an AArch64 EL1/EL0 or an AArch32 EL0, all of which have a vector.
        let inj = arch::inject_sync_el1(frame.elr, frame.spsr, esr_el1, vbar, sctlr)
            .expect("a trap from a lower EL came from a mode with an EL1 vector");
        m.write_sysreg(SysReg::EsrEl1, inj.esr_el1);
        if let Some(far) = far {
            m.write_sysreg(SysReg::FarEl1, far);
        }
        m.write_sysreg(SysReg::ElrEl1, inj.elr_el1);
        m.write_sysreg(SysReg::SpsrEl1, inj.spsr_el1);
        frame.elr = inj.vector;
        frame.spsr = inj.pstate;
    }
}
