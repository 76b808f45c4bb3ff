//! Layer 25 (SmmuAux): what KCore makes of the host's SMMU structures.
//!
//! - [`shadow_ste`]: the STE KCore installs for an STE the host wrote (abort stays abort,
//!   bypass becomes stage-2-only, stage 1 becomes nested; stage 2 always KCore's).
//! - [`filter`]: what KCore does with one command from the host's queue (forward a canonical
//!   re-encoding, re-shadow STEs, drop, or refuse with CERROR_ILL).
//! - [`HostStrtab`]: where the host's stream table keeps the STE of a stream (linear or
//!   2-level), as address arithmetic.
//! - [`CmdqWalk`]: the host command queue entries between CONS and PROD, with wrap.
//! - [`drain_cmdq`]: the queue walk, filter and CONS/CONS.ERR bookkeeping put together, over
//!   a reader of host memory ([`HostMem`]) and a sink for the results ([`CmdSink`]).
//!
//! All of it is pure over values; host memory is only read through [`HostMem`], whose
//! implementation must refuse pages that are not the host's.

use super::core::{Actions, HostCmdq, HostLimits, HostSmmu};
use super::raw::{
    ADDR_MASK_51_6, CERROR_ILL, CMD_BYTES, Cmd, Command, STE_ABORT, STE_BYTES, Ste, SyncCs, TlbiAddr, ste, ste_config,
    ste_dw1_kept, ste_s1_dw0, ste_valid, stef,
};
use crate::error::Result;

/// CERROR_ABT: the SMMU could not read the command (IHI 0070 7.1). KCore reports it when an
/// entry lies in memory that is not the host's.
pub const CERROR_ABT: u32 = 2;

// ---------------------------------------------------------------------------------------------
// (a) STE shadowing
// ---------------------------------------------------------------------------------------------

/// The shadow STE for the host's STE `host`, with `s2` = (dword 2, dword 3) of KCore's
/// host-DMA stage 2 ([`super::raw::s2_words`] with VMID 0), for an SMMU without stalls
/// (IDR0.STALL_MODEL = 0b01, as QEMU's). See [`shadow_ste_stall`].
pub fn shadow_ste(host: &Ste, s2: (u64, u64)) -> Ste {
    shadow_ste_stall(host, s2, 0b01)
}

/// The shadow STE for the host's STE `host` on an SMMU whose real IDR0.STALL_MODEL is
/// `stall_model` (reference/smmuv3.md 2.2, "STE shadowing"):
///
/// | host | shadow |
/// |---|---|
/// | V = 0 | V = 0 (all zero) |
/// | Config abort, reserved (0b001-0b011), stage 2 (0b110), nested (0b111) | abort |
/// | Config bypass (0b100) | stage 2 only (0b110), SHCFG kept |
/// | Config stage 1 (0b101) | nested (0b111): S1Fmt, S1ContextPtr, S1CDMax, S1DSS, S1CIR, S1COR, S1CSH, SHCFG kept |
///
/// Every valid non-abort shadow has EATS = 0 (no ATS), STRW = NS-EL1, dwords 2-3 = `s2`,
/// dwords 4-7 = 0 (no VMSPtr). Stage-1 stalls are disabled (S1STALLD = 1) where the SMMU can
/// stall (STALL_MODEL = 0b00), since the host is told it cannot and CMD_RESUME is refused;
/// elsewhere S1STALLD is 0 (with forced stalls, 0b10, S1STALLD = 1 is illegal,
/// IHI 0070 5.2).
pub fn shadow_ste_stall(host: &Ste, s2: (u64, u64), stall_model: u32) -> Ste {
    if !ste_valid(host) {
        return [0; 8];
    }
    let (dw0, dw1) = match ste_config(host) {
        // Stage 1 bypassed: translate by KCore's stage 2 alone.
        ste::CONFIG_BYPASS => (ste::CONFIG_S2 << ste::CONFIG_SHIFT, host[1] & stef::SHCFG_MASK),
        // Stage 1 by the host's context descriptors, whose addresses (and the stage-1
        // tables') are now IPAs translated by KCore's stage 2 (IHI 0070 3.3.2).
        ste::CONFIG_S1 => {
            let stalld = if stall_model == 0 { stef::S1STALLD } else { 0 };
            (ste::CONFIG_NESTED << ste::CONFIG_SHIFT | ste_s1_dw0(host), ste_dw1_kept(host) | stalld)
        }
        // Abort, the reserved values, and the stage-2 configurations the host was told do
        // not exist.
        _ => return STE_ABORT,
    };
    [ste::V | dw0, dw1, s2.0, s2.1, 0, 0, 0, 0]
}

