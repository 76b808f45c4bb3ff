//! Layer 24 (SmmuCore): the SMMU the host sees. [`HostSmmu`] is the emulated register file
//! (CR0/CR0ACK, CR1, CR2, GBPA, GERROR/GERRORN's command-queue error, the stream table and
//! queue registers) as a state machine. [`HostSmmu::read`] and [`HostSmmu::write`] take any
//! offset, size and value from the host's trapped access and return the value to give the
//! host (or which real register to read for it) and the [`Action`]s the layer above must
//! carry out. Nothing here touches the device or memory.
//!
//! Every value is untrusted: each access gives `Err(InvalidParameter)` (layer 23 says
//! [`Access::Deny`]) or a defined result; nothing panics.

use super::coreaux::{Access, EmuReg, IRQ_CTRL_HOST, Part, classify};
use super::raw::{
    ADDR_MASK_51_5, ADDR_MASK_51_6, BASE_RA, CONS_ERR_MASK, CONS_ERR_SHIFT, cr0, gbpa, gerror, idr0, idr1, reg,
};
use crate::error::{Error, Result};

/// CR0 bits the host can change: SMMUEN, EVTQEN, CMDQEN. PRIQEN, ATSCHK and VMW read as 0
/// (PRI, ATS and VMW are hidden).
pub const CR0_HOST: u32 = cr0::SMMUEN | cr0::EVTQEN | cr0::CMDQEN;
/// CR1's fields: QUEUE_IC/OC/SH, TABLE_IC/OC/SH (IHI 0070 6.3.11).
pub const CR1_FIELDS: u32 = 0xfff;
/// CR2's fields the host may set: RECINVSID and PTM; E2H is RES0 without IDR0.HYP
/// (IHI 0070 6.3.12).
pub const CR2_FIELDS: u32 = 0b110;
/// GBPA's fields: ABORT, INSTCFG, PRIVCFG, SHCFG, ALLOCCFG, MTCFG, MEMATTR (IHI 0070 6.3.14).
pub const GBPA_FIELDS: u32 = 0x001f_3f1f;
/// STRTAB_BASE's fields: RA and ADDR\[51:6\] (IHI 0070 6.3.23).
pub const STRTAB_BASE_FIELDS: u64 = BASE_RA | ADDR_MASK_51_6;
/// STRTAB_BASE_CFG's fields: FMT\[17:16\], SPLIT\[10:6\], LOG2SIZE\[5:0\] (IHI 0070 6.3.24).
pub const STRTAB_CFG_FIELDS: u32 = 0x3_07ff;
/// CMDQ_BASE and EVTQ_BASE fields: RA, ADDR\[51:5\], LOG2SIZE\[4:0\] (IHI 0070 6.3.25, 6.3.28).
pub const QUEUE_BASE_FIELDS: u64 = BASE_RA | ADDR_MASK_51_5 | 0x1f;
/// A queue index register's index-and-wrap field for up to 2^19 entries (bits \[19:0\]).
pub const QUEUE_INDEX_FIELDS: u32 = 0xf_ffff;
/// IDR3.RIL: range invalidation (IHI 0070 6.3.4).
pub const IDR3_RIL: u32 = 1 << 14;
/// IRQ_CTRL.GERROR_IRQEN (IHI 0070 6.3.15).
pub const IRQ_CTRL_GERROR: u32 = 1 << 0;
/// EVTQ_PROD's fields: WR\[19:0\] and OVFLG (IHI 0070 6.3.27).
pub const EVTQ_PROD_HOST: u32 = (1 << 31) | QUEUE_INDEX_FIELDS;

/// What the host's SMMU may hold, from the real ID registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// IDR1.SIDSIZE: stream ID bits.
    pub sid_bits: u32,
    /// IDR1.SSIDSIZE: substream ID bits.
    pub ssid_bits: u32,
    /// IDR1.CMDQS: log2 of the largest command queue.
    pub cmdqs: u32,
    /// IDR1.EVTQS: log2 of the largest event queue.
    pub evtqs: u32,
    /// IDR0.ST_LEVEL = 0b01: 2-level stream tables allowed.
    pub two_level: bool,
    /// IDR0.ASID16: 16-bit ASIDs (else ASID\[15:8\] of a command is RES0).
    pub asid16: bool,
    /// IDR3.RIL: range invalidation (TG, TTL, NUM, SCALE of a TLBI by address) is
    /// implemented; else those fields are RES0.
    pub ril: bool,
}

