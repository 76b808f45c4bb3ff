//! The GICv2 distributor (GIC architecture specification v2, IHI 0048, 4.1 and 4.3), for guests
//! on a GICv2 machine. Their CPU interface is KCore's: the GICv2 virtual CPU interface (GICV)
//! mapped in the guest's stage-2, whose accesses never reach the host. So the host emulates only
//! this 4 KiB frame, from the guest's MMIO exits, with the same interrupt state and delivery
//! as the GICv3 model ([`Vgic`]); what differs:
//!
//! - The banked registers (private interrupts 0-31) are in the distributor itself: every
//!   access names the vCPU that makes it.
//! - SPIs are routed by GICD_ITARGETSR, a byte of CPU targets each (4.3.12); the model keeps
//!   it in [`super::Irq::route`]. GICv2 gives an SPI with several targets to whichever takes
//!   it first; here it goes to the lowest-numbered one. With one vCPU the registers are
//!   RAZ/WI and every SPI is its (as in a uniprocessor GIC).
//! - SGIs are GICD_SGIR writes (4.3.15), not SGI exits. Their source CPU is not kept (the list
//!   register ABI has no field for it: `docs/ABI.md`), so GICD_SPENDSGIR reads a pending SGI
//!   as from CPU 0.
//! - No security extensions, and every interrupt is group 0 (IGROUPR RAZ/WI, GICD_CTLR bit 0
//!   alone): KCore delivers virtual interrupts as group 0, which a GICv2 guest takes as IRQs.

use super::{AccessError, IIDR, Irq, Kind, PRIVATE, Region, Vgic, W8_32, W32, find, region};

/// Size of the GICv2 distributor's register frame.
pub const DIST_SIZE: u64 = 0x1000;

/// GICD_PIDR2 of a GICv2: ArchRev 2 (bits 7:4), JEP106 bits.
pub const PIDR2: u64 = 0x2b;

/// The GICv2 distributor's registers (4.1.2, table 4-1). Unlisted offsets are reserved
/// (read as zero, writes ignored).
pub const DIST_REGIONS: [Region; 17] = [
    region(0x000, 4, W32, Kind::DistCtlr),
    region(0x004, 4, W32, Kind::DistTyper),
    region(0x008, 4, W32, Kind::Iidr),
    region(0x080, 0x80, W32, Kind::Group),
    region(0x100, 0x80, W32, Kind::SetEnable),
    region(0x180, 0x80, W32, Kind::ClearEnable),
    region(0x200, 0x80, W32, Kind::SetPending),
    region(0x280, 0x80, W32, Kind::ClearPending),
    region(0x300, 0x80, W32, Kind::SetActive),
    region(0x380, 0x80, W32, Kind::ClearActive),
    region(0x400, 0x400, W8_32, Kind::Priority),
    region(0x800, 0x400, W8_32, Kind::Targets),
    region(0xc00, 0x100, W32, Kind::Config),
    region(0xf00, 4, W32, Kind::Sgir),
    region(0xf10, 0x10, W8_32, Kind::SgiClearPending),
    region(0xf20, 0x10, W8_32, Kind::SgiSetPending),
    region(0xfe8, 4, W32, Kind::Pidr2),
];

impl Vgic {
    /// A GICv2 distributor for `vcpus` vCPUs (at most 8, GICv2's limit) and `nr_irqs` lines,
    /// reset as [`Vgic::new`] says, every interrupt in group 0 and no SPI targeted.
    pub fn new_v2(vcpus: usize, nr_irqs: usize) -> Option<Vgic> {
        let mut g = Vgic::new(vcpus, nr_irqs)?;
        g.v2 = true;
        Some(g)
    }

    /// [`Vgic::reset_in_place`] for a GICv2 distributor.
    pub fn reset_in_place_v2(&mut self, vcpus: usize, nr_irqs: usize) -> bool {
        let ok = self.reset_in_place(vcpus, nr_irqs);
        self.v2 = ok;
        ok
    }

    /// The vCPU an SPI goes to under GICv2 routing (see the module's notes).
    pub(super) fn target_v2(&self, irq: &Irq) -> Option<usize> {
        if self.vcpus == 1 {
            return Some(0);
        }
        let t = irq.route & ((1 << self.vcpus) - 1);
        (t != 0).then(|| t.trailing_zeros() as usize)
    }

    /// The vCPUs that exist, as a bitmap.
    fn all_vcpus(&self) -> u64 {
        (1 << self.vcpus) - 1
    }

