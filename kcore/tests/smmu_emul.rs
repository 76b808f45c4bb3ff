//! Layer 26 on the simulated machine: the host's stock driver's sequence (Linux 6.1's reset,
//! an attach, invalidations, a shutdown) driven through KCore's emulation of the SMMU's
//! registers, and a malicious host's: bypass and stage-2 STEs, forged commands, queues and
//! tables in memory that is not the host's, MSI addresses, event queues over KCore's pages,
//! random register traffic over random host tables and commands. After every step KCore's
//! invariants hold (every real STE a safe shadow; the host-DMA table exactly the host's
//! pages) and the real device stays as KCore set it (enabled, GBPA abort, its own tables).

mod common;

use common::*;
use kcore::invariants;
use kcore::kcore::KCore;
use kcore::machine::Machine;
use kcore::machine::sim::SimMachine;
use kcore::mem::pagemgmt::Owner;
use kcore::smmu::aux::shadow_is_safe;
use kcore::smmu::raw::{self, Cmd, STE_ABORT, Ste, cmd, cr0, gbpa, gerror, idr0, op, reg, ste};
use kcore::{Error, PAGE_SHIFT};
use proptest::prelude::*;

const SMMU_REGS: (u64, u64) = (0x0905_0000, 0x0907_0000);
const DOORBELL: u64 = 0x0809_0000;
const SPT_POOL: (u64, u64) = (KMEM + (512 << 10), KMEM + (1 << 20));
/// The host driver's structures, in host pages: level-1 stream table, a 16 KiB level-2 table
/// (bus 0), command queue (256 entries), event queue (128 entries), a context descriptor.
const L1: u64 = RAM + (6 << 20);
const L2: u64 = RAM + (6 << 20) + 0x4000;
const CMDQ: u64 = RAM + (6 << 20) + 0x8000;
const EVTQ: u64 = RAM + (6 << 20) + 0x9000;
const CD: u64 = RAM + (6 << 20) + 0xa000;
const SID: u32 = 0x18;
/// QEMU virt's SMMU global-error interrupt: SPI 77.
const GERROR_INTID: u32 = 77 + 32;

struct Host {
    k: KCore<SimMachine>,
    prod: u32,
}