/// Is `s` a shadow KCore may install: invalid, abort, or Config\[1\] = 1 (stage 2 on) with
/// dwords 2-3 exactly `s2`, EATS = 0, STRW = NS-EL1 and dwords 4-7 zero? The safety property
/// of [`shadow_ste`], for debug checks of the real stream table.
pub fn shadow_is_safe(s: &Ste, s2: (u64, u64)) -> bool {
    if !ste_valid(s) {
        return true;
    }
    let cfg = ste_config(s);
    if cfg == ste::CONFIG_ABORT {
        return true;
    }
    cfg & 0b010 != 0
        && cfg & 0b100 != 0
        && (s[2], s[3]) == s2
        && s[1] & (stef::EATS_MASK | stef::STRW_MASK) == 0
        && s[4..].iter().all(|&w| w == 0)
}

// ---------------------------------------------------------------------------------------------
// (b) Command filter
// ---------------------------------------------------------------------------------------------

/// What KCore does with one host command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Issue this canonical re-encoding on the real queue.
    Forward(Cmd),
    /// Re-shadow the `count` STEs from stream `first` (then invalidate them on the real
    /// queue); `count` is at least 1 and `first + count` at most 2^SIDSIZE.
    ReShadow { first: u32, count: u64 },
    /// Nothing to do (prefetches are hints, IHI 0070 4.2).
    Drop,
    /// Refuse with CERROR_ILL: a command the host was told it does not have, an undefined
    /// opcode or a reserved encoding, or a stream ID the SMMU does not have.
    Reject,
}

/// The host VMID: the host's stage-1 contexts all live in VMID 0, the VMID of KCore's
/// host-DMA stage 2.
pub const HOST_VMID: u16 = 0;

/// The address part of a host TLB invalidation as KCore forwards it: without range
/// invalidation (IDR3.RIL = 0) TG, TTL, NUM and SCALE are RES0 and become 0; with it, TG = 0
/// (no range, no granule hint) makes TTL, NUM and SCALE meaningless, so they become 0 too
/// (IHI 0070 4.4.1). A hint dropped only widens the invalidation.
pub fn canonical_tlbi_addr(at: TlbiAddr, limits: &HostLimits) -> TlbiAddr {
    if !limits.ril || at.tg == 0 { TlbiAddr { tg: 0, ttl: 0, num: 0, scale: 0, ..at } } else { at }
}

/// The ASID field as KCore forwards it: ASID\[15:8\] is RES0 without IDR0.ASID16.
pub const fn canonical_asid(asid: u16, limits: &HostLimits) -> u16 {
    if limits.asid16 { asid } else { asid & 0xff }
}

