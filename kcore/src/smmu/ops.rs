//! Layer 26 (SmmuOps): the host's accesses to the SMMU, emulated. KCore owns the real SMMU
//! (its stream table, command queue and registers: `queue.rs`); the host's stock driver
//! programs an emulated one (layers 23-24), and this layer carries out what that implies on
//! the real device:
//!
//! - a host command queue write: every command between CONS and PROD copied once from host
//!   memory, filtered (layer 25), and what survives re-encoded onto KCore's real queue;
//! - a host STE (after its CFGI_STE, or when the host turns its SMMU on or off): KCore's STE
//!   for that stream becomes the shadow of the host's copy (stage 2 always KCore's host-DMA
//!   table), written so the SMMU never sees a mix of old and new;
//! - the host's event queue: its pages checked to be the host's and pinned (no donation while
//!   the SMMU writes there), then given to the real SMMU, which records faults there for the
//!   host's driver to print;
//! - the registers the host may reach for real (IRQ_CTRL, GERRORN, the event queue indices).
//!
//! The emulated state lives in atomics between traps, packed (layer 24's `pack`), and changes
//! only under the `smmu` lock. Host memory is read under `s2page` (lock order smmu -> s2page
//! -> spt -> smmu_q), so no page changes hands while KCore reads it.

use super::aux::{self, CmdSink, HostMem, HostStrtab};
use super::core::{Action, HOST_SMMU_WORDS, HostLimits, HostSmmu};
use super::raw::{self, Cmd, STE_ABORT, Ste, cr0, gbpa, idr0, reg};
use crate::error::{Error, Result};
use crate::locks::{LockId, Locks};
use crate::machine::Machine;
use crate::mem::memblock::MemBlocks;
use crate::mem::pagemgmt::{Owner, PageInfo, PageMeta};
use crate::spt::mmiosptops::HostDma;
use crate::{PAGE_SHIFT, PAGE_SIZE};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The emulated SMMU's state between traps.
#[derive(Debug)]
pub struct SmmuEmul {
    words: [AtomicU64; HOST_SMMU_WORDS],
    /// Physical address of the register frame the host traps on (0: no emulation).
    base: AtomicU64,
    /// The real IDR0.STALL_MODEL.
    stall_model: AtomicU32,
    /// The host's event queue pages KCore pinned: first pfn and count (0: none).
    evtq_pfn: AtomicU64,
    evtq_pages: AtomicU64,
    /// The SMMU's global-error interrupt (its SPI's INTID; 0: unknown, not signalled).
    gerror_intid: AtomicU32,
    /// The host's level-1 descriptors (of a 2-level table) for KCore's streams, as KCore last
    /// shadowed their level-2 tables ([`HOST_L1`] entries at the smallest split, 64).
    host_l1: [AtomicU64; HOST_L1],
}

/// Host level-1 descriptors that cover KCore's streams at the smallest SPLIT (6).
const HOST_L1: usize = (STREAMS >> 6) as usize;

/// Streams KCore's stream table can cover at most.
const STREAMS: u64 = 1 << super::queue::MAX_SID_BITS;

impl Default for SmmuEmul {
    fn default() -> Self {
        Self::new()
    }
}

impl SmmuEmul {
    /// No emulation (no SMMU, or hidden from the host).
    pub const fn new() -> Self {
        SmmuEmul {
            words: [const { AtomicU64::new(0) }; HOST_SMMU_WORDS],
            base: AtomicU64::new(0),
            stall_model: AtomicU32::new(0),
            evtq_pfn: AtomicU64::new(0),
            evtq_pages: AtomicU64::new(0),
            host_l1: [const { AtomicU64::new(0) }; HOST_L1],
            gerror_intid: AtomicU32::new(0),
        }
    }