impl HostLimits {
    /// The limits the real `idr0`, `idr1` and `idr3` give (IHI 0070 6.3.1, 6.3.2, 6.3.4).
    pub const fn from_idr(idr0: u32, idr1: u32, idr3: u32) -> HostLimits {
        HostLimits {
            sid_bits: idr1 & idr1::SIDSIZE_MASK,
            ssid_bits: (idr1 >> 6) & 0x1f,
            asid16: idr0 & idr0::ASID16 != 0,
            ril: idr3 & IDR3_RIL != 0,
            cmdqs: (idr1 >> idr1::CMDQS_SHIFT) & idr1::QS_MASK,
            evtqs: (idr1 >> idr1::EVTQS_SHIFT) & idr1::QS_MASK,
            two_level: (idr0 >> idr0::ST_LEVEL_SHIFT) & 3 == 1,
        }
    }
}

/// The value of a host read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Give the host this value.
    Value(u64),
    /// Read the real 32-bit register at `off` and give the host `((real & keep) | set) ^ flip`
    /// ([`Read::resolve`]).
    Real { off: u64, keep: u32, set: u32, flip: u32 },
}

impl Read {
    /// The value for the host, given a reader of real registers.
    pub fn resolve(self, real: impl FnOnce(u64) -> u32) -> u64 {
        match self {
            Read::Value(v) => v,
            Read::Real { off, keep, set, flip } => (((real(off) & keep) | set) ^ flip) as u64,
        }
    }
}

/// Something the layer above must do after a host write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the real 32-bit register at `off`: its `mask` bits become `value`'s, the others
    /// keep their real value.
    WriteReal { off: u64, value: u32, mask: u32 },
    /// The host's command queue has entries from CONS to PROD: process them (layer 25,
    /// `aux::CmdqWalk` / `aux::drain_cmdq`), then report with [`HostSmmu::cmdq_consumed`] or
    /// [`HostSmmu::cmdq_error`].
    ProcessCmdq,
    /// The host set SMMUEN: shadow its stream table ([`HostSmmu::strtab`]).
    SmmuEnabled,
    /// The host cleared SMMUEN: every shadow STE becomes abort (the real SMMU stays enabled,
    /// real GBPA stays ABORT).
    SmmuDisabled,
    /// The host set EVTQEN with this EVTQ_BASE value: check that every page of the queue is
    /// host-owned and pin it, program the real EVTQ_BASE and EVTQEN; if the check fails call
    /// [`HostSmmu::evtq_enable_failed`].
    EnableEvtq { base: u64 },
    /// The host cleared EVTQEN: clear the real EVTQEN and unpin the queue's pages.
    DisableEvtq,
    /// The host's emulated GERROR.CMDQ_ERR became active while the host's
    /// IRQ_CTRL.GERROR_IRQEN is set: pend the host's global-error interrupt (the real SMMU
    /// raises none for an emulated error).
    SignalGerror,
    /// A write the policy refuses (a non-zero MSI address, a base or queue register written
    /// while its enable is set, CR1/CR2 while enabled): ignored; worth a log line.
    Refused { off: u64, value: u64 },
}

/// Up to four actions of one write, in the order to carry them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    list: [Option<Action>; 4],
}

impl Actions {
    fn push(&mut self, a: Action) {
        if let Some(slot) = self.list.iter_mut().find(|s| s.is_none()) {
            *slot = Some(a);
        }
    }

    fn one(a: Action) -> Actions {
        let mut s = Actions::default();
        s.push(a);
        s
    }

    /// The actions, in order.
    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.list.iter().flatten().copied()
    }

    /// No action.
    pub fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }
}

/// The host's view of the command queue, for the walk of layer 25.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCmdq {
    /// Physical address of entry 0 (CMDQ_BASE.ADDR).
    pub base: u64,
    /// log2 of the number of entries in effect (CMDQ_BASE.LOG2SIZE, at most IDR1.CMDQS).
    pub log2size: u32,
    /// CMDQ_PROD: index and wrap bit.
    pub prod: u32,
    /// CMDQ_CONS: index and wrap bit (without ERR).
    pub cons: u32,
}