/// What to do with the host's command `cmd` on an SMMU of `limits`
/// (reference/smmuv3.md 2.2, "Command queue emulation"). A forwarded command carries no
/// field the real SMMU would refuse, since KCore's own invalidations share its queue.
pub fn filter(cmd: Cmd, limits: &HostLimits) -> Filtered {
    let sids = 1u64 << limits.sid_bits.min(32);
    let in_range = |sid: u32| (sid as u64) < sids;
    let Some(c) = Command::decode(cmd) else {
        return Filtered::Reject;
    };
    let fwd = |c: Command| Filtered::Forward(c.encode());
    match c {
        Command::PrefetchConfig { .. } | Command::PrefetchAddr { .. } => Filtered::Drop,
        Command::CfgiSte { sid, .. } if in_range(sid) => Filtered::ReShadow { first: sid, count: 1 },
        // 2^(Range+1) streams from SID rounded down to that size (IHI 0070 4.3.2); Range 31
        // is every stream (CMD_CFGI_ALL).
        Command::CfgiSteRange { sid, range } => {
            let n = 2u64 << range;
            let first = sid as u64 & !(n - 1);
            if first < sids {
                Filtered::ReShadow { first: first as u32, count: n.min(sids - first) }
            } else {
                Filtered::Reject
            }
        }
        // Context descriptors are read through KCore's stage 2: safe to invalidate.
        Command::CfgiCd { sid, ssid, .. } if in_range(sid) && (ssid as u64) >> limits.ssid_bits == 0 => fwd(c),
        Command::CfgiCdAll { sid } if in_range(sid) => fwd(c),
        // The host's stage-1 TLB entries are all in VMID 0.
        Command::TlbiNhAll { .. } => fwd(Command::TlbiNhAll { vmid: HOST_VMID }),
        Command::TlbiNhAsid { asid, .. } => {
            fwd(Command::TlbiNhAsid { vmid: HOST_VMID, asid: canonical_asid(asid, limits) })
        }
        Command::TlbiNhVa { asid, at, .. } => fwd(Command::TlbiNhVa {
            vmid: HOST_VMID,
            asid: canonical_asid(asid, limits),
            at: canonical_tlbi_addr(at, limits),
        }),
        Command::TlbiNhVaa { at, .. } => {
            fwd(Command::TlbiNhVaa { vmid: HOST_VMID, at: canonical_tlbi_addr(at, limits) })
        }
        Command::TlbiNsnhAll => fwd(c),
        // An MSI completion would be a write to a raw physical address: signal by event
        // instead (KCore completes the batch synchronously anyway).
        Command::Sync { cs, .. } => fwd(Command::Sync {
            cs: if cs == SyncCs::Irq { SyncCs::Sev } else { cs },
            msh: 0,
            msiattr: 0,
            msidata: 0,
            msiaddr: 0,
        }),
        // Stage 2, EL2, EL3, ATS, PRI, stalls, VMS: hidden from the host; and out-of-range
        // stream IDs.
        Command::CfgiSte { .. }
        | Command::CfgiCd { .. }
        | Command::CfgiCdAll { .. }
        | Command::CfgiVmsPidm { .. }
        | Command::TlbiEl3All
        | Command::TlbiEl3Va { .. }
        | Command::TlbiEl2All
        | Command::TlbiEl2Asid { .. }
        | Command::TlbiEl2Va { .. }
        | Command::TlbiEl2Vaa { .. }
        | Command::TlbiS12Vmall { .. }
        | Command::TlbiS2Ipa { .. }
        | Command::AtcInv { .. }
        | Command::PriResp { .. }
        | Command::Resume { .. }
        | Command::StallTerm { .. } => Filtered::Reject,
    }
}

// ---------------------------------------------------------------------------------------------
// (c) The host's stream table
// ---------------------------------------------------------------------------------------------

/// The format of the host's stream table (STRTAB_BASE_CFG.FMT, IHI 0070 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrtabFmt {
    Linear,
    /// 2-level: each L1 descriptor covers 2^`split` streams.
    TwoLevel {
        split: u32,
    },
}

/// The host's stream table, validated from its emulated STRTAB_BASE and STRTAB_BASE_CFG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStrtab {
    /// Address of the linear table or of the L1 table.
    pub base: u64,
    /// Streams the table covers: 2^log2size.
    pub log2size: u32,
    pub fmt: StrtabFmt,
}

