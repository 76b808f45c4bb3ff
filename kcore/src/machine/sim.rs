//! The simulated machine used by host tests: physical memory as a buffer of words, a log of
//! the TLB invalidations KCore issued, and each CPU's system and FP/SIMD registers.

use super::{FP_WORDS, FpRegs, Machine, SYSREG_COUNT, SysReg};
use crate::PAGE_SIZE;
use crate::locks::locks::MAX_CPUS;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One TLB maintenance operation, as recorded by the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbOp {
    /// Invalidate by IPA within a VMID.
    Ipa { vmid: u16, ipa: u64 },
    /// Invalidate a whole VMID.
    Vmid { vmid: u16 },
}

/// A machine with `[base, base + size)` of RAM and nothing else.
pub struct SimMachine {
    base: u64,
    words: Vec<AtomicU64>,
    tlb_log: Mutex<Vec<TlbOp>>,
    publishes: AtomicUsize,
    sysregs: Vec<[AtomicU64; SYSREG_COUNT]>,
    fp: Vec<[AtomicU64; FP_WORDS]>,
    syncs: AtomicUsize,
    ppis: Vec<AtomicU64>,
    gich: Vec<[AtomicU32; GICH_WORDS]>,
    /// The simulated SMMUv3 (registers, command processing, TLB, DMA).
    pub smmu: Mutex<super::simsmmu::SimSmmu>,
    /// Shared peripheral interrupts KCore made pending, in order.
    pub pended_spis: Mutex<Vec<u32>>,
}

/// 32-bit registers in the simulated GICH frame (GICH_LR<n> end at 0x200).
const GICH_WORDS: usize = 0x200 / 4;

thread_local! {
    static CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

impl SimMachine {
    /// A machine with zeroed RAM at `[base, base + size)`; both page aligned.
    pub fn new(base: u64, size: u64) -> Self {
        assert!(base.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE));
        let words = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        SimMachine {
            base,
            words,
            tlb_log: Mutex::new(Vec::new()),
            publishes: AtomicUsize::new(0),
            sysregs: (0..MAX_CPUS).map(|_| core::array::from_fn(|_| AtomicU64::new(0))).collect(),
            fp: (0..MAX_CPUS).map(|_| core::array::from_fn(|_| AtomicU64::new(0))).collect(),
            syncs: AtomicUsize::new(0),
            ppis: (0..MAX_CPUS).map(|_| AtomicU64::new(0)).collect(),
            gich: (0..MAX_CPUS).map(|_| core::array::from_fn(|_| AtomicU32::new(0))).collect(),
            smmu: Mutex::new(super::simsmmu::SimSmmu::default()),
            pended_spis: Mutex::new(Vec::new()),
        }
    }

    /// The private interrupts KCore enabled in CPU `cpu`'s redistributor (bit n = INTID n).
    pub fn enabled_ppis(&self, cpu: usize) -> u64 {
        self.ppis[cpu].load(Ordering::Relaxed)
    }

    /// Disable every private interrupt of CPU `cpu` (what the host's GIC driver does at CPU
    /// initialisation).
    pub fn clear_ppis(&self, cpu: usize) {
        self.ppis[cpu].store(0, Ordering::Relaxed)
    }

    /// GICH register at offset `off` of CPU `cpu` (what a test observes of the GICv2
    /// virtual interface).
    pub fn gich_reg(&self, cpu: usize, off: u64) -> u32 {
        self.gich[cpu][gich_index(off)].load(Ordering::Relaxed)
    }

    /// Set GICH register `off` of CPU `cpu` (what the guest's virtual CPU interface did).
    pub fn set_gich_reg(&self, cpu: usize, off: u64, v: u32) {
        self.gich[cpu][gich_index(off)].store(v, Ordering::Relaxed)
    }

    /// System register `r` of CPU `cpu` (what a test observes of the CPU).
    pub fn sysreg(&self, cpu: usize, r: SysReg) -> u64 {
        self.sysregs[cpu][r as usize].load(Ordering::Relaxed)
    }

    /// Set system register `r` of CPU `cpu` (what software at EL1 or the hardware did).
    pub fn set_sysreg(&self, cpu: usize, r: SysReg, v: u64) {
        self.sysregs[cpu][r as usize].store(v, Ordering::Relaxed)
    }

    /// CPU `cpu`'s FP/SIMD registers.
    pub fn fp_regs(&self, cpu: usize) -> FpRegs {
        core::array::from_fn(|i| self.fp[cpu][i].load(Ordering::Relaxed))
    }

    /// Set CPU `cpu`'s FP/SIMD registers.
    pub fn set_fp_regs(&self, cpu: usize, v: &FpRegs) {
        for (r, x) in self.fp[cpu].iter().zip(v) {
            r.store(*x, Ordering::Relaxed);
        }
    }

    /// How many context synchronisations (`ISB`) were issued.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Set the CPU index reported to code running on this thread.
    pub fn set_cpu(cpu: usize) {
        CPU.with(|c| c.set(cpu));
    }

    fn word(&self, pa: u64) -> &AtomicU64 {
        assert!(pa.is_multiple_of(8), "unaligned word access at {pa:#x}");
        let off = pa.checked_sub(self.base).expect("access below simulated RAM");
        &self.words[(off / 8) as usize]
    }

    /// Take and clear the log of TLB invalidations issued so far.
    pub fn take_tlb_log(&self) -> Vec<TlbOp> {
        core::mem::take(&mut *self.tlb_log.lock().unwrap())
    }

    /// How many times page-table writes were published (`DSB ISHST`).
    pub fn publishes(&self) -> usize {
        self.publishes.load(Ordering::Relaxed)
    }

    /// Fill the page at `pa` with `byte` (tests use this to model old contents).
    pub fn fill_page(&self, pa: u64, byte: u8) {
        let v = u64::from_ne_bytes([byte; 8]);
        for i in 0..PAGE_SIZE / 8 {
            self.store(pa + 8 * i, v);
        }
    }

    /// Is the page at `pa` all zeros?
    pub fn page_is_zero(&self, pa: u64) -> bool {
        (0..PAGE_SIZE / 8).all(|i| self.load(pa + 8 * i) == 0)
    }
}

