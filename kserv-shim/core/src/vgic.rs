//! A virtual GICv3 (GIC architecture specification, IHI 0069): one distributor and one
//! redistributor per vCPU, affinity routing on, a single security state, no LPIs or ITS. The
//! host emulates it from the guest's MMIO exits; SGIs arrive as KCore's SGI exits (the guest's
//! ICC_SGI1R_EL1 writes), device lines from the VMM (KVM_IRQ_LINE, irqfd); interrupts reach
//! the guest through KCore's list registers (INJECT_IRQ), and what the guest did with them
//! comes back through VCPU_IRQ_STATE.
//!
//! The same model serves a GICv2 distributor (GIC architecture specification v2, IHI 0048,
//! chapter 4) for guests on a GICv2 machine: see [`v2`].
//!
//! Registers are described as tables of regions ([`DIST_REGIONS`], [`REDIST_RD_REGIONS`],
//! [`REDIST_SGI_REGIONS`]): offset, length, the access sizes allowed, and what they hold.

use core::cell::Cell;

pub mod v2;

/// vCPUs a VM can have (KCore's limit).
pub const MAX_VCPUS: usize = 8;
/// Interrupt IDs the distributor implements at most: SGIs, PPIs and SPIs up to 1019 (INTIDs
/// 1020-1023 are special).
pub const MAX_INTIDS: usize = 1024;
/// Private interrupts per vCPU (SGIs 0-15, PPIs 16-31).
pub const PRIVATE: usize = 32;
/// The guest's virtual timer interrupt (PPI 11): KCore delivers it itself, in a list register
/// of its own, so this model never gives it.
pub const VTIMER_INTID: u32 = 27;
/// List registers the host fills with INJECT_IRQ (KCore keeps its last one for the timer).
pub const HOST_LRS: usize = 3;
/// Size of a redistributor: the RD_base frame and the SGI_base frame, 64 KiB each.
pub const REDIST_SIZE: u64 = 0x2_0000;
/// Size of the distributor's register frame.
pub const DIST_SIZE: u64 = 0x1_0000;

/// A guest access the model refuses (the host then injects an external abort, as hardware
/// does for a bad access size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// This register cannot be accessed with that size or alignment.
    BadAccess,
}

/// What a register region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GICD_CTLR.
    DistCtlr,
    /// GICD_TYPER.
    DistTyper,
    /// GICD_IIDR / GICR_IIDR.
    Iidr,
    /// One bit per interrupt: group.
    Group,
    /// One bit per interrupt, write 1 to set / clear: enable.
    SetEnable,
    /// See [`Kind::SetEnable`].
    ClearEnable,
    /// Pending, set / clear.
    SetPending,
    /// See [`Kind::SetPending`].
    ClearPending,
    /// Active, set / clear.
    SetActive,
    /// See [`Kind::SetActive`].
    ClearActive,
    /// One byte per interrupt: priority.
    Priority,
    /// Two bits per interrupt: edge (0b10) or level (0b00).
    Config,
    /// GICD_IROUTER<n>: 64 bits per SPI, its target's affinity.
    Router,
    /// Peripheral ID 2: the architecture revision (GICv3).
    Pidr2,
    /// GICR_TYPER.
    RedistTyper,
    /// GICR_WAKER.
    Waker,
    /// Reads as zero, writes ignored.
    Raz,
    /// GICv2 GICD_ITARGETSR<n>: one byte per interrupt, its CPU targets.
    Targets,
    /// GICv2 GICD_SGIR (write only).
    Sgir,
    /// GICv2 GICD_SPENDSGIR<n>: one byte per SGI, a bit per source CPU.
    SgiSetPending,
    /// GICv2 GICD_CPENDSGIR<n>.
    SgiClearPending,
}

/// One region of registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Offset in its frame.
    pub offset: u64,
    /// Bytes it spans.
    pub len: u64,
    /// Access sizes allowed (bit n: 2^n bytes).
    pub sizes: u8,
    /// What it holds.
    pub kind: Kind,
}

const W32: u8 = 1 << 2;
const W8_32: u8 = (1 << 0) | (1 << 2);
const W32_64: u8 = (1 << 2) | (1 << 3);

const fn region(offset: u64, len: u64, sizes: u8, kind: Kind) -> Region {
    Region { offset, len, sizes, kind }
}

/// The distributor's registers (GIC architecture 12.9). INTIDs 0-31 are banked in the
/// redistributors under affinity routing, so their bits here read as zero.
pub const DIST_REGIONS: [Region; 16] = [
    region(0x0000, 4, W32, Kind::DistCtlr),
    region(0x0004, 4, W32, Kind::DistTyper),
    region(0x0008, 4, W32, Kind::Iidr),
    region(0x0080, 0x80, W32, Kind::Group),
    region(0x0100, 0x80, W32, Kind::SetEnable),
    region(0x0180, 0x80, W32, Kind::ClearEnable),
    region(0x0200, 0x80, W32, Kind::SetPending),
    region(0x0280, 0x80, W32, Kind::ClearPending),
    region(0x0300, 0x80, W32, Kind::SetActive),
    region(0x0380, 0x80, W32, Kind::ClearActive),
    region(0x0400, 0x400, W8_32, Kind::Priority),
    region(0x0c00, 0x100, W32, Kind::Config),
    region(0x0d00, 0x80, W32, Kind::Raz), // GICD_IGRPMODR: one security state
    region(0x6100, 0x1f00, W32_64, Kind::Router), // IROUTER<32..1019>
    region(0xffe8, 4, W32, Kind::Pidr2),
    region(0x0010, 4, W32, Kind::Raz), // GICD_STATUSR
];

/// A redistributor's RD_base frame (12.11).
pub const REDIST_RD_REGIONS: [Region; 6] = [
    region(0x0000, 4, W32, Kind::Raz), // GICR_CTLR: no LPIs
    region(0x0004, 4, W32, Kind::Iidr),
    region(0x0008, 8, W32_64, Kind::RedistTyper),
    region(0x0010, 4, W32, Kind::Raz), // GICR_STATUSR
    region(0x0014, 4, W32, Kind::Waker),
    region(0xffe8, 4, W32, Kind::Pidr2),
];

