//! Specification of layers 33 (TrapHandlerRaw) and 34 (TrapHandler).
//!
//! Layer 33: which vector an exception came through, what a synchronous exception delivered
//! to EL1 does to the interrupted context and EL1's exception registers (Arm ARM D1.10,
//! "Exception entry"), and the syndrome of an external abort KCore reports instead of a
//! refused stage-2 fault.
//!
//! Layer 34: KCore's top-level step as one state machine composed of the specifications
//! below it: the VM lifecycle and memory (`spec::boot`, `spec::mem`), the vCPUs
//! (`spec::vcpu`), and layer 33. Every event the machine can deliver — a host hypercall,
//! SMC, stage-2 abort, other trap or interrupt; a guest trap or interrupt while it runs — has
//! one specified result: the registers the interrupted side sees afterwards, where control
//! goes, and the abstract state after.

use super::boot::{AbsBoot, BootOp, Contents};
use super::mem::Op as MemOp;
use super::vcpu::{AbsVcpu, AbsVcpus, GuestTrap, Pending, Run};
use crate::abi;
use crate::error::{Error, Result};
use crate::kcore::MAX_VMS;
use crate::vcpu::vcpuops::{Exit, ExitAction};
use crate::vm::{MAX_VCPUS, VcpuState, VmState};
use std::collections::BTreeMap;

// ---------------------------------------------------------------- layer 33

/// The kind of vector entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbsVector {
    /// Taken from EL2 itself.
    Own,
    /// Synchronous, from EL1 or EL0.
    Sync,
    /// IRQ from EL1 or EL0.
    Irq,
    /// FIQ from EL1 or EL0.
    Fiq,
    /// SError from EL1 or EL0.
    SError,
}

/// Vector slot `slot` of VBAR_EL2's table (offset / 0x80).
pub fn vector(slot: u64) -> AbsVector {
    // Slots 0-3: current EL with SP_EL0; 4-7: current EL with SP_ELx; 8-11: lower EL,
    // AArch64; 12-15: lower EL, AArch32. Within a group: Sync, IRQ, FIQ, SError.
    const LOWER: [AbsVector; 4] = [AbsVector::Sync, AbsVector::Irq, AbsVector::Fiq, AbsVector::SError];
    match slot {
        8..=11 => LOWER[slot as usize - 8],
        12..=15 => LOWER[slot as usize - 12],
        _ => AbsVector::Own,
    }
}

/// EL1's view after a synchronous exception is delivered to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Where the context resumes (its ELR_EL2).
    pub pc: u64,
    /// Its PSTATE (SPSR_EL2).
    pub pstate: u64,
    /// ESR_EL1.
    pub esr_el1: u64,
    /// ELR_EL1: the instruction that took the exception.
    pub elr_el1: u64,
    /// SPSR_EL1: PSTATE when it was taken.
    pub spsr_el1: u64,
}

/// Deliver a synchronous exception with syndrome `esr` to EL1, interrupting a context at `pc`
/// with PSTATE `pstate`, given EL1's VBAR and SCTLR. `None` if the context was in a mode with
/// no EL1 vector (AArch32 EL1, or EL2 and above).
pub fn deliver_sync(pc: u64, pstate: u64, esr: u64, vbar_el1: u64, sctlr_el1: u64) -> Option<Delivery> {
    // D1.10.2: the vector offset depends on where the exception came from.
    let offset = match pstate & 0x1f {
        0b00100 => 0x000, // EL1 using SP_EL0 (EL1t): current EL, SP0
        0b00101 => 0x200, // EL1 using SP_EL1 (EL1h): current EL, SPx
        0b00000 => 0x400, // EL0, AArch64: lower EL, AArch64
        0b10000 => 0x600, // EL0, AArch32 User: lower EL, AArch32
        _ => return None,
    };
    let bit = |v: u64, n: u32| (v >> n) & 1;
    // New PSTATE: EL1h, D, A, I, F set; PAN set if it was or SCTLR_EL1.SPAN (23) is 0; DIT
    // (24) kept; SSBS (12) from SCTLR_EL1.DSSBS (44). The condition flags are not part of
    // the vector-entry contract; KCore starts them clear.
    let pan = bit(pstate, 22) | (1 - bit(sctlr_el1, 23));
    let new = 0b00101 | (0b1111 << 6) | (pan << 22) | (bit(pstate, 24) << 24) | (bit(sctlr_el1, 44) << 12);
    Some(Delivery { pc: (vbar_el1 & !0x7ff) + offset, pstate: new, esr_el1: esr, elr_el1: pc, spsr_el1: pstate })
}