/// Where the host keeps one stream's STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteAt {
    /// At this address (linear table).
    Direct(u64),
    /// Through the L1 descriptor at `l1`: entry `index` of its level-2 table.
    ViaL1 { l1: u64, index: u32 },
}

/// Bytes of an L1 stream table descriptor.
pub const L1_DESC_BYTES: u64 = 8;

impl HostStrtab {
    /// The host's table, or `None` for a configuration the SMMU does not accept
    /// (IHI 0070 6.3.24): FMT neither linear nor (if IDR0.ST_LEVEL allows it) 2-level,
    /// SPLIT not 6, 8 or 10, LOG2SIZE above IDR1.SIDSIZE. KCore shadows every stream as
    /// abort then.
    pub fn from_regs(base: u64, cfg: u32, limits: &HostLimits) -> Option<HostStrtab> {
        let log2size = cfg & 0x3f;
        let split = (cfg >> 6) & 0x1f;
        if log2size > limits.sid_bits || log2size > 32 {
            return None;
        }
        let fmt = match (cfg >> 16) & 3 {
            0 => StrtabFmt::Linear,
            1 if limits.two_level && matches!(split, 6 | 8 | 10) => StrtabFmt::TwoLevel { split },
            _ => return None,
        };
        Some(HostStrtab { base: base & ADDR_MASK_51_6, log2size, fmt })
    }

    /// Where stream `sid`'s STE is, or `None` if `sid` is beyond the table.
    pub fn locate(&self, sid: u32) -> Option<SteAt> {
        if (sid as u64) >> self.log2size != 0 {
            return None;
        }
        Some(match self.fmt {
            StrtabFmt::Linear => SteAt::Direct(self.base + sid as u64 * STE_BYTES),
            StrtabFmt::TwoLevel { split } => {
                SteAt::ViaL1 { l1: self.base + (sid as u64 >> split) * L1_DESC_BYTES, index: sid & ((1 << split) - 1) }
            }
        })
    }

    /// The address of entry `index` of the level-2 table L1 descriptor `desc` points at, or
    /// `None` if the descriptor is invalid (Span = 0), its Span is above SPLIT + 1, or the
    /// entry is beyond its 2^(Span-1) STEs (IHI 0070 5.1.2).
    pub fn l2_ste(desc: u64, split: u32, index: u32) -> Option<u64> {
        let span = (desc & 0x1f) as u32;
        if span == 0 || span > split + 1 || (index as u64) >> (span - 1) != 0 {
            return None;
        }
        Some((desc & ADDR_MASK_51_6) + index as u64 * STE_BYTES)
    }
}

/// Reads of host memory for the table and queue walks.
pub trait HostMem {
    /// The 8 bytes at `pa` (8-byte aligned), or an error if the page is not the host's.
    fn read_u64(&self, pa: u64) -> Result<u64>;
}

/// The address of the host's STE for `sid`: `Ok(None)` if the table has none (beyond the
/// table, invalid L1 descriptor), an error if a table page is not the host's.
pub fn host_ste_pa<M: HostMem>(t: &HostStrtab, mem: &M, sid: u32) -> Result<Option<u64>> {
    Ok(match (t.locate(sid), t.fmt) {
        (None, _) => None,
        (Some(SteAt::Direct(pa)), _) => Some(pa),
        (Some(SteAt::ViaL1 { l1, index }), StrtabFmt::TwoLevel { split }) => {
            HostStrtab::l2_ste(mem.read_u64(l1)?, split, index)
        }
        (Some(SteAt::ViaL1 { .. }), StrtabFmt::Linear) => None,
    })
}

/// A copy of the host's STE for `sid` (read once: KCore acts on this copy only).
pub fn read_host_ste<M: HostMem>(t: &HostStrtab, mem: &M, sid: u32) -> Result<Option<Ste>> {
    let Some(pa) = host_ste_pa(t, mem, sid)? else {
        return Ok(None);
    };
    let mut s = [0u64; 8];
    for (i, w) in s.iter_mut().enumerate() {
        *w = mem.read_u64(pa + 8 * i as u64)?;
    }
    Ok(Some(s))
}