/// A redistributor's SGI_base frame: the private interrupts.
pub const REDIST_SGI_REGIONS: [Region; 10] = [
    region(0x0080, 4, W32, Kind::Group),
    region(0x0100, 4, W32, Kind::SetEnable),
    region(0x0180, 4, W32, Kind::ClearEnable),
    region(0x0200, 4, W32, Kind::SetPending),
    region(0x0280, 4, W32, Kind::ClearPending),
    region(0x0300, 4, W32, Kind::SetActive),
    region(0x0380, 4, W32, Kind::ClearActive),
    region(0x0400, 0x20, W8_32, Kind::Priority),
    region(0x0c00, 8, W32, Kind::Config),
    region(0x0d00, 4, W32, Kind::Raz), // GICR_IGRPMODR0
];

/// GICD_IIDR / GICR_IIDR: implementer 0x43b (JEP106 Arm), product 0x5e (this model).
pub const IIDR: u64 = (0x5e << 24) | 0x43b;
/// GICD_PIDR2 / GICR_PIDR2: ArchRev 3 (GICv3), JEP106 bits.
pub const PIDR2: u64 = 0x3b;

/// One interrupt's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    /// Enabled.
    pub enabled: bool,
    /// Pending by an edge, a software write or an SGI (cleared when it goes to a list register).
    pub latch: bool,
    /// The level of its input line (level-triggered interrupts are pending while it is high).
    pub line: bool,
    /// Active (set by software; the guest's own activations live in the list registers).
    pub active: bool,
    /// Priority (lower is more urgent).
    pub priority: u8,
    /// Group 1.
    pub group1: bool,
    /// Edge-triggered (else level).
    pub edge: bool,
    /// Its affinity route (SPIs): GICD_IROUTER's Aff3.Aff2.Aff1.Aff0.
    pub route: u64,
    /// In a list register of the vCPU it was given to (until the guest deactivates it).
    pub in_lr: bool,
}

impl Irq {
    /// Pending: latched, or a level interrupt whose line is high.
    pub fn pending(&self) -> bool {
        self.latch || (!self.edge && self.line)
    }

    /// Its input line goes to `level`: a rising edge latches an edge-triggered interrupt.
    fn drive(&mut self, level: bool) {
        if self.edge && level && !self.line {
            self.latch = true;
        }
        self.line = level;
    }
}

/// The positions of the set bits of `word`, plus `base`, lowest first.
fn set_bits(word: u64, base: u32) -> impl Iterator<Item = u32> {
    let mut w = word;
    core::iter::from_fn(move || {
        (w != 0).then(|| {
            let b = w.trailing_zeros();
            w &= w - 1;
            base + b
        })
    })
}

/// A list register's worth for the host to pass to INJECT_IRQ: INTID and its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The INTID.
    pub intid: u32,
    /// INJECT_IRQ's x4: priority (7:0), level-triggered (bit 8).
    pub attrs: u64,
}

/// The virtual GIC of one VM.
#[derive(Clone, Debug)]
pub struct Vgic {
    /// vCPUs (redistributors).
    pub vcpus: usize,
    /// Interrupt lines the distributor implements (a multiple of 32, up to 1024).
    pub nr_irqs: usize,
    /// GICD_CTLR.EnableGrp1 / EnableGrp0.
    pub enable_grp1: bool,
    /// See [`Vgic::enable_grp1`].
    pub enable_grp0: bool,
    /// SPIs (index = INTID; 0..32 unused).
    pub spis: [Irq; MAX_INTIDS],
    /// Each vCPU's SGIs and PPIs.
    pub private: [[Irq; PRIVATE]; MAX_VCPUS],
    /// Each redistributor's GICR_WAKER.ProcessorSleep.
    pub asleep: [bool; MAX_VCPUS],
    /// Bumped by every change that may make an interrupt deliverable (a register write, a
    /// line, an SGI, a deactivation).
    pub epoch: u64,
    /// Per vCPU: the [`Vgic::epoch`] at which a scan found nothing to give it, so the next
    /// [`Vgic::take`] or [`Vgic::has_pending`] before any change answers at once instead of
    /// scanning every INTID (the common case on each guest entry).
    pub idle: [Cell<u64>; MAX_VCPUS],
    /// Candidates for delivery: SPIs (a bit per INTID) and each vCPU's private interrupts
    /// whose pending latch or input line has been set since the bit was last found idle
    /// (a superset of the pending ones), so a delivery scan looks at those alone, not at
    /// every INTID.
    pub cand_spis: [u64; MAX_INTIDS / 64],
    /// See [`Vgic::cand_spis`].
    pub cand_private: [u32; MAX_VCPUS],
    /// A GICv2 distributor ([`v2`]): SPIs are routed by GICD_ITARGETSR (`route` holds the
    /// target byte), SGIs come from GICD_SGIR writes, every interrupt is group 0.
    pub v2: bool,
}

impl Vgic {
    /// A GIC for `vcpus` vCPUs with `nr_irqs` interrupt lines (KVM's NR_IRQS attribute: a
    /// multiple of 32 from 64 to 1024), everything reset: disabled, not pending, priority 0,
    /// group 0, SGIs edge, PPIs and SPIs level, SPIs routed to vCPU 0, redistributors asleep.
    pub fn new(vcpus: usize, nr_irqs: usize) -> Option<Vgic> {
        if !(1..=MAX_VCPUS).contains(&vcpus) || !(64..=MAX_INTIDS).contains(&nr_irqs) || !nr_irqs.is_multiple_of(32) {
            return None;
        }
        let mut private = [[Irq::default(); PRIVATE]; MAX_VCPUS];
        for p in private.iter_mut() {
            for sgi in p.iter_mut().take(16) {
                sgi.edge = true; // SGIs are always edge-triggered
            }
        }
        Some(Vgic {
            vcpus,
            nr_irqs,
            enable_grp1: false,
            enable_grp0: false,
            spis: [Irq::default(); MAX_INTIDS],
            private,
            asleep: [true; MAX_VCPUS],
            epoch: 1,
            idle: Default::default(),
            cand_spis: [0; MAX_INTIDS / 64],
            cand_private: [0; MAX_VCPUS],
            v2: false,
        })
    }

