//! The GICv2 virtual CPU interface end to end on the simulated machine, with the expected
//! register values written out (GIC architecture v2, 5.3): KCore keeps GICH and GICV from the
//! host, a vCPU's first run maps GICV at the guest's GICC window, the world switch loads and
//! saves the list registers through GICH in their GICv2 layout while the host's ABI keeps the
//! GICv3 layout, the guest's timer lands in the timer's list register, and none of the GICv3
//! system registers is touched on the way.

mod common;

use common::*;
use kcore::error::Error;
use kcore::invariants::{self, Violation};
use kcore::kcore::KCore;
use kcore::machine::SysReg;
use kcore::machine::sim::SimMachine;
use kcore::vcpu::ctxtswitch::HostCtxt;
use kcore::vcpu::vcpuops::{Exit, ExitAction, Trap};
use kcore::vcpu::vcpuopsaux::PageRegs;
use kcore::vcpu::vgic::{GUEST_GICC, gich};
use kcore::vcpu::{LR_HOST_VISIBLE, pending_lr, pending_lr_with, slot};

const LOAD: u64 = 0x8000_0000;
const LEN: u64 = 4096;
/// QEMU virt's GICv2 virtual interface frames.
const GICH: u64 = 0x0803_0000;
const GICV: u64 = 0x0804_0000;

/// A verified VM with one vCPU on a GICv2 machine, `pool` pages donated to its pool (the
/// vCPU's page and the image's two tables below the 40-bit level-1 root take 3).
fn setup_with(pool: u64) -> (KCore<SimMachine>, u16) {
    let (k, kp) = bare_kcore();
    k.configure_gic_v2((GICH, GICH + 0x1_0000), (GICV, GICV + 0x1_0000)).unwrap();
    let img: Vec<u8> = (0..LEN).map(|i| (i * 7) as u8).collect();
    let sig = sign_image(&kp, LOAD, &img);
    let w = |pfn: u64, b: &[u8]| write_bytes(&k, pfn, b);
    w(P0 + 10, &sig);
    w(P0 + 11, &img);
    let vmid = k.register_vm(P0 + 20).unwrap();
    for i in 0..pool {
        k.mem().donate_to_pool(vmid, P0 + 22 + i).unwrap();
    }
    k.register_vcpu(vmid as u64, 0).unwrap();
    k.set_boot_info(vmid as u64, LOAD, LEN, P0 + 10).unwrap();
    k.map_image_page(vmid as u64, 0, 0, P0 + 11).unwrap();
    k.verify_vm(vmid as u64).unwrap();
    (k, vmid)
}

fn setup() -> (KCore<SimMachine>, u16) {
    setup_with(12)
}

/// The GICv3 CPU-interface registers, each set to a sentinel the GICv2 path must leave alone.
const V3_REGS: [SysReg; 8] = [
    SysReg::IccSreEl1,
    SysReg::IchHcrEl2,
    SysReg::IchVmcrEl2,
    SysReg::IchLr0El2,
    SysReg::IchLr3El2,
    SysReg::IchAp0r0El2,
    SysReg::IchAp1r0El2,
    SysReg::IchVtrEl2,
];