/// The host's stream table as its emulated registers give it: `None` while the host's SMMU
/// is disabled or its configuration is invalid (then every shadow is abort). Fixed while
/// the host's SMMUEN is set, so the layer above may keep a copy for a batch of re-shadows.
pub fn host_strtab(host: &HostSmmu) -> Option<HostStrtab> {
    if !host.smmu_enabled() {
        return None;
    }
    let (base, cfg) = host.strtab();
    HostStrtab::from_regs(base, cfg, &host.limits())
}

/// The shadow KCore installs for stream `sid`, given the host's table `t` ([`host_strtab`]):
/// abort when there is no table, when the stream has no STE in it, or when a page of it is
/// not the host's; otherwise [`shadow_ste`] of the host's STE.
pub fn shadow_of_sid<M: HostMem>(t: Option<&HostStrtab>, mem: &M, sid: u32, s2: (u64, u64)) -> Ste {
    match t.map(|t| read_host_ste(t, mem, sid)) {
        Some(Ok(Some(s))) => shadow_ste(&s, s2),
        _ => STE_ABORT,
    }
}

// ---------------------------------------------------------------------------------------------
// (d) The host's command queue
// ---------------------------------------------------------------------------------------------

/// The entries of the host's command queue from CONS up to PROD: each as (its index with
/// the wrap bit, its address). At most one queue's worth (IHI 0070 3.5).
#[derive(Clone, Copy, Debug)]
pub struct CmdqWalk {
    base: u64,
    log2size: u32,
    next: u32,
    left: u32,
}

impl CmdqWalk {
    /// The walk of `q`, or `None` if PROD is more than a queue ahead of CONS.
    pub fn new(q: &HostCmdq) -> Option<CmdqWalk> {
        Some(CmdqWalk { base: q.base, log2size: q.log2size, next: q.cons & q.mask(), left: q.pending()? })
    }
}

impl Iterator for CmdqWalk {
    type Item = (u32, u64);

    fn next(&mut self) -> Option<(u32, u64)> {
        if self.left == 0 {
            return None;
        }
        let pos = self.next;
        let slot = pos & ((1 << self.log2size) - 1);
        self.next = pos.wrapping_add(1) & ((2 << self.log2size) - 1);
        self.left -= 1;
        Some((pos, self.base + slot as u64 * CMD_BYTES))
    }
}

/// Where [`drain_cmdq`] sends what it decided.
pub trait CmdSink {
    /// Issue `cmd` on the real command queue.
    fn forward(&mut self, cmd: Cmd);
    /// Re-shadow the STEs of streams `first..first + count` and invalidate them on the real
    /// queue. Failures (pool exhausted, pages not the host's) are the sink's to handle, by
    /// installing abort shadows.
    fn reshadow(&mut self, first: u32, count: u64);
    /// Make everything issued so far complete (KCore's CMD_SYNC, wait for the real CONS).
    fn complete(&mut self);
}

/// What [`drain_cmdq`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub forwarded: u32,
    pub reshadowed: u32,
    pub dropped: u32,
    /// The command error the queue stopped at: (CONS, CERROR_*).
    pub error: Option<(u32, u32)>,
    /// What the layer above must do next ([`super::core::Action::SignalGerror`] on an error).
    pub actions: Actions,
}

