//! A simulated SMMUv3 for host tests: the registers KCore programs, command processing on a
//! CMDQ_PROD write, the stream table and stage-2 walks of a device's DMA, and a TLB that
//! keeps what it walked until a command removes it. The TLB follows what was measured on
//! QEMU (reference: smmuv3.md 2.7): CMD_TLBI_S2_IPA removes stage-2-only entries of that IPA
//! but not nested (combined stage-1+2) ones; CMD_TLBI_S12_VMALL removes every entry of the
//! VMID. So a test that removes a page from a stage-2 table and then lets a device try it
//! sees a stale translation unless KCore invalidated the way the hardware needs. Stage 1 is
//! not modelled (KCore's streams are stage-2 only); a nested STE halts the model.

use super::Machine;
use super::sim::SimMachine;
use crate::smmu::raw::{self, Cmd, Event, Ste, cr0, evt, gbpa, gerror, op, reg, ste};
use std::collections::BTreeMap;

/// QEMU 10's `virt` SMMUv3 ID registers (reference: smmuv3.md 1.1).
pub const QEMU_IDR0: u32 = 0x0d44_101b;
/// See [`QEMU_IDR0`].
pub const QEMU_IDR1: u32 = 0x0273_0010;
/// See [`QEMU_IDR0`].
pub const QEMU_IDR5: u32 = 0x74;

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The VMID of the STE that walked it.
    pub vmid: u16,
    /// Input page (IOVA >> 12).
    pub input: u64,
    /// Output page (PA >> 12).
    pub output: u64,
    /// Writable.
    pub write: bool,
    /// From a nested STE (a combined stage-1+2 entry).
    pub nested: bool,
}

/// Why a simulated DMA did not reach memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaFault {
    /// Terminated without an event (an abort STE, or GBPA.ABORT while disabled).
    Aborted,
    /// Recorded as an event.
    Event(Event),
}

/// The simulated SMMU's state.
#[derive(Debug, Default)]
pub struct SimSmmu {
    regs: BTreeMap<u64, u64>,
    cons: u32,
    cons_err: u32,
    evtq_prod: u32,
    ste_cache: BTreeMap<u32, Ste>,
    /// Cached translations.
    pub tlb: Vec<TlbEntry>,
    /// Every command executed, in order.
    pub commands: Vec<Cmd>,
    /// Every fault recorded.
    pub events: Vec<Event>,
}

impl SimSmmu {
    fn reg(&self, off: u64) -> u64 {
        self.regs.get(&off).copied().unwrap_or(0)
    }

    /// A register read.
    pub fn read(&mut self, off: u64, bytes: u8) -> u64 {
        assert!(bytes == 4 || bytes == 8, "SMMU access of {bytes} bytes");
        match off {
            reg::IDR0 => u64::from(QEMU_IDR0),
            reg::IDR1 => u64::from(QEMU_IDR1),
            reg::IDR5 => u64::from(QEMU_IDR5),
            reg::CR0ACK => self.reg(reg::CR0),
            reg::IRQ_CTRLACK => self.reg(reg::IRQ_CTRL),
            reg::CMDQ_CONS => u64::from(self.cons | self.cons_err),
            reg::EVTQ_PROD => u64::from(self.evtq_prod),
            _ => self.reg(off),
        }
    }

    /// A register write (commands are processed by [`SimSmmu::process_commands`]).
    pub fn write(&mut self, off: u64, bytes: u8, val: u64) {
        assert!(bytes == 4 || bytes == 8, "SMMU access of {bytes} bytes");
        let val = if bytes == 4 { val & 0xffff_ffff } else { val };
        match off {
            reg::GBPA => {
                self.regs.insert(off, val & !u64::from(gbpa::UPDATE));
            }
            reg::CMDQ_CONS => {
                self.cons = val as u32 & !raw::CONS_ERR_MASK;
                self.cons_err = 0;
            }
            reg::EVTQ_PROD => self.evtq_prod = val as u32,
            _ => {
                self.regs.insert(off, val);
            }
        }
    }

    fn enabled(&self, bit: u32) -> bool {
        self.reg(reg::CR0) as u32 & bit != 0
    }