impl Host {
    fn new() -> Host {
        let (k, _) = kcore();
        k.smmu.set_gerror_intid(GERROR_INTID);
        k.take_smmu(SMMU_REGS, SPT_POOL, &[DOORBELL], true).unwrap();
        Host { k, prod: 0 }
    }
    fn w(&self, off: u64, size: u64, v: u64) -> Result<u64, Error> {
        self.k.smmu_ops().host_access(off, size, true, v)
    }
    fn r(&self, off: u64) -> u64 {
        self.k.smmu_ops().host_access(off, 4, false, 0).unwrap()
    }
    /// Queue `cmds` and write PROD, as the driver does.
    fn push(&mut self, cmds: &[Cmd]) {
        for c in cmds {
            let slot = u64::from(self.prod & 0xff);
            self.k.m.store(CMDQ + slot * 16, c[0]);
            self.k.m.store(CMDQ + slot * 16 + 8, c[1]);
            self.prod = (self.prod + 1) & 0x1ff;
        }
        self.w(reg::CMDQ_PROD, 4, u64::from(self.prod)).unwrap();
    }
    fn host_ste(&self, sid: u32, s: &Ste) {
        for (i, w) in s.iter().enumerate() {
            self.k.m.store(L2 + u64::from(sid) * 64 + 8 * i as u64, *w);
        }
    }
    fn real_ste(&self, sid: u32) -> Ste {
        self.k.dma.dev.ste(&self.k.m, sid).unwrap()
    }
    fn s2(&self) -> (u64, u64) {
        let s = self.k.dma.stream_ste().unwrap();
        (s[2], s[3])
    }
    /// Linux 6.1's reset (reference: smmuv3.md 1.2) with a 256-entry command queue and a
    /// 128-entry event queue, then the level-1 descriptor of bus 0 with every STE abort.
    fn linux_reset(&mut self) {
        self.w(reg::CR0, 4, 0).unwrap();
        self.w(reg::CR1, 4, 0xd75).unwrap();
        self.w(reg::CR2, 4, 0x6).unwrap();
        self.w(reg::STRTAB_BASE, 8, raw::BASE_RA | L1).unwrap();
        self.w(reg::STRTAB_BASE_CFG, 4, 0x10210).unwrap();
        self.w(reg::CMDQ_BASE, 8, raw::BASE_RA | CMDQ | 8).unwrap();
        self.w(reg::CMDQ_PROD, 4, 0).unwrap();
        self.w(reg::CMDQ_CONS, 4, 0).unwrap();
        self.w(reg::CR0, 4, u64::from(cr0::CMDQEN)).unwrap();
        assert_eq!(self.r(reg::CR0ACK), u64::from(cr0::CMDQEN));
        self.push(&[cmd::cfgi_all(), cmd::sync()]);
        self.push(&[cmd::tlbi_nsnh_all(), cmd::sync()]);
        assert_eq!(self.r(reg::CMDQ_CONS), u64::from(self.prod), "consumed, no error");
        self.w(reg::EVTQ_BASE, 8, raw::BASE_RA | EVTQ | 7).unwrap();
        self.w(reg::EVTQ_PROD, 4, 0).unwrap();
        self.w(reg::EVTQ_CONS, 4, 0).unwrap();
        self.w(reg::CR0, 4, u64::from(cr0::CMDQEN | cr0::EVTQEN)).unwrap();
        self.w(reg::IRQ_CTRL, 4, 5).unwrap();
        for sid in 0..256 {
            self.host_ste(sid, &STE_ABORT);
        }
        self.k.m.store(L1, raw::l1_desc(L2, 8));
        self.w(reg::CR0, 4, u64::from(cr0::SMMUEN | cr0::CMDQEN | cr0::EVTQEN)).unwrap();
    }
    /// The real device is as KCore keeps it, whatever the host did.
    fn check_real(&self) {
        let m = &self.k.m;
        assert_eq!(m.smmu_read(reg::CR0, 4) as u32 & (cr0::SMMUEN | cr0::CMDQEN), cr0::SMMUEN | cr0::CMDQEN);
        assert_ne!(m.smmu_read(reg::GBPA, 4) as u32 & gbpa::ABORT, 0);
        assert_eq!(m.smmu_read(reg::STRTAB_BASE, 8) & raw::ADDR_MASK_51_6, self.k.dma.dev.strtab());
        for off in [reg::GERROR_IRQ_CFG0, reg::EVTQ_IRQ_CFG0] {
            assert_eq!(m.smmu_read(off, 8), 0);
        }
        invariants::check(&self.k).unwrap();
    }
}

/// Linux 6.1's stage-1 STE for the context descriptor at `cd`.
fn s1_ste(cd: u64) -> Ste {
    [ste::V | ste::CONFIG_S1 << 1 | cd, 2 | 1 << 2 | 1 << 4 | 3 << 6, 0, 0, 0, 0, 0, 0]
}