#[test]
fn gicv2_world_switch_guest_cpu_interface_and_host_view() {
    let (k, vmid) = setup();
    for (i, r) in V3_REGS.iter().enumerate() {
        k.m.set_sysreg(0, *r, 0x5e00 + i as u64);
    }
    // The host queues a level SPI 42 at priority 0x80 and an edge SPI 33.
    k.inject_irq_with(vmid as u64, 0, 42, 0x180).unwrap();
    k.inject_irq_with(vmid as u64, 0, 33, 0xa0).unwrap();
    let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
    page.set(&k.m, slot::VMCR, 0xf800_0001); // what the guest left: PMR 0xf8, group 0 on
    page.set(&k.m, slot::APRS, 0x10);
    let mut host = HostCtxt::new();
    k.switch_to_guest(vmid, 0, &page, &mut host);

    // GICH_LR<n>: State 29:28 = pending, Priority 27:23 = the top five bits, EOI (bit 19) for
    // the level interrupt, VirtualID 9:0; group 0, HW clear.
    assert_eq!(k.m.gich_reg(0, gich::LR0), (0b01 << 28) | (0x10 << 23) | (1 << 19) | 42);
    assert_eq!(k.m.gich_reg(0, gich::LR0 + 4), (0b01 << 28) | (0x14 << 23) | 33);
    assert_eq!(k.m.gich_reg(0, gich::LR0 + 8), 0);
    assert_eq!(k.m.gich_reg(0, gich::LR0 + 12), 0, "the timer's, empty");
    assert_eq!(k.m.gich_reg(0, gich::VMCR), 0xf800_0001);
    assert_eq!(k.m.gich_reg(0, gich::APR), 0x10);
    assert_eq!(k.m.gich_reg(0, gich::HCR), 1, "En, no underflow interrupt asked for");
    assert_ne!(k.m.enabled_ppis(0) & (1 << 25), 0, "EOI maintenance may be raised: its PPI enabled");
    for (i, r) in V3_REGS.iter().enumerate() {
        assert_eq!(k.m.sysreg(0, *r), 0x5e00 + i as u64, "{r:?} untouched on a GICv2");
    }

    // Its GICC window is the GICV frame, page for page; next to it, accesses are MMIO exits.
    let npt = k.vms[vmid as usize - 1].npt().unwrap();
    let leaf = npt.walk(&k.m, GUEST_GICC).unwrap();
    assert_eq!((leaf.output(GUEST_GICC), leaf.level), (GICV, 3));
    assert_eq!(npt.walk(&k.m, GUEST_GICC + 0x1000).unwrap().output(GUEST_GICC + 0x1000), GICV + 0x1000);
    assert!(npt.walk(&k.m, GUEST_GICC + 0x2000).is_none());
    let touch = |ipa: u64| {
        let trap = Trap::Sync { esr: esr_dabt(true, 1, 2, false, true), far: ipa, hpfar: (ipa >> 12) << 4 };
        k.handle_vm_trap(vmid, &mut PageRegs { page, m: &k.m }, &page, trap)
    };
    assert!(matches!(touch(GUEST_GICC + 0x2000), ExitAction::ToHost(Exit::Mmio { .. })), "beyond: MMIO");
    assert!(matches!(touch(0x0800_0000), ExitAction::ToHost(Exit::Mmio { .. })), "the distributor: the host's");
    invariants::check(&k).unwrap();

    // The guest acknowledges 42 (active), completes 33 (invalid); its timer fires.
    k.m.set_gich_reg(0, gich::LR0, (0b10 << 28) | (0x10 << 23) | (1 << 19) | 42);
    k.m.set_gich_reg(0, gich::LR0 + 4, (0x14 << 23) | 33);
    k.m.set_gich_reg(0, gich::VMCR, 0xf800_0003);
    k.m.set_sysreg(0, SysReg::CntvCtlEl0, 0b101);
    assert!(k.guest_timer_interrupt());
    assert_eq!(k.m.sysreg(0, SysReg::CntvCtlEl0), 0b111, "the timer's output masked");
    assert_eq!(k.m.gich_reg(0, gich::LR0 + 12), (0b01 << 28) | (0x14 << 23) | 27, "virtual timer pending");
    // Fired again while the guest handles it: pending and active.
    k.m.set_gich_reg(0, gich::LR0 + 12, (0b10 << 28) | (0x14 << 23) | 27);
    k.m.set_sysreg(0, SysReg::CntvCtlEl0, 0b101);
    assert!(k.guest_timer_interrupt());
    assert_eq!(k.m.gich_reg(0, gich::LR0 + 12), (0b11 << 28) | (0x14 << 23) | 27);

    k.switch_to_host(&page, &host);
    assert_eq!(k.m.gich_reg(0, gich::HCR), 0, "the virtual CPU interface off for the host");
    assert_eq!(page.get(&k.m, slot::VMCR), 0xf800_0003);
    assert_eq!(page.get(&k.m, slot::APRS), 0x10);
    for (i, r) in V3_REGS.iter().enumerate() {
        assert_eq!(k.m.sysreg(0, *r), 0x5e00 + i as u64, "{r:?} untouched on a GICv2");
    }
    k.finish_run(vmid, 0);
    // The host sees the list registers in the GICv3 layout of the ABI, as on a GICv3.
    let lrs = k.vcpu_irq_state(vmid as u64, 0).unwrap();
    let active42 = (pending_lr_with(42, 0x80, true) & !(0b11 << 62)) | (0b10 << 62);
    assert_eq!(lrs[0], active42 & LR_HOST_VISIBLE);
    assert_eq!(lrs[1] >> 62, 0, "33 finished");
    assert_eq!(lrs[3], (pending_lr(27) | (0b10 << 62)) & LR_HOST_VISIBLE, "the timer: pending and active");
    invariants::check(&k).unwrap();
}

