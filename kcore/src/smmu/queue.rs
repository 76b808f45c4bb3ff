//! KCore's own side of the SMMUv3: taking the device at boot (before the host runs), its
//! stream table, its command queue (the stage-2 invalidations every ownership change needs)
//! and its event queue (what DMA KCore refused). Outside the layer stack, like `arch.rs`: the
//! device's programming interface, which layers 12 and 26 use the way layer 8 uses the CPU's
//! TLB maintenance.
//!
//! Every stream KCore's stream table covers starts stage-2 only, through the host-DMA table
//! (`crate::spt`), in VMID 0; every other stream ID has an invalid level-1 descriptor, so its
//! DMA is refused (C_BAD_STREAMID). With the host's driver emulated (layer 26), the STEs then
//! follow the host's, shadowed.

use crate::error::{Error, Result};
use crate::locks::{LockId, Locks};
use crate::machine::Machine;
use crate::pt::ptalloc::PagePool;
use crate::smmu::raw::{self, Cmd, Event, Ste, cmd, cr0, gbpa, gerror, idr0, idr1, idr5, reg};
use crate::{PAGE_SIZE, align_up};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// log2 of KCore's command queue entries: 256 x 16 bytes, one page.
pub const CMDQ_LOG2: u32 = 8;
/// log2 of KCore's event queue entries: 128 x 32 bytes, one page.
pub const EVTQ_LOG2: u32 = 7;
/// log2 of the STEs in one level-2 stream table: 256 (64 bytes each, 16 KiB), the split
/// Linux uses too, so a PCI bus's devices share one level-2 table.
pub const SPLIT: u32 = 8;
/// How many level-2 tables KCore fills at boot: stream IDs 0..2048 (PCI buses 0-7 under an
/// identity `iommu-map`). Other streams have no STE, so their DMA is refused, until the host's
/// driver (emulated) configures one: then KCore gives that group of 256 a level-2 table.
pub const L2_TABLES: u32 = 8;
/// The most stream ID bits KCore's stream table covers (a level-1 table of one page); a
/// stream beyond is refused.
pub const MAX_SID_BITS: u32 = 16;
/// Polls of a register the SMMU must answer (an acknowledgement, a completed CMD_SYNC)
/// before KCore declares the device broken and halts: far more than any working SMMU needs,
/// never an endless wait.
pub const POLL_LIMIT: u64 = 1 << 26;

/// What boot found out about the SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuInfo {
    /// Stream ID bits (IDR1.SIDSIZE).
    pub sid_bits: u32,
    /// Output address bits (IDR5.OAS).
    pub oas_bits: u32,
}

/// Why KCore will not take an SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// No stage-2 translation (IDR0.S2P).
    NoStage2,
    /// No AArch64 translation tables, or big-endian only.
    TableFormat,
    /// Not cache-coherent for its table and queue accesses (IDR0.COHACC): KCore does no
    /// cache maintenance for the SMMU's tables.
    NotCoherent,
    /// No 2-level stream tables.
    NoTwoLevelStreamTable,
    /// Preset tables or queues, relative base addresses or extended command queues (IDR1).
    Preset,
    /// No 4 KiB granule (IDR5.GRAN4K), or fewer output bits than KCore's stage-2 needs.
    Granule,
    /// The device did not acknowledge a register write within [`POLL_LIMIT`] polls.
    NoAck,
}

/// KCore's SMMU: set once at boot, then only its queue indices change.
#[derive(Debug, Default)]
pub struct SmmuDev {
    present: AtomicBool,
    cmdq: AtomicU64,
    prod: AtomicU32,
    evtq: AtomicU64,
    evt_cons: AtomicU32,
    strtab: AtomicU64,
    /// The real CR0 KCore keeps (SMMUEN and CMDQEN always once taken; EVTQEN while an
    /// event queue, KCore's or the host's, is on).
    cr0: AtomicU32,
    /// Stream ID bits KCore's table covers.
    sid_bits: AtomicU32,
    /// Streams refused for want of a level-2 table.
    refused: AtomicU64,
}