impl HostCmdq {
    /// The index-and-wrap mask: log2size index bits and the wrap bit above them
    /// (IHI 0070 3.5.1).
    pub const fn mask(&self) -> u32 {
        (2u32 << self.log2size) - 1
    }

    /// Entries between CONS and PROD, or `None` if PROD is more than a queue ahead of CONS
    /// (the host broke the queue's index arithmetic).
    pub const fn pending(&self) -> Option<u32> {
        let n = self.prod.wrapping_sub(self.cons) & self.mask();
        if n <= 1 << self.log2size { Some(n) } else { None }
    }
}

/// Words of [`HostSmmu::pack`].
pub const HOST_SMMU_WORDS: usize = 9;

/// The emulated SMMU register file the host sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSmmu {
    limits: HostLimits,
    cr0: u32,
    cr0ack: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    /// GERROR.CMDQ_ERR and GERRORN.CMDQ_ERR: the error is active while they differ.
    gerror_cmdq: bool,
    gerrorn_cmdq: bool,
    strtab_base: u64,
    strtab_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    cmdq_err: u32,
    evtq_base: u64,
}

/// Merge an access to `part` of a 64-bit register.
const fn merge(old: u64, part: Part, v: u64) -> u64 {
    match part {
        Part::Full => v,
        Part::Low => (old & !0xffff_ffff) | (v & 0xffff_ffff),
        Part::High => (old & 0xffff_ffff) | (v << 32),
    }
}

/// The bits of a 64-bit register a `part` read returns.
const fn extract(v: u64, part: Part) -> u64 {
    match part {
        Part::Full => v,
        Part::Low => v & 0xffff_ffff,
        Part::High => v >> 32,
    }
}

impl HostSmmu {
    /// The host's SMMU out of reset: everything disabled, GBPA as the real one was before
    /// KCore took it over (`gbpa_reset`; QEMU resets it to 0x1000, bypass).
    pub const fn new(limits: HostLimits, gbpa_reset: u32) -> HostSmmu {
        HostSmmu {
            limits,
            cr0: 0,
            cr0ack: 0,
            cr1: 0,
            cr2: 0,
            gbpa: gbpa_reset & GBPA_FIELDS,
            irq_ctrl: 0,
            gerror_cmdq: false,
            gerrorn_cmdq: false,
            strtab_base: 0,
            strtab_cfg: 0,
            cmdq_base: 0,
            cmdq_prod: 0,
            cmdq_cons: 0,
            cmdq_err: 0,
            evtq_base: 0,
        }
    }

    /// The limits this SMMU was made with.
    pub const fn limits(&self) -> HostLimits {
        self.limits
    }

    fn enabled(&self, bit: u32) -> bool {
        self.cr0ack & bit != 0
    }

    /// Is the host's SMMU enabled (CR0ACK.SMMUEN)? While it is not, every shadow aborts.
    pub fn smmu_enabled(&self) -> bool {
        self.enabled(cr0::SMMUEN)
    }

    /// Does the host's GBPA say abort (what its streams do while its SMMU is disabled;
    /// otherwise they bypass, which KCore makes stage-2-only)?
    pub const fn gbpa_abort(&self) -> bool {
        self.gbpa & gbpa::ABORT != 0
    }

    /// The state as words, for KCore to keep in atomics between traps (layer 26 holds the
    /// `smmu` lock from [`HostSmmu::unpack`] to `pack`).
    pub fn pack(&self) -> [u64; HOST_SMMU_WORDS] {
        let l = &self.limits;
        let b = |x: bool, at: u32| u64::from(x) << at;
        let lo_hi = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        [
            u64::from(l.sid_bits)
                | u64::from(l.ssid_bits) << 8
                | u64::from(l.cmdqs) << 16
                | u64::from(l.evtqs) << 24
                | b(l.two_level, 32)
                | b(l.asid16, 33)
                | b(l.ril, 34),
            lo_hi(self.cr0, self.cr0ack),
            lo_hi(self.cr1, self.cr2),
            lo_hi(self.gbpa, self.irq_ctrl),
            self.strtab_base,
            lo_hi(self.strtab_cfg, self.cmdq_err) | b(self.gerror_cmdq, 62) | b(self.gerrorn_cmdq, 63),
            self.cmdq_base,
            lo_hi(self.cmdq_prod, self.cmdq_cons),
            self.evtq_base,
        ]
    }