#[test]
fn gicv2_frames_stay_kcores() {
    let (k, vmid) = setup();
    // The host: refused at every page of both frames, never mapped.
    for pa in [GICH, GICH + 0x100, GICV, GICV + 0xf000] {
        assert_eq!(k.mem().map_page_host(pa), Err(Error::Denied), "{pa:#x}");
    }
    assert_eq!(k.mem().map_vm_io(vmid, 0x0900_0000, GICH), Err(Error::Denied));
    assert_eq!(k.mem().map_vm_io(vmid, GUEST_GICC, GICV), Err(Error::Denied));
    // KCore's own mapping only takes GICV pages; an invariant catches any other.
    assert_eq!(k.mem().map_vm_cpuif(vmid, GUEST_GICC, 0x0900_0000), Err(Error::InvalidParameter));
    invariants::check(&k).unwrap();
    k.mem().map_vm_cpuif(vmid, 0x0a00_0000, GICH).unwrap();
    assert_eq!(invariants::check(&k), Err(Violation::KcoreMmioMapped { vmid, ipa: 0x0a00_0000 }));
}

#[test]
fn a_short_pool_fails_the_first_run_until_the_host_donates() {
    let (k, vmid) = setup_with(3);
    assert_eq!(k.prepare_run(vmid as u64, 0, 0).err(), Some(Error::NoMemory));
    assert_eq!(k.prepare_run(vmid as u64, 0, 0).err(), Some(Error::NoMemory), "nothing changed: again");
    k.mem().donate_to_pool(vmid, P0 + 40).unwrap();
    assert_eq!(k.prepare_run(vmid as u64, 0, 0).err(), Some(Error::NoMemory), "one of two tables");
    k.mem().donate_to_pool(vmid, P0 + 41).unwrap();
    let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
    assert_eq!(page.get(&k.m, slot::PC), LOAD, "reset at its first run");
    let npt = k.vms[vmid as usize - 1].npt().unwrap();
    assert_eq!(npt.walk(&k.m, GUEST_GICC + 0x1000).unwrap().output(GUEST_GICC + 0x1000), GICV + 0x1000);
    invariants::check(&k).unwrap();
}

/// A VMM sets a non-protected vCPU's registers before it first runs (KVM_SET_ONE_REG, which
/// gives the vCPU its first-run reset then): its first run still maps GICV.
#[test]
fn registers_set_before_the_first_run_still_get_gicv_mapped() {
    let (k, _) = bare_kcore();
    k.configure_gic_v2((GICH, GICH + 0x1_0000), (GICV, GICV + 0x1_0000)).unwrap();
    let vmid = k.register_vm_kind(P0 + 20, 1).unwrap();
    for i in 0..12 {
        k.mem().donate_to_pool(vmid, P0 + 22 + i).unwrap();
    }
    k.register_vcpu(vmid as u64, 0).unwrap();
    k.add_ram_region(vmid as u64, LOAD, 16 << 20).unwrap();
    k.set_vcpu_reg(vmid as u64, 0, slot::PC, LOAD).unwrap();
    k.verify_vm(vmid as u64).unwrap();
    let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
    assert_eq!(page.get(&k.m, slot::PC), LOAD, "the host's PC, no second reset");
    let npt = k.vms[vmid as usize - 1].npt().unwrap();
    assert_eq!(npt.walk(&k.m, GUEST_GICC).unwrap().output(GUEST_GICC), GICV);
    invariants::check(&k).unwrap();
}

#[test]
fn gicv3_guests_get_no_gicv_mapping() {
    let (k, kp) = bare_kcore();
    assert_eq!(k.vgic.guest_cpuif_page(GUEST_GICC), None);
    assert_eq!(k.kcore_mmio.ranges().count(), 0);
    let _ = kp;
}

