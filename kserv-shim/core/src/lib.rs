//! The KServ shim's logic, `no_std` so the kserv module can link it, and tested on the
//! development machine like `kcore`: here the virtual GICv3 ([`vgic`]) the host emulates for
//! KCore's guests from their MMIO exits, SGI exits and the VMM's interrupt lines, and feeds to
//! KCore's list-register interface.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod vgic;