    /// Make a zero-filled `Vgic` (every field zero is a valid, empty one: the module's glue
    /// allocates it zeroed, as it is too big for a kernel stack) the reset GIC
    /// [`Vgic::new`] describes. `false` if the sizes are not ones `new` accepts.
    pub fn reset_in_place(&mut self, vcpus: usize, nr_irqs: usize) -> bool {
        if !(1..=MAX_VCPUS).contains(&vcpus) || !(64..=MAX_INTIDS).contains(&nr_irqs) || !nr_irqs.is_multiple_of(32) {
            return false;
        }
        self.vcpus = vcpus;
        self.nr_irqs = nr_irqs;
        self.v2 = false;
        self.enable_grp0 = false;
        self.enable_grp1 = false;
        self.spis.fill(Irq::default());
        for p in self.private.iter_mut() {
            p.fill(Irq::default());
            for sgi in p.iter_mut().take(16) {
                sgi.edge = true;
            }
        }
        self.asleep = [true; MAX_VCPUS];
        self.cand_spis = [0; MAX_INTIDS / 64];
        self.cand_private = [0; MAX_VCPUS];
        self.changed();
        true
    }

    /// `intid` (as `vcpu` sees it) may have become pending: a candidate for delivery.
    fn mark(&mut self, vcpu: usize, intid: u32) {
        if intid < PRIVATE as u32 {
            if let Some(c) = self.cand_private.get_mut(vcpu) {
                *c |= 1 << intid;
            }
        } else if let Some(w) = self.cand_spis.get_mut(intid as usize / 64) {
            *w |= 1 << (intid % 64);
        }
    }

    /// The candidates for vCPU `vcpu`: its private ones, then every SPI's (in INTID order).
    fn candidates(&self, vcpu: usize) -> impl Iterator<Item = u32> {
        let limit = self.nr_irqs.min(1020) as u32;
        let words = self.nr_irqs.div_ceil(64).min(self.cand_spis.len());
        set_bits(u64::from(self.cand_private[vcpu]), 0)
            .chain(self.cand_spis[..words].iter().enumerate().flat_map(|(w, &bits)| set_bits(bits, w as u32 * 64)))
            .filter(move |&i| i < limit)
    }

    /// Forget candidates that are neither latched nor driven high (nothing can make them
    /// pending again without marking them).
    fn prune(&mut self, vcpu: usize) {
        let idle = |irq: Option<&Irq>| irq.is_some_and(|i| !i.latch && !i.line);
        for i in set_bits(u64::from(self.cand_private[vcpu]), 0) {
            if idle(self.irq(vcpu, i)) {
                self.cand_private[vcpu] &= !(1 << i);
            }
        }
        for w in 0..self.nr_irqs.div_ceil(64).min(self.cand_spis.len()) {
            for i in set_bits(self.cand_spis[w], w as u32 * 64) {
                if idle(self.irq(vcpu, i)) {
                    self.cand_spis[w] &= !(1 << (i % 64));
                }
            }
        }
    }

    /// Something that may make an interrupt deliverable happened: forget the idle answers.
    fn changed(&mut self) {
        self.epoch += 1;
    }

    /// The same for a change only vCPU `vcpu` can see (one of its private interrupts): the
    /// other vCPUs keep their idle answers. (0 is never an epoch.)
    fn changed_for(&self, vcpu: usize) {
        if let Some(idle) = self.idle.get(vcpu) {
            idle.set(0);
        }
    }

    /// [`Vgic::changed`] or [`Vgic::changed_for`], as `intid` is shared or private.
    fn changed_irq(&mut self, vcpu: usize, intid: u32) {
        if intid < PRIVATE as u32 { self.changed_for(vcpu) } else { self.changed() }
    }

    /// Interrupt `intid` as vCPU `vcpu` sees it (private ones are its own), if implemented.
    pub fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        match intid as usize {
            i if i < PRIVATE => self.private.get(vcpu).map(|p| &p[i]),
            i if i < self.nr_irqs && i < 1020 => Some(&self.spis[i]),
            _ => None,
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        match intid as usize {
            i if i < PRIVATE => self.private.get_mut(vcpu).map(|p| &mut p[i]),
            i if i < self.nr_irqs && i < 1020 => Some(&mut self.spis[i]),
            _ => None,
        }
    }

    /// The vCPU an SPI is routed to: its IROUTER affinity names a vCPU's MPIDR (Aff0 = index,
    /// the rest 0); anything else (including 1-of-N routing, which this GIC does not offer)
    /// goes nowhere.
    fn target(&self, irq: &Irq) -> Option<usize> {
        if self.v2 {
            return self.target_v2(irq);
        }
        let aff0 = (irq.route & 0xff) as usize;
        (irq.route & !0xff == 0 && aff0 < self.vcpus).then_some(aff0)
    }

    // ------------------------------------------------------------------ MMIO

    /// A guest read of `size` bytes at `offset` in the distributor's frame.
    pub fn dist_read(&self, offset: u64, size: u64) -> Result<u64, AccessError> {
        let (r, at) = find(&DIST_REGIONS, offset, size)?;
        Ok(match r.kind {
            Kind::DistCtlr => {
                // ARE (bit 4) and DS (bit 6) read as one: affinity routing, one security state.
                (1 << 4) | (1 << 6) | (self.enable_grp1 as u64) << 1 | self.enable_grp0 as u64
            }
            // ITLinesNumber, IDbits = 9 (10-bit INTIDs), No1N (no 1-of-N routing).
            Kind::DistTyper => (self.nr_irqs as u64 / 32 - 1) | (9 << 19) | (1 << 25),
            Kind::Iidr => IIDR,
            Kind::Pidr2 => PIDR2,
            Kind::Router => {
                let intid = 32 + at / 8;
                let v = self.irq(0, intid as u32).map_or(0, |i| i.route);
                if size == 8 {
                    v
                } else if at % 8 == 0 {
                    v & 0xffff_ffff
                } else {
                    v >> 32
                }
            }
            Kind::Raz | Kind::RedistTyper | Kind::Waker => 0,
            // Per-interrupt registers: INTIDs 0-31 are the redistributors' (read as zero).
            k => self.read_bits(None, k, at, size, |i| i >= PRIVATE as u32),
        })
    }