/// A list register in the form KCore and its host write (`pending_lr_with`), in any state
/// the guest can move it to.
fn abi_lr() -> impl proptest::strategy::Strategy<Value = u64> {
    use proptest::prelude::*;
    prop_oneof![Just(0u64), used_lr()]
}

/// [`abi_lr`] of one that was used (never all zeros: the group bit).
fn used_lr() -> impl proptest::strategy::Strategy<Value = u64> {
    use proptest::prelude::*;
    (0u32..1020, any::<u8>(), any::<bool>(), 0u64..4).prop_map(|(intid, prio, level, state)| {
        (pending_lr_with(intid, prio & 0xf8, level) & !(0b11 << 62)) | (state << 62)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Random runs on a GICv2 machine: whatever the list registers, VMCR and active
    /// priorities a vCPU holds (in the ABI's form), entering and leaving with the guest
    /// changing nothing gives them back exactly (an empty one stays empty, a finished SGI 0
    /// at priority 0, all zeros in GICv2, comes back finished); a guest's changes in GICH come
    /// back in the ABI's form; the virtual CPU interface is off whenever the host runs; no GICv3
    /// register is ever touched; and none of it depends on the host's registers.
    #[test]
    fn gicv2_switches_round_trip_and_leave_gicv3_alone(
        runs in proptest::collection::vec(
            (proptest::array::uniform4(abi_lr()), proptest::prelude::any::<u32>(), proptest::prelude::any::<u32>(),
             proptest::option::of((0usize..4, used_lr()))),
            1..8),
        host_seed in proptest::prelude::any::<u64>(),
    ) {
        let mut saved = Vec::new();
        for seed in [host_seed, !host_seed] {
            let (k, vmid) = setup();
            for (i, r) in kcore::machine::SysReg::ALL.iter().enumerate() {
                k.m.set_sysreg(0, *r, seed.wrapping_mul(i as u64 + 1));
            }
            let v3_before: Vec<u64> = V3_REGS.iter().map(|r| k.m.sysreg(0, *r)).collect();
            let mut out = Vec::new();
            for (lrs, vmcr, apr, change) in &runs {
                let (_, _, page) = k.prepare_run(vmid as u64, 0, 0).unwrap();
                for (i, lr) in lrs.iter().enumerate() {
                    page.set(&k.m, slot::LRS + i as u64, *lr);
                }
                page.set(&k.m, slot::VMCR, *vmcr as u64);
                page.set(&k.m, slot::APRS, *apr as u64);
                let mut host = HostCtxt::new();
                k.switch_to_guest(vmid, 0, &page, &mut host);
                proptest::prop_assert_eq!(k.m.gich_reg(0, gich::HCR) & 1, 1);
                let mut want = *lrs;
                if let Some((i, lr)) = change {
                    k.m.set_gich_reg(0, gich::LR0 + 4 * *i as u64, kcore::vcpu::vgic::lr_to_v2(*lr));
                    // (What the hardware cannot do: an empty register turn into an all-zero
                    // one. KCore reads that as still empty.)
                    want[*i] = if lrs[*i] == 0 && kcore::vcpu::vgic::lr_to_v2(*lr) == 0 { 0 } else { *lr };
                }
                k.switch_to_host(&page, &host);
                k.finish_run(vmid, 0);
                proptest::prop_assert_eq!(k.m.gich_reg(0, gich::HCR), 0);
                for (i, lr) in want.iter().enumerate() {
                    proptest::prop_assert_eq!(page.get(&k.m, slot::LRS + i as u64), *lr, "LR{}", i);
                }
                proptest::prop_assert_eq!(page.get(&k.m, slot::VMCR), *vmcr as u64);
                proptest::prop_assert_eq!(page.get(&k.m, slot::APRS), *apr as u64);
                let v3_now: Vec<u64> = V3_REGS.iter().map(|r| k.m.sysreg(0, *r)).collect();
                proptest::prop_assert_eq!(&v3_now, &v3_before);
                out.push((0..slot::WORDS).map(|w| page.get(&k.m, w)).skip(slot::LRS as usize).collect::<Vec<_>>());
            }
            saved.push(out);
        }
        proptest::prop_assert_eq!(&saved[0], &saved[1], "a vCPU's GIC state depends on the host's registers");
    }
}
