//! Layer 29 (CtxtSwitch): the world switch between the host and a guest on one CPU.
//!
//! VCPU_RUN saves the host's EL1 state, FP/SIMD registers and the EL2 controls the switch
//! changes in a [`HostCtxt`] that stays in KCore (never in host memory), then loads the
//! guest's state from its context page, sets the guest's stage-2 (VTTBR with its vmid) and
//! traps. When the guest must exit, its general registers come from the trap frame
//! ([`KCore::save_guest_gprs`]) and everything else from the CPU ([`KCore::switch_to_host`]),
//! which then puts the host's state back exactly as it was. FP/SIMD is switched eagerly.
//!
//! The general registers themselves (loading x0..x30 and `ERET`) are the one part done in
//! `boot/`'s assembly; everything here goes through layer 0's register interface, so the
//! simulated machine checks it (`kcore/tests/refine_ctxt.rs`).

use super::guestcpu;
use super::slot;
use super::vcpuopsaux::VcpuPage;
use super::vgic::{GicKind, GicV2, GicV3, VirtualCpuInterface};
use crate::arch;
use crate::kcore::KCore;
use crate::machine::{FP_WORDS, FpRegs, Machine, SysReg};

/// HCR_EL2 while a guest runs (Arm ARM D23.2.53): VM (stage-2 on), SWIO, PTW, FMO/IMO/AMO
/// (physical interrupts and SErrors to EL2, virtual ones to the guest), FB and BSU = inner
/// shareable (broadcast maintenance), TWI/TWE (WFI/WFE trap), TSC (SMC traps), TIDCP, TACR,
/// TSW (set/way cache maintenance traps), RW (EL1 is AArch64); and the traps that hide
/// features ([`guestcpu::GUEST_HCR_HIDE`]: TID3, TLOR, TERR).
pub const GUEST_HCR: u64 = guestcpu::GUEST_HCR_HIDE
    | (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 13)
    | (1 << 14)
    | (1 << 19)
    | (1 << 20)
    | (1 << 21)
    | (1 << 22)
    | (1 << 31);

/// CPTR_EL2 while a guest runs ([`guestcpu::GUEST_CPTR`]): FP/SIMD (already loaded) is not
/// trapped; SVE, SME, trace and activity monitors are.
pub const GUEST_CPTR: u64 = guestcpu::GUEST_CPTR;

/// CNTHCTL_EL2 while a guest runs: EL1PCTEN = 1 (the counter is readable), EL1PCEN = 0 (the
/// physical timer traps; guests use the virtual one).
pub const GUEST_CNTHCTL: u64 = 0b01;

/// VMPIDR_EL2 for vCPU `vcpu`: what its MPIDR_EL1 reads return (bit 31 RES1, Aff0 = index).
pub const fn guest_vmpidr(vcpu: usize) -> u64 {
    (1 << 31) | vcpu as u64
}

/// The EL2 controls the switch changes, restored for the host as they were.
pub const SWITCHED_EL2: [SysReg; 6] =
    [SysReg::HcrEl2, SysReg::VttbrEl2, SysReg::CptrEl2, SysReg::CnthctlEl2, SysReg::VmpidrEl2, SysReg::MdcrEl2];
/// Position of MDCR_EL2 in [`SWITCHED_EL2`].
const MDCR: usize = 5;

pub use super::vgic::{AP0R, AP1R, LIST_REGS};

/// ICC_SRE_EL1.SRE: a guest always gets the GIC's system-register interface.
const ICC_SRE_SRE: u64 = 1;
/// CNTV_CTL_EL0.IMASK.
const CNTV_IMASK: u64 = 0b010;
/// CNTHP_CTL_EL2.ENABLE (IMASK clear).
const CNTHP_ENABLE: u64 = 0b001;

/// One side's EL1 state: the 25 registers of [`super::EL1_SYSREGS`], then SP_EL0.
pub type El1State = [u64; 26];