/// The syndrome KCore gives EL1 for an access it refused (an abort with syndrome `esr_el2`
/// taken from PSTATE `pstate`): a synchronous external abort (FSC 0b010000) of the same kind,
/// data or instruction, from the EL it came from, keeping WnR for data, IL set.
pub fn refused_access_esr(esr_el2: u64, pstate: u64) -> u64 {
    let data = (esr_el2 >> 26) & 0x3f == 0x24; // EC is ESR bits 31:26
    let from_el0 = matches!(pstate & 0x1f, 0b00000 | 0b10000);
    let ec = match (data, from_el0) {
        (true, true) => 0x24,
        (true, false) => 0x25,
        (false, true) => 0x20,
        (false, false) => 0x21,
    };
    let wnr = if data { esr_el2 & (1 << 6) } else { 0 };
    (ec << 26) | (1 << 25) | wnr | 0b01_0000
}

/// The syndrome of an undefined instruction (EC 0, IL set).
pub const UNDEFINED_ESR: u64 = 1 << 25;

// ---------------------------------------------------------------- layer 34

/// Where control goes after a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Back to the interrupted context.
    Return,
    /// Into vCPU `vcpu` of VM `vmid`.
    EnterGuest {
        /// The VM.
        vmid: u16,
        /// The vCPU.
        vcpu: usize,
    },
    /// From the running guest back to the host (which then sees the exit in x0..x4).
    ExitGuest,
    /// To the PSCI proxy with the host's SMC.
    HostSmc,
    /// Nowhere: KCore halts.
    Halt,
}

/// The interrupted context's registers as the trap frame holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// x0..x30.
    pub x: [u64; 31],
    /// PC.
    pub pc: u64,
    /// PSTATE.
    pub pstate: u64,
}

/// EL1's exception registers (of whoever's EL1 state is loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct El1Exc {
    /// VBAR_EL1 (read).
    pub vbar: u64,
    /// SCTLR_EL1 (read).
    pub sctlr: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// SPSR_EL1.
    pub spsr: u64,
}

impl El1Exc {
    fn deliver(&mut self, r: &mut Regs, esr: u64, far: Option<u64>) {
        let d = deliver_sync(r.pc, r.pstate, esr, self.vbar, self.sctlr).expect("lower-EL trap");
        self.esr = d.esr_el1;
        if let Some(f) = far {
            self.far = f;
        }
        self.elr = d.elr_el1;
        self.spsr = d.spsr_el1;
        r.pc = d.pc;
        r.pstate = d.pstate;
    }
}

/// A trap the host takes to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// `HVC #0`.
    Hvc,
    /// `SMC #0`.
    Smc,
    /// A stage-2 abort at `ipa`: data or instruction, translation fault or not, a write.
    Abort {
        /// The faulting IPA.
        ipa: u64,
        /// A data abort (else an instruction abort).
        data: bool,
        /// A translation fault (else a permission fault).
        translation: bool,
        /// A write.
        write: bool,
    },
    /// Another synchronous trap, with exception class `ec`.
    Other {
        /// The exception class.
        ec: u64,
    },
    /// An interrupt or SError (vector slot 9, 10 or 11).
    Async {
        /// The slot.
        slot: u64,
    },
    /// An exception from EL2 itself (vector slot 0-7).
    Own {
        /// The slot.
        slot: u64,
    },
}

/// What runs the VMs, as the host and the guests can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsTop {
    /// VM lifecycle and memory.
    pub boot: AbsBoot,
    /// The vCPUs of each verified (or powered-off) VM.
    pub vcpus: BTreeMap<u16, AbsVcpus>,
    /// Each vCPU's PSTATE (the vCPU specification leaves it out; it matters for delivery).
    pub pstate: BTreeMap<(u16, usize), u64>,
    /// Each registered vCPU's list registers.
    pub lrs: BTreeMap<(u16, usize), [u64; 4]>,
    /// The guest running on this CPU.
    pub running: Option<(u16, usize)>,
    /// Its run asked for the list registers in x5..x7 when it exits (VCPU_RUN x4 bit 1).
    pub report_lrs: bool,
    /// What guests read from the ID registers (layer 27's sanitised table).
    pub ids: [u64; 56],
    /// Each vCPU's MDSCR_EL1 while it is not running (zero at reset).
    pub mdscr: BTreeMap<(u16, usize), u64>,
    /// The machine's GIC is a GICv2 (fixed at boot).
    pub gic_v2: bool,
}