    /// Start emulating the SMMU whose registers are at `base` for the host (boot, after
    /// KCore took it): the host sees it out of reset, with the real ID registers `idr0`,
    /// `idr1`, `idr3` (less what it may not use) and the GBPA the device had before KCore
    /// set it to abort (`gbpa_reset`).
    pub fn start(&self, base: u64, idr0: u32, idr1: u32, idr3: u32, gbpa_reset: u32) {
        let host = HostSmmu::new(HostLimits::from_idr(idr0, idr1, idr3), gbpa_reset);
        self.save(&host);
        self.stall_model.store((idr0 >> idr0::STALL_MODEL_SHIFT) & 3, Relaxed);
        self.base.store(base, Relaxed);
    }

    /// The SMMU's global-error interrupt is SPI `intid` (from the device tree): KCore pends it
    /// for the host when an emulated command error becomes active (boot).
    pub fn set_gerror_intid(&self, intid: u32) {
        if (32..1020).contains(&intid) {
            self.gerror_intid.store(intid, Relaxed);
        }
    }

    /// The offset in the SMMU's registers of host address `ipa`, if the host's accesses there
    /// are emulated.
    pub fn offset(&self, ipa: u64) -> Option<u64> {
        let base = self.base.load(Relaxed);
        (base != 0 && ipa >= base && ipa - base < reg::SIZE).then(|| ipa - base)
    }

    /// The host's view, as last saved (tests and logs).
    pub fn host(&self) -> HostSmmu {
        HostSmmu::unpack(&core::array::from_fn(|i| self.words[i].load(Relaxed)))
    }

    fn save(&self, host: &HostSmmu) {
        for (w, v) in self.words.iter().zip(host.pack()) {
            w.store(v, Relaxed);
        }
    }

    /// The host's event queue pages KCore keeps pinned: `(first pfn, pages)`.
    pub fn pinned_evtq(&self) -> (u64, u64) {
        (self.evtq_pfn.load(Relaxed), self.evtq_pages.load(Relaxed))
    }
}

/// Layer 26 over KCore's state.
pub struct SmmuOps<'a, M: Machine> {
    /// The machine.
    pub m: &'a M,
    /// KCore's locks.
    pub locks: &'a Locks,
    /// RAM regions.
    pub mb: &'a MemBlocks,
    /// Ownership records.
    pub meta: &'a PageMeta,
    /// The device and the host-DMA table.
    pub dma: &'a HostDma,
    /// The emulated state.
    pub emul: &'a SmmuEmul,
}

/// Host memory as KCore reads it for the SMMU: only pages the host owns (not lent, not a
/// VM's, not KCore's), 8-byte aligned. The caller holds `s2page`.
struct HostRam<'a, M: Machine> {
    m: &'a M,
    mb: &'a MemBlocks,
    meta: &'a PageMeta,
}

impl<M: Machine> HostMem for HostRam<'_, M> {
    fn read_u64(&self, pa: u64) -> Result<u64> {
        if !pa.is_multiple_of(8) || self.meta.owner(self.m, self.mb, pa >> PAGE_SHIFT) != Some(Owner::Host) {
            return Err(Error::Denied);
        }
        Ok(self.m.load(pa))
    }
}

/// Forwarded commands KCore gathers before it issues them.
const BATCH: usize = 64;

/// Where layer 25's verdicts on one batch of host commands go.
struct Sink<'o, 'a, M: Machine> {
    ops: &'o SmmuOps<'a, M>,
    mem: HostRam<'a, M>,
    strtab: Option<HostStrtab>,
    enabled: bool,
    gbpa_abort: bool,
    pending: [Cmd; BATCH],
    n: usize,
    /// A host stage-1 invalidation is in the batch.
    stage1_inval: bool,
}

impl<M: Machine> Sink<'_, '_, M> {
    fn flush(&mut self) {
        if core::mem::take(&mut self.stage1_inval) {
            self.pending[self.n] = raw::cmd::tlbi_s12_vmall(aux::HOST_VMID);
            self.n += 1;
        }
        if self.n > 0 {
            self.ops.dma.dev.issue(self.ops.m, self.ops.locks, &self.pending[..self.n]);
            self.n = 0;
        }
    }
}