/// The host's state while a guest runs on this CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct HostCtxt {
    /// FP/SIMD registers.
    pub fp: FpRegs,
    /// EL1 state.
    pub el1: El1State,
    /// ICC_SRE_EL1.
    pub sre: u64,
    /// [`SWITCHED_EL2`], in order.
    pub el2: [u64; 6],
    /// HFGRTR_EL2 and HFGWTR_EL2 (where FEAT_FGT exists).
    pub hfgxtr: [u64; 2],
    /// HCRX_EL2 (where FEAT_HCX exists).
    pub hcrx: u64,
    /// [`MTE_STATE`] (where FEAT_MTE2 exists).
    pub mte: [u64; 4],
}

/// The host's MTE state registers, kept while a guest runs: a guest has no tag access
/// (HCR_EL2.ATA clear, so these trap), but a guest that turns tag checking on through its
/// SCTLR_EL1 would have its asynchronous tag-check faults recorded in TFSR_EL1/TFSRE0_EL1;
/// the host gets its own values back.
pub const MTE_STATE: [SysReg; 4] = [SysReg::TfsrEl1, SysReg::Tfsre0El1, SysReg::RgsrEl1, SysReg::GcrEl1];

impl HostCtxt {
    /// An empty context, to be filled by [`KCore::switch_to_guest`].
    pub const fn new() -> Self {
        HostCtxt { fp: [0; FP_WORDS], el1: [0; 26], sre: 0, el2: [0; 6], hfgxtr: [0; 2], hcrx: 0, mte: [0; 4] }
    }
}

impl Default for HostCtxt {
    fn default() -> Self {
        Self::new()
    }
}

/// The EL1 register at position `i` of an [`El1State`].
const fn el1_reg(i: usize) -> SysReg {
    if i < 25 { super::EL1_SYSREGS[i] } else { SysReg::SpEl0 }
}

/// The context-page slot of position `i` of an [`El1State`].
const fn el1_slot(i: usize) -> u64 {
    if i < 25 { slot::SYSREGS + i as u64 } else { slot::SP_EL0 }
}

/// Evaluates `$body` with `$i` bound to each of the listed constants in turn, written out
/// (not a loop), so that on the hardware each register access is one `MRS` or `MSR`: the
/// register is a constant and layer 0's match on it folds away.
macro_rules! unrolled {
    ($i:ident in $($n:literal)* => $body:expr) => {
        $({
            let $i: usize = $n;
            $body;
        })*
    };
}

/// [`unrolled!`] over the positions of an [`El1State`].
macro_rules! for_each_el1 {
    ($i:ident => $body:expr) => {
        unrolled!($i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 => $body)
    };
}

/// [`unrolled!`] over [`SWITCHED_EL2`].
macro_rules! for_each_el2 {
    ($i:ident => $body:expr) => {
        unrolled!($i in 0 1 2 3 4 5 => $body)
    };
}

const _: () = assert!(SWITCHED_EL2.len() == 6 && LIST_REGS.len() == 4);
const _: () = assert!(slot::FP.is_multiple_of(2), "FP area 16-byte aligned");
const _: () = assert!(FP_WORDS == 66);

impl<M: Machine> KCore<M> {
    fn save_el1(&self, s: &mut El1State) {
        for_each_el1!(i => s[i] = self.m.read_sysreg(el1_reg(i)));
    }

    fn load_el1(&self, s: &El1State) {
        for_each_el1!(i => self.m.write_sysreg(el1_reg(i), s[i]));
    }