    /// The state [`HostSmmu::pack`] gave.
    pub fn unpack(w: &[u64; HOST_SMMU_WORDS]) -> HostSmmu {
        let lo = |x: u64| x as u32;
        let hi = |x: u64| (x >> 32) as u32;
        let bit = |x: u64, at: u32| x >> at & 1 != 0;
        HostSmmu {
            limits: HostLimits {
                sid_bits: (w[0] & 0xff) as u32,
                ssid_bits: (w[0] >> 8 & 0xff) as u32,
                cmdqs: (w[0] >> 16 & 0xff) as u32,
                evtqs: (w[0] >> 24 & 0xff) as u32,
                two_level: bit(w[0], 32),
                asid16: bit(w[0], 33),
                ril: bit(w[0], 34),
            },
            cr0: lo(w[1]),
            cr0ack: hi(w[1]),
            cr1: lo(w[2]),
            cr2: hi(w[2]),
            gbpa: lo(w[3]),
            irq_ctrl: hi(w[3]),
            strtab_base: w[4],
            strtab_cfg: lo(w[5]),
            cmdq_err: hi(w[5]) & 0x3fff_ffff,
            gerror_cmdq: bit(w[5], 62),
            gerrorn_cmdq: bit(w[5], 63),
            cmdq_base: w[6],
            cmdq_prod: lo(w[7]),
            cmdq_cons: hi(w[7]),
            evtq_base: w[8],
        }
    }

    /// The host's STRTAB_BASE and STRTAB_BASE_CFG (fixed while SMMUEN is set).
    pub const fn strtab(&self) -> (u64, u32) {
        (self.strtab_base, self.strtab_cfg)
    }

    /// The host's command queue.
    pub fn cmdq(&self) -> HostCmdq {
        // A LOG2SIZE above IDR1.CMDQS acts as CMDQS (IHI 0070 6.3.25); 19 is the largest
        // the architecture allows.
        let log2size = ((self.cmdq_base & 0x1f) as u32).min(self.limits.cmdqs).min(19);
        HostCmdq { base: self.cmdq_base & ADDR_MASK_51_5, log2size, prod: self.cmdq_prod, cons: self.cmdq_cons }
    }

    /// Is a command error waiting for the host's GERRORN acknowledgement?
    pub const fn cmdq_error_active(&self) -> bool {
        self.gerror_cmdq != self.gerrorn_cmdq
    }

    /// Does the command queue have entries to process now (enabled, no error pending, PROD
    /// not CONS)?
    pub fn cmdq_ready(&self) -> bool {
        let q = self.cmdq();
        self.enabled(cr0::CMDQEN) && !self.cmdq_error_active() && (q.prod ^ q.cons) & q.mask() != 0
    }

    /// Layer 25 consumed the host's queue up to `cons` (index and wrap).
    pub fn cmdq_consumed(&mut self, cons: u32) {
        self.cmdq_cons = cons & self.cmdq().mask();
    }

    /// The command at `cons` is refused with `err` (CERROR_ILL): the queue stops there,
    /// CONS.ERR says why, GERROR.CMDQ_ERR toggles to active, until the host acknowledges
    /// through GERRORN (IHI 0070 7.1). Returns [`Action::SignalGerror`] if the host enabled
    /// global-error interrupts.
    pub fn cmdq_error(&mut self, cons: u32, err: u32) -> Actions {
        self.cmdq_cons = cons & self.cmdq().mask();
        self.cmdq_err = err & (CONS_ERR_MASK >> CONS_ERR_SHIFT);
        if !self.cmdq_error_active() {
            self.gerror_cmdq = !self.gerrorn_cmdq;
            if self.irq_ctrl & IRQ_CTRL_GERROR != 0 { Actions::one(Action::SignalGerror) } else { Actions::default() }
        } else {
            Actions::default()
        }
    }