/// What the host's VCPU_RUN returns when the guest exits: x0..x4, and x5..x7 (the list
/// registers) if the run asked for them.
pub type HostResult = ([u64; 5], Option<[u64; 3]>);

/// PSTATE a vCPU starts in: EL1h with D, A, I, F masked.
pub const RESET_PSTATE: u64 = 0x3c5;

/// The exit as the host receives it in x1..x4 (`docs/ABI.md`, VCPU_RUN).
pub fn exit_words(e: Exit) -> [u64; 4] {
    match e {
        Exit::Mmio { ipa, write, size_log2, value } => [1, ipa, (size_log2 << 1) | write as u64, value],
        Exit::PageFault { ipa } => [2, ipa, 0, 0],
        Exit::Wfi { wfe, deadline } => [3, deadline, wfe as u64, 0],
        Exit::Irq => [4, 0, 0, 0],
        Exit::Shutdown => [5, 0, 0, 0],
        Exit::VcpuStarted { vcpu } => [6, vcpu, 0, 0],
        Exit::VcpuOff => [7, 0, 0, 0],
        Exit::Sgi { reg, value } => [8, value, reg, 0],
        Exit::SysReg { iss, write, value } => [9, iss, write as u64, value],
    }
}

fn vmid_of(v: u64) -> Result<u16> {
    if v == 0 || v > MAX_VMS as u64 { Err(Error::InvalidParameter) } else { Ok(v as u16) }
}

fn vcpu_of(vmid: u64, vcpu: u64) -> Result<(u16, usize)> {
    let vmid = vmid_of(vmid)?;
    if vcpu >= MAX_VCPUS as u64 { Err(Error::InvalidParameter) } else { Ok((vmid, vcpu as usize)) }
}

fn code(e: Error) -> u64 {
    e.code() as u64
}

/// A list register as the host sees it: state, group, priority, EOI and INTID, nothing
/// else. Reported once: one the guest is done with (state invalid) is cleared.
fn report_lr(lr: &mut u64) -> u64 {
    let visible = (3 << 62) | (1 << 60) | (0xff << 48) | (1 << 41) | 0xffff_ffff;
    let seen = *lr & visible;
    if *lr >> 62 == 0 {
        *lr = 0;
    }
    seen
}

/// INJECT_IRQ on list registers `lrs` (the last is KCore's, for the virtual timer): `Exists`
/// if `intid` is live in one, else it goes pending, group 1, with the host's priority (attrs
/// 7:0) and EOI maintenance if level-triggered (bit 8), in the first free one of the first
/// three; `NoMemory` if none is.
fn place_irq(lrs: &mut [u64; 4], intid: u64, attrs: u64) -> Result<()> {
    let live = |lr: u64| lr >> 62 != 0;
    if lrs.iter().any(|&lr| live(lr) && lr as u32 as u64 == intid) {
        return Err(Error::Exists);
    }
    let free = lrs[..3].iter().position(|&lr| !live(lr)).ok_or(Error::NoMemory)?;
    lrs[free] = (1 << 62) | (1 << 60) | ((attrs & 0xff) << 48) | ((attrs >> 8) << 41) | intid;
    Ok(())
}

impl AbsTop {
    fn vm_state(&self, vmid: u16) -> VmState {
        self.boot.vms.get(&vmid).map_or(VmState::Unused, |v| v.state)
    }

    fn vcpu_state(&self, vmid: u16, vcpu: usize) -> VcpuState {
        self.boot.vms.get(&vmid).map_or(VcpuState::Unused, |v| v.vcpus[vcpu])
    }

