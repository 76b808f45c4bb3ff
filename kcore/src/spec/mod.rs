//! Executable specifications, one per layer, in the spirit of SeKVM's `RData` specs: pure
//! functions over an abstract state. The refinement checks in `kcore/tests/refine_*.rs` run the
//! real code on the simulated machine beside these, over generated operation sequences, and
//! compare results and the abstraction of the concrete state after every step. This is
//! testing, not proof.
//!
//! | layers | spec |
//! |---|---|
//! | 1-4 | [`locks`]: a FIFO queue of CPUs per lock |
//! | 5 | [`ptalloc`]: a set of handed-out pages and a capacity |
//! | 6-8 | [`npt`]: leaves and present tables of one translation table |
//! | 9-12 | [`spt`]: the host-DMA domain and what the SMMU may have cached |
//! | 13-15 | [`pages`]: RAM as a set of pfns, records as a map pfn -> record |
//! | 16-17 | [`mem`]: owners, counts, gfns, host and VM maps, and every transition |
//! | 18-21 | [`boot`]: the VM and vCPU state machines and boot images |
//! | 22-25 | [`smmu`]: the host's view of the SMMU registers, STE shadows, command verdicts |
//! | 27-28 | [`vcpu`]: vCPU run states, registers, pending MMIO and faults, guest traps |
//! | 29 | [`ctxt`]: the world switch as a function on a CPU's register file |
//! | 33-34 | [`trap`]: exception delivery; the top-level step composed of the specs above |

pub mod boot;
pub mod ctxt;
pub mod locks;
pub mod mem;
pub mod npt;
pub mod pages;
pub mod ptalloc;
pub mod smmu;
pub mod spt;
pub mod trap;
pub mod vcpu;