    /// The host's event queue could not be enabled (a page is not the host's): CR0ACK.EVTQEN
    /// stays 0, so the host's driver sees the enable time out.
    pub fn evtq_enable_failed(&mut self) {
        self.cr0ack &= !cr0::EVTQEN;
    }

    /// A host read of `size` bytes at `off`.
    pub fn read(&self, off: u64, size: u64) -> Result<Read> {
        Ok(match classify(off, size, false) {
            Access::Deny => return Err(Error::InvalidParameter),
            Access::RazWi => Read::Value(0),
            Access::ReadReal { off, clear, set } => Read::Real { off, keep: !clear, set, flip: 0 },
            Access::PassReal { off, mask } => Read::Real { off, keep: mask, set: 0, flip: 0 },
            Access::Emulated(r, part) => match r {
                EmuReg::Cr0 => Read::Value(self.cr0 as u64),
                EmuReg::Cr0Ack => Read::Value(self.cr0ack as u64),
                EmuReg::Cr1 => Read::Value(self.cr1 as u64),
                EmuReg::Cr2 => Read::Value(self.cr2 as u64),
                // UPDATE reads as 0: every update completes at once.
                EmuReg::Gbpa => Read::Value(self.gbpa as u64),
                // The real global errors except CMDQ_ERR (KCore's own queue), with the
                // emulated CMDQ_ERR in its place.
                // The enables take effect at once (IHI 0070 6.3.16: IRQ_CTRLACK follows).
                EmuReg::IrqCtrl | EmuReg::IrqCtrlAck => Read::Value(self.irq_ctrl as u64),
                EmuReg::Gerror => Read::Real {
                    off: reg::GERROR,
                    keep: gerror::ALL & !gerror::CMDQ_ERR,
                    set: 0,
                    flip: self.gerror_cmdq as u32,
                },
                EmuReg::Gerrorn => Read::Real {
                    off: reg::GERRORN,
                    keep: gerror::ALL & !gerror::CMDQ_ERR,
                    set: 0,
                    flip: self.gerrorn_cmdq as u32,
                },
                EmuReg::IrqCfg0 => Read::Value(0),
                EmuReg::StrtabBase => Read::Value(extract(self.strtab_base, part)),
                EmuReg::StrtabBaseCfg => Read::Value(self.strtab_cfg as u64),
                EmuReg::CmdqBase => Read::Value(extract(self.cmdq_base, part)),
                EmuReg::CmdqProd => Read::Value(self.cmdq_prod as u64),
                EmuReg::CmdqCons => Read::Value((self.cmdq_cons | self.cmdq_err << CONS_ERR_SHIFT) as u64),
                EmuReg::EvtqBase => Read::Value(extract(self.evtq_base, part)),
                EmuReg::EvtqProd => Read::Real { off: reg::EVTQ_PROD, keep: EVTQ_PROD_HOST, set: 0, flip: 0 },
            },
        })
    }