/// Process the host's command queue after [`super::core::Action::ProcessCmdq`]: copy each
/// entry from CONS to PROD once, filter it, and pass the result to `sink`; then complete the
/// batch and move the host's CONS to PROD. A refused entry (or one not in host memory)
/// stops the queue there with CONS.ERR set and GERROR.CMDQ_ERR active, after the entries
/// before it complete; the host's driver then replaces it with a CMD_SYNC and acknowledges
/// through GERRORN, which resumes the queue (IHI 0070 7.1).
pub fn drain_cmdq<M: HostMem, S: CmdSink>(host: &mut HostSmmu, mem: &M, sink: &mut S) -> Drained {
    let mut d = Drained::default();
    if !host.cmdq_ready() {
        return d;
    }
    let q = host.cmdq();
    let Some(walk) = CmdqWalk::new(&q) else {
        return d;
    };
    let limits = host.limits();
    for (pos, pa) in walk {
        let entry = mem.read_u64(pa).and_then(|w0| Ok([w0, mem.read_u64(pa + 8)?]));
        let verdict = match entry {
            Ok(cmd) => filter(cmd, &limits),
            Err(_) => {
                sink.complete();
                d.error = Some((pos, CERROR_ABT));
                d.actions = host.cmdq_error(pos, CERROR_ABT);
                return d;
            }
        };
        match verdict {
            Filtered::Forward(c) => {
                sink.forward(c);
                d.forwarded += 1;
            }
            Filtered::ReShadow { first, count } => {
                sink.reshadow(first, count);
                d.reshadowed += 1;
            }
            Filtered::Drop => d.dropped += 1,
            Filtered::Reject => {
                sink.complete();
                d.error = Some((pos, CERROR_ILL));
                d.actions = host.cmdq_error(pos, CERROR_ILL);
                return d;
            }
        }
    }
    sink.complete();
    host.cmdq_consumed(q.prod);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::raw::{cmd, op, s2_words};

    const S2: (u64, u64) = s2_words(0, 0x8_0000 | 20, 0x4010_0000);

    fn qemu() -> HostLimits {
        HostLimits::from_idr(0x0d44_101b, 0x0273_0010, crate::smmu::core::IDR3_RIL)
    }

    #[test]
    fn shadows_by_config() {
        let bypass = [ste::V | ste::CONFIG_BYPASS << 1, ste::SHCFG_INCOMING, 0, 0, 0, 0, 0, 0];
        let s = shadow_ste(&bypass, S2);
        assert_eq!(ste_config(&s), ste::CONFIG_S2);
        assert_eq!((s[1], s[2], s[3]), (ste::SHCFG_INCOMING, S2.0, S2.1));
        // Linux's stage-1 STE: CD table at 0x4800_0040... S1DSS=SSID0 (2), CIR/COR WBRA,
        // CSH ISH, STRW NSEL1, and (6.12) S2VMID 0, EATS from a host that tries ATS.
        let s1 = [
            ste::V | ste::CONFIG_S1 << 1 | 0x4800_0040,
            2 | 1 << 2 | 1 << 4 | 3 << 6 | 1 << 28,
            0x1234_5678,
            0xdead_0000,
            1,
            2,
            3,
            4,
        ];
        let s = shadow_ste(&s1, S2);
        assert_eq!(s[0], ste::V | ste::CONFIG_NESTED << 1 | 0x4800_0040);
        assert_eq!(s[1], 2 | 1 << 2 | 1 << 4 | 3 << 6);
        assert_eq!(&s[2..], &[S2.0, S2.1, 0, 0, 0, 0]);
        assert!(shadow_is_safe(&s, S2));
        for cfg in [0, 1, 2, 3, ste::CONFIG_S2, ste::CONFIG_NESTED] {
            let h = [ste::V | cfg << 1, 0, 7, 7, 0, 0, 0, 0];
            assert_eq!(shadow_ste(&h, S2), STE_ABORT);
        }
        assert_eq!(shadow_ste(&[!ste::V; 8], S2), [0; 8]);
        assert_eq!(shadow_ste_stall(&s1, S2, 0)[1] & stef::S1STALLD, stef::S1STALLD);
    }

    #[test]
    fn filter_by_opcode() {
        let l = qemu();
        assert_eq!(filter(cmd::cfgi_all(), &l), Filtered::ReShadow { first: 0, count: 1 << 16 });
        assert_eq!(filter(cmd::cfgi_ste(0x18), &l), Filtered::ReShadow { first: 0x18, count: 1 });
        assert_eq!(filter(cmd::cfgi_ste(1 << 16), &l), Filtered::Reject);
        assert_eq!(
            filter([op::CFGI_STE_RANGE as u64 | 0x13 << 32, 1], &l),
            Filtered::ReShadow { first: 0x10, count: 4 }
        );
        assert_eq!(filter([op::PREFETCH_CONFIG as u64 | 0x18 << 32, 0], &l), Filtered::Drop);
        assert_eq!(filter(cmd::tlbi_s12_vmall(0), &l), Filtered::Reject);
        assert_eq!(filter([op::TLBI_EL2_ALL as u64, 0], &l), Filtered::Reject);
        assert_eq!(
            filter([op::TLBI_NH_ASID as u64 | 7 << 32 | 3 << 48, 0], &l),
            Filtered::Forward([0x11 | 3 << 48, 0])
        );
        let irq_sync = [op::SYNC as u64 | 1 << 12 | 0xffff << 32 | 0xf << 24, 0x4000_0000];
        assert_eq!(filter(irq_sync, &l), Filtered::Forward([op::SYNC as u64 | 2 << 12, 0]));
        assert_eq!(filter(cmd::tlbi_nsnh_all(), &l), Filtered::Forward(cmd::tlbi_nsnh_all()));
    }

    #[test]
    fn stream_table_walks() {
        let l = qemu();
        let t = HostStrtab::from_regs(0x4000_1000 | 1 << 62, 0x10210, &l).unwrap();
        assert_eq!(t, HostStrtab { base: 0x4000_1000, log2size: 16, fmt: StrtabFmt::TwoLevel { split: 8 } });
        assert_eq!(t.locate(0x0118), Some(SteAt::ViaL1 { l1: 0x4000_1008, index: 0x18 }));
        assert_eq!(t.locate(1 << 16), None);
        assert_eq!(HostStrtab::l2_ste(0x4800_0000 | 9, 8, 0x18), Some(0x4800_0000 + 0x18 * 64));
        assert_eq!(HostStrtab::l2_ste(0x4800_0000, 8, 0), None, "Span 0: invalid");
        assert_eq!(HostStrtab::l2_ste(0x4800_0000 | 10, 8, 0), None, "Span above SPLIT + 1");
        assert_eq!(HostStrtab::l2_ste(0x4800_0000 | 2, 8, 2), None, "beyond a 2-entry L2");
        let lin = HostStrtab::from_regs(0x4000_0000, 5, &l).unwrap();
        assert_eq!(lin.locate(3), Some(SteAt::Direct(0x4000_00c0)));
        assert_eq!(HostStrtab::from_regs(0, 17, &l), None, "LOG2SIZE above SIDSIZE");
        assert_eq!(HostStrtab::from_regs(0, 0x10000 | 7 << 6 | 16, &l), None, "SPLIT 7");
        assert_eq!(HostStrtab::from_regs(0, 0x20000, &l), None, "reserved FMT");
    }

    #[test]
    fn queue_walk_wraps_and_is_bounded() {
        let q = HostCmdq { base: 0x1000, log2size: 2, prod: 0b101 ^ 0b100 | 0b100, cons: 0b010 };
        // cons index 2 (wrap 0), prod index 1 (wrap 1): entries 2, 3, 0.
        let w: Vec<_> = CmdqWalk::new(&q).unwrap().collect();
        assert_eq!(w, vec![(2, 0x1020), (3, 0x1030), (4, 0x1000)]);
        let full = HostCmdq { prod: 0b110, cons: 0b010, ..q };
        assert_eq!(CmdqWalk::new(&full).unwrap().count(), 4);
        let broken = HostCmdq { prod: 0b111, cons: 0b010, ..q };
        assert!(CmdqWalk::new(&broken).is_none());
    }
}
