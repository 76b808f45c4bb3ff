//! KCore's console: the PL011 the device tree names, shared with the host. Every KCore line
//! starts with `[kcore cpuN LEVEL]` so it stays readable between the host's output.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::mutex::SpinMutex;

/// PL011 data register.
const UARTDR: u64 = 0x00;
/// PL011 flag register; bit 5 = transmit FIFO full.
const UARTFR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

static BASE: AtomicU64 = AtomicU64::new(0);
/// Locking needs exclusives, which only work reliably on cacheable memory: until the EL2 MMU
/// is on, lines are written without the lock (one CPU runs then).
static LOCKING: AtomicBool = AtomicBool::new(false);
static LOCK: SpinMutex<()> = SpinMutex::new(());
static LOGGER: Logger = Logger;

struct Uart;

impl Uart {
    fn put(&self, byte: u8) {
        let base = BASE.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        // SAFETY: `base` is the PL011 from the device tree, identity mapped as device memory
        // at EL2 (or accessed with the MMU off); these are its documented registers.
        unsafe {
            while core::ptr::read_volatile((base + UARTFR) as *const u32) & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((base + UARTDR) as *mut u32, byte as u32);
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        line(format_args!("{:<5}] {}", record.level(), record.args()));
    }

    fn flush(&self) {}
}

/// Print one prefixed line.
pub fn line(args: fmt::Arguments<'_>) {
    let cpu = crate::cpu::current_index();
    let _guard = LOCKING.load(Ordering::Relaxed).then(|| LOCK.lock());
    let _ = writeln!(Uart, "[kcore cpu{cpu} {args}");
}

/// Print a line without taking the console lock (fatal paths: the lock may be held by the
/// CPU that failed).
pub fn emergency_line(args: fmt::Arguments<'_>) {
    let cpu = crate::cpu::current_index();
    let _ = writeln!(Uart, "[kcore cpu{cpu} FATAL] {args}");
}

/// Start logging to the PL011 at `base`.
pub fn init(base: u64, level: log::LevelFilter) {
    BASE.store(base, Ordering::Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// The EL2 MMU is on: serialise lines between CPUs from now on.
pub fn mmu_on() {
    LOCKING.store(true, Ordering::Relaxed);
}