    /// A host write of `size` bytes of `val` at `off`.
    pub fn write(&mut self, off: u64, size: u64, val: u64) -> Result<Actions> {
        let v32 = val as u32;
        let refused = Actions::one(Action::Refused { off, value: val });
        Ok(match classify(off, size, true) {
            Access::Deny => return Err(Error::InvalidParameter),
            Access::RazWi | Access::ReadReal { .. } => Actions::default(),
            Access::PassReal { off, mask } => Actions::one(Action::WriteReal { off, value: v32, mask }),
            Access::Emulated(r, part) => match r {
                EmuReg::Cr0 => self.write_cr0(v32),
                EmuReg::Cr0Ack => Actions::default(),
                // CR1 and CR2 change only while the SMMU and its queues are off
                // (IHI 0070 6.3.11, 6.3.12); the real ones keep KCore's values.
                EmuReg::Cr1 if self.cr0ack == 0 => {
                    self.cr1 = v32 & CR1_FIELDS;
                    Actions::default()
                }
                EmuReg::Cr2 if !self.smmu_enabled() => {
                    self.cr2 = v32 & CR2_FIELDS;
                    Actions::default()
                }
                EmuReg::Cr1 | EmuReg::Cr2 => refused,
                // An update takes effect when the write sets UPDATE, and is complete at once
                // (IHI 0070 6.3.14); the real GBPA stays ABORT.
                EmuReg::Gbpa => {
                    if v32 & gbpa::UPDATE != 0 {
                        self.gbpa = v32 & GBPA_FIELDS;
                    }
                    Actions::default()
                }
                EmuReg::IrqCtrl => {
                    self.irq_ctrl = v32 & IRQ_CTRL_HOST;
                    Actions::one(Action::WriteReal { off: reg::IRQ_CTRL, value: v32, mask: IRQ_CTRL_HOST })
                }
                EmuReg::Gerror | EmuReg::IrqCtrlAck => Actions::default(),
                EmuReg::Gerrorn => self.write_gerrorn(v32),
                // MSI addresses are raw physical addresses: only 0 (no MSI) is accepted.
                EmuReg::IrqCfg0 if val == 0 => Actions::default(),
                EmuReg::IrqCfg0 => refused,
                // Base registers change only while their enable is 0 (IHI 0070 6.3.23-6.3.28).
                EmuReg::StrtabBase if !self.smmu_enabled() => {
                    self.strtab_base = merge(self.strtab_base, part, val) & STRTAB_BASE_FIELDS;
                    Actions::default()
                }
                EmuReg::StrtabBaseCfg if !self.smmu_enabled() => {
                    self.strtab_cfg = v32 & STRTAB_CFG_FIELDS;
                    Actions::default()
                }
                EmuReg::CmdqBase if !self.enabled(cr0::CMDQEN) => {
                    self.cmdq_base = merge(self.cmdq_base, part, val) & QUEUE_BASE_FIELDS;
                    Actions::default()
                }
                EmuReg::CmdqCons if !self.enabled(cr0::CMDQEN) => {
                    self.cmdq_cons = v32 & QUEUE_INDEX_FIELDS;
                    Actions::default()
                }
                EmuReg::EvtqBase if !self.enabled(cr0::EVTQEN) => {
                    self.evtq_base = merge(self.evtq_base, part, val) & QUEUE_BASE_FIELDS;
                    Actions::default()
                }
                EmuReg::EvtqProd if !self.enabled(cr0::EVTQEN) => {
                    Actions::one(Action::WriteReal { off: reg::EVTQ_PROD, value: v32, mask: EVTQ_PROD_HOST })
                }
                EmuReg::StrtabBase | EmuReg::StrtabBaseCfg | EmuReg::CmdqBase | EmuReg::CmdqCons => refused,
                EmuReg::EvtqBase | EmuReg::EvtqProd => refused,
                EmuReg::CmdqProd => {
                    self.cmdq_prod = v32 & QUEUE_INDEX_FIELDS;
                    if self.cmdq_ready() { Actions::one(Action::ProcessCmdq) } else { Actions::default() }
                }
            },
        })
    }

    fn write_cr0(&mut self, v: u32) -> Actions {
        let new = v & CR0_HOST;
        let old = self.cr0ack;
        let rose = new & !old;
        let fell = old & !new;
        self.cr0 = new;
        self.cr0ack = new;
        let mut a = Actions::default();
        if fell & cr0::SMMUEN != 0 {
            a.push(Action::SmmuDisabled);
        }
        if fell & cr0::EVTQEN != 0 {
            a.push(Action::DisableEvtq);
        }
        if rose & cr0::EVTQEN != 0 {
            a.push(Action::EnableEvtq { base: self.evtq_base });
        }
        if rose & cr0::SMMUEN != 0 {
            a.push(Action::SmmuEnabled);
        }
        if rose & cr0::CMDQEN != 0 && self.cmdq_ready() {
            a.push(Action::ProcessCmdq);
        }
        a
    }