    /// A guest write of `value` (`size` bytes) at `offset` in the distributor's frame.
    pub fn dist_write(&mut self, offset: u64, size: u64, value: u64) -> Result<(), AccessError> {
        self.changed();
        let (r, at) = find(&DIST_REGIONS, offset, size)?;
        match r.kind {
            Kind::DistCtlr => {
                self.enable_grp0 = value & 1 != 0;
                self.enable_grp1 = value & 2 != 0;
            }
            Kind::Router => {
                let intid = 32 + at / 8;
                if let Some(irq) = self.irq_mut(0, intid as u32) {
                    // Aff3 (39:32), Aff2, Aff1, Aff0; IRM (bit 31) is RAZ/WI: no 1-of-N.
                    let mask = 0xff_00ff_ffffu64;
                    irq.route = match (size, at % 8) {
                        (8, _) => value & mask,
                        (_, 0) => (irq.route & !0xffff_ffff) | (value & 0xffff_ffff & mask),
                        _ => (irq.route & 0xffff_ffff) | ((value << 32) & mask),
                    };
                }
            }
            Kind::DistTyper | Kind::Iidr | Kind::Pidr2 | Kind::Raz | Kind::RedistTyper | Kind::Waker => {}
            k => self.write_bits(None, k, at, size, value, |i| i >= PRIVATE as u32),
        }
        Ok(())
    }

    /// A guest read in vCPU `rd`'s redistributor (`offset` from its RD_base; the SGI_base
    /// frame follows at 64 KiB).
    pub fn redist_read(&self, rd: usize, offset: u64, size: u64) -> Result<u64, AccessError> {
        if rd >= self.vcpus {
            return Err(AccessError::BadAccess);
        }
        if offset >= 0x1_0000 {
            let (r, at) = find(&REDIST_SGI_REGIONS, offset - 0x1_0000, size)?;
            return Ok(match r.kind {
                Kind::Raz => 0,
                k => self.read_bits(Some(rd), k, at, size, |i| i < PRIVATE as u32),
            });
        }
        let (r, at) = find(&REDIST_RD_REGIONS, offset, size)?;
        Ok(match r.kind {
            Kind::Iidr => IIDR,
            Kind::Pidr2 => PIDR2,
            Kind::RedistTyper => {
                // Affinity (63:32) = the vCPU's MPIDR (Aff0 = index), Processor_Number
                // (23:8), Last (bit 4) on the last redistributor.
                let v = ((rd as u64) << 32) | ((rd as u64) << 8) | (((rd + 1 == self.vcpus) as u64) << 4);
                if size == 8 {
                    v
                } else if at == 0 {
                    v & 0xffff_ffff
                } else {
                    v >> 32
                }
            }
            // ProcessorSleep (bit 1) and ChildrenAsleep (bit 2) follow each other at once.
            Kind::Waker => ((self.asleep[rd] as u64) << 1) | ((self.asleep[rd] as u64) << 2),
            _ => 0,
        })
    }

    /// A guest write in vCPU `rd`'s redistributor.
    pub fn redist_write(&mut self, rd: usize, offset: u64, size: u64, value: u64) -> Result<(), AccessError> {
        self.changed();
        if rd >= self.vcpus {
            return Err(AccessError::BadAccess);
        }
        if offset >= 0x1_0000 {
            let (r, at) = find(&REDIST_SGI_REGIONS, offset - 0x1_0000, size)?;
            if r.kind != Kind::Raz {
                self.write_bits(Some(rd), r.kind, at, size, value, |i| i < PRIVATE as u32);
            }
            return Ok(());
        }
        let (r, _) = find(&REDIST_RD_REGIONS, offset, size)?;
        if r.kind == Kind::Waker {
            self.asleep[rd] = value & 2 != 0;
        }
        Ok(())
    }

    /// Read a per-interrupt register (`kind`) at byte `at` of its region, for the INTIDs
    /// `owned` says this frame holds (others read as zero).
    fn read_bits(&self, rd: Option<usize>, kind: Kind, at: u64, size: u64, owned: impl Fn(u32) -> bool) -> u64 {
        let vcpu = rd.unwrap_or(0);
        let (per, first) = per_irq(kind, at);
        let count = (size * 8 / per) as u32;
        let mut v = 0u64;
        for n in 0..count {
            let intid = first + n;
            let Some(irq) = self.irq(vcpu, intid).filter(|_| owned(intid)) else { continue };
            let field = match kind {
                Kind::Group => irq.group1 as u64,
                Kind::SetEnable | Kind::ClearEnable => irq.enabled as u64,
                Kind::SetPending | Kind::ClearPending => irq.pending() as u64,
                Kind::SetActive | Kind::ClearActive => (irq.active || irq.in_lr) as u64,
                Kind::Priority => irq.priority as u64,
                Kind::Config => (irq.edge as u64) << 1,
                _ => 0,
            };
            v |= field << (n as u64 * per);
        }
        v
    }

    /// Write a per-interrupt register.
    fn write_bits(
        &mut self,
        rd: Option<usize>,
        kind: Kind,
        at: u64,
        size: u64,
        value: u64,
        owned: impl Fn(u32) -> bool,
    ) {
        let vcpu = rd.unwrap_or(0);
        let (per, first) = per_irq(kind, at);
        let count = (size * 8 / per) as u32;
        for n in 0..count {
            let intid = first + n;
            let field = (value >> (n as u64 * per)) & ((1 << per) - 1);
            if !owned(intid) {
                continue;
            }
            let Some(irq) = self.irq_mut(vcpu, intid) else { continue };
            match kind {
                Kind::Group => irq.group1 = field != 0,
                Kind::SetEnable if field != 0 => irq.enabled = true,
                Kind::ClearEnable if field != 0 => irq.enabled = false,
                Kind::SetPending if field != 0 => irq.latch = true,
                Kind::ClearPending if field != 0 => irq.latch = false,
                Kind::SetActive if field != 0 => irq.active = true,
                Kind::ClearActive if field != 0 => irq.active = false,
                // Priorities keep the 5 bits the virtual CPU interface implements (ICH_VTR).
                Kind::Priority => irq.priority = (field as u8) & 0xf8,
                // SGIs are edge-triggered whatever is written.
                Kind::Config if intid >= 16 => irq.edge = field & 0b10 != 0,
                _ => {}
            }
            if kind == Kind::SetPending && field != 0 {
                self.mark(vcpu, intid);
            }
        }
    }