    /// Run the commands between CONS and PROD, if the command queue is enabled, stopping at
    /// the first illegal one (CMDQ_CONS.ERR = CERROR_ILL, GERROR.CMDQ_ERR toggled).
    pub fn process_commands(&mut self, m: &SimMachine) {
        if !self.enabled(cr0::CMDQEN) || self.cons_err != 0 {
            return;
        }
        let base = self.reg(reg::CMDQ_BASE);
        let log2 = (base & 0x1f) as u32;
        let addr = base & raw::ADDR_MASK_51_5;
        let prod = self.reg(reg::CMDQ_PROD) as u32 & ((2 << log2) - 1);
        while self.cons != prod {
            let slot = u64::from(self.cons & ((1 << log2) - 1));
            let c = [m.load(addr + slot * 16), m.load(addr + slot * 16 + 8)];
            if !self.execute(c) {
                self.cons_err = raw::CERROR_ILL << raw::CONS_ERR_SHIFT;
                let g = self.reg(reg::GERROR) ^ u64::from(gerror::CMDQ_ERR);
                self.regs.insert(reg::GERROR, g);
                return;
            }
            self.commands.push(c);
            self.cons = (self.cons + 1) & ((2 << log2) - 1);
        }
    }

    fn execute(&mut self, c: Cmd) -> bool {
        let vmid = (c[0] >> 32) as u16;
        let sid = (c[0] >> 32) as u32;
        match raw::cmd_opcode(&c) {
            op::CFGI_STE => {
                self.ste_cache.remove(&sid);
            }
            op::CFGI_STE_RANGE => {
                let range = c[1] & 0x1f;
                if range == 31 {
                    self.ste_cache.clear();
                } else {
                    let first = sid & !((1u32 << (range + 1)) - 1);
                    self.ste_cache.retain(|s, _| *s < first || u64::from(*s) >= u64::from(first) + (2 << range));
                }
            }
            op::PREFETCH_CONFIG | op::CFGI_CD | op::CFGI_CD_ALL | op::SYNC => {}
            op::TLBI_NH_ALL | op::TLBI_NH_ASID | op::TLBI_NH_VA | op::TLBI_NH_VAA => {
                self.tlb.retain(|e| !(e.nested && e.vmid == vmid))
            }
            op::TLBI_S12_VMALL => self.tlb.retain(|e| e.vmid != vmid),
            op::TLBI_S2_IPA => {
                let page = (c[1] & (((1 << 52) - 1) & !0xfff)) >> 12;
                self.tlb.retain(|e| e.nested || e.vmid != vmid || e.input != page)
            }
            op::TLBI_NSNH_ALL => self.tlb.clear(),
            _ => return false,
        }
        true
    }

    fn record(&mut self, m: &SimMachine, e: Event, w1: u64) -> DmaFault {
        self.events.push(e);
        if self.enabled(cr0::EVTQEN) {
            let base = self.reg(reg::EVTQ_BASE);
            let log2 = (base & 0x1f) as u32;
            let slot = u64::from(self.evtq_prod & ((1 << log2) - 1));
            let at = (base & raw::ADDR_MASK_51_5) + slot * evt::BYTES;
            for (i, w) in [u64::from(e.kind) | u64::from(e.sid) << 32, w1, e.input, e.ipa].into_iter().enumerate() {
                m.store(at + 8 * i as u64, w);
            }
            self.evtq_prod = (self.evtq_prod + 1) & ((2 << log2) - 1);
        }
        DmaFault::Event(e)
    }

    fn fault(&mut self, m: &SimMachine, kind: u8, sid: u32, input: u64, stage2: bool) -> DmaFault {
        let e = Event { kind, sid, input, stage2, ipa: if stage2 { input & !0xfff } else { 0 } };
        self.record(m, e, if stage2 { evt::S2 } else { 0 })
    }

    fn ste(&mut self, m: &SimMachine, sid: u32) -> Option<Ste> {
        if let Some(s) = self.ste_cache.get(&sid) {
            return Some(*s);
        }
        let base = self.reg(reg::STRTAB_BASE) & raw::ADDR_MASK_51_6;
        let cfg = self.reg(reg::STRTAB_BASE_CFG);
        let (log2size, split, two_level) = ((cfg & 0x3f) as u32, ((cfg >> 6) & 0x1f) as u32, (cfg >> 16) & 3 == 1);
        if u64::from(sid) >> log2size != 0 {
            return None;
        }
        let at = if two_level {
            let l1 = m.load(base + u64::from(sid >> split) * 8);
            if l1 & 0x1f == 0 {
                return None;
            }
            (l1 & raw::ADDR_MASK_51_6) + u64::from(sid & ((1 << split) - 1)) * raw::STE_BYTES
        } else {
            base + u64::from(sid) * raw::STE_BYTES
        };
        let s: Ste = core::array::from_fn(|i| m.load(at + 8 * i as u64));
        self.ste_cache.insert(sid, s);
        Some(s)
    }