    /// Switch this CPU from the host to vCPU `vcpu` of VM `vmid`, whose context page is
    /// `page` and which VCPU_RUN's preparation (layer 28) has made active. The host's state
    /// goes to `host` (KCore memory: the VCPU_RUN handler's frame), to be handed back to
    /// [`KCore::switch_to_host`]. The caller then loads the guest's general registers from
    /// the page and enters it.
    pub fn switch_to_guest(&self, vmid: u16, vcpu: usize, page: &VcpuPage, host: &mut HostCtxt) {
        let m = &self.m;
        // An active vCPU belongs to a verified VM, which has a stage-2 table.
        let root = self.vms[vmid as usize - 1].npt().expect("active vCPU's VM has a stage-2 table").root;
        self.save_el1(&mut host.el1);
        // The host ticks on the EL1 virtual timer, which the guest is about to get. If the
        // host's timer is armed, the EL2 physical timer takes over its deadline (the host's
        // CNTVOFF_EL2 is 0: its virtual count is the physical count), so a guest that never
        // exits still gives the CPU back when the host's tick is due.
        let host_ctl = host.el1[SysReg::CntvCtlEl0 as usize];
        if super::host_deadline_armed(host_ctl) {
            m.write_sysreg(SysReg::CnthpCvalEl2, host.el1[SysReg::CntvCvalEl0 as usize]);
            m.write_sysreg(SysReg::CnthpCtlEl2, CNTHP_ENABLE);
            m.enable_private_irq(super::HYP_TIMER_INTID);
        }
        for_each_el2!(i => host.el2[i] = m.read_sysreg(SWITCHED_EL2[i]));
        m.fp_save(&mut host.fp);
        m.fp_load_from(page.pa + 8 * slot::FP);
        for_each_el1!(i => m.write_sysreg(el1_reg(i), page.get(m, el1_slot(i))));
        // The virtual GIC: list registers, VMCR, active priorities, then the virtual CPU
        // interface on; underflow maintenance if the host asked for it. The maintenance
        // interrupt reaches KCore if it may be raised (an EOI-tracked level interrupt in a
        // list register, or underflow): the guest exits, the host refills.
        let uie = page.get(m, slot::FLAGS) & super::flags::UNDERFLOW_NOTIFY != 0;
        // One branch on the GIC: the GICv3 path as short as before, the GICv2 one out of line.
        let eoi = if self.vgic.kind() == GicKind::V3 {
            host.sre = m.read_sysreg(SysReg::IccSreEl1);
            let eoi = GicV3::load(m, page, uie);
            m.write_sysreg(SysReg::IccSreEl1, ICC_SRE_SRE);
            eoi
        } else {
            GicV2::load(m, page, uie)
        };
        if uie || eoi {
            m.enable_private_irq(super::MAINTENANCE_INTID);
        }
        // Where the guest resumes, and the controls it runs under.
        m.write_sysreg(SysReg::ElrEl2, page.get(m, slot::PC));
        m.write_sysreg(SysReg::SpsrEl2, page.get(m, slot::PSTATE));
        m.write_sysreg(SysReg::VttbrEl2, arch::vttbr_el2(root, vmid));
        m.write_sysreg(SysReg::HcrEl2, GUEST_HCR);
        m.write_sysreg(SysReg::CptrEl2, GUEST_CPTR);
        m.write_sysreg(SysReg::CnthctlEl2, GUEST_CNTHCTL);
        m.write_sysreg(SysReg::VmpidrEl2, guest_vmpidr(vcpu));
        m.write_sysreg(SysReg::MdcrEl2, guestcpu::guest_mdcr(host.el2[MDCR]));
        // The trap controls that exist only on some CPUs (layer 27 knows which).
        let f = self.guest_cpu.features();
        if f.fgt {
            host.hfgxtr = [m.read_sysreg(SysReg::HfgrtrEl2), m.read_sysreg(SysReg::HfgwtrEl2)];
            m.write_sysreg(SysReg::HfgrtrEl2, guestcpu::GUEST_HFGXTR);
            m.write_sysreg(SysReg::HfgwtrEl2, guestcpu::GUEST_HFGXTR);
        }
        if f.hcx {
            host.hcrx = m.read_sysreg(SysReg::HcrxEl2);
            m.write_sysreg(SysReg::HcrxEl2, guestcpu::guest_hcrx(host.hcrx));
        }
        if f.mte2 {
            for (v, r) in host.mte.iter_mut().zip(MTE_STATE) {
                *v = m.read_sysreg(r);
            }
            // Nothing of the host's fault status is left for the guest's run.
            m.write_sysreg(SysReg::TfsrEl1, 0);
            m.write_sysreg(SysReg::Tfsre0El1, 0);
        }
        m.sync_context();
    }

