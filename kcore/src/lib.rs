//! KCore: the trusted core of a Rust SeKVM.
//!
//! KCore runs at EL2 and owns every translation table; the Linux host (KServ) runs at EL1
//! under a stage-2 table that KCore fills on demand. This crate holds all of KCore's logic as
//! the stacked layers of SeKVM's proof structure (see `docs/LAYERS.md`). Each layer calls only
//! the layers beneath it. Layer 0, [`machine`], is the single hardware seam: on the target it
//! is the real CPU and memory; on the development machine a simulated machine stands in, so
//! every layer above is tested with `cargo test`.
//!
//! The EL2 binary (`boot/`) provides entry, vectors and the panic handler, and calls into
//! this crate. No inline assembly lives here outside layer 0.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod arch;
pub mod error;
pub mod machine;

pub mod locks;
pub mod mem;
pub mod pt;

pub mod el2map;
pub mod invariants;
pub mod kcore;
pub mod psci;
pub mod smmu;
#[cfg(not(target_os = "none"))]
pub mod spec;
pub mod spt;
pub mod trap;
pub mod vcpu;
pub mod vm;

pub use error::Error;

/// Size of a translation granule and of an ownership-tracked page (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Size of a level-2 block (2 MiB) with a 4 KiB granule.
pub const BLOCK_2M: u64 = 2 << 20;
/// Size of a level-1 block (1 GiB) with a 4 KiB granule.
pub const BLOCK_1G: u64 = 1 << 30;

/// Round `x` down to a multiple of `align` (a power of two).
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

/// Round `x` up to a multiple of `align` (a power of two), saturating at the top.
pub const fn align_up(x: u64, align: u64) -> u64 {
    match x.checked_add(align - 1) {
        Some(v) => v & !(align - 1),
        None => !(align - 1),
    }
}

/// A physical frame number.
pub type Pfn = u64;
/// A guest (or host intermediate-physical) frame number.
pub type Gfn = u64;
