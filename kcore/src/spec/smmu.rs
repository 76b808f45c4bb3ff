//! Specification of layers 22-25 (the host's SMMU, trapped and emulated): what the host may
//! see of the SMMU's registers, the register file as the host's driver programs it, what each
//! host STE becomes, and what each host command becomes. Written from the register and
//! command tables of reference/smmuv3.md 2.2 and the SMMUv3 architecture (IHI 0070), as
//! plain functions over abstract values, independently of the code's encoders.

use crate::smmu::raw::{Cmd, Ste, reg};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Layer 23: the register policy
// ---------------------------------------------------------------------------------------------

/// What the host reaches at one offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Refused: not an access a driver makes.
    Deny,
    /// Reads as zero, writes ignored.
    Nothing,
    /// The real register, with bits hidden (`hidden`) or forced (`forced`), read only.
    RealRo { off: u64, hidden: u32, forced: u32 },
    /// The real register, the host's bits (`host_bits`) read and written.
    Real { off: u64, host_bits: u32 },
    /// An emulated register; `(register offset, half)`: half 0 for the whole register, 1 for
    /// bits \[31:0\] of a 64-bit register, 2 for bits \[63:32\].
    Emulated(u64, u8),
}

/// Registers the host reaches, with their widths in bytes.
const HOST_REGS: &[(u64, u64)] = &[
    (reg::IDR0, 4),
    (reg::IDR1, 4),
    (reg::IDR2, 4),
    (reg::IDR3, 4),
    (reg::IDR4, 4),
    (reg::IDR5, 4),
    (reg::IIDR, 4),
    (reg::AIDR, 4),
    (reg::CR0, 4),
    (reg::CR0ACK, 4),
    (reg::CR1, 4),
    (reg::CR2, 4),
    (reg::STATUSR, 4),
    (reg::GBPA, 4),
    (reg::IRQ_CTRL, 4),
    (reg::IRQ_CTRLACK, 4),
    (reg::GERROR, 4),
    (reg::GERRORN, 4),
    (reg::GERROR_IRQ_CFG0, 8),
    (reg::STRTAB_BASE, 8),
    (reg::STRTAB_BASE_CFG, 4),
    (reg::CMDQ_BASE, 8),
    (reg::CMDQ_PROD, 4),
    (reg::CMDQ_CONS, 4),
    (reg::EVTQ_BASE, 8),
    (reg::EVTQ_IRQ_CFG0, 8),
    (reg::EVTQ_PROD, 4),
    (reg::EVTQ_CONS, 4),
];

/// IDR0: S2P, BTM, HYP, ATS, NS1ATS, MSI, PRI, VMW, VMID16, VATOS and STALL_MODEL hidden.
pub const IDR0_HIDDEN: u32 =
    1 | 1 << 5 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 13 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 20 | 3 << 24;