    /// A host trap `ev` with the host's registers `regs` and EL1 exception registers `el1`
    /// (`c` answers questions about memory contents for image verification): where control
    /// goes, the host's registers and EL1 registers after, and the state after.
    pub fn host_trap(&self, ev: HostEvent, regs: Regs, el1: El1Exc, c: &dyn Contents) -> (Route, Regs, El1Exc, AbsTop) {
        let (mut s, mut r, mut e) = (self.clone(), regs, el1);
        let route = match ev {
            HostEvent::Own { .. } => Route::Halt,
            HostEvent::Async { .. } => Route::Return,
            HostEvent::Smc => {
                r.pc = r.pc.wrapping_add(4);
                Route::HostSmc
            }
            HostEvent::Other { .. } => {
                e.deliver(&mut r, UNDEFINED_ESR, None);
                Route::Return
            }
            HostEvent::Abort { ipa, data, translation, write } => {
                let esr = ((if data { 0x24u64 } else { 0x20 }) << 26)
                    | (1 << 25)
                    | ((write && data) as u64) << 6
                    | if translation { 0b00_0111 } else { 0b00_1111 };
                // A plain read by the host kernel (not from EL0t or AArch32 User mode) of a VM's
                // page reads KCore's zero page; everything else is a host fault as before.
                let kernel = !matches!(r.pstate & 0x1f, 0b0_0000 | 0b1_0000);
                let op =
                    if data && !write && kernel { MemOp::HostKernelRead { ipa } } else { MemOp::HostFault { ipa } };
                let ok = translation && {
                    let (res, mem) = s.boot.mem.step(op);
                    s.boot.mem = mem;
                    res.is_ok()
                };
                if !ok {
                    let esr_el1 = refused_access_esr(esr, r.pstate);
                    e.deliver(&mut r, esr_el1, Some(ipa));
                }
                Route::Return
            }
            HostEvent::Hvc => {
                let mut x: [u64; 8] = r.x[..8].try_into().unwrap();
                let route = s.hvc(&mut x, c);
                r.x[..8].copy_from_slice(&x);
                route
            }
        };
        (route, r, e, s)
    }

    fn boot_op(&mut self, op: BootOp, c: &dyn Contents) -> Result<u64> {
        let (r, next) = self.boot.step(op, c);
        self.boot = next;
        r
    }