    // ------------------------------------------------------------------ interrupt sources

    /// The VMM sets the line of SPI `intid` (KVM_IRQ_LINE) to `level`: a rising edge latches
    /// an edge-triggered one; a level-triggered one is pending while the line is high.
    /// Returns the vCPU to kick if it may now have something to take.
    pub fn set_spi_line(&mut self, intid: u32, level: bool) -> Option<usize> {
        self.changed();
        if intid < PRIVATE as u32 {
            return None;
        }
        let irq = self.irq_mut(0, intid)?;
        irq.drive(level);
        if level {
            self.mark(0, intid);
        }
        let irq = self.irq(0, intid)?;
        let irq = *irq;
        self.target(&irq)
    }

    /// The same for private interrupt `intid` (16..32) of vCPU `vcpu` (a device's PPI).
    pub fn set_ppi_line(&mut self, vcpu: usize, intid: u32, level: bool) -> Option<usize> {
        self.changed_for(vcpu);
        if !(16..32).contains(&intid) {
            return None;
        }
        self.irq_mut(vcpu, intid)?.drive(level);
        if level {
            self.mark(vcpu, intid);
        }
        Some(vcpu)
    }

    /// vCPU `from` wrote `value` to ICC_SGI1R_EL1 (KCore's SGI exit): INTID (27:24) pending
    /// on every vCPU the TargetList (15:0, with RS 47:44 and Aff1-3) names, or on all but the
    /// sender when IRM (bit 40) is set. Returns the vCPUs to kick, as a bitmap.
    pub fn sgi(&mut self, from: usize, value: u64) -> u64 {
        let intid = ((value >> 24) & 0xf) as usize;
        let targets: u64 = if value & (1 << 40) != 0 {
            ((1u64 << self.vcpus) - 1) & !(1 << from)
        } else {
            let (aff1, aff2, aff3) = ((value >> 16) & 0xff, (value >> 32) & 0xff, (value >> 48) & 0xff);
            let rs = (value >> 44) & 0xf;
            if aff1 != 0 || aff2 != 0 || aff3 != 0 || rs != 0 {
                0 // every vCPU has Aff0 = its index and the rest 0
            } else {
                value & 0xffff & ((1u64 << self.vcpus) - 1)
            }
        };
        self.pend_sgi(intid, targets);
        targets
    }

    /// SGI `intid` becomes pending on each vCPU in the bitmap `targets`.
    fn pend_sgi(&mut self, intid: usize, targets: u64) {
        for v in 0..self.vcpus {
            if targets & (1 << v) != 0 {
                self.private[v][intid].latch = true;
                self.mark(v, intid as u32);
                self.changed_for(v);
            }
        }
    }

    // ------------------------------------------------------------------ delivery

    /// Can `irq` (INTID `intid`) be given to a vCPU now?
    fn deliverable(&self, intid: u32, irq: &Irq) -> bool {
        if intid == VTIMER_INTID {
            return false; // KCore's
        }
        let group_on = if irq.group1 { self.enable_grp1 } else { self.enable_grp0 };
        irq.enabled && irq.pending() && !irq.active && !irq.in_lr && group_on
    }

    /// Up to `free` interrupts for vCPU `vcpu`'s free list registers, most urgent first
    /// (lowest priority value, then lowest INTID). Each one is marked as given: an edge
    /// interrupt's pending state moves into the list register, a level one stays pending
    /// on its line until the guest deactivates it ([`Vgic::deactivated`]).
    pub fn take(&mut self, vcpu: usize, free: usize, out: &mut [Injection]) -> usize {
        if vcpu >= self.vcpus || self.idle[vcpu].get() == self.epoch {
            return 0;
        }
        let mut n = 0;
        while n < free.min(out.len()) {
            let mut best: Option<(u8, u32)> = None;
            for intid in self.candidates(vcpu) {
                let Some(irq) = self.irq(vcpu, intid) else { continue };
                let mine = intid < PRIVATE as u32 || self.target(irq) == Some(vcpu);
                if mine && self.deliverable(intid, irq) && best.is_none_or(|(p, _)| irq.priority < p) {
                    best = Some((irq.priority, intid));
                }
            }
            let Some((_, intid)) = best else {
                self.prune(vcpu);
                self.idle[vcpu].set(self.epoch); // nothing more until something changes
                break;
            };
            let irq = self.irq_mut(vcpu, intid).expect("found above");
            irq.in_lr = true;
            if irq.edge {
                irq.latch = false;
            }
            out[n] = Injection { intid, attrs: irq.priority as u64 | ((!irq.edge as u64) << 8) };
            n += 1;
        }
        n
    }

    /// KCore reports (VCPU_IRQ_STATE) that the guest on `vcpu` has finished with `intid`
    /// (its list register went invalid): it may be given again, at once if a level line is
    /// still high or a new edge came meanwhile.
    pub fn deactivated(&mut self, vcpu: usize, intid: u32) {
        self.changed_irq(vcpu, intid);
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            irq.in_lr = false;
        }
    }

    /// An interrupt [`Vgic::take`] gave could not be put in a list register after all: it is
    /// pending again, as before the take.
    pub fn untake(&mut self, vcpu: usize, intid: u32) {
        self.changed_irq(vcpu, intid);
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            if irq.in_lr && irq.edge {
                irq.latch = true;
            }
            irq.in_lr = false;
            self.mark(vcpu, intid);
        }
    }

    /// Does `vcpu` have an interrupt it could take (so a WFI should not sleep)?
    pub fn has_pending(&self, vcpu: usize) -> bool {
        if vcpu >= self.vcpus || self.idle[vcpu].get() == self.epoch {
            return false;
        }
        let any = self.candidates(vcpu).any(|intid| {
            self.irq(vcpu, intid).is_some_and(|irq| {
                (intid < PRIVATE as u32 || self.target(irq) == Some(vcpu)) && self.deliverable(intid, irq)
            })
        });
        if !any {
            self.idle[vcpu].set(self.epoch);
        }
        any
    }
}