impl<M: Machine> CmdSink for Sink<'_, '_, M> {
    fn forward(&mut self, cmd: Cmd) {
        // The host's stage-1 invalidations (by VA, by ASID, all) become one whole-VMID
        // invalidation per batch: its streams are nested, and on QEMU 10 a forwarded
        // CMD_TLBI_NH_VA or NH_ASID left the combined stage-1+2 entries live (measured: the
        // host's disk read back stale pages). CMD_TLBI_S12_VMALL of VMID 0 removes every
        // entry of the host's streams, stage 1, stage 2 and combined, on any SMMUv3.
        if (raw::op::TLBI_NH_ALL..=raw::op::TLBI_NH_VAA).contains(&raw::cmd_opcode(&cmd)) {
            self.stage1_inval = true;
            return;
        }
        // Room for the batch's whole-VMID invalidation too.
        if self.n + 1 >= BATCH {
            self.flush();
        }
        self.pending[self.n] = cmd;
        self.n += 1;
    }

    fn reshadow(&mut self, first: u32, count: u64) {
        // Commands before the CFGI take effect first.
        self.flush();
        let end = (u64::from(first) + count).min(self.ops.dma.dev.streams());
        // A level-2 table the host installed (or moved) since KCore last looked is new to the
        // device as a whole: the driver writes a level-1 descriptor with no command, and the
        // SMMU may use any STE of it (Linux fills it with abort, or with 6.1's
        // disable_bypass=0 bypass, and names one stream). So all of it is shadowed now.
        if let Some(HostStrtab { base, fmt: aux::StrtabFmt::TwoLevel { split }, .. }) = self.strtab
            && u64::from(first) < end
        {
            for l1 in u64::from(first) >> split..=(end - 1) >> split {
                let desc = self.mem.read_u64(base + l1 * 8).unwrap_or(0);
                let seen = &self.ops.emul.host_l1[((l1 << split) >> 6) as usize];
                if seen.swap(desc, Relaxed) != desc {
                    for sid in l1 << split..((l1 + 1) << split).min(self.ops.dma.dev.streams()) {
                        self.ops.install(self.strtab.as_ref(), &self.mem, self.enabled, self.gbpa_abort, sid as u32);
                    }
                }
            }
        }
        for sid in u64::from(first)..end {
            self.ops.install(self.strtab.as_ref(), &self.mem, self.enabled, self.gbpa_abort, sid as u32);
        }
    }

    fn complete(&mut self) {
        self.flush();
        self.ops.dma.dev.issue(self.ops.m, self.ops.locks, &[]);
    }
}

