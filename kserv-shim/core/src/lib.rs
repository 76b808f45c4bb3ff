//! The KServ shim's logic, `no_std` so the kserv module can link it, and tested on the
//! development machine like `kcore`: here the virtual GICv3 ([`vgic`]) the host emulates for
//! KCore's guests from their MMIO exits, SGI exits and the VMM's interrupt lines, and feeds to
//! KCore's list-register interface.
#![cfg_attr(not(test), no_std)]

pub mod boot;
pub mod ffi;
pub mod regs;
pub mod vgic;

/// The KCore ABI version this shim was built for (`major << 16 | minor`, from KCore's own
/// definition), for the module's C glue to compare with the header it was compiled with.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_abi_version() -> u32 {
    ((kcore::abi::ABI_MAJOR << 16) | kcore::abi::ABI_MINOR) as u32
}

// A panic in the shim's logic is a bug (bad input gets an error): the kernel module's glue
// reports it and stops the kernel the way the kernel does for its own bugs.
#[cfg(all(target_os = "none", not(test)))]
unsafe extern "C" {
    /// `kserv_core_panic` in the module's C glue: never returns.
    fn kserv_core_panic() -> !;
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the glue's handler takes no arguments and does not return (it calls BUG()).
    unsafe { kserv_core_panic() }
}

/// Linux error numbers the shim answers with (`include/uapi/asm-generic/errno-base.h`).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory (no such object).
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
}

/// The (negative) Linux error number for a KCore status `code` (`docs/ABI.md`): what the
/// module returns to userspace when KCore refuses a request; 0 for success.
pub const fn errno_of(code: i64) -> i32 {
    use kcore::abi;
    match code {
        abi::SUCCESS => 0,
        abi::INVALID_PARAMETER => -errno::EINVAL,
        abi::DENIED => -errno::EPERM,
        abi::NO_MEMORY => -errno::ENOMEM,
        abi::BAD_STATE => -errno::EBUSY,
        abi::EXISTS => -errno::EEXIST,
        abi::NOT_FOUND => -errno::ENOENT,
        abi::NOT_SUPPORTED => -errno::EOPNOTSUPP,
        _ => -errno::EIO,
    }
}

/// [`errno_of`] for the module's C glue.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_errno(code: i64) -> i32 {
    errno_of(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcore_codes_become_errnos() {
        assert_eq!(errno_of(kcore::abi::SUCCESS), 0);
        assert_eq!(errno_of(kcore::abi::NO_MEMORY), -12);
        assert_eq!(errno_of(kcore::abi::INVALID_PARAMETER), -22);
        assert_eq!(errno_of(kcore::abi::BAD_SIGNATURE), -5, "anything else is an I/O error");
        assert_eq!(errno_of(1), -5);
    }
}