#[test]
fn the_stock_driver_sees_an_smmu_without_stage_2_and_its_ste_becomes_nested() {
    let mut h = Host::new();
    // Before the host's driver runs, its streams see the reset GBPA (bypass): stage 2 only.
    assert_eq!(h.real_ste(SID), h.k.dma.stream_ste().unwrap());
    let id0 = h.r(reg::IDR0) as u32;
    assert_eq!(id0 & (idr0::S2P | idr0::VMID16 | idr0::HYP | idr0::MSI | idr0::ATS | idr0::PRI), 0);
    assert_ne!(id0 & idr0::S1P, 0);
    h.linux_reset();
    h.check_real();
    // The event queue is the host's now, its page pinned (no donation while the SMMU writes).
    assert_eq!(h.k.m.smmu_read(reg::EVTQ_BASE, 8) & raw::ADDR_MASK_51_5, EVTQ);
    assert_eq!(h.k.meta.get(&h.k.m, &h.k.mb, EVTQ >> PAGE_SHIFT).unwrap().count, 1);
    assert_eq!(h.k.mem().donate_to_pool(0, EVTQ >> PAGE_SHIFT), Err(Error::Denied));
    // Every host stream aborts (its STEs say so), others too (no host table for them).
    assert_eq!(h.real_ste(1), STE_ABORT);
    assert_eq!(h.real_ste(0x100), STE_ABORT);
    // Attach: the driver writes the stage-1 STE and invalidates it.
    h.host_ste(SID, &s1_ste(CD));
    h.push(&[cmd::cfgi_ste(SID), [op::PREFETCH_CONFIG as u64 | u64::from(SID) << 32, 0], cmd::sync()]);
    let real = h.real_ste(SID);
    assert_eq!(raw::ste_config(&real), ste::CONFIG_NESTED);
    assert_eq!((real[2], real[3]), h.s2());
    assert_eq!(real[0] & raw::stef::S1CTXPTR_MASK, CD, "the host's CD, now an IPA through stage 2");
    // A new level-2 table (bus 1), installed with no command and filled with bypass STEs as
    // 6.1 does with disable_bypass=0; the driver names one stream of it: KCore shadows them
    // all (the device may use any of them), stage 2 only.
    let l2b = CD + 0x4000;
    for i in 0..256u64 {
        for (w, v) in [ste::V | ste::CONFIG_BYPASS << 1, 0, 0, 0, 0, 0, 0, 0].iter().enumerate() {
            h.k.m.store(l2b + i * 64 + 8 * w as u64, *v);
        }
    }
    h.k.m.store(L1 + 8, raw::l1_desc(l2b, 8));
    h.push(&[cmd::cfgi_ste(0x118), cmd::sync()]);
    for sid in [0x100, 0x118, 0x1ff] {
        let real = h.real_ste(sid);
        assert_eq!((raw::ste_config(&real), real[2], real[3]), (ste::CONFIG_S2, h.s2().0, h.s2().1), "{sid:#x}");
    }
    // A strict-mode unmap: TLBI_NH_VA + SYNC becomes a whole-VMID invalidation.
    h.k.m.smmu.lock().unwrap().commands.clear();
    h.push(&[[op::TLBI_NH_VA as u64 | 1 << 48, 0x1000_0000 | 1], cmd::sync()]);
    let ops: Vec<u8> = h.k.m.smmu.lock().unwrap().commands.iter().map(raw::cmd_opcode).collect();
    assert!(ops.contains(&op::TLBI_S12_VMALL) && !ops.contains(&op::TLBI_NH_VA), "{ops:x?}");
    assert_eq!(h.r(reg::CMDQ_CONS), u64::from(h.prod));
    h.check_real();
    // Shutdown: the host turns everything off; its streams follow its GBPA (the sim's
    // reset value: bypass, so stage 2 only); the event queue pages are unpinned.
    h.w(reg::CR0, 4, 0).unwrap();
    assert_eq!(h.real_ste(SID), h.k.dma.stream_ste().unwrap());
    assert_eq!(h.k.meta.get(&h.k.m, &h.k.mb, EVTQ >> PAGE_SHIFT).unwrap().count, 0);
    h.w(reg::GBPA, 4, u64::from(gbpa::UPDATE | gbpa::ABORT)).unwrap();
    h.w(reg::CR0, 4, u64::from(cr0::CMDQEN)).unwrap();
    h.w(reg::CR0, 4, 0).unwrap();
    assert_eq!(h.real_ste(SID), STE_ABORT, "the host's GBPA says abort");
    h.check_real();
}