/// The region holding `offset`, and the byte offset in it, if `size` is allowed there and
/// the access is naturally aligned.
fn find(regions: &[Region], offset: u64, size: u64) -> Result<(Region, u64), AccessError> {
    if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(size) {
        return Err(AccessError::BadAccess);
    }
    match regions.iter().find(|r| offset >= r.offset && offset < r.offset + r.len) {
        Some(r) if r.sizes & (size as u8) != 0 && offset + size <= r.offset + r.len => Ok((*r, offset - r.offset)),
        Some(_) => Err(AccessError::BadAccess),
        // Unallocated offsets in a GIC frame are reserved: read as zero, writes ignored.
        None => Ok((region(offset, size, 0xff, Kind::Raz), 0)),
    }
}

/// Bits per interrupt of a per-interrupt register kind, and the first INTID of byte `at`.
fn per_irq(kind: Kind, at: u64) -> (u64, u32) {
    let per = match kind {
        Kind::Priority => 8,
        Kind::Config => 2,
        _ => 1,
    };
    (per, (at * 8 / per) as u32)
}

#[cfg(test)]
impl Vgic {
    /// [`Vgic::has_pending`] the slow way, by a scan of every INTID: what the delivery
    /// shortcuts (idle memo, candidate bitmaps) are checked against, for both GIC models.
    pub(crate) fn pending_by_scan(&self, vcpu: usize) -> bool {
        (0..self.nr_irqs.min(1020) as u32).any(|intid| {
            self.irq(vcpu, intid).is_some_and(|irq| {
                (intid < PRIVATE as u32 || self.target(irq) == Some(vcpu)) && self.deliverable(intid, irq)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gic() -> Vgic {
        let mut g = Vgic::new(4, 128).unwrap();
        g.dist_write(0, 4, 0b10).unwrap(); // EnableGrp1
        g
    }

    #[test]
    fn identification() {
        let g = gic();
        assert_eq!(g.dist_read(0, 4), Ok(0b101_0010), "ARE and DS set, group 1 enabled");
        let typer = g.dist_read(4, 4).unwrap();
        assert_eq!(typer & 0x1f, 3, "128 lines");
        assert_eq!((typer >> 19) & 0x1f, 9, "10-bit INTIDs");
        assert_eq!(g.dist_read(0xffe8, 4), Ok(0x3b));
        assert_eq!(g.redist_read(2, 8, 8), Ok((2 << 32) | (2 << 8)));
        assert_eq!(g.redist_read(3, 8, 4), Ok((3 << 8) | (1 << 4)), "the last one says so");
        assert_eq!(g.redist_read(3, 0xc, 4), Ok(3), "affinity in the upper word");
        assert_eq!(g.redist_read(4, 8, 8), Err(AccessError::BadAccess), "no fifth vCPU");
        assert_eq!(Vgic::new(0, 64).map(|_| ()), None);
        assert_eq!(Vgic::new(2, 100).map(|_| ()), None);
        assert_eq!(Vgic::new(9, 64).map(|_| ()), None);
    }

    #[test]
    fn waking_a_redistributor() {
        let mut g = gic();
        assert_eq!(g.redist_read(1, 0x14, 4), Ok(0b110));
        g.redist_write(1, 0x14, 4, 0).unwrap();
        assert_eq!(g.redist_read(1, 0x14, 4), Ok(0));
    }

    #[test]
    fn set_and_clear_registers_only_touch_the_bits_written() {
        let mut g = gic();
        g.dist_write(0x104, 4, 0b101).unwrap(); // ISENABLER1: SPIs 32 and 34
        assert_eq!(g.dist_read(0x104, 4), Ok(0b101));
        g.dist_write(0x184, 4, 0b001).unwrap(); // ICENABLER1: 32 off
        assert_eq!(g.dist_read(0x104, 4), Ok(0b100));
        // INTIDs 0-31 belong to the redistributors under affinity routing.
        g.dist_write(0x100, 4, u64::from(u32::MAX)).unwrap();
        assert_eq!(g.dist_read(0x100, 4), Ok(0));
        g.redist_write(1, 0x1_0100, 4, 1 << 27).unwrap();
        assert_eq!(g.redist_read(1, 0x1_0100, 4), Ok(1 << 27));
        assert_eq!(g.redist_read(0, 0x1_0100, 4), Ok(0), "banked per vCPU");
        // Lines beyond NR_IRQS are not there.
        g.dist_write(0x110, 4, u64::from(u32::MAX)).unwrap(); // INTIDs 128-159
        assert_eq!(g.dist_read(0x110, 4), Ok(0));
        g.dist_write(0x10c, 4, u64::from(u32::MAX)).unwrap(); // 96-127: the last implemented
        assert_eq!(g.dist_read(0x10c, 4), Ok(u64::from(u32::MAX)));
    }

    #[test]
    fn priorities_are_bytes_and_config_is_two_bits() {
        let mut g = gic();
        g.dist_write(0x420, 1, 0xa5).unwrap(); // IPRIORITYR of INTID 32
        assert_eq!(g.dist_read(0x420, 4), Ok(0xa0), "5 priority bits");
        g.dist_write(0x420, 4, 0x8070_6050).unwrap();
        assert_eq!(g.dist_read(0x423, 1), Ok(0x80));
        assert_eq!(g.dist_read(0x421, 2), Err(AccessError::BadAccess), "halfwords not allowed");
        g.dist_write(0xc08, 4, 0b10 << 2).unwrap(); // ICFGR2: INTID 33 edge
        assert!(g.irq(0, 33).unwrap().edge && !g.irq(0, 32).unwrap().edge);
        g.redist_write(0, 0x1_0c00, 4, 0).unwrap(); // SGIs stay edge
        assert!(g.irq(0, 3).unwrap().edge);
    }

    #[test]
    fn routing() {
        let mut g = gic();
        g.dist_write(0x6100 + 8 * 8, 8, 2 | (1 << 31)).unwrap(); // IROUTER40 -> vCPU 2, IRM ignored
        assert_eq!(g.dist_read(0x6140, 8), Ok(2));
        g.dist_write(0x6144, 4, 0x7).unwrap(); // upper half: Aff3 = 7
        assert_eq!(g.dist_read(0x6140, 8), Ok((7 << 32) | 2));
        g.dist_write(0x6140, 4, 3).unwrap();
        assert_eq!(g.dist_read(0x6140, 8), Ok((7 << 32) | 3));
        assert_eq!(g.dist_read(0x6141, 4), Err(AccessError::BadAccess), "unaligned");
    }

    fn enable(g: &mut Vgic, intid: u32, prio: u64) {
        g.dist_write(0x80 + 4 * (intid as u64 / 32), 4, u64::from(u32::MAX)).unwrap();
        g.dist_write(0x100 + 4 * (intid as u64 / 32), 4, 1 << (intid % 32)).unwrap();
        g.dist_write(0x400 + intid as u64, 1, prio).unwrap();
    }

    #[test]
    fn a_refused_injection_leaves_the_interrupt_pending() {
        let mut g = gic();
        g.redist_write(1, 0x1_0080, 4, 1 << 2).unwrap(); // SGI 2: group 1
        g.redist_write(1, 0x1_0100, 4, 1 << 2).unwrap(); // enabled on vCPU 1
        g.sgi(0, (2 << 24) | 0b10);
        let mut out = [Injection { intid: 0, attrs: 0 }; 1];
        assert_eq!(g.take(1, 1, &mut out), 1);
        assert!(!g.has_pending(1), "taken: its pending state went with it");
        g.untake(1, 2);
        assert!(g.has_pending(1), "an edge is pending again");
        assert_eq!(g.take(1, 1, &mut out), 1);
        assert_eq!(out[0].intid, 2);
    }

    #[test]
    fn an_idle_answer_lasts_only_until_something_changes() {
        let mut g = gic();
        enable(&mut g, 40, 0xa0);
        let mut out = [Injection { intid: 0, attrs: 0 }; 1];
        assert!(!g.has_pending(0) && g.take(0, 1, &mut out) == 0, "nothing yet: remembered");
        assert_eq!(g.set_spi_line(40, true), Some(0));
        assert!(g.has_pending(0), "a line forgets it");
        assert_eq!(g.take(0, 1, &mut out), 1);
        assert!(!g.has_pending(0));
        g.redist_write(1, 0x1_0080, 4, 1 << 3).unwrap(); // SGI 3: group 1
        g.redist_write(1, 0x1_0100, 4, 1 << 3).unwrap();
        assert!(!g.has_pending(1));
        assert!(!g.has_pending(0) && !g.has_pending(2));
        g.sgi(0, (3 << 24) | 0b10);
        assert!(g.has_pending(1), "an SGI forgets it");
        assert_eq!(g.idle[0].get(), g.epoch, "but only for its target: vCPU 0 still knows it is idle");
        assert_eq!(g.idle[2].get(), g.epoch, "and so does vCPU 2");
        g.deactivated(0, 40);
        assert!(g.has_pending(0), "a deactivation with the line still high forgets it");
    }

    #[test]
    fn the_virtual_timer_is_never_given() {
        let mut g = gic();
        g.redist_write(0, 0x1_0080, 4, 1 << VTIMER_INTID).unwrap(); // group 1
        g.redist_write(0, 0x1_0100, 4, 1 << VTIMER_INTID).unwrap(); // enabled
        g.redist_write(0, 0x1_0200, 4, 1 << VTIMER_INTID).unwrap(); // ISPENDR0: pending
        let mut out = [Injection { intid: 0, attrs: 0 }; 1];
        assert!(!g.has_pending(0) && g.take(0, 1, &mut out) == 0, "KCore delivers 27");
    }

    #[test]
    fn level_interrupts_stay_pending_until_deactivated_and_the_line_drops() {
        let mut g = gic();
        enable(&mut g, 40, 0xa0);
        assert_eq!(g.set_spi_line(40, true), Some(0));
        let mut out = [Injection { intid: 0, attrs: 0 }; 4];
        assert_eq!(g.take(0, 4, &mut out), 1);
        assert_eq!(out[0], Injection { intid: 40, attrs: 0x1a0 }, "level: EOI tracked");
        assert_eq!(g.take(0, 4, &mut out), 0, "in a list register already");
        g.deactivated(0, 40);
        assert_eq!(g.take(0, 4, &mut out), 1, "line still high: given again");
        g.set_spi_line(40, false);
        g.deactivated(0, 40);
        assert_eq!(g.take(0, 4, &mut out), 0);
        assert!(!g.has_pending(0));
    }

    #[test]
    fn edges_latch_once_and_go_by_priority() {
        let mut g = gic();
        for (intid, prio) in [(40, 0xa0), (41, 0x20), (42, 0x60)] {
            enable(&mut g, intid, prio);
            g.dist_write(0xc08, 4, 0b10_10_10 << 16).unwrap(); // 40-42 edge
        }
        for intid in [40, 41, 42] {
            g.set_spi_line(intid, true);
            g.set_spi_line(intid, false);
        }
        let mut out = [Injection { intid: 0, attrs: 0 }; 2];
        assert_eq!(g.take(0, 2, &mut out), 2, "two list registers free");
        assert_eq!((out[0].intid, out[1].intid), (41, 42), "most urgent first");
        assert_eq!(out[0].attrs, 0x20, "edge: no EOI tracking");
        assert!(g.has_pending(0), "40 waits for a free list register");
        assert_eq!(g.take(0, 2, &mut out), 1);
        assert_eq!(out[0].intid, 40);
        g.deactivated(0, 41);
        assert_eq!(g.take(0, 2, &mut out), 0, "an edge is not re-latched by deactivation");
    }

    #[test]
    fn nothing_is_given_while_disabled_or_unrouted() {
        let mut g = gic();
        let mut out = [Injection { intid: 0, attrs: 0 }; 4];
        g.set_spi_line(50, true);
        assert_eq!(g.take(0, 4, &mut out), 0, "disabled");
        enable(&mut g, 50, 0x80);
        g.dist_write(0x6100 + 8 * 18, 8, 1).unwrap(); // to vCPU 1
        assert_eq!(g.take(0, 4, &mut out), 0, "not vCPU 0's");
        assert_eq!(g.take(1, 4, &mut out), 1);
        g.deactivated(1, 50);
        g.dist_write(0x6100 + 8 * 18, 8, 1 << 8).unwrap(); // Aff1 = 1: no such vCPU
        assert_eq!(g.take(1, 4, &mut out), 0);
        g.dist_write(0x6100 + 8 * 18, 8, 1).unwrap();
        g.dist_write(0, 4, 0).unwrap(); // distributor's group 1 off
        assert_eq!(g.take(1, 4, &mut out), 0);
    }

    #[test]
    fn sgis_reach_the_targets_named() {
        let mut g = gic();
        for v in 0..4 {
            g.redist_write(v, 0x1_0080, 4, u64::from(u32::MAX)).unwrap();
            g.redist_write(v, 0x1_0100, 4, 0xffff).unwrap();
        }
        assert_eq!(g.sgi(0, (5 << 24) | 0b1010), 0b1010, "TargetList: vCPUs 1 and 3");
        let mut out = [Injection { intid: 0, attrs: 0 }; 4];
        assert_eq!(g.take(1, 4, &mut out), 1);
        assert_eq!(out[0].intid, 5);
        assert_eq!(g.take(2, 4, &mut out), 0);
        assert_eq!(g.sgi(2, (1 << 40) | (7 << 24)), 0b1011, "IRM: everyone but the sender");
        assert_eq!(g.sgi(0, (1 << 16) | (3 << 24) | 1), 0, "Aff1 = 1 names no vCPU");
        assert_eq!(g.sgi(0, (3 << 24) | 0xff00), 0, "targets beyond the vCPUs are ignored");
    }

    #[test]
    fn bad_accesses_are_refused_and_reserved_space_reads_zero() {
        let mut g = gic();
        assert_eq!(g.dist_read(0x0, 8), Err(AccessError::BadAccess));
        assert_eq!(g.dist_read(0x2, 4), Err(AccessError::BadAccess));
        assert_eq!(g.dist_read(0x0, 3), Err(AccessError::BadAccess));
        assert_eq!(g.dist_read(0x5000, 4), Ok(0));
        assert_eq!(g.dist_write(0x5000, 4, 1), Ok(()));
        assert_eq!(g.redist_read(0, 0x1_0400, 8), Err(AccessError::BadAccess));
    }

    /// The delivery shortcuts (the idle memo, the candidate bitmaps) never change an
    /// answer: after any sequence of register writes, lines, SGIs, takes and deactivations,
    /// `has_pending` agrees with a scan of every INTID.
    mod shortcuts {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Dist(u64, u64),
            Redist(usize, u64, u64),
            Spi(u32, bool),
            Sgi(usize, u64),
            Take(usize),
            Done(usize, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            // Enable, pending, active, group and route registers, with few INTIDs.
            let dist = prop_oneof![
                Just(0x84u64),
                Just(0x104),
                Just(0x184),
                Just(0x204),
                Just(0x284),
                Just(0x304),
                Just(0x6140),
                Just(0xc08),
                Just(0)
            ];
            let redist = prop_oneof![Just(0x1_0080u64), Just(0x1_0100), Just(0x1_0180), Just(0x1_0200), Just(0x1_0280)];
            prop_oneof![
                (dist, 0u64..16).prop_map(|(o, v)| Op::Dist(o, if o == 0 { 0x12 } else { v | v << 8 })),
                (0usize..3, redist, 0u64..16).prop_map(|(r, o, v)| Op::Redist(r, o, v | v << 26)),
                (32u32..48, any::<bool>()).prop_map(|(i, l)| Op::Spi(i, l)),
                (0usize..3, 0u64..8, 0u64..4).prop_map(|(f, t, i)| Op::Sgi(f, (i << 24) | t)),
                (0usize..3).prop_map(Op::Take),
                (0usize..3, prop_oneof![0u32..4, 26u32..30, 32u32..48]).prop_map(|(v, i)| Op::Done(v, i)),
            ]
        }

        proptest! {
            #[test]
            fn has_pending_agrees_with_a_full_scan(ops in prop::collection::vec(op(), 1..60)) {
                let mut g = Vgic::new(3, 64).unwrap();
                // Group 1 on and every interrupt in it, so enables and pending bits matter.
                g.dist_write(0, 4, 0x12).unwrap();
                g.dist_write(0x84, 4, u64::from(u32::MAX)).unwrap();
                for r in 0..3 {
                    g.redist_write(r, 0x1_0080, 4, u64::from(u32::MAX)).unwrap();
                }
                for o in ops {
                    match o {
                        Op::Dist(off, v) => { let _ = g.dist_write(off, 4, v); }
                        Op::Redist(r, off, v) => { let _ = g.redist_write(r, off, 4, v); }
                        Op::Spi(i, l) => { g.set_spi_line(i, l); }
                        Op::Sgi(f, v) => { g.sgi(f, v); }
                        Op::Take(v) => { let mut out = [Injection { intid: 0, attrs: 0 }; 2]; g.take(v, 2, &mut out); }
                        Op::Done(v, i) => g.deactivated(v, i),
                    }
                    for v in 0..3 {
                        prop_assert_eq!(g.has_pending(v), g.pending_by_scan(v), "vCPU {}", v);
                    }
                }
            }
        }
    }
}