/// The host's reach for an access of `size` bytes at `off`.
pub fn policy(off: u64, size: u64, write: bool) -> Reach {
    if off >= 0x2_0000 || (size != 4 && size != 8) || !off.is_multiple_of(size) {
        return Reach::Deny;
    }
    let Some(&(r, width)) = HOST_REGS.iter().find(|&&(r, w)| off >= r && off < r + w) else {
        return Reach::Nothing;
    };
    if size > width {
        return Reach::Deny;
    }
    let half = if width == 4 || size == 8 {
        0
    } else if off == r {
        1
    } else {
        2
    };
    match r {
        reg::IDR0 if !write => Reach::RealRo { off: r, hidden: IDR0_HIDDEN, forced: 1 << 24 },
        reg::IDR1 if !write => Reach::RealRo { off: r, hidden: 0xf << 28, forced: 0 },
        reg::IDR2 | reg::IDR3 | reg::IDR4 | reg::IDR5 | reg::IIDR | reg::AIDR | reg::STATUSR if !write => {
            Reach::RealRo { off: r, hidden: 0, forced: 0 }
        }
        reg::IDR0..=reg::AIDR | reg::STATUSR => Reach::Nothing,
        reg::EVTQ_CONS => Reach::Real { off: r, host_bits: 0x800f_ffff },
        _ => Reach::Emulated(r, half),
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 24: the host-visible register file
// ---------------------------------------------------------------------------------------------

/// The host's programming interface: every emulated register's value as the host reads it,
/// plus the command-queue error flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsHostSmmu {
    /// Emulated registers by offset (64-bit ones whole).
    pub regs: BTreeMap<u64, u64>,
    /// GERROR.CMDQ_ERR, GERRORN.CMDQ_ERR (emulated).
    pub gerror: bool,
    pub gerrorn: bool,
    /// CONS.ERR of the last command error.
    pub cons_err: u32,
    /// IDR1.CMDQS.
    pub cmdqs: u32,
    /// The real registers the host reaches, as the hardware holds them.
    pub real: BTreeMap<u64, u32>,
    /// Global-error interrupts KCore must raise for emulated command errors.
    pub signals: u32,
}

/// An emulated register the host writes freely: (offset, bits kept, the CR0ACK enables that
/// must all be 0 for a write to be taken).
const STORED: &[(u64, u64, u32)] = &[
    (reg::CR1, 0xfff, 0b1101),
    (reg::CR2, 0b110, 0b0001),
    (reg::IRQ_CTRL, 0b101, 0),
    (reg::STRTAB_BASE, (1 << 62) | (((1 << 52) - 1) & !0x3f), 0b0001),
    (reg::STRTAB_BASE_CFG, 0x3_07ff, 0b0001),
    (reg::CMDQ_BASE, (1 << 62) | (((1 << 52) - 1) & !0x1f) | 0x1f, 0b1000),
    (reg::CMDQ_CONS, 0xf_ffff, 0b1000),
    (reg::EVTQ_BASE, (1 << 62) | (((1 << 52) - 1) & !0x1f) | 0x1f, 0b0100),
];

impl AbsHostSmmu {
    /// Out of reset: all zero but GBPA.
    pub fn new(gbpa: u32, cmdqs: u32) -> AbsHostSmmu {
        let mut regs: BTreeMap<u64, u64> = STORED.iter().map(|&(r, _, _)| (r, 0)).collect();
        regs.insert(reg::CR0, 0);
        regs.insert(reg::CR0ACK, 0);
        regs.insert(reg::GBPA, (gbpa & 0x001f_3f1f) as u64);
        regs.insert(reg::CMDQ_PROD, 0);
        AbsHostSmmu { regs, gerror: false, gerrorn: false, cons_err: 0, cmdqs, real: BTreeMap::new(), signals: 0 }
    }

    fn r(&self, off: u64) -> u64 {
        self.regs.get(&off).copied().unwrap_or(0)
    }

    /// Entries of the host's queue, from CONS to PROD.
    fn queue_mask(&self) -> u64 {
        let log2 = (self.r(reg::CMDQ_BASE) & 0x1f).min(self.cmdqs as u64).min(19);
        (2 << log2) - 1
    }

    /// Does the host's command queue wait for processing?
    pub fn ready(&self) -> bool {
        self.r(reg::CR0ACK) & 0b1000 != 0
            && self.gerror == self.gerrorn
            && (self.r(reg::CMDQ_PROD) ^ self.r(reg::CMDQ_CONS)) & self.queue_mask() != 0
    }

    fn real(&self, off: u64) -> u32 {
        self.real.get(&off).copied().unwrap_or(0)
    }

    fn set_real(&mut self, off: u64, bits: u32, val: u64) {
        let v = (self.real(off) & !bits) | (val as u32 & bits);
        self.real.insert(off, v);
    }

    /// What the host reads; `None` if refused as an access.
    pub fn read(&self, off: u64, size: u64) -> Option<u64> {
        let real = |o| self.real(o);
        Some(match policy(off, size, false) {
            Reach::Deny => return None,
            Reach::Nothing => 0,
            Reach::RealRo { off, hidden, forced } => ((real(off) & !hidden) | forced) as u64,
            Reach::Real { off, host_bits } => (real(off) & host_bits) as u64,
            Reach::Emulated(r, half) => {
                let v = match r {
                    reg::GERROR => ((real(r) & 0x1fc) | self.gerror as u32) as u64,
                    reg::GERRORN => ((real(r) & 0x1fc) | self.gerrorn as u32) as u64,
                    reg::CMDQ_CONS => self.r(r) | (self.cons_err as u64) << 24,
                    reg::IRQ_CTRLACK => self.r(reg::IRQ_CTRL),
                    reg::EVTQ_PROD => (real(r) & 0x800f_ffff) as u64,
                    _ => self.r(r),
                };
                match half {
                    1 => v & 0xffff_ffff,
                    2 => v >> 32,
                    _ => v,
                }
            }
        })
    }

    /// A host write; `None` if refused as an access.
    pub fn write(&mut self, off: u64, size: u64, val: u64) -> Option<()> {
        let (r, half) = match policy(off, size, true) {
            Reach::Deny => return None,
            Reach::Real { off, host_bits } => {
                self.set_real(off, host_bits, val);
                return Some(());
            }
            Reach::Emulated(r, half) => (r, half),
            _ => return Some(()),
        };
        let v = match half {
            1 => (self.r(r) & !0xffff_ffff) | (val & 0xffff_ffff),
            2 => (self.r(r) & 0xffff_ffff) | (val << 32),
            _ => val,
        };
        let ack = self.r(reg::CR0ACK) as u32;
        if let Some(&(_, bits, enables)) = STORED.iter().find(|s| s.0 == r) {
            if r == reg::IRQ_CTRL {
                self.set_real(r, 0b101, val);
            }
            if ack & enables == 0 {
                self.regs.insert(r, v & bits);
            }
            return Some(());
        }
        match r {
            reg::CR0 => {
                self.regs.insert(reg::CR0, val & 0b1101);
                self.regs.insert(reg::CR0ACK, val & 0b1101);
            }
            reg::GBPA if val & (1 << 31) != 0 => {
                self.regs.insert(reg::GBPA, val & 0x001f_3f1f);
            }
            reg::GERRORN => {
                self.gerrorn = val & 1 != 0;
                self.set_real(reg::GERRORN, 0x1fc, val);
            }
            reg::EVTQ_PROD if ack & 0b100 == 0 => self.set_real(reg::EVTQ_PROD, 0x800f_ffff, val),
            reg::CMDQ_PROD => {
                self.regs.insert(reg::CMDQ_PROD, val & 0xf_ffff);
            }
            _ => {}
        }
        Some(())
    }

    /// KCore processed the queue: every entry consumed, or stopped at `stop` = (entries
    /// consumed before the refused one, CERROR code).
    pub fn processed(&mut self, stop: Option<(u64, u32)>) {
        let mask = self.queue_mask();
        match stop {
            None => {
                self.regs.insert(reg::CMDQ_CONS, self.r(reg::CMDQ_PROD) & mask);
            }
            Some((n, err)) => {
                self.regs.insert(reg::CMDQ_CONS, (self.r(reg::CMDQ_CONS) + n) & mask);
                self.cons_err = err;
                self.gerror = !self.gerrorn;
                self.signals += (self.r(reg::IRQ_CTRL) & 1) as u32;
            }
        }
    }

    /// The event queue's pages were refused: CR0ACK.EVTQEN stays clear.
    pub fn evtq_refused(&mut self) {
        let a = self.r(reg::CR0ACK) & !0b100;
        self.regs.insert(reg::CR0ACK, a);
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 25: STE shadows and commands
// ---------------------------------------------------------------------------------------------

/// An STE as KCore's shadow means it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbsSte {
    Invalid,
    Abort,
    /// Stage 2 only (KCore's), with this SHCFG.
    S2Only {
        shcfg: u64,
    },
    /// The host's stage 1 nested in KCore's stage 2: (S1Fmt, S1ContextPtr, S1CDMax) of dword
    /// 0, (S1DSS, S1CIR, S1COR, S1CSH, SHCFG) of dword 1.
    Nested {
        fmt: u64,
        ctx: u64,
        cdmax: u64,
        dss: u64,
        cir: u64,
        cor: u64,
        csh: u64,
        shcfg: u64,
    },
}

fn bits(w: u64, lo: u32, n: u32) -> u64 {
    (w >> lo) & ((1 << n) - 1)
}

/// What the host's STE `h` must become (reference/smmuv3.md 2.2, "STE shadowing").
pub fn shadow(h: &Ste) -> AbsSte {
    if h[0] & 1 == 0 {
        return AbsSte::Invalid;
    }
    match bits(h[0], 1, 3) {
        0b100 => AbsSte::S2Only { shcfg: bits(h[1], 44, 2) },
        0b101 => AbsSte::Nested {
            fmt: bits(h[0], 4, 2),
            ctx: bits(h[0], 6, 46),
            cdmax: bits(h[0], 59, 5),
            dss: bits(h[1], 0, 2),
            cir: bits(h[1], 2, 2),
            cor: bits(h[1], 4, 2),
            csh: bits(h[1], 6, 2),
            shcfg: bits(h[1], 44, 2),
        },
        _ => AbsSte::Abort,
    }
}

/// What a concrete shadow `s` means, if it is one KCore may install with KCore's stage-2
/// words `s2`: invalid, abort, or stage 2 on with `s2`, VMID 0, no ATS, NS-EL1, dwords 4-7
/// zero, no field the shadow does not define. `None` for anything else.
pub fn abstract_shadow(s: &Ste, s2: (u64, u64)) -> Option<AbsSte> {
    if s[0] & 1 == 0 {
        return (s == &[0; 8]).then_some(AbsSte::Invalid);
    }
    let cfg = bits(s[0], 1, 3);
    if cfg == 0 {
        return (s == &[1, 0, 0, 0, 0, 0, 0, 0]).then_some(AbsSte::Abort);
    }
    let common = (s[2], s[3]) == s2 && s2.0 & 0xffff == 0 && s[4..] == [0; 4];
    let defined_dw1 = s[1] & !(0xff | 3 << 44) == 0;
    match cfg {
        0b110 if common && s[0] == 0b1101 && s[1] & !(3 << 44) == 0 => {
            Some(AbsSte::S2Only { shcfg: bits(s[1], 44, 2) })
        }
        0b111 if common && defined_dw1 && bits(s[0], 52, 7) == 0 => {
            Some(shadow(&[s[0] & !(0b111 << 1) | 0b101 << 1, s[1], 0, 0, 0, 0, 0, 0]))
        }
        _ => None,
    }
}

/// What KCore does with one host command, abstractly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    ReShadow { first: u64, count: u64 },
    Drop,
    Reject,
}

/// The verdict for host command `c` on an SMMU of `sid_bits` stream ID bits and
/// `ssid_bits` substream ID bits (reference/smmuv3.md 2.2, "Command queue emulation").
pub fn verdict(c: Cmd, sid_bits: u32, ssid_bits: u32) -> Verdict {
    let sid = c[0] >> 32;
    let sids = 1u64 << sid_bits;
    match c[0] & 0xff {
        0x01 | 0x02 => Verdict::Drop,
        0x03 if sid < sids => Verdict::ReShadow { first: sid, count: 1 },
        0x04 => {
            let n = 2u64 << (c[1] & 0x1f);
            let first = sid / n * n;
            if first < sids { Verdict::ReShadow { first, count: n.min(sids - first) } } else { Verdict::Reject }
        }
        0x05 if sid < sids && bits(c[0], 12, 20) >> ssid_bits == 0 => Verdict::Forward,
        0x06 if sid < sids => Verdict::Forward,
        0x10..=0x13 | 0x30 => Verdict::Forward,
        // CMD_SYNC, unless CS is the reserved 0b11.
        0x46 if bits(c[0], 12, 2) != 3 => Verdict::Forward,
        _ => Verdict::Reject,
    }
}

/// Opcodes KCore may forward from the host.
pub const FORWARDABLE: &[u8] = &[0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x30, 0x46];