fn gich_index(off: u64) -> usize {
    assert!(off.is_multiple_of(4) && off < 0x200, "GICH offset {off:#x}");
    (off / 4) as usize
}

impl Machine for SimMachine {
    fn load(&self, pa: u64) -> u64 {
        self.word(pa).load(Ordering::Acquire)
    }
    fn store(&self, pa: u64, val: u64) {
        self.word(pa).store(val, Ordering::Release)
    }
    fn zero_page(&self, pa: u64) {
        assert!(pa.is_multiple_of(PAGE_SIZE));
        for i in 0..PAGE_SIZE / 8 {
            self.store(pa + 8 * i, 0);
        }
    }
    fn publish_table_writes(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }
    fn tlb_flush_ipa(&self, vmid: u16, ipa: u64) {
        self.tlb_log.lock().unwrap().push(TlbOp::Ipa { vmid, ipa });
    }
    fn tlb_flush_vmid(&self, vmid: u16) {
        self.tlb_log.lock().unwrap().push(TlbOp::Vmid { vmid });
    }
    fn cpu_index(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn read_sysreg(&self, r: SysReg) -> u64 {
        self.sysreg(self.cpu_index(), r)
    }
    fn write_sysreg(&self, r: SysReg, val: u64) {
        self.set_sysreg(self.cpu_index(), r, val)
    }
    fn sync_context(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
    fn fp_save(&self, dst: &mut FpRegs) {
        *dst = self.fp_regs(self.cpu_index());
    }
    fn fp_load(&self, src: &FpRegs) {
        self.set_fp_regs(self.cpu_index(), src)
    }
    fn fp_save_to(&self, pa: u64) {
        assert!(pa.is_multiple_of(16), "unaligned FP area at {pa:#x}");
        for (i, v) in self.fp_regs(self.cpu_index()).iter().enumerate() {
            self.store(pa + 8 * i as u64, *v);
        }
    }
    fn fp_load_from(&self, pa: u64) {
        assert!(pa.is_multiple_of(16), "unaligned FP area at {pa:#x}");
        let v: FpRegs = core::array::from_fn(|i| self.load(pa + 8 * i as u64));
        self.set_fp_regs(self.cpu_index(), &v)
    }
    fn enable_private_irq(&self, intid: u32) {
        assert!((16..32).contains(&intid), "not a PPI: {intid}");
        self.ppis[self.cpu_index()].fetch_or(1 << intid, Ordering::Relaxed);
    }
    fn gich_read(&self, off: u64) -> u32 {
        self.gich_reg(self.cpu_index(), off)
    }
    fn gich_write(&self, off: u64, val: u32) {
        self.set_gich_reg(self.cpu_index(), off, val)
    }
    fn pend_spi(&self, intid: u32) {
        assert!((32..1020).contains(&intid), "not an SPI: {intid}");
        self.pended_spis.lock().unwrap().push(intid);
    }
    fn smmu_read(&self, off: u64, bytes: u8) -> u64 {
        self.smmu.lock().unwrap().read(off, bytes)
    }
    fn smmu_write(&self, off: u64, bytes: u8, val: u64) {
        let mut smmu = self.smmu.lock().unwrap();
        smmu.write(off, bytes, val);
        smmu.process_commands(self);
    }
}
