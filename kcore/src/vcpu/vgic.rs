//! Layer 29's virtual GIC: the guest's virtual CPU interface, loaded and saved in the world
//! switch. Two implementations of one interface ([`VirtualCpuInterface`]):
//!
//! - [`GicV3`]: the GICv3 system-register interface (ICH_LR<n>_EL2, ICH_VMCR_EL2,
//!   ICH_AP{0,1}R<n>_EL2, ICH_HCR_EL2; GIC architecture specification v3/v4, chapter 12);
//! - [`GicV2`]: the GICv2 virtual interface control registers, memory-mapped (GICH_LR<n>,
//!   GICH_VMCR, GICH_APR, GICH_HCR; GIC architecture specification v2, chapter 5), the frame
//!   KCore keeps from the host; the guest reaches its virtual CPU interface (GICV) where it
//!   expects a GICC, mapped by KCore in its stage-2 before a vCPU first runs
//!   ([`GUEST_GICC`]).
//!
//! A vCPU's list registers are kept in its context page, and shown to the host
//! (VCPU_IRQ_STATE) and filled by it (INJECT_IRQ, VCPU_RUN), in one form on every machine:
//! the GICv3 ICH_LR<n>_EL2 layout ([`super::pending_lr_with`]). [`GicV2`] converts when it
//! loads and saves them ([`lr_to_v2`], [`lr_from_v2`]). VMCR and the active priorities are
//! the hardware's own format: the host never sees them.

use super::slot;
use super::vcpuopsaux::VcpuPage;
use crate::machine::{Machine, SysReg};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which GIC the machine has, and for GICv2 where its virtual CPU interface (GICV) is; set
/// once at boot ([`Vgic::configure_v2`]). Until then (and on every GICv3 machine): GICv3.
#[derive(Debug, Default)]
pub struct Vgic {
    /// 0: GICv3; otherwise the physical address of the GICv2 GICV frame.
    gicv: AtomicU64,
}

/// The GIC the machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicKind {
    /// GICv3 (system registers).
    V3,
    /// GICv2 with the virtualization extensions; `gicv`: its GICV frame's physical address.
    V2 { gicv: u64 },
}

impl Vgic {
    /// The machine has a GICv2 whose virtual CPU interface is at `gicv` (page aligned, not 0).
    pub fn configure_v2(&self, gicv: u64) {
        assert!(gicv != 0 && gicv.is_multiple_of(crate::PAGE_SIZE), "GICV frame {gicv:#x}");
        self.gicv.store(gicv, Relaxed);
    }

    /// The machine's GIC.
    #[inline(always)]
    pub fn kind(&self) -> GicKind {
        match self.gicv.load(Relaxed) {
            0 => GicKind::V3,
            gicv => GicKind::V2 { gicv },
        }
    }

    /// On GICv2: the physical page to map at guest IPA `ipa` if it lies in the guest's CPU
    /// interface window ([`GUEST_GICC`], [`GUEST_GICC_SIZE`]): the GICV page at the same offset.
    pub fn guest_cpuif_page(&self, ipa: u64) -> Option<u64> {
        match self.kind() {
            GicKind::V2 { gicv } if (GUEST_GICC..GUEST_GICC + GUEST_GICC_SIZE).contains(&ipa) => {
                Some(gicv + crate::align_down(ipa - GUEST_GICC, crate::PAGE_SIZE))
            }
            _ => None,
        }
    }
}

/// Where a guest on a GICv2 machine finds its CPU interface: QEMU `virt`'s GICC address, the
/// layout KCore's guests follow (the distributor below it stays MMIO the host emulates).
pub const GUEST_GICC: u64 = 0x0801_0000;
/// Its size: the GICv2 CPU interface is two 4 KiB pages (GICC_DIR at 0x1000; GIC
/// architecture v2, 4.4); the GICV frame has the same layout (5.6).
pub const GUEST_GICC_SIZE: u64 = 0x2000;