#[test]
fn what_a_malicious_host_writes_never_reaches_the_device() {
    let mut h = Host::new();
    h.linux_reset();
    let s2 = h.s2();
    // Bypass: stage 2 only, through KCore's table.
    h.host_ste(SID, &[ste::V | ste::CONFIG_BYPASS << 1, 0, 0, 0, 0, 0, 0, 0]);
    h.push(&[cmd::cfgi_ste(SID), cmd::sync()]);
    assert_eq!(raw::ste_config(&h.real_ste(SID)), ste::CONFIG_S2);
    assert_eq!((h.real_ste(SID)[2], h.real_ste(SID)[3]), s2);
    // Its own stage 2 (alone or nested), with its own VMID and table: abort.
    for cfg in [ste::CONFIG_S2, ste::CONFIG_NESTED] {
        h.host_ste(SID, &[ste::V | cfg << 1 | CD, 0, 5 | 0x8_0014 << 32, KMEM, 0, 0, 0, 0]);
        h.push(&[cmd::cfgi_ste(SID), cmd::sync()]);
        assert_eq!(h.real_ste(SID), STE_ABORT);
    }
    // ATS and a stream world other than NS-EL1 do not survive.
    let mut s = s1_ste(CD);
    s[1] |= raw::stef::EATS_MASK | raw::stef::STRW_MASK;
    h.host_ste(SID, &s);
    h.push(&[cmd::cfgi_ste(SID), cmd::sync()]);
    assert_eq!(h.real_ste(SID)[1] & (raw::stef::EATS_MASK | raw::stef::STRW_MASK), 0);
    h.check_real();
    // Forged commands stop the queue with CERROR_ILL, as the architecture reports it, until
    // the host acknowledges; then the queue goes on.
    for forged in [[op::TLBI_EL2_ALL as u64, 0], cmd::tlbi_s12_vmall(0), [0xff, 0], [op::ATC_INV as u64, 0]] {
        let at = h.prod;
        h.push(&[forged, cmd::sync()]);
        let cons = h.r(reg::CMDQ_CONS) as u32;
        assert_eq!((cons & 0x1ff, cons >> 24), (at, raw::CERROR_ILL), "{forged:x?}");
        let g = h.r(reg::GERROR) as u32;
        assert_ne!((g ^ h.r(reg::GERRORN) as u32) & gerror::CMDQ_ERR, 0);
        // The host enabled global-error interrupts (IRQ_CTRL = 5): KCore pended its SPI.
        assert_eq!(h.k.m.pended_spis.lock().unwrap().pop(), Some(GERROR_INTID));
        // Linux's recovery: overwrite the entry with a CMD_SYNC, acknowledge.
        let slot = u64::from(at & 0xff);
        h.k.m.store(CMDQ + slot * 16, cmd::sync()[0]);
        h.k.m.store(CMDQ + slot * 16 + 8, 0);
        h.w(reg::GERRORN, 4, u64::from(g)).unwrap();
        assert_eq!(h.r(reg::CMDQ_CONS) as u32 & 0x1ff, h.prod);
    }
    // A CMD_SYNC whose MSI would write KCore's memory: forwarded without the MSI.
    h.k.m.smmu.lock().unwrap().commands.clear();
    h.push(&[[op::SYNC as u64 | 1 << 12, KMEM]]);
    assert!(h.k.m.smmu.lock().unwrap().commands.iter().all(|c| c[1] == 0 && (c[0] >> 12) & 3 != 1));
    // Acknowledging errors that are not active changes nothing real (a host could otherwise
    // make KCore's own queue look failed).
    let real_n = h.k.m.smmu_read(reg::GERRORN, 4);
    h.w(reg::GERRORN, 4, 0x1ff).unwrap();
    assert_eq!(h.k.m.smmu_read(reg::GERRORN, 4), real_n);
    h.w(reg::GERRORN, 4, h.r(reg::GERROR)).unwrap();
    // MSI addresses: only 0.
    h.w(reg::GERROR_IRQ_CFG0, 8, KMEM).unwrap();
    assert_eq!(h.k.smmu_ops().host_access(reg::GERROR_IRQ_CFG0, 8, false, 0), Ok(0));
    // Tables and queues may not move while enabled.
    h.w(reg::STRTAB_BASE, 8, raw::BASE_RA | KMEM).unwrap();
    h.w(reg::CMDQ_BASE, 8, raw::BASE_RA | KMEM | 8).unwrap();
    assert_eq!(h.k.smmu_ops().host_access(reg::STRTAB_BASE, 8, false, 0), Ok(raw::BASE_RA | L1));
    // A command queue in KCore's memory: CERROR_ABT at its first entry, nothing read.
    h.w(reg::CR0, 4, u64::from(cr0::SMMUEN | cr0::EVTQEN)).unwrap();
    h.w(reg::CMDQ_BASE, 8, raw::BASE_RA | KMEM | 8).unwrap();
    h.w(reg::CMDQ_CONS, 4, 0).unwrap();
    h.w(reg::CR0, 4, u64::from(cr0::SMMUEN | cr0::EVTQEN | cr0::CMDQEN)).unwrap();
    h.w(reg::CMDQ_PROD, 4, 1).unwrap();
    assert_eq!(h.r(reg::CMDQ_CONS) as u32 >> 24, kcore::smmu::aux::CERROR_ABT);
    // An event queue over KCore's memory is never enabled.
    h.w(reg::CR0, 4, u64::from(cr0::SMMUEN)).unwrap();
    h.w(reg::EVTQ_BASE, 8, raw::BASE_RA | KMEM | 7).unwrap();
    h.w(reg::CR0, 4, u64::from(cr0::SMMUEN | cr0::EVTQEN)).unwrap();
    assert_eq!(h.r(reg::CR0ACK) as u32 & cr0::EVTQEN, 0);
    assert_eq!(h.k.m.smmu_read(reg::CR0, 4) as u32 & cr0::EVTQEN, 0);
    // Its stream table in a VM's page: every shadow aborts (the table is not the host's).
    h.w(reg::CR0, 4, 0).unwrap();
    h.w(reg::STRTAB_BASE, 8, raw::BASE_RA | (DONATED << PAGE_SHIFT)).unwrap();
    h.w(reg::CR0, 4, u64::from(cr0::SMMUEN)).unwrap();
    assert_eq!(h.real_ste(SID), STE_ABORT);
    // Sizes and places the architecture does not allow: an error (the host gets an abort).
    assert!(h.w(reg::CR0, 8, 0).is_err());
    assert!(h.w(reg::CR0 + 1, 4, 0).is_err());
    assert!(h.w(reg::CR0, 2, 0).is_err());
    assert_eq!(h.k.meta.owner(&h.k.m, &h.k.mb, KMEM >> PAGE_SHIFT), Some(Owner::KCore));
    h.check_real();
}