    fn hvc(&mut self, x: &mut [u64; 8], c: &dyn Contents) -> Route {
        let id = x[0] as u32;
        let ok_value = |x: &mut [u64; 8], r: Result<Option<u64>>| match r {
            Ok(v) => {
                x[0] = 0;
                if let Some(v) = v {
                    x[1] = v;
                }
            }
            Err(e) => x[0] = code(e),
        };
        match id {
            abi::VCPU_RUN => match self.run(x[1], x[2], x[3], x[4], [x[5], x[6], x[7]]) {
                Ok((vmid, vcpu)) => return Route::EnterGuest { vmid, vcpu },
                Err(e) => x[0] = code(e),
            },
            abi::KCORE_VERSION => {
                x[0] = 0;
                x[1] = (abi::ABI_MAJOR << 16) | abi::ABI_MINOR;
                // Host stage-2, VM lifecycle, vCPU run, non-protected VMs, full guests; and
                // bit 5 if the machine's GIC is a GICv2.
                x[2] = 0b1_1111 | (self.gic_v2 as u64) << 5;
                x[3] = crate::arch::s2_root_pages(self.boot.mem.ia_bits);
            }
            abi::VENDOR_HYP_CALL_UID => {
                for (r, w) in x.iter_mut().zip(abi::KCORE_UID) {
                    *r = w as u64;
                }
            }
            abi::VENDOR_HYP_REVISION => {
                x[0] = abi::ABI_MAJOR;
                x[1] = abi::ABI_MINOR;
            }
            abi::REGISTER_VM => {
                // Only protected VMs (x2 = 0) are modelled here; another kind is refused.
                let r = if x[2] == 0 {
                    self.boot_op(BootOp::RegisterVm { root: x[1], kind: 0 }, c)
                } else if x[2] == 1 {
                    unimplemented!("the top-level specification models protected VMs only")
                } else {
                    Err(Error::InvalidParameter)
                };
                if let Ok(v) = r {
                    self.vcpus.remove(&(v as u16));
                    self.lrs.retain(|k, _| k.0 != v as u16);
                }
                ok_value(x, r.map(Some))
            }
            abi::REGISTER_VCPU => {
                let r = self.boot_op(BootOp::RegisterVcpu { vmid: x[1], vcpu: x[2] }, c);
                if r.is_ok() {
                    self.lrs.insert((x[1] as u16, x[2] as usize), [0; 4]);
                }
                ok_value(x, r.map(|_| None))
            }
            abi::SET_BOOT_INFO => {
                let op = BootOp::SetBootInfo { vmid: x[1], load_ipa: x[2], bytes: x[3], sig_pfn: x[4] };
                let r = self.boot_op(op, c);
                ok_value(x, r.map(Some))
            }
            abi::MAP_IMAGE_PAGE => {
                let op = BootOp::MapImagePage { vmid: x[1], image: x[2], index: x[3], pfn: x[4] };
                let r = self.boot_op(op, c);
                ok_value(x, r.map(|_| None))
            }
            abi::VERIFY_VM => {
                let r = self.boot_op(BootOp::Verify { vmid: x[1], arg: x[2] }, c);
                if r.is_ok() {
                    self.start_vcpus(x[1] as u16);
                }
                ok_value(x, r.map(|_| None))
            }
            abi::DESTROY_VM => {
                let r = self.boot_op(BootOp::Destroy { vmid: x[1] }, c);
                if r.is_ok() {
                    self.vcpus.remove(&(x[1] as u16));
                    self.lrs.retain(|k, _| k.0 != x[1] as u16);
                }
                ok_value(x, r.map(|_| None))
            }
            abi::DONATE_PAGE => {
                let r = match x[1] {
                    0 => Ok(0),
                    v => vmid_of(v),
                }
                .and_then(|vmid| self.boot_op(BootOp::Donate { vmid, pfn: x[2] }, c));
                ok_value(x, r.map(|_| None))
            }
            abi::VM_STATE => match vmid_of(x[1]) {
                Ok(v) => {
                    let vm = self.boot.vms.get(&v).cloned().unwrap_or_default();
                    x[0] = 0;
                    x[1] = vm.state as u64;
                    x[2] = (0..MAX_VCPUS).filter(|&i| vm.vcpus[i] != VcpuState::Unused).map(|i| 1 << i).sum();
                }
                Err(e) => x[0] = code(e),
            },
            abi::MAP_VM_PAGE => {
                let r = self.map_vm_page(x[1], x[2], x[3]);
                ok_value(x, r.map(|_| None))
            }
            abi::INJECT_IRQ => {
                let r = self.inject_irq(x[1], x[2], x[3], x[4]);
                ok_value(x, r.map(|_| None))
            }
            abi::VCPU_IRQ_STATE => match vcpu_of(x[1], x[2]) {
                Err(e) => x[0] = code(e),
                Ok((vmid, vcpu)) => match (self.vcpu_state(vmid, vcpu), self.lrs.get(&(vmid, vcpu))) {
                    (VcpuState::Active, _) => x[0] = code(Error::BadState),
                    (_, None) => x[0] = code(Error::NotFound),
                    (_, Some(_)) => {
                        // State, group, priority, EOI, INTID of each: nothing else. Reported
                        // once: the ones the guest is done with (state invalid) are cleared.
                        let lrs = self.lrs.get_mut(&(vmid, vcpu)).expect("matched");
                        x[0] = 0;
                        for (i, lr) in lrs.iter_mut().enumerate() {
                            x[1 + i] = report_lr(lr);
                        }
                    }
                },
            },
            _ => x[0] = abi::NOT_SUPPORTED as u64,
        }
        Route::Return
    }

    /// A verified VM's vCPUs: vCPU 0 waits for its first run at the first image's load
    /// address; the others wait for the guest's PSCI CPU_ON.
    fn start_vcpus(&mut self, vmid: u16) {
        let vm = &self.boot.vms[&vmid];
        let fresh = AbsVcpu { run: Run::Off, x: [0; 31], pc: 0, pending: Pending::None };
        let vcpus = (0..MAX_VCPUS)
            .take_while(|&v| vm.vcpus[v] != VcpuState::Unused)
            .map(|v| AbsVcpu { run: if v == 0 { Run::Ready { first: true } } else { Run::Off }, ..fresh.clone() })
            .collect();
        let images = vm.images.iter().map(|i| (i.load_ipa, i.load_ipa + i.bytes)).collect();
        let entry = vm.images.first().map_or(0, |i| i.load_ipa);
        let vcpus = AbsVcpus {
            vcpus,
            entry,
            boot_arg: vm.boot_arg,
            images,
            off: false,
            ids: self.ids,
            mdscr: 0,
            protected: true,
            ram: vec![],
            ipa_limit: 1 << self.boot.mem.ia_bits,
            guard: Default::default(),
            guard_used: false,
        };
        self.vcpus.insert(vmid, vcpus);
        self.mdscr.retain(|k, _| k.0 != vmid);
    }