    /// The guest is leaving for the host: keep its general registers, PC and PSTATE (from
    /// the trap frame) in its context page.
    pub fn save_guest_gprs(&self, page: &VcpuPage, x: &[u64; 31], pc: u64, pstate: u64) {
        for (i, v) in x.iter().enumerate() {
            page.set(&self.m, slot::X0 + i as u64, *v);
        }
        page.set(&self.m, slot::PC, pc);
        page.set(&self.m, slot::PSTATE, pstate);
    }

    /// Switch this CPU back from the guest whose context page is `page` to the host: the
    /// guest's EL1, FP/SIMD and virtual GIC state (the guest may have acknowledged and
    /// completed interrupts) go to its page, and the host's come back from `host`.
    pub fn switch_to_host(&self, page: &VcpuPage, host: &HostCtxt) {
        let m = &self.m;
        for_each_el1!(i => page.set(m, el1_slot(i), m.read_sysreg(el1_reg(i))));
        m.fp_save_to(page.pa + 8 * slot::FP);
        if self.vgic.kind() == GicKind::V3 {
            GicV3::save(m, page);
            m.write_sysreg(SysReg::IccSreEl1, host.sre);
        } else {
            GicV2::save(m, page);
        }
        // The host's own timer is back: KCore's alarm for it is off.
        m.write_sysreg(SysReg::CnthpCtlEl2, 0);
        m.fp_load(&host.fp);
        self.load_el1(&host.el1);
        // Host TLB entries are tagged with the host's VMID: restoring VTTBR is enough, no
        // invalidation on this path.
        for_each_el2!(i => m.write_sysreg(SWITCHED_EL2[i], host.el2[i]));
        let f = self.guest_cpu.features();
        if f.fgt {
            m.write_sysreg(SysReg::HfgrtrEl2, host.hfgxtr[0]);
            m.write_sysreg(SysReg::HfgwtrEl2, host.hfgxtr[1]);
        }
        if f.hcx {
            m.write_sysreg(SysReg::HcrxEl2, host.hcrx);
        }
        if f.mte2 {
            for (v, r) in host.mte.iter().zip(MTE_STATE) {
                m.write_sysreg(r, *v);
            }
        }
        m.sync_context();
    }

    /// A physical interrupt arrived while a guest runs on this CPU: if it is the guest's own
    /// virtual timer (its CNTV_CTL says fired and unmasked), mask the timer output (as the
    /// guest's handler would first do) and make virtual INTID 27 pending in the timer's own
    /// list register ([`super::TIMER_LR`]; pending and active if the guest is still in its
    /// handler). The guest unmasks the timer when it re-arms it. Returns whether the
    /// interrupt was the guest's; otherwise it is the host's and the guest exits.
    pub fn guest_timer_interrupt(&self) -> bool {
        let m = &self.m;
        let ctl = m.read_sysreg(SysReg::CntvCtlEl0);
        if !super::vtimer_fired(ctl) {
            return false;
        }
        m.write_sysreg(SysReg::CntvCtlEl0, ctl | CNTV_IMASK); // the physical PPI drops
        let i = super::TIMER_LR;
        if self.vgic.kind() == GicKind::V3 {
            GicV3::write_lr(m, i, super::timer_lr_pended(GicV3::read_lr(m, i)));
        } else {
            GicV2::write_lr(m, i, super::timer_lr_pended(GicV2::read_lr(m, i)));
        }
        m.sync_context();
        true
    }
}
