//! Fatal errors: a broken KCore invariant stops the whole machine. Nothing continues after
//! a fatal error: the failing CPU reports it, marks KCore halted (any CPU entering KCore
//! afterwards parks), and powers the system off through PSCI, which stops every CPU. Under
//! test emulators with semihosting (`kcore.semihosting`), it exits with status 70 instead.

use core::sync::atomic::{AtomicBool, Ordering};

static HALTED: AtomicBool = AtomicBool::new(false);

/// Exit status a fatal error gives under semihosting.
pub const FATAL_EXIT_STATUS: u32 = 70;

/// Has KCore halted?
pub fn halted() -> bool {
    HALTED.load(Ordering::Acquire)
}

/// Stop the machine after reporting `args`.
pub fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    let first = !HALTED.swap(true, Ordering::AcqRel);
    if first {
        crate::console::emergency_line(args);
        crate::console::emergency_line(format_args!("KCore halted; stopping all CPUs"));
        let semihosting = crate::el2::OPTIONS.get().is_some_and(|o| o.semihosting);
        if semihosting {
            semihosting_exit(FATAL_EXIT_STATUS);
        }
        crate::trap::firmware_call([kcore::psci::SYSTEM_OFF as u64, 0, 0, 0, 0, 0, 0, 0]);
    }
    park()
}

/// Wait forever with interrupts masked.
pub fn park() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting have no memory-safety effects.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfe", options(nostack)) };
    }
}

/// Semihosting SYS_EXIT (0x18) with ADP_Stopped_ApplicationExit (0x20026) and `status`.
pub fn semihosting_exit(status: u32) {
    let block = [0x20026u64, status as u64];
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting trap; the emulator reads the two-word
    // parameter block, which lives on this stack for the duration of the call.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(format_args!("panic: {info}"))
}
