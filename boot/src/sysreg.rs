//! Access to system registers by name or by `S3_<op1>_C<n>_C<m>_<op2>` encoding (for the
//! registers LLVM or aarch64-cpu do not name).

/// Read a system register.
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading a system register at EL2 has no memory-safety effects.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Write a system register (the caller adds an ISB where the architecture needs one).
macro_rules! write_sysreg {
    ($reg:literal, $val:expr) => {{
        let v: u64 = $val;
        // SAFETY: KCore owns EL2; every register written this way only configures EL2 or the
        // state the lower ELs will run in, which is KCore's to decide.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

/// Instruction synchronization barrier.
pub fn isb() {
    // SAFETY: a barrier has no memory-safety preconditions.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

pub(crate) use {read_sysreg, write_sysreg};