    fn run(&mut self, vmid: u64, vcpu: u64, value: u64, opts: u64, inject: [u64; 3]) -> Result<(u16, usize)> {
        let (vmid, vcpu) = vcpu_of(vmid, vcpu)?;
        // x4: bit 0 asks for underflow notification, bit 1 for the list registers in x5..x7
        // both ways; nothing else is defined.
        if opts > 3 {
            return Err(Error::InvalidParameter);
        }
        let report_lrs = opts & 2 != 0;
        // Each injection word: 0, or bit 63 with INTID 31:0 and attributes 40:32.
        let mut wanted = vec![];
        for w in inject.into_iter().filter(|_| report_lrs) {
            if w != 0 {
                if w >> 63 == 0 || (w >> 41) & ((1 << 22) - 1) != 0 {
                    return Err(Error::InvalidParameter);
                }
                let (intid, attrs) = (w & 0xffff_ffff, (w >> 32) & 0x1ff);
                if intid >= 1020 || intid == 27 {
                    return Err(Error::InvalidParameter);
                }
                wanted.push((intid, attrs));
            }
        }
        if self.vm_state(vmid) != VmState::Verified {
            return Err(Error::BadState);
        }
        let vs = &self.vcpus[&vmid];
        let first = vs.vcpus.get(vcpu).is_some_and(|c| c.run == Run::Ready { first: true });
        let (r, next) = vs.run(vcpu, value);
        r?;
        // The injections go in as INJECT_IRQ's would, all or none: on a refusal nothing
        // changes and the vCPU does not run.
        if !wanted.is_empty() {
            let mut lrs = self.lrs[&(vmid, vcpu)];
            for &(intid, attrs) in &wanted {
                place_irq(&mut lrs, intid, attrs)?;
            }
            self.lrs.insert((vmid, vcpu), lrs);
        }
        self.vcpus.insert(vmid, next);
        self.report_lrs = report_lrs;
        if first {
            self.pstate.insert((vmid, vcpu), RESET_PSTATE);
        }
        self.boot.vms.get_mut(&vmid).expect("verified").vcpus[vcpu] = VcpuState::Active;
        // Its debug control comes back onto the CPU (zero after a reset).
        let saved = if first { 0 } else { self.mdscr.get(&(vmid, vcpu)).copied().unwrap_or(0) };
        self.vcpus.get_mut(&vmid).expect("verified").mdscr = saved;
        self.running = Some((vmid, vcpu));
        Ok((vmid, vcpu))
    }

    fn map_vm_page(&mut self, vmid: u64, vcpu: u64, pfn: u64) -> Result<()> {
        let (vmid, vcpu) = vcpu_of(vmid, vcpu)?;
        if self.vm_state(vmid) != VmState::Verified || self.vcpu_state(vmid, vcpu) != VcpuState::Ready {
            return Err(Error::BadState);
        }
        let Pending::Fault { ipa } = self.vcpus[&vmid].vcpus[vcpu].pending else { return Err(Error::BadState) };
        let (r, mem) = self.boot.mem.step(MemOp::ProtMap { vmid, gfn: ipa >> 12, pfn, level: 3 });
        r?;
        self.boot.mem = mem;
        self.vcpus.get_mut(&vmid).expect("verified").vcpus[vcpu].pending = Pending::None;
        Ok(())
    }

    fn inject_irq(&mut self, vmid: u64, vcpu: u64, intid: u64, attrs: u64) -> Result<()> {
        let (vmid, vcpu) = vcpu_of(vmid, vcpu)?;
        if intid >= 1020 || intid == 27 || attrs >= 0x200 {
            // 1020-1023 are special, above is not an INTID; 27 (the virtual timer) is KCore's.
            return Err(Error::InvalidParameter);
        }
        let st = self.vcpu_state(vmid, vcpu);
        if self.vm_state(vmid) != VmState::Verified || st != VcpuState::Ready {
            return Err(Error::BadState);
        }
        let lrs = self.lrs.get_mut(&(vmid, vcpu)).expect("registered");
        place_irq(lrs, intid, attrs)
    }