    fn write_gerrorn(&mut self, v: u32) -> Actions {
        let was_active = self.cmdq_error_active();
        self.gerrorn_cmdq = v & gerror::CMDQ_ERR != 0;
        let mut a =
            Actions::one(Action::WriteReal { off: reg::GERRORN, value: v, mask: gerror::ALL & !gerror::CMDQ_ERR });
        // Acknowledged: the queue resumes at CONS (which the host's driver has by now
        // overwritten with a CMD_SYNC).
        if was_active && !self.cmdq_error_active() && self.cmdq_ready() {
            a.push(Action::ProcessCmdq);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> HostSmmu {
        HostSmmu::new(HostLimits::from_idr(0x0d44_101b, 0x0273_0010, IDR3_RIL), 0x1000)
    }

    #[test]
    fn limits_of_qemu() {
        let l = HostLimits::from_idr(0x0d44_101b, 0x0273_0010, IDR3_RIL);
        let want =
            HostLimits { sid_bits: 16, ssid_bits: 0, cmdqs: 19, evtqs: 19, two_level: true, asid16: true, ril: true };
        assert_eq!(l, want);
    }

    #[test]
    fn state_survives_packing() {
        let mut s = qemu();
        s.write(reg::CMDQ_BASE, 8, BASE_RA | 0x4100_0000 | 8).unwrap();
        s.write(reg::STRTAB_BASE, 8, BASE_RA | 0x4200_0000).unwrap();
        s.write(reg::STRTAB_BASE_CFG, 4, 0x10210).unwrap();
        s.write(reg::EVTQ_BASE, 8, BASE_RA | 0x4300_0000 | 7).unwrap();
        s.write(reg::CR1, 4, 0xd75).unwrap();
        s.write(reg::GBPA, 4, (gbpa::UPDATE | gbpa::ABORT) as u64).unwrap();
        s.write(reg::IRQ_CTRL, 4, 5).unwrap();
        s.write(reg::CR0, 4, 0xd).unwrap();
        s.write(reg::CMDQ_PROD, 4, 3).unwrap();
        s.cmdq_error(1, 1);
        assert_eq!(HostSmmu::unpack(&s.pack()), s);
    }

    #[test]
    fn gbpa_update_completes_at_once() {
        let mut s = qemu();
        assert_eq!(s.read(reg::GBPA, 4), Ok(Read::Value(0x1000)));
        s.write(reg::GBPA, 4, (gbpa::UPDATE | gbpa::ABORT | 0x1000) as u64).unwrap();
        assert_eq!(s.read(reg::GBPA, 4), Ok(Read::Value((gbpa::ABORT | 0x1000) as u64)));
    }

    #[test]
    fn bases_are_fixed_while_enabled() {
        let mut s = qemu();
        s.write(reg::STRTAB_BASE, 8, BASE_RA | 0x4000_0000).unwrap();
        s.write(reg::CR0, 4, cr0::SMMUEN as u64).unwrap();
        let a = s.write(reg::STRTAB_BASE, 8, 0x8000_0000).unwrap();
        assert!(matches!(a.iter().next(), Some(Action::Refused { .. })));
        assert_eq!(s.strtab().0, BASE_RA | 0x4000_0000);
        assert_eq!(s.write(reg::CR0, 8, 0), Err(Error::InvalidParameter));
    }

    #[test]
    fn command_error_stops_until_acknowledged() {
        let mut s = qemu();
        s.write(reg::CMDQ_BASE, 8, BASE_RA | 0x4100_0000 | 8).unwrap();
        s.write(reg::CR0, 4, cr0::CMDQEN as u64).unwrap();
        let irq = s.write(reg::IRQ_CTRL, 4, 0xff).unwrap();
        assert_eq!(irq.iter().next(), Some(Action::WriteReal { off: reg::IRQ_CTRL, value: 0xff, mask: 0b101 }));
        assert_eq!(s.read(reg::IRQ_CTRLACK, 4), Ok(Read::Value(0b101)));
        assert_eq!(s.write(reg::CMDQ_PROD, 4, 3).unwrap().iter().next(), Some(Action::ProcessCmdq));
        assert_eq!(s.cmdq_error(1, 1).iter().next(), Some(Action::SignalGerror));
        assert_eq!(s.read(reg::CMDQ_CONS, 4), Ok(Read::Value(1 | 1 << 24)));
        let g = s.read(reg::GERROR, 4).unwrap().resolve(|_| 0);
        assert_eq!(g, 1);
        // Further PROD writes wait for the acknowledgement.
        assert!(s.write(reg::CMDQ_PROD, 4, 4).unwrap().iter().all(|a| a != Action::ProcessCmdq));
        let a = s.write(reg::GERRORN, 4, g).unwrap();
        assert!(a.iter().any(|a| a == Action::ProcessCmdq));
        assert!(!s.cmdq_error_active());
    }
}