fn poll<M: Machine>(m: &M, off: u64, done: impl Fn(u64) -> bool) -> core::result::Result<(), Unsupported> {
    for _ in 0..POLL_LIMIT {
        if done(m.smmu_read(off, 4)) {
            return Ok(());
        }
    }
    Err(Unsupported::NoAck)
}

impl SmmuDev {
    /// No SMMU taken yet.
    pub const fn new() -> Self {
        SmmuDev {
            present: AtomicBool::new(false),
            cmdq: AtomicU64::new(0),
            prod: AtomicU32::new(0),
            evtq: AtomicU64::new(0),
            evt_cons: AtomicU32::new(0),
            strtab: AtomicU64::new(0),
            cr0: AtomicU32::new(0),
            sid_bits: AtomicU32::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Streams KCore's stream table covers (0 before [`SmmuDev::take`]).
    pub fn streams(&self) -> u64 {
        match self.sid_bits.load(Relaxed) {
            0 => 0,
            b => 1 << b,
        }
    }

    /// Did boot take an SMMU?
    pub fn present(&self) -> bool {
        self.present.load(Relaxed)
    }

    /// Physical address of KCore's level-1 stream table (0 before [`SmmuDev::take`]).
    pub fn strtab(&self) -> u64 {
        self.strtab.load(Relaxed)
    }

    /// Check the SMMU's ID registers: can KCore drive it the way it needs to?
    pub fn probe<M: Machine>(m: &M, ipa_bits: u32) -> core::result::Result<SmmuInfo, Unsupported> {
        let id0 = m.smmu_read(reg::IDR0, 4) as u32;
        let id1 = m.smmu_read(reg::IDR1, 4) as u32;
        let id5 = m.smmu_read(reg::IDR5, 4) as u32;
        if id0 & idr0::S2P == 0 {
            return Err(Unsupported::NoStage2);
        }
        if (id0 >> idr0::TTF_SHIFT) & idr0::TTF_AARCH64 == 0 || (id0 >> idr0::TTENDIAN_SHIFT) & 3 == idr0::TTENDIAN_BE {
            return Err(Unsupported::TableFormat);
        }
        if id0 & idr0::COHACC == 0 {
            return Err(Unsupported::NotCoherent);
        }
        if (id0 >> idr0::ST_LEVEL_SHIFT) & 3 != 1 {
            return Err(Unsupported::NoTwoLevelStreamTable);
        }
        if id1 & (idr1::REL | idr1::QUEUES_PRESET | idr1::TABLES_PRESET | idr1::ECMDQ) != 0 {
            return Err(Unsupported::Preset);
        }
        let oas_bits = raw::oas_bits(id5);
        if id5 & idr5::GRAN4K == 0 || oas_bits < ipa_bits.min(44) {
            return Err(Unsupported::Granule);
        }
        Ok(SmmuInfo { sid_bits: id1 & idr1::SIDSIZE_MASK, oas_bits })
    }

    /// Take the SMMU (boot, one CPU, before the host runs): incoming DMA aborts while it is
    /// reprogrammed (GBPA.ABORT, then SMMUEN = 0); then KCore's stream table (every stream of
    /// the first [`L2_TABLES`] level-2 tables gets `ste`), command queue and (`own_evtq`)
    /// event queue, taken from `pool`; caches of configuration and translations invalidated;
    /// enabled. `pool` must be KCore's own memory. Without `own_evtq` the event queue is
    /// left for the host's (emulated) driver. The sequence is the one IHI 0070 prescribes
    /// (6.3.9 CR0, 6.3.14 GBPA, 4.3 configuration invalidation).
    pub fn take<M: Machine>(&self, m: &M, pool: &PagePool, info: SmmuInfo, ste: &Ste, own_evtq: bool) -> Result<()> {
        let halted = |_| Error::BadState;
        // Abort, not bypass, whatever happens next (QEMU resets GBPA to bypass).
        m.smmu_write(reg::GBPA, 4, u64::from(gbpa::UPDATE | gbpa::ABORT));
        poll(m, reg::GBPA, |v| v as u32 & gbpa::UPDATE == 0).map_err(halted)?;
        m.smmu_write(reg::IRQ_CTRL, 4, 0);
        m.smmu_write(reg::CR0, 4, 0);
        poll(m, reg::CR0ACK, |v| v == 0).map_err(halted)?;

        // Level 1: one descriptor per 256 streams, 8 bytes each.
        let sid_bits = info.sid_bits.clamp(SPLIT, MAX_SID_BITS);
        let l1_entries = 1u64 << (sid_bits - SPLIT);
        let l1_pages = align_up(l1_entries * 8, PAGE_SIZE) / PAGE_SIZE;
        let l1 = if l1_pages == 1 { pool.alloc(m)? } else { pool.alloc_contiguous(m, l1_pages.next_power_of_two())? };
        let l2_bytes = (1u64 << SPLIT) * raw::STE_BYTES;
        for t in 0..u64::from(L2_TABLES).min(l1_entries) {
            // A level-2 table is aligned to its size.
            let l2 = pool.alloc_contiguous(m, l2_bytes / PAGE_SIZE)?;
            for i in 0..1u64 << SPLIT {
                for (w, v) in ste.iter().enumerate() {
                    m.store(l2 + i * raw::STE_BYTES + 8 * w as u64, *v);
                }
            }
            m.store(l1 + t * 8, raw::l1_desc(l2, SPLIT));
        }
        let cmdq = pool.alloc(m)?;
        let evtq = if own_evtq { pool.alloc(m)? } else { 0 };
        m.publish_table_writes();
        self.cmdq.store(cmdq, Relaxed);
        self.evtq.store(evtq, Relaxed);
        self.strtab.store(l1, Relaxed);
        self.sid_bits.store(sid_bits, Relaxed);
        self.prod.store(0, Relaxed);
        self.evt_cons.store(0, Relaxed);

        m.smmu_write(reg::CR1, 4, u64::from(raw::CR1_WB_ISH));
        m.smmu_write(reg::CR2, 4, u64::from(raw::CR2_PTM_RECINVSID));
        m.smmu_write(reg::STRTAB_BASE, 8, raw::BASE_RA | (l1 & raw::ADDR_MASK_51_6));
        m.smmu_write(reg::STRTAB_BASE_CFG, 4, u64::from(raw::strtab_cfg_2level(sid_bits, SPLIT)));
        m.smmu_write(reg::CMDQ_BASE, 8, raw::queue_base(cmdq, CMDQ_LOG2));
        m.smmu_write(reg::CMDQ_PROD, 4, 0);
        m.smmu_write(reg::CMDQ_CONS, 4, 0);
        let mut on = cr0::CMDQEN;
        if own_evtq {
            m.smmu_write(reg::EVTQ_BASE, 8, raw::queue_base(evtq, EVTQ_LOG2));
            m.smmu_write(reg::EVTQ_PROD, 4, 0);
            m.smmu_write(reg::EVTQ_CONS, 4, 0);
            on |= cr0::EVTQEN;
        }
        m.smmu_write(reg::CR0, 4, u64::from(on));
        poll(m, reg::CR0ACK, |v| v as u32 == on).map_err(halted)?;
        self.present.store(true, Relaxed);
        // Nothing the firmware or an earlier owner left cached may survive.
        self.issue_unlocked(m, &[cmd::cfgi_all(), cmd::tlbi_nsnh_all()]);
        m.smmu_write(reg::CR0, 4, u64::from(on | cr0::SMMUEN));
        poll(m, reg::CR0ACK, |v| v as u32 == on | cr0::SMMUEN).map_err(halted)?;
        self.cr0.store(on | cr0::SMMUEN, Relaxed);
        Ok(())
    }

    /// Set or clear `bit` of the real CR0 and wait for CR0ACK (caller holds `smmu`). A
    /// device that does not acknowledge is broken: KCore halts.
    pub fn set_cr0_bit<M: Machine>(&self, m: &M, bit: u32, on: bool) {
        let v = if on { self.cr0.load(Relaxed) | bit } else { self.cr0.load(Relaxed) & !bit };
        m.smmu_write(reg::CR0, 4, u64::from(v));
        assert!(poll(m, reg::CR0ACK, |a| a as u32 == v).is_ok(), "SMMU did not acknowledge CR0 {v:#x}");
        self.cr0.store(v, Relaxed);
    }

    /// Physical address of KCore's STE for stream `sid`, if KCore's table has one.
    pub fn ste_addr<M: Machine>(&self, m: &M, sid: u32) -> Option<u64> {
        let strtab = self.strtab();
        if strtab == 0 || u64::from(sid) >= self.streams() {
            return None;
        }
        let l1 = m.load(strtab + u64::from(sid >> SPLIT) * 8);
        (l1 & 0x1f != 0).then(|| (l1 & raw::ADDR_MASK_51_6) + u64::from(sid & ((1 << SPLIT) - 1)) * raw::STE_BYTES)
    }

    /// Give stream `sid`'s group of 256 a level-2 table (from `pool`, every STE `fill`) if it
    /// has none: the host configured a stream KCore had no STE for. Whether the stream has an
    /// STE now (not beyond KCore's table; not when the pool is exhausted: the stream stays
    /// refused, and KCore says so).
    pub fn ensure_l2<M: Machine>(&self, m: &M, locks: &Locks, pool: &PagePool, sid: u32, fill: &Ste) -> bool {
        if self.ste_addr(m, sid).is_some() {
            return true;
        }
        if u64::from(sid) >= self.streams() {
            return false;
        }
        let bytes = (1u64 << SPLIT) * raw::STE_BYTES;
        let Ok(l2) = pool.alloc_contiguous(m, bytes / PAGE_SIZE) else {
            // Said for the first few and then every 1024th: the host chooses how many streams
            // it configures, and a CFGI_ALL over a table of bypass STEs names 65536.
            let n = self.refused.fetch_add(1, Relaxed);
            if n < 4 || n.is_multiple_of(1024) {
                log::warn!(
                    "SMMU: no room for the stream table of streams {:#x}.., stream {sid:#x} refused ({} so far)",
                    sid >> SPLIT << SPLIT,
                    n + 1
                );
            }
            return false;
        };
        for i in 0..1u64 << SPLIT {
            for (w, v) in fill.iter().enumerate() {
                m.store(l2 + i * raw::STE_BYTES + 8 * w as u64, *v);
            }
        }
        m.publish_table_writes();
        m.store(self.strtab() + u64::from(sid >> SPLIT) * 8, raw::l1_desc(l2, SPLIT));
        m.publish_table_writes();
        // Leaf = 0: the level-1 descriptor too (IHI 0070 4.3.2).
        self.issue(m, locks, &[cmd::cfgi_ste_l1(sid)]);
        true
    }

    /// KCore's STE for stream `sid` (`None`: no STE, the stream is refused).
    pub fn ste<M: Machine>(&self, m: &M, sid: u32) -> Option<Ste> {
        let at = self.ste_addr(m, sid)?;
        Some(core::array::from_fn(|i| m.load(at + 8 * i as u64)))
    }

    /// Make `new` the STE of stream `sid` without the SMMU ever using a mix of the old and
    /// the new one: a valid old STE is first made invalid and that invalidated (CFGI_STE +
    /// CMD_SYNC), then dwords 1-7 are written, then dword 0, then invalidated again (IHI 0070
    /// 3.21.3, the STE update rules). Whether the stream has an STE in KCore's table.
    pub fn write_ste<M: Machine>(&self, m: &M, locks: &Locks, sid: u32, new: &Ste) -> bool {
        let Some(at) = self.ste_addr(m, sid) else { return false };
        let old: Ste = core::array::from_fn(|i| m.load(at + 8 * i as u64));
        if old == *new {
            return true;
        }
        if raw::ste_valid(&old) && old[1..] != new[1..] {
            m.store(at, 0);
            m.publish_table_writes();
            self.issue(m, locks, &[cmd::cfgi_ste(sid)]);
        }
        for (i, w) in new.iter().enumerate().skip(1) {
            m.store(at + 8 * i as u64, *w);
        }
        m.publish_table_writes();
        m.store(at, new[0]);
        m.publish_table_writes();
        self.issue(m, locks, &[cmd::cfgi_ste(sid)]);
        true
    }

    /// Run `cmds` on KCore's command queue, followed by a CMD_SYNC, and wait until the
    /// SMMU has consumed the CMD_SYNC: every command before it has then completed (IHI 0070
    /// 4.7.3). Takes the innermost `smmu_q` lock. A queue that stops answering, or an error
    /// on one of KCore's own commands, is a broken invariant: KCore halts.
    pub fn issue<M: Machine>(&self, m: &M, locks: &Locks, cmds: &[Cmd]) {
        let _q = locks.acquire(LockId::SmmuQ, m.cpu_index());
        self.issue_unlocked(m, cmds);
    }

    fn issue_unlocked<M: Machine>(&self, m: &M, cmds: &[Cmd]) {
        assert!(self.present(), "SMMU command with no SMMU taken");
        let entries = 1u32 << CMDQ_LOG2;
        assert!(cmds.len() < entries as usize, "SMMU command batch too long");
        let wrap_mask = (entries << 1) - 1;
        let base = self.cmdq.load(Relaxed);
        let mut prod = self.prod.load(Relaxed);
        for c in cmds.iter().chain(core::iter::once(&cmd::sync())) {
            let slot = u64::from(prod & (entries - 1));
            m.store(base + slot * raw::CMD_BYTES, c[0]);
            m.store(base + slot * raw::CMD_BYTES + 8, c[1]);
            prod = (prod + 1) & wrap_mask;
        }
        // The entries are in memory before the SMMU is told about them.
        m.publish_table_writes();
        self.prod.store(prod, Relaxed);
        m.smmu_write(reg::CMDQ_PROD, 4, u64::from(prod));
        // The queue was empty (every batch waits for its CMD_SYNC), so CONS == PROD means
        // every entry, the CMD_SYNC last, was consumed.
        let mut cons = 0;
        for _ in 0..POLL_LIMIT {
            cons = m.smmu_read(reg::CMDQ_CONS, 4) as u32;
            if cons & raw::CONS_ERR_MASK != 0 || cons & wrap_mask == prod {
                break;
            }
        }
        let err = (cons & raw::CONS_ERR_MASK) >> raw::CONS_ERR_SHIFT;
        let gerr = m.smmu_read(reg::GERROR, 4) as u32 ^ m.smmu_read(reg::GERRORN, 4) as u32;
        assert!(
            err == 0 && cons & wrap_mask == prod && gerr & gerror::SFM_ERR == 0,
            "SMMU command queue failed: CONS {cons:#x}, PROD {prod:#x}, CERROR {err}, GERROR {gerr:#x}"
        );
    }

    /// Make every translation the SMMU cached in `vmid` go (stage-1, stage-2 and combined
    /// entries: CMD_TLBI_S12_VMALL, reference: smmuv3.md 2.7) and wait for it.
    pub fn invalidate_vmid<M: Machine>(&self, m: &M, locks: &Locks, vmid: u16) {
        self.issue(m, locks, &[cmd::tlbi_s12_vmall(vmid)]);
    }

    /// Take the next event the SMMU recorded, if any.
    pub fn next_event<M: Machine>(&self, m: &M, locks: &Locks) -> Option<Event> {
        if !self.present() || self.evtq.load(Relaxed) == 0 {
            return None;
        }
        let _q = locks.acquire(LockId::SmmuQ, m.cpu_index());
        let wrap_mask = (2u32 << EVTQ_LOG2) - 1;
        let prod = m.smmu_read(reg::EVTQ_PROD, 4) as u32 & wrap_mask;
        let cons = self.evt_cons.load(Relaxed);
        if prod == cons {
            return None;
        }
        let at = self.evtq.load(Relaxed) + u64::from(cons & ((1 << EVTQ_LOG2) - 1)) * raw::evt::BYTES;
        let e = Event::decode(core::array::from_fn(|i| m.load(at + 8 * i as u64)));
        let cons = (cons + 1) & wrap_mask;
        self.evt_cons.store(cons, Relaxed);
        m.smmu_write(reg::EVTQ_CONS, 4, u64::from(cons));
        Some(e)
    }
}