    /// A device with stream `sid` accesses `iova`: the physical address it reaches, or why
    /// not. A successful translation is cached.
    pub fn dma(&mut self, m: &SimMachine, sid: u32, iova: u64, write: bool) -> Result<u64, DmaFault> {
        if !self.enabled(cr0::SMMUEN) {
            return if self.reg(reg::GBPA) as u32 & gbpa::ABORT != 0 { Err(DmaFault::Aborted) } else { Ok(iova) };
        }
        let Some(s) = self.ste(m, sid) else {
            return Err(self.fault(m, evt::C_BAD_STREAMID, sid, iova, false));
        };
        if !raw::ste_valid(&s) {
            return Err(self.fault(m, evt::C_BAD_STE, sid, iova, false));
        }
        let vmid = (s[2] & ste::S2VMID_MASK) as u16;
        match raw::ste_config(&s) {
            ste::CONFIG_ABORT => return Err(DmaFault::Aborted),
            ste::CONFIG_BYPASS => return Ok(iova),
            ste::CONFIG_S2 => {}
            c => panic!("the simulated SMMU models no stage 1 (STE config {c:#b})"),
        }
        let page = iova >> 12;
        if let Some(e) = self.tlb.iter().find(|e| e.vmid == vmid && e.input == page && !e.nested) {
            if write && !e.write {
                return Err(self.fault(m, evt::F_PERMISSION, sid, iova, true));
            }
            return Ok(e.output << 12 | (iova & 0xfff));
        }
        match walk_s2(m, &s, iova) {
            Ok((pa, writable)) => {
                if write && !writable {
                    return Err(self.fault(m, evt::F_PERMISSION, sid, iova, true));
                }
                self.tlb.push(TlbEntry { vmid, input: page, output: pa >> 12, write: writable, nested: false });
                Ok(pa)
            }
            Err(kind) => Err(self.fault(m, kind, sid, iova, true)),
        }
    }
}

/// Walk the stage-2 table an STE names (dwords 2-3: VTCR's T0SZ and SL0, S2TTB) for `ipa`:
/// the output address and whether it is writable, or the fault's event type. Written from
/// the Arm ARM's VMSAv8-64 rules, independently of KCore's walker.
fn walk_s2(m: &SimMachine, s: &Ste, ipa: u64) -> Result<(u64, bool), u8> {
    let vtcr = (s[2] >> ste::VTCR_SHIFT) & ste::VTCR_MASK;
    let ia_bits = 64 - (vtcr & 0x3f) as u32;
    let mut level = match (vtcr >> 6) & 3 {
        0b10 => 0,
        0b01 => 1,
        _ => 2,
    };
    if ipa >> ia_bits != 0 {
        return Err(evt::F_ADDR_SIZE);
    }
    let addr = |d: u64| d & 0x0000_ffff_ffff_f000;
    let mut table = s[3] & ste::S2TTB_MASK;
    loop {
        let shift = 39 - 9 * level;
        // At the starting level the index takes every input bit above `shift`, so a
        // concatenated root (several pages) is indexed across its pages.
        let index = if table == s[3] & ste::S2TTB_MASK { ipa >> shift } else { (ipa >> shift) & 511 };
        let d = m.load(table + index * 8);
        if d & 1 == 0 {
            return Err(evt::F_TRANSLATION);
        }
        if level < 3 && d & 2 != 0 {
            table = addr(d);
            level += 1;
            continue;
        }
        if level == 3 && d & 2 == 0 {
            return Err(evt::F_TRANSLATION);
        }
        if d & (1 << 10) == 0 {
            return Err(evt::F_ACCESS);
        }
        let size = 1u64 << shift;
        let out = (addr(d) & !(size - 1)) | (ipa & (size - 1));
        let s2ap = (d >> 6) & 3;
        if s2ap & 1 == 0 {
            return Err(evt::F_PERMISSION);
        }
        return Ok((out, s2ap & 2 != 0));
    }
}
