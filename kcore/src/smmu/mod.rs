//! KCore's SMMUv3 (layers 22-26): KCore owns the real SMMU (its stream table, command queue
//! and registers); the host's stock arm-smmu-v3 driver keeps working against an emulated
//! SMMU whose register accesses trap to KCore (reference/smmuv3.md 2.2).
//!
//! | layer | module | job |
//! |---|---|---|
//! | 22 SmmuRaw | [`raw`] | encodings: registers, STEs, commands ([`raw::Command`]), events |
//! | 23 SmmuCoreAux | [`coreaux`] | the register policy: [`coreaux::classify`] |
//! | 24 SmmuCore | [`core`] | the register file the host sees: [`core::HostSmmu`] |
//! | 25 SmmuAux | [`aux`] | STE shadows, the command filter, host table and queue walks |
//!
//! [`queue`] is KCore's own use of the device (outside the stack, like `arch.rs`): taking it
//! at boot, its command queue (every ownership change's invalidation) and event queue.
//!
//! Layers 22-25 are pure: values in, values and actions out. They touch no device and no
//! memory; host memory is read only through [`aux::HostMem`].
//!
//! # How to wire it (layer 26)
//!
//! - **Boot.** After taking the real SMMU over, keep one
//!   `HostSmmu::new(HostLimits::from_idr(real IDR0, IDR1, IDR3), real GBPA as found)` under the
//!   `smmu` lock, and KCore's stage-2 words `s2 = raw::s2_words(0, vtcr, host_dma_root)`.
//! - **Trap.** A host stage-2 data abort in the SMMU's 128 KiB with ESR.ISV = 1 gives
//!   `off = ipa - smmu_base`, `size = 1 << SAS`, and for a write the value of Xt (SRT 31 reads
//!   as zero). ISV = 0 or an `Err` from `read`/`write` (layer 23 says `Deny`): treat as RAZ/WI
//!   and log, or inject an external abort. Then advance ELR.
//!   - Read: `host.read(off, size)?.resolve(|o| real 32-bit read at smmu_base + o)` into Xt.
//!   - Write: `host.write(off, size, val)?`, then carry out each [`core::Action`] in order:
//!     - `WriteReal { off, value, mask }`: read-modify-write of the real register.
//!     - `ProcessCmdq`: `let t = aux::host_strtab(&host);` then
//!       `aux::drain_cmdq(&mut host, &mem, &mut sink)` with a [`aux::CmdSink`] whose
//!       `forward` pushes to the real queue, `reshadow(first, count)` writes
//!       `aux::shadow_of_sid(t.as_ref(), &mem, sid, s2)` for each stream into KCore's table
//!       (safe sequence: V=0, CFGI+SYNC, dwords 1-7, CFGI+SYNC, dword 0, CFGI+SYNC; an L2
//!       table allocated the first time a stream of it is shadowed; streams outside the
//!       DT's `iommu-map` skipped), and `complete` issues KCore's CMD_SYNC and waits for
//!       the real CONS. Then carry out `Drained::actions`.
//!     - `SmmuEnabled` / `SmmuDisabled`: re-shadow every stream from `host_strtab` (it is
//!       `None`, so abort, while disabled), then CFGI_ALL + SYNC on the real queue.
//!     - `EnableEvtq { base }`: the queue is 2^min(LOG2SIZE, IDR1.EVTQS) 32-byte records at
//!       `base & raw::ADDR_MASK_51_5`; check every page is host-owned and pin it, write the
//!       real EVTQ_BASE, set the real CR0.EVTQEN and wait for CR0ACK; if a page is refused,
//!       `host.evtq_enable_failed()`. `DisableEvtq`: clear the real EVTQEN, unpin.
//!     - `SignalGerror`: the emulated GERROR.CMDQ_ERR became active with the host's
//!       GERROR_IRQEN set; the real SMMU raises no interrupt for it, so pend the host's
//!       gerror SPI (GICD_ISPENDR). Without it the host's CMD_SYNC wait times out.
//!     - `Refused { .. }`: log only.
//! - **Host memory.** Implement [`aux::HostMem::read_u64`] as "owner(pa) is the host, then
//!   read through KCore's map" (taking `s2page` after `smmu`, per the lock order). Every
//!   host STE and command is copied once; only the copy is acted on.
//! - **Debug checks.** Every real STE satisfies [`aux::shadow_is_safe`] for `s2`.

pub mod aux;
pub mod core;
pub mod coreaux;
pub mod ops;
pub mod queue;
pub mod raw;