/// GICH register offsets in the virtual interface control frame (GIC architecture v2, 5.3.1).
pub mod gich {
    /// GICH_HCR: En bit 0, UIE bit 1 (as ICH_HCR_EL2).
    pub const HCR: u64 = 0x000;
    /// GICH_VTR: ListRegs (5:0) is the number of list registers minus one.
    pub const VTR: u64 = 0x004;
    /// GICH_VMCR: the guest's GICV_CTLR, GICV_PMR and GICV_BPR state.
    pub const VMCR: u64 = 0x008;
    /// GICH_MISR: maintenance interrupt status.
    pub const MISR: u64 = 0x010;
    /// GICH_ELRSR0: which list registers are empty.
    pub const ELRSR0: u64 = 0x030;
    /// GICH_APR: the active priorities (one register, 32 priority groups).
    pub const APR: u64 = 0x0f0;
    /// GICH_LR0; GICH_LR<n> at LR0 + 4n.
    pub const LR0: u64 = 0x100;
}

/// GICv2 list register fields (GIC architecture v2, 5.3.11): VirtualID 9:0, PhysicalID
/// 19:10 (with HW = 0: bit 19 EOI, 12:10 the source CPU of an SGI), Priority 27:23 (the
/// top five bits of an 8-bit priority), State 29:28, Grp1 30, HW 31.
const V2_EOI: u32 = 1 << 19;
const V2_PRIORITY_SHIFT: u32 = 23;
const V2_STATE_SHIFT: u32 = 28;

/// The GICv2 list register for `lr`, a list register in KCore's (GICv3) form as
/// [`super::pending_lr_with`] and the guest's own state changes make them: virtual INTID,
/// state, EOI maintenance and the priority's top five bits carried over. The group becomes
/// 0: a GICv2 guest (no security extensions) enables group 0 in its GICC_CTLR and takes
/// group 0 virtual interrupts as IRQs (GICV_CTLR.FIQEn clear). KCore never sets HW.
pub const fn lr_to_v2(lr: u64) -> u32 {
    let state = ((lr >> 62) & 0b11) as u32;
    let priority = ((lr >> 48) & 0xff) as u32;
    let eoi = if lr & (1 << super::LR_EOI_SHIFT) != 0 { V2_EOI } else { 0 };
    (state << V2_STATE_SHIFT) | ((priority >> 3) << V2_PRIORITY_SHIFT) | eoi | (lr & 0x3ff) as u32
}

/// KCore's form of GICv2 list register `v2`, the inverse of [`lr_to_v2`] (the group as
/// KCore's own list registers always have it: 1; the priority's low three bits, which GICv2
/// does not hold, zero).
pub const fn lr_from_v2(v2: u32) -> u64 {
    let state = ((v2 >> V2_STATE_SHIFT) & 0b11) as u64;
    let priority = ((v2 >> V2_PRIORITY_SHIFT) & 0x1f) as u64;
    let eoi = if v2 & V2_EOI != 0 { 1 << super::LR_EOI_SHIFT } else { 0 };
    (state << 62) | (1 << 60) | ((priority << 3) << 48) | eoi | (v2 & 0x3ff) as u64
}

/// The guest's virtual CPU interface as the world switch uses it.
pub trait VirtualCpuInterface {
    /// Load vCPU `page`'s list registers, VMCR and active priorities into the hardware and
    /// turn the virtual CPU interface on (with the underflow maintenance interrupt if
    /// `underflow`). Returns whether any list register asks for EOI maintenance.
    fn load<M: Machine>(m: &M, page: &VcpuPage, underflow: bool) -> bool;
    /// Save the hardware's list registers, VMCR and active priorities to `page`, and turn
    /// the virtual CPU interface off for the host.
    fn save<M: Machine>(m: &M, page: &VcpuPage);
    /// List register `i`, live in the hardware, in KCore's form.
    fn read_lr<M: Machine>(m: &M, i: usize) -> u64;
    /// Write live list register `i` from KCore's form.
    fn write_lr<M: Machine>(m: &M, i: usize, lr: u64);
}

/// The GICv3 system-register interface.
pub struct GicV3;

/// The GICv2 memory-mapped virtual interface control registers (GICH).
pub struct GicV2;