    /// A read by vCPU `vcpu` of `size` bytes at `offset` in the distributor's frame.
    pub fn dist_v2_read(&self, vcpu: usize, offset: u64, size: u64) -> Result<u64, AccessError> {
        if !self.v2 || vcpu >= self.vcpus || offset >= DIST_SIZE {
            return Err(AccessError::BadAccess);
        }
        let (r, at) = find(&DIST_REGIONS, offset, size)?;
        let bytes = |f: &dyn Fn(u32) -> u64| (0..size).fold(0u64, |v, n| v | (f((at + n) as u32) & 0xff) << (8 * n));
        Ok(match r.kind {
            // Bit 0: forwarding of group 0, the only group (4.3.1).
            Kind::DistCtlr => self.enable_grp0 as u64,
            // ITLinesNumber (4:0), CPUNumber (7:5), no security extensions (4.3.2).
            Kind::DistTyper => (self.nr_irqs as u64 / 32 - 1) | ((self.vcpus as u64 - 1) << 5),
            Kind::Iidr => IIDR,
            Kind::Pidr2 => PIDR2,
            Kind::Group | Kind::Sgir | Kind::Raz => 0,
            // Private interrupts: the reading CPU alone, read-only; RAZ on a uniprocessor
            // (4.3.12). SPIs: their target byte.
            Kind::Targets => bytes(&|intid| match self.irq(vcpu, intid) {
                _ if self.vcpus == 1 => 0,
                Some(_) if intid < PRIVATE as u32 => 1 << vcpu,
                Some(irq) => irq.route,
                None => 0,
            }),
            Kind::SgiSetPending | Kind::SgiClearPending => {
                bytes(&|sgi| self.irq(vcpu, sgi).is_some_and(|i| i.latch) as u64)
            }
            k => self.read_bits(Some(vcpu), k, at, size, |_| true),
        })
    }

    /// A write by vCPU `vcpu` of `value` (`size` bytes) at `offset` in the distributor's
    /// frame. Returns the vCPUs an SGI was sent to (a GICD_SGIR write), as a bitmap.
    pub fn dist_v2_write(&mut self, vcpu: usize, offset: u64, size: u64, value: u64) -> Result<u64, AccessError> {
        self.changed();
        if !self.v2 || vcpu >= self.vcpus || offset >= DIST_SIZE {
            return Err(AccessError::BadAccess);
        }
        let (r, at) = find(&DIST_REGIONS, offset, size)?;
        let byte = |n: u64| (value >> (8 * n)) & 0xff;
        match r.kind {
            Kind::DistCtlr => {
                self.enable_grp0 = value & 1 != 0;
                self.enable_grp1 = false;
            }
            Kind::Targets if self.vcpus > 1 => {
                let mask = self.all_vcpus();
                for n in 0..size {
                    let intid = (at + n) as u32;
                    if intid < PRIVATE as u32 {
                        continue; // read-only
                    }
                    if let Some(irq) = self.irq_mut(vcpu, intid) {
                        // Bits for CPU interfaces that do not exist are RAZ/WI.
                        irq.route = byte(n) & mask;
                    }
                }
            }
            Kind::Sgir => return Ok(self.sgi_v2(vcpu, value)),
            Kind::SgiSetPending | Kind::SgiClearPending => {
                for n in 0..size {
                    let sgi = (at + n) as usize;
                    if byte(n) == 0 {
                        continue;
                    }
                    if r.kind == Kind::SgiSetPending {
                        self.pend_sgi(sgi, 1 << vcpu);
                    } else {
                        self.private[vcpu][sgi].latch = false;
                    }
                }
            }
            // SGIs' pending state is set and cleared through the SGI registers alone
            // (4.3.7, 4.3.8).
            k @ (Kind::SetPending | Kind::ClearPending) => self.write_bits(Some(vcpu), k, at, size, value, |i| i >= 16),
            Kind::Group | Kind::Targets | Kind::DistTyper | Kind::Iidr | Kind::Pidr2 | Kind::Raz => {}
            k => self.write_bits(Some(vcpu), k, at, size, value, |_| true),
        }
        Ok(0)
    }

