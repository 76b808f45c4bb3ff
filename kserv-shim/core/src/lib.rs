//! The KServ shim's logic, `no_std` so the kserv module can link it, and tested on the
//! development machine like `kcore`: here the virtual GICv3 ([`vgic`]) the host emulates for
//! KCore's guests from their MMIO exits, SGI exits and the VMM's interrupt lines, and feeds to
//! KCore's list-register interface.
#![cfg_attr(not(test), no_std)]

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