    /// A trap `t` (`None`: an interrupt) of the running guest, whose registers are `regs`
    /// and whose EL1 exception registers are `el1` (the trap generator puts `t`'s arguments
    /// in `regs` first). Where control goes, the guest's registers and EL1 registers after,
    /// the host's x0..x4 if it exits, and the state after.
    pub fn guest_trap(
        &self,
        t: Option<GuestTrap>,
        regs: Regs,
        el1: El1Exc,
    ) -> (Route, Regs, El1Exc, Option<HostResult>, AbsTop) {
        let (vmid, vcpu) = self.running.expect("a guest runs");
        let (mut s, mut r, mut e) = (self.clone(), regs, el1);
        let vs = s.vcpus.get_mut(&vmid).expect("running VM");
        vs.vcpus[vcpu].x = r.x;
        vs.vcpus[vcpu].pc = r.pc;
        let action = match t {
            None => ExitAction::ToHost(Exit::Irq),
            Some(t) => {
                let (a, next) = vs.trap(vcpu, t);
                *vs = next;
                a
            }
        };
        let v = &vs.vcpus[vcpu];
        r.x = v.x;
        r.pc = v.pc;
        let started = match action {
            ExitAction::ToHost(Exit::VcpuStarted { vcpu }) => Some(vcpu),
            _ => None,
        };
        let shutdown = matches!(action, ExitAction::ToHost(Exit::Shutdown));
        let route = match action {
            ExitAction::Resume => Route::Return,
            ExitAction::InjectUndef => {
                e.deliver(&mut r, UNDEFINED_ESR, None);
                Route::Return
            }
            ExitAction::InjectAbort => {
                // Refused: a RAM fault outside RAM, or MMIO the guest did not enrol while it
                // uses the MMIO guard. The trap generator's RAM faults are data aborts (a
                // write) at `ipa`; its MMIO accesses are data aborts at `ipa`, WnR as they go.
                let (ipa, write) = match t {
                    Some(GuestTrap::RamFault { ipa } | GuestTrap::MmioWrite { ipa, .. }) => (ipa, true),
                    Some(GuestTrap::MmioRead { ipa, .. }) => (ipa, false),
                    _ => unreachable!("only data aborts are refused"),
                };
                let esr_el1 = refused_access_esr((0x24 << 26) | ((write as u64) << 6), r.pstate);
                e.deliver(&mut r, esr_el1, Some(ipa));
                Route::Return
            }
            ExitAction::ToHost(_) => Route::ExitGuest,
        };
        let vs = s.vcpus.get_mut(&vmid).expect("running VM");
        vs.vcpus[vcpu].pc = r.pc;
        s.pstate.insert((vmid, vcpu), r.pstate);
        if let Some(t) = started {
            s.pstate.insert((vmid, t as usize), RESET_PSTATE);
            s.mdscr.insert((vmid, t as usize), 0);
        }
        if route == Route::ExitGuest {
            let m = s.vcpus[&vmid].mdscr;
            s.mdscr.insert((vmid, vcpu), m);
        }
        if shutdown {
            s.boot.vms.get_mut(&vmid).expect("running VM").state = VmState::PowerOff;
        }
        let host = match action {
            ExitAction::ToHost(exit) => {
                // The run ends: the vCPU may run again (wherever the host asks).
                s.vcpus.get_mut(&vmid).expect("running VM").finish(vcpu);
                s.boot.vms.get_mut(&vmid).expect("running VM").vcpus[vcpu] = VcpuState::Ready;
                s.running = None;
                let w = exit_words(exit);
                // The list registers in x5..x7 if the run asked: VCPU_IRQ_STATE's report.
                let lrs = s.report_lrs.then(|| {
                    let lrs = s.lrs.get_mut(&(vmid, vcpu)).expect("registered");
                    [report_lr(&mut lrs[0]), report_lr(&mut lrs[1]), report_lr(&mut lrs[2])]
                });
                Some(([0, w[0], w[1], w[2], w[3]], lrs))
            }
            _ => None,
        };
        (route, r, e, host, s)
    }
}
