//! The simulated machine used by host tests: physical memory as a buffer of words, and a log
//! of the TLB invalidations KCore issued.

use super::Machine;
use crate::PAGE_SIZE;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
}

thread_local! {
    static CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

impl SimMachine {
    /// A machine with zeroed RAM at `[base, base + size)`; both page aligned.
    pub fn new(base: u64, size: u64) -> Self {
        assert!(base.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE));
        let words = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        SimMachine { base, words, tlb_log: Mutex::new(Vec::new()), publishes: AtomicUsize::new(0) }
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
}