/// The virtual GIC's list registers KCore uses (GICv3).
pub const LIST_REGS: [SysReg; super::MAX_LRS as usize] =
    [SysReg::IchLr0El2, SysReg::IchLr1El2, SysReg::IchLr2El2, SysReg::IchLr3El2];

/// The active-priority registers, group 0 then group 1 ([`super::apr_count`] of each exist).
pub const AP0R: [SysReg; 4] = [SysReg::IchAp0r0El2, SysReg::IchAp0r1El2, SysReg::IchAp0r2El2, SysReg::IchAp0r3El2];
/// See [`AP0R`].
pub const AP1R: [SysReg; 4] = [SysReg::IchAp1r0El2, SysReg::IchAp1r1El2, SysReg::IchAp1r2El2, SysReg::IchAp1r3El2];

/// ICH_HCR_EL2 / GICH_HCR for a guest: En, and UIE if asked.
const fn hcr(underflow: bool) -> u64 {
    super::ICH_HCR_EN | if underflow { super::ICH_HCR_UIE } else { 0 }
}

impl VirtualCpuInterface for GicV3 {
    #[inline(always)]
    fn load<M: Machine>(m: &M, page: &VcpuPage, underflow: bool) -> bool {
        let mut eoi = 0;
        // Written out, not a loop: each access is one MSR of a constant register.
        macro_rules! lr {
            ($($i:literal)*) => {$({
                let lr = page.get(m, slot::LRS + $i);
                eoi |= lr;
                m.write_sysreg(LIST_REGS[$i], lr)
            })*};
        }
        lr!(0 1 2 3);
        m.write_sysreg(SysReg::IchVmcrEl2, page.get(m, slot::VMCR));
        let aprs = super::apr_count(m.read_sysreg(SysReg::IchVtrEl2));
        for i in 0..aprs {
            m.write_sysreg(AP0R[i], page.get(m, slot::APRS + i as u64));
            m.write_sysreg(AP1R[i], page.get(m, slot::APRS + 4 + i as u64));
        }
        m.write_sysreg(SysReg::IchHcrEl2, hcr(underflow));
        eoi & (1 << super::LR_EOI_SHIFT) != 0
    }

    #[inline(always)]
    fn save<M: Machine>(m: &M, page: &VcpuPage) {
        macro_rules! lr {
            ($($i:literal)*) => {$(page.set(m, slot::LRS + $i, m.read_sysreg(LIST_REGS[$i]));)*};
        }
        lr!(0 1 2 3);
        page.set(m, slot::VMCR, m.read_sysreg(SysReg::IchVmcrEl2));
        // The active priorities the CPU has; the words for those it lacks read as zero.
        let aprs = super::apr_count(m.read_sysreg(SysReg::IchVtrEl2));
        for i in 0..4 {
            let (ap0, ap1) = if i < aprs { (m.read_sysreg(AP0R[i]), m.read_sysreg(AP1R[i])) } else { (0, 0) };
            page.set(m, slot::APRS + i as u64, ap0);
            page.set(m, slot::APRS + 4 + i as u64, ap1);
        }
        m.write_sysreg(SysReg::IchHcrEl2, 0);
    }

    #[inline(always)]
    fn read_lr<M: Machine>(m: &M, i: usize) -> u64 {
        m.read_sysreg(LIST_REGS[i])
    }

    #[inline(always)]
    fn write_lr<M: Machine>(m: &M, i: usize, lr: u64) {
        m.write_sysreg(LIST_REGS[i], lr)
    }
}

impl VirtualCpuInterface for GicV2 {
    // Out of line: the GICv3 world switch stays as short as it was.
    #[inline(never)]
    fn load<M: Machine>(m: &M, page: &VcpuPage, underflow: bool) -> bool {
        let mut eoi = 0;
        for i in 0..super::MAX_LRS {
            let lr = page.get(m, slot::LRS + i);
            eoi |= lr;
            m.gich_write(gich::LR0 + 4 * i, lr_to_v2(lr));
        }
        m.gich_write(gich::VMCR, page.get(m, slot::VMCR) as u32);
        m.gich_write(gich::APR, page.get(m, slot::APRS) as u32);
        m.gich_write(gich::HCR, hcr(underflow) as u32);
        eoi & (1 << super::LR_EOI_SHIFT) != 0
    }