    /// vCPU `from` wrote `value` to GICD_SGIR (4.3.15): SGI `SGIINTID` (3:0) pending on the
    /// vCPUs `TargetListFilter` (25:24) picks: those in `CPUTargetList` (23:16), all but the
    /// sender, or the sender alone (0b11 is reserved: none). Returns them, as a bitmap.
    pub fn sgi_v2(&mut self, from: usize, value: u64) -> u64 {
        if from >= self.vcpus {
            return 0;
        }
        let targets = match (value >> 24) & 0b11 {
            0 => (value >> 16) & 0xff & self.all_vcpus(),
            1 => self.all_vcpus() & !(1 << from),
            2 => 1 << from,
            _ => 0,
        };
        self.pend_sgi((value & 0xf) as usize, targets);
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::super::Injection;
    use super::*;

    fn gic() -> Vgic {
        let mut g = Vgic::new_v2(4, 128).unwrap();
        g.dist_v2_write(0, 0, 4, 1).unwrap(); // GICD_CTLR.Enable
        g
    }

    fn take(g: &mut Vgic, vcpu: usize) -> Option<u32> {
        let mut out = [Injection { intid: 0, attrs: 0 }];
        (g.take(vcpu, 1, &mut out) == 1).then_some(out[0].intid)
    }

    #[test]
    fn identification() {
        let g = gic();
        assert_eq!(g.dist_v2_read(0, 0, 4), Ok(1));
        assert_eq!(g.dist_v2_read(0, 4, 4), Ok(3 | (3 << 5)), "128 lines, 4 CPUs, no security extensions");
        assert_eq!(g.dist_v2_read(0, 0xfe8, 4), Ok(0x2b), "ArchRev 2");
        assert_eq!(g.dist_v2_read(4, 0, 4), Err(AccessError::BadAccess), "no fifth vCPU");
        assert_eq!(g.dist_v2_read(0, 0x1000, 4), Err(AccessError::BadAccess), "4 KiB frame");
        assert_eq!(Vgic::new(2, 64).unwrap().dist_v2_read(0, 0, 4), Err(AccessError::BadAccess), "a GICv3");
        assert_eq!(g.dist_v2_read(0, 0xd00, 4), Ok(0), "reserved");
    }

    #[test]
    fn private_registers_are_banked_per_vcpu() {
        let mut g = gic();
        g.dist_v2_write(1, 0x100, 4, 1 << 27).unwrap(); // ISENABLER0 on vCPU 1
        assert_eq!(g.dist_v2_read(1, 0x100, 4), Ok(1 << 27));
        assert_eq!(g.dist_v2_read(0, 0x100, 4), Ok(0));
        // ITARGETSR0-7 read as the reading CPU, whatever is written.
        assert_eq!(g.dist_v2_read(2, 0x800, 4), Ok(0x0404_0404));
        g.dist_v2_write(2, 0x81c, 4, 0xffff_ffff).unwrap();
        assert_eq!(g.dist_v2_read(2, 0x81c, 4), Ok(0x0404_0404));
        // Group registers are RAZ/WI: everything is group 0.
        g.dist_v2_write(0, 0x84, 4, u64::from(u32::MAX)).unwrap();
        assert_eq!(g.dist_v2_read(0, 0x84, 4), Ok(0));
    }

    #[test]
    fn spis_go_to_their_target() {
        let mut g = gic();
        g.dist_v2_write(0, 0x104, 4, 1 << 8).unwrap(); // ISENABLER1: SPI 40
        g.dist_v2_write(0, 0x828, 1, 0xf4).unwrap(); // ITARGETSR10, byte 0: SPI 40 -> CPU 2
        assert_eq!(g.dist_v2_read(3, 0x828, 4), Ok(0x04), "CPUs 4-7 do not exist");
        assert_eq!(g.set_spi_line(40, true), Some(2));
        assert_eq!(take(&mut g, 0), None);
        assert_eq!(take(&mut g, 2), Some(40));
        g.set_spi_line(40, false);
        g.deactivated(2, 40);
        g.dist_v2_write(0, 0x828, 4, 0).unwrap();
        assert_eq!(g.set_spi_line(40, true), None, "no target: nowhere");
        g.dist_v2_write(0, 0x828, 4, 0b1010).unwrap();
        assert_eq!(take(&mut g, 1), Some(40), "several targets: the lowest");
        g.dist_v2_write(0, 0, 4, 0).unwrap(); // distributor off
        g.deactivated(1, 40);
        assert_eq!(take(&mut g, 1), None);
    }

    #[test]
    fn a_single_vcpu_gets_every_spi() {
        let mut g = Vgic::new_v2(1, 64).unwrap();
        g.dist_v2_write(0, 0, 4, 1).unwrap();
        g.dist_v2_write(0, 0x104, 4, 1 << 1).unwrap(); // SPI 33
        assert_eq!(g.dist_v2_read(0, 0x820, 4), Ok(0), "RAZ on a uniprocessor");
        assert_eq!(g.set_spi_line(33, true), Some(0));
        assert_eq!(take(&mut g, 0), Some(33));
    }

    #[test]
    fn sgir_names_its_targets() {
        let mut g = gic();
        for v in 0..4 {
            g.dist_v2_write(v, 0x100, 4, 0xffff).unwrap();
        }
        assert_eq!(g.dist_v2_write(0, 0xf00, 4, (0b1010 << 16) | 5), Ok(0b1010));
        assert_eq!(take(&mut g, 1), Some(5));
        assert_eq!(take(&mut g, 2), None);
        assert_eq!(g.dist_v2_read(3, 0xf25, 1), Ok(1), "SPENDSGIR1 byte 1: SGI 5 pending (source 0)");
        g.dist_v2_write(3, 0xf14, 4, 0xff00).unwrap(); // CPENDSGIR1 byte 1: SGI 5
        assert_eq!(take(&mut g, 3), None);
        assert_eq!(g.sgi_v2(2, 1 << 24), 0b1011, "all but the sender");
        assert_eq!(g.sgi_v2(2, 2 << 24), 0b0100, "the sender alone");
        assert_eq!(g.sgi_v2(2, 3 << 24), 0, "reserved filter");
        assert_eq!(g.sgi_v2(0, 0xf0 << 16), 0, "CPUs 4-7 do not exist");
        g.dist_v2_write(1, 0xf20, 4, 1 << 16).unwrap(); // SPENDSGIR0 byte 2: SGI 2 on vCPU 1
        g.deactivated(1, 5);
        assert_eq!(take(&mut g, 1), Some(0), "SGI 0 from the all-but-the-sender write first");
        assert_eq!(take(&mut g, 1), Some(2));
        // SGIs' ISPENDR0 bits are write-ignored.
        g.dist_v2_write(1, 0x200, 4, 1).unwrap();
        assert_eq!(g.dist_v2_read(1, 0x200, 4).map(|v| v & 1), Ok(0), "SGI 0 of vCPU 1 is in a list register");
    }

    /// The delivery shortcuts (idle memo, candidate bitmaps) give the same answers under
    /// GICv2 routing and SGIs: after any sequence of distributor writes (targets and SGIR
    /// among them), lines, takes and deactivations, `has_pending` agrees with a full scan.
    mod shortcuts {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Dist(usize, u64, u64),
            Spi(u32, bool),
            Take(usize),
            Done(usize, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            let dist = prop_oneof![
                Just(0u64),
                Just(0x100),
                Just(0x104),
                Just(0x184),
                Just(0x204),
                Just(0x284),
                Just(0x304),
                Just(0x828),
                Just(0x82c),
                Just(0xc08),
                Just(0xf00),
                Just(0xf10),
                Just(0xf20)
            ];
            prop_oneof![
                (0usize..3, dist, any::<u32>()).prop_map(|(v, o, x)| Op::Dist(v, o, u64::from(x))),
                (32u32..48, any::<bool>()).prop_map(|(i, l)| Op::Spi(i, l)),
                (0usize..3).prop_map(Op::Take),
                (0usize..3, prop_oneof![0u32..4, 32u32..48]).prop_map(|(v, i)| Op::Done(v, i)),
            ]
        }

        proptest! {
            #[test]
            fn has_pending_agrees_with_a_full_scan(ops in prop::collection::vec(op(), 1..60)) {
                let mut g = Vgic::new_v2(3, 64).unwrap();
                g.dist_v2_write(0, 0, 4, 1).unwrap();
                for o in ops {
                    match o {
                        Op::Dist(v, off, x) => { let _ = g.dist_v2_write(v, off, 4, x); }
                        Op::Spi(i, l) => { g.set_spi_line(i, l); }
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

    #[test]
    fn bad_accesses_are_refused() {
        let mut g = gic();
        assert_eq!(g.dist_v2_read(0, 0x2, 4), Err(AccessError::BadAccess));
        assert_eq!(g.dist_v2_read(0, 0x0, 8), Err(AccessError::BadAccess));
        assert_eq!(g.dist_v2_read(0, 0x100, 1), Err(AccessError::BadAccess), "enables are words");
        assert_eq!(g.dist_v2_write(0, 0xf00, 2, 0), Err(AccessError::BadAccess));
        assert_eq!(g.dist_v2_write(9, 0x0, 4, 0), Err(AccessError::BadAccess));
        assert_eq!(g.dist_v2_read(0, 0x402, 2), Err(AccessError::BadAccess), "halfwords not allowed");
    }
}