#[derive(Clone, Debug)]
enum Step {
    Write(u64, u64, u64),
    Read(u64, u64),
    HostSte(u32, [u64; 8]),
    Command(Cmd),
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![
            reg::CR0, reg::CR1, reg::CR2, reg::GBPA, reg::IRQ_CTRL, reg::GERRORN, reg::GERROR_IRQ_CFG0,
            reg::STRTAB_BASE, reg::STRTAB_BASE_CFG, reg::CMDQ_BASE, reg::CMDQ_PROD, reg::CMDQ_CONS,
            reg::EVTQ_BASE, reg::EVTQ_PROD, reg::EVTQ_CONS, reg::EVTQ_IRQ_CFG0, reg::IDR0, reg::PRIQ_BASE,
        ]),
        1 => (0u64..0x2_0000).prop_map(|o| o & !3),
        1 => any::<u64>(),
    ]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        prop::sample::select(vec![0, 1, 0xd, 0x8, 0xc, 0x5, 0xd75, 0x10210, 0x8_0000, KMEM, DONATED << 12]),
        prop::sample::select(vec![L1, L2, CMDQ, EVTQ, CD, KMEM]).prop_map(|a| raw::BASE_RA | a | 7),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let cfg = prop::sample::select(vec![0u64, 4, 5, 6, 7, 1]);
    prop_oneof![
        4 => (offset(), prop::sample::select(vec![4u64, 8, 2, 1]), value()).prop_map(|(o, s, v)| Step::Write(o, s, v)),
        1 => (offset(), prop::sample::select(vec![4u64, 8])).prop_map(|(o, s)| Step::Read(o, s)),
        2 => (0u32..256, cfg, any::<[u64; 8]>(), any::<bool>()).prop_map(|(sid, c, mut w, valid)| {
            w[0] = (w[0] & !0xf) | c << 1 | u64::from(valid);
            Step::HostSte(sid, w)
        }),
        2 => (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(o, a, b)| Step::Command([(a & !0xff) | u64::from(o), b])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Random register traffic, random STEs in the host's table and random commands in its
    /// queue, after the stock driver's reset: no panic, every access answered or refused, and
    /// after every step the real device is as KCore keeps it and every invariant holds.
    #[test]
    fn random_host_traffic_keeps_the_device_safe(steps in proptest::collection::vec(step(), 1..60)) {
        let mut h = Host::new();
        h.linux_reset();
        for s in steps {
            match s {
                Step::Write(o, size, v) => { let _ = h.w(o, size, v); }
                Step::Read(o, size) => { let _ = h.k.smmu_ops().host_access(o, size, false, 0); }
                Step::HostSte(sid, w) => {
                    h.host_ste(sid, &w);
                    h.push(&[cmd::cfgi_ste(sid), cmd::sync()]);
                }
                Step::Command(c) => h.push(&[c, cmd::sync()]),
            }
            let m = &h.k.m;
            prop_assert_eq!(m.smmu_read(reg::CR0, 4) as u32 & (cr0::SMMUEN | cr0::CMDQEN), cr0::SMMUEN | cr0::CMDQEN);
            prop_assert_ne!(m.smmu_read(reg::GBPA, 4) as u32 & gbpa::ABORT, 0);
            prop_assert_eq!(m.smmu_read(reg::STRTAB_BASE, 8) & raw::ADDR_MASK_51_6, h.k.dma.dev.strtab());
            let s2 = h.s2();
            for sid in 0..256 {
                prop_assert!(shadow_is_safe(&h.real_ste(sid), s2));
            }
            prop_assert_eq!(invariants::check(&h.k), Ok(()));
        }
    }
}

#[test]
fn streams_beyond_the_first_buses_get_a_table_when_the_host_configures_them() {
    let mut h = Host::new();
    h.linux_reset();
    // Host level-2 tables for buses 0x80.. at 8 MiB into RAM, one 16 KiB table per bus.
    let host_l2 = |bus: u64| RAM + (8 << 20) + (bus - 0x80) * 0x4000;
    let install = |h: &mut Host, bus: u64, s: &Ste| {
        for i in 0..256u64 {
            for (w, v) in s.iter().enumerate() {
                h.k.m.store(host_l2(bus) + i * 64 + 8 * w as u64, *v);
            }
        }
        h.k.m.store(L1 + 8 * bus, raw::l1_desc(host_l2(bus), 8));
        h.push(&[cmd::cfgi_ste((bus << 8) as u32 | 0x18), cmd::sync()]);
    };
    let pool_before = h.k.dma.table.pool.available();
    install(&mut h, 0x80, &s1_ste(CD));
    let real = h.k.dma.dev.ste(&h.k.m, 0x8018).expect("a level-2 table for bus 0x80");
    assert_eq!((raw::ste_config(&real), real[2], real[3]), (ste::CONFIG_NESTED, h.s2().0, h.s2().1));
    assert_eq!(pool_before - h.k.dma.table.pool.available(), 4, "one 16 KiB table");
    // A bus whose streams all abort costs KCore nothing: they are refused already.
    install(&mut h, 0x81, &STE_ABORT);
    assert!(h.k.dma.dev.ste(&h.k.m, 0x8118).is_none());
    h.check_real();
    // A host that configures bus after bus runs KCore's pool dry: the streams beyond are
    // refused (no STE), nothing panics, the invariants hold.
    let mut refused = 0;
    for bus in 0x82..0xff {
        install(&mut h, bus, &[ste::V | ste::CONFIG_BYPASS << 1, 0, 0, 0, 0, 0, 0, 0]);
        refused += u32::from(h.k.dma.dev.ste(&h.k.m, (bus << 8) as u32).is_none());
    }
    assert!(refused > 0, "the pool ran out");
    h.check_real();
}