    #[inline(never)]
    fn save<M: Machine>(m: &M, page: &VcpuPage) {
        for i in 0..super::MAX_LRS {
            // A GICv2 list register of all zeros is either one nothing was put in or a
            // finished edge SGI 0 at priority 0; the page still holds what was loaded, which
            // tells them apart. An empty one stays 0 (the host reads nothing there); any
            // other comes back with its group bit, so a finished one is never 0 and the host
            // learns it is done, as on a GICv3.
            let v2 = m.gich_read(gich::LR0 + 4 * i);
            let lr = if v2 == 0 && page.get(m, slot::LRS + i) == 0 { 0 } else { lr_from_v2(v2) };
            page.set(m, slot::LRS + i, lr);
        }
        page.set(m, slot::VMCR, m.gich_read(gich::VMCR) as u64);
        page.set(m, slot::APRS, m.gich_read(gich::APR) as u64);
        for i in 1..8 {
            page.set(m, slot::APRS + i, 0);
        }
        m.gich_write(gich::HCR, 0);
    }

    #[inline(never)]
    fn read_lr<M: Machine>(m: &M, i: usize) -> u64 {
        lr_from_v2(m.gich_read(gich::LR0 + 4 * i as u64))
    }

    #[inline(never)]
    fn write_lr<M: Machine>(m: &M, i: usize, lr: u64) {
        m.gich_write(gich::LR0 + 4 * i as u64, lr_to_v2(lr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcpu::{LR_HOST_VISIBLE, pending_lr, pending_lr_with};

    #[test]
    fn v2_list_registers_round_trip_what_the_host_sees() {
        // A pending group-0 IRQ 27 at priority 0xa0 >> 3 (GICv2 5.3.11).
        assert_eq!(lr_to_v2(pending_lr(27)), (0b01 << 28) | (0x14 << 23) | 27);
        for intid in [0u32, 1, 15, 16, 27, 31, 32, 40, 1019] {
            for (priority, level) in [(0xa0u8, false), (0x80, true), (0xf8, false), (0, true)] {
                let lr = pending_lr_with(intid, priority, level);
                assert_eq!(lr_from_v2(lr_to_v2(lr)), lr & LR_HOST_VISIBLE, "{intid} {priority:#x} {level}");
                for state in 0..4u64 {
                    let s = (lr & !(0b11 << 62)) | (state << 62);
                    assert_eq!(lr_from_v2(lr_to_v2(s)) >> 62, state);
                }
            }
        }
        // Level: EOI maintenance in bit 19; priority's low three bits are not kept.
        assert_eq!(lr_to_v2(pending_lr_with(40, 0x81, true)) & (1 << 19), 1 << 19);
        assert_eq!((lr_from_v2(lr_to_v2(pending_lr_with(40, 0x87, false))) >> 48) & 0xff, 0x80);
        // Group 0 on the hardware, HW never.
        assert_eq!(lr_to_v2(pending_lr(40)) >> 30, 0);
    }

    #[test]
    fn guest_cpu_interface_window_maps_to_gicv_on_v2_only() {
        let v = Vgic::default();
        assert_eq!(v.kind(), GicKind::V3);
        assert_eq!(v.guest_cpuif_page(GUEST_GICC), None);
        v.configure_v2(0x0804_0000);
        assert_eq!(v.kind(), GicKind::V2 { gicv: 0x0804_0000 });
        assert_eq!(v.guest_cpuif_page(GUEST_GICC + 0xc), Some(0x0804_0000));
        assert_eq!(v.guest_cpuif_page(GUEST_GICC + 0x1000), Some(0x0804_1000));
        assert_eq!(v.guest_cpuif_page(GUEST_GICC + 0x2000), None);
        assert_eq!(v.guest_cpuif_page(GUEST_GICC - 4), None);
    }
}