impl<M: Machine> SmmuOps<'_, M> {
    fn host_ram(&self) -> HostRam<'_, M> {
        HostRam { m: self.m, mb: self.mb, meta: self.meta }
    }

    /// KCore's stage-2 words for every shadow: the host-DMA table, VMID 0.
    fn s2(&self) -> (u64, u64) {
        let s = self.dma.stream_ste().expect("emulation runs only with the host-DMA table");
        (s[2], s[3])
    }

    /// The STE KCore gives stream `sid`: while the host's SMMU is disabled, what its GBPA
    /// says (abort, or bypass made stage-2-only); otherwise the shadow of the host's STE
    /// (abort when the host has none, or it is not in host memory).
    fn shadow(&self, t: Option<&HostStrtab>, mem: &HostRam<'_, M>, enabled: bool, gbpa_abort: bool, sid: u32) -> Ste {
        let s2 = self.s2();
        if !enabled {
            return if gbpa_abort { STE_ABORT } else { self.dma.stream_ste().expect("checked") };
        }
        match t.map(|t| aux::read_host_ste(t, mem, sid)) {
            Some(Ok(Some(h))) => aux::shadow_ste_stall(&h, s2, self.emul.stall_model.load(Relaxed)),
            _ => STE_ABORT,
        }
    }

    /// Make stream `sid`'s real STE its shadow ([`SmmuOps::shadow`]). A stream KCore has no
    /// STE for is refused already: it gets a level-2 table only if the host's configuration
    /// lets it reach memory (its SMMU enabled, and a shadow other than abort), so a host that
    /// names every stream uses no more of KCore's memory than the streams it configures.
    fn install(&self, t: Option<&HostStrtab>, mem: &HostRam<'_, M>, enabled: bool, gbpa_abort: bool, sid: u32) {
        let s = self.shadow(t, mem, enabled, gbpa_abort, sid);
        let dev = &self.dma.dev;
        if dev.ste_addr(self.m, sid).is_none() {
            let refused = !raw::ste_valid(&s) || raw::ste_config(&s) == raw::ste::CONFIG_ABORT;
            if !enabled || refused || !dev.ensure_l2(self.m, self.locks, self.dma.table.pool.pages(), sid, &STE_ABORT) {
                return;
            }
        }
        dev.write_ste(self.m, self.locks, sid, &s);
    }

    /// Re-shadow every stream KCore has an STE for (the host turned its SMMU on or off).
    fn reshadow_all(&self, host: &HostSmmu) {
        let t = aux::host_strtab(host);
        let mem = self.host_ram();
        for (i, seen) in self.emul.host_l1.iter().enumerate() {
            let desc = match t {
                Some(HostStrtab { base, fmt: aux::StrtabFmt::TwoLevel { split }, .. }) if host.smmu_enabled() => {
                    mem.read_u64(base + ((i as u64) << 6 >> split) * 8).unwrap_or(0)
                }
                _ => 0,
            };
            seen.store(desc, Relaxed);
        }
        for sid in 0..self.dma.dev.streams() as u32 {
            self.install(t.as_ref(), &mem, host.smmu_enabled(), host.gbpa_abort(), sid);
        }
    }

    /// A host access to the SMMU's registers, `size` (4 or 8) bytes at offset `off`: the
    /// value read, or (a write of `val`) 0. An access the policy denies (a size or
    /// alignment the architecture does not allow) is an error, for which the host gets an
    /// external abort.
    pub fn host_access(&self, off: u64, size: u64, write: bool, val: u64) -> Result<u64> {
        let _smmu = self.locks.acquire(LockId::Smmu, self.m.cpu_index());
        let mut host = self.emul.host();
        if !write {
            let r = host.read(off, size)?;
            return Ok(r.resolve(|o| self.m.smmu_read(o, 4) as u32));
        }
        let gbpa_before = host.gbpa_abort();
        let actions = host.write(off, size, val)?;
        {
            let _s2 = self.locks.acquire(LockId::S2Page, self.m.cpu_index());
            for a in actions.iter() {
                self.act(&mut host, a);
            }
            // While the host's SMMU is off its GBPA decides what its streams do.
            if !host.smmu_enabled() && host.gbpa_abort() != gbpa_before {
                self.reshadow_all(&host);
            }
        }
        self.emul.save(&host);
        Ok(0)
    }

    fn act(&self, host: &mut HostSmmu, a: Action) {
        match a {
            // An acknowledgement toggles only the real errors that are active (GERROR and
            // GERRORN differ, IHI 0070 6.3.17-18): a host that toggled others would make an
            // error look active that is not.
            Action::WriteReal { off: reg::GERRORN, value, mask } => {
                let (g, n) = (self.m.smmu_read(reg::GERROR, 4) as u32, self.m.smmu_read(reg::GERRORN, 4) as u32);
                let toggles = (value ^ n) & (g ^ n) & mask;
                if toggles != 0 {
                    self.m.smmu_write(reg::GERRORN, 4, u64::from(n ^ toggles));
                }
            }
            Action::WriteReal { off, value, mask } => {
                let old = self.m.smmu_read(off, 4) as u32;
                self.m.smmu_write(off, 4, u64::from((old & !mask) | (value & mask)));
            }
            Action::ProcessCmdq => {
                let mut sink = Sink {
                    ops: self,
                    mem: self.host_ram(),
                    strtab: aux::host_strtab(host),
                    enabled: host.smmu_enabled(),
                    gbpa_abort: host.gbpa_abort(),
                    pending: [[0; 2]; BATCH],
                    n: 0,
                    stage1_inval: false,
                };
                let mem = self.host_ram();
                let d = aux::drain_cmdq(host, &mem, &mut sink);
                if let Some((cons, err)) = d.error {
                    log::warn!("SMMU: host command at CONS {cons:#x} refused (CERROR {err})");
                }
                for a in d.actions.iter() {
                    self.act(host, a);
                }
            }
            Action::SmmuEnabled | Action::SmmuDisabled => self.reshadow_all(host),
            Action::EnableEvtq { base } => {
                if self.enable_evtq(host, base).is_err() {
                    log::warn!("SMMU: host event queue at {base:#x} is not all the host's; not enabled");
                    host.evtq_enable_failed();
                }
            }
            Action::DisableEvtq => self.disable_evtq(),
            // The real SMMU raises no interrupt for an error KCore emulates: KCore pends the
            // host's global-error interrupt itself (it is edge-triggered: one pend is one
            // interrupt), so the host's driver handles the error as it would the device's.
            Action::SignalGerror => {
                let intid = self.emul.gerror_intid.load(Relaxed);
                if intid != 0 {
                    self.m.pend_spi(intid);
                }
            }
            Action::Refused { off, value } => log::warn!("SMMU: host write of {value:#x} at {off:#x} refused"),
        }
    }

    /// The host enabled its event queue at EVTQ_BASE value `base`: every page of it must be
    /// plainly the host's and not pinned already; they are pinned (share count 1, so no
    /// donation, assignment or loan takes them) and the real SMMU records events there.
    fn enable_evtq(&self, host: &HostSmmu, base: u64) -> Result<()> {
        let log2 = ((base & 0x1f) as u32).min(host.limits().evtqs).min(19);
        let bytes = raw::evt::BYTES << log2;
        let addr = base & raw::ADDR_MASK_51_5;
        if !addr.is_multiple_of(bytes.min(PAGE_SIZE)) {
            return Err(Error::InvalidParameter);
        }
        let (first, pages) = (addr >> PAGE_SHIFT, bytes.div_ceil(PAGE_SIZE));
        for pfn in first..first + pages {
            match self.meta.get(self.m, self.mb, pfn) {
                Some(PageInfo { owner: Owner::Host, count: 0, .. }) => {}
                _ => return Err(Error::Denied),
            }
        }
        for pfn in first..first + pages {
            self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::Host, count: 1, gfn: 0 });
        }
        self.emul.evtq_pfn.store(first, Relaxed);
        self.emul.evtq_pages.store(pages, Relaxed);
        self.dma.dev.set_cr0_bit(self.m, cr0::EVTQEN, false);
        self.m.smmu_write(reg::EVTQ_BASE, 8, raw::queue_base(addr, log2));
        self.dma.dev.set_cr0_bit(self.m, cr0::EVTQEN, true);
        Ok(())
    }

    fn disable_evtq(&self) {
        self.dma.dev.set_cr0_bit(self.m, cr0::EVTQEN, false);
        let (first, pages) = self.emul.pinned_evtq();
        for pfn in first..first + pages {
            self.meta.set(self.m, self.mb, pfn, PageInfo { owner: Owner::Host, count: 0, gfn: 0 });
        }
        self.emul.evtq_pages.store(0, Relaxed);
    }
}

/// The real GBPA value boot should give the host's emulated SMMU: what the device had
/// (QEMU resets it to bypass), without UPDATE.
pub const fn gbpa_reset(real: u32) -> u32 {
    real & !gbpa::UPDATE
}
