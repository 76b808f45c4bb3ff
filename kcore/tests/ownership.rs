//! Regression tests for the bugs SeKVM's proofs found, pKVM's ownership self-test adapted to
//! KCore's transitions, pool exhaustion with top-up and retry, and concurrent transitions on
//! the same pages with the real locks.

mod common;

use common::*;
use kcore::error::Error;
use kcore::invariants;
use kcore::mem::pagemgmt::{Owner, PageInfo};
use kcore::spec::mem::{AbsMem, Op, abstraction, run};
use kcore::{BLOCK_2M, PAGE_SHIFT};
use std::sync::{Arc, Barrier};

/// Run `op`, expecting `want`; a refused request must change nothing.
fn expect(
    k: &kcore::kcore::KCore<kcore::machine::sim::SimMachine>,
    pools: &std::collections::BTreeMap<u16, u64>,
    op: Op,
    want: Result<u64, Error>,
) {
    let before: AbsMem = abstraction(k, pools);
    assert_eq!(run(k, op), want, "{op:?}");
    if want.is_err() {
        assert_eq!(abstraction(k, pools), before, "refused {op:?} changed the state");
    }
    invariants::check(k).unwrap_or_else(|v| panic!("after {op:?}: {v:?}"));
}

// ---------------------------------------------------------------- SeKVM's proof-found bugs

/// Bug 1: a host stage-2 fault racing with donation of the same page to a VM. The ownership
/// lock is held until the host mapping is complete, so at every quiescent point the host maps
/// the page only while it is the host's.
#[test]
fn bug1_host_fault_racing_donation_never_leaves_a_host_mapping_of_a_vm_page() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (k, _) = kcore();
    let k = Arc::new(k);
    let pages: Vec<u64> = (0..8).map(|i| P0 + 1536 + i * 64).collect();
    let rounds = 300;
    let barrier = Arc::new(Barrier::new(2));
    let donor_done = Arc::new(AtomicBool::new(false));
    let faulter = {
        let (k, pages, barrier, done) = (k.clone(), pages.clone(), barrier.clone(), donor_done.clone());
        std::thread::spawn(move || {
            kcore::machine::sim::SimMachine::set_cpu(1);
            for _ in 0..rounds {
                // Keep faulting for as long as the other CPU is moving pages.
                while !done.load(Ordering::Acquire) {
                    for &p in &pages {
                        let r = k.mem().map_page_host(p << PAGE_SHIFT);
                        assert!(matches!(r, Ok(_) | Err(Error::Denied)), "{r:?}");
                    }
                }
                barrier.wait();
                barrier.wait();
            }
        })
    };
    for round in 0..rounds {
        for (i, &p) in pages.iter().enumerate() {
            let gfn = 0x100 + i as u64;
            if round % 2 == 0 {
                k.mem().prot_and_map_vm(1, gfn, p, 3).unwrap();
            } else {
                k.mem().clear_vm_page(1, p).unwrap();
            }
            std::thread::yield_now();
        }
        donor_done.store(true, Ordering::Release);
        barrier.wait();
        let r = invariants::check(&k);
        donor_done.store(false, Ordering::Release);
        barrier.wait();
        r.unwrap_or_else(|v| panic!("round {round}: {v:?}"));
    }
    faulter.join().unwrap();
}

/// Bug 2: two vCPUs faulting on the same gfn: the second mapping must not overwrite the first.
#[test]
fn bug2_second_mapping_of_a_gfn_is_refused_and_the_first_survives() {
    let (k, pools) = kcore();
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 7, pfn: P0 + 7, level: 3 }, Ok(0));
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 7, pfn: P0 + 8, level: 3 }, Err(Error::Exists));
    let leaf = k.vms[0].expect_npt().walk(&k.m, 7 << PAGE_SHIFT).unwrap();
    assert_eq!(leaf.output(7 << PAGE_SHIFT), (P0 + 7) << PAGE_SHIFT);
    assert_eq!(k.mem().page(P0 + 8).unwrap().owner, Owner::Host, "the loser's page stays the host's");
    // A block over a gfn range that already has a page is refused too.
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 0, pfn: P0 + 512, level: 2 }, Err(Error::Exists));
}

/// Bug 3: a 2 MiB mapping where only the first 4 KiB page was ownership-checked.
#[test]
fn bug3_every_page_of_a_block_is_checked() {
    let (k, pools) = kcore();
    // The last page of the block belongs to another VM.
    expect(&k, &pools, Op::ProtMap { vmid: 2, gfn: 9, pfn: P0 + 1023, level: 3 }, Ok(0));
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 512, pfn: P0 + 512, level: 2 }, Err(Error::Denied));
    // A page in the middle belongs to KCore.
    k.mem().protect_kcore((P0 + 1536 + 300) << PAGE_SHIFT, (P0 + 1536 + 301) << PAGE_SHIFT).unwrap();
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 1536, pfn: P0 + 1536, level: 2 }, Err(Error::Denied));
    // map_pfn_vm: the VM owns the first page only.
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: 0, pfn: P0 }, Ok(0));
    expect(&k, &pools, Op::Map { vmid: 1, gfn: 0, pfn: P0, level: 2 }, Err(Error::Denied));
    // And an unaligned pfn would make the block map pages nobody checked.
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 1024, pfn: P0 + 1025, level: 2 }, Err(Error::InvalidParameter));
}

/// Bug 4 (adapted): a host page the SMMU itself writes by physical address (the host's event
/// queue, which KCore pins with a share count of 1 while it is enabled; `smmu_emul.rs` pins a
/// real one) is never given to a VM or to KCore. Other host pages with DMA mappings may be
/// given away: they leave the host-DMA table first (bug 5 below, and `refine_spt.rs`).
#[test]
fn bug4_host_page_with_dma_mappings_cannot_be_given_away() {
    let (k, pools) = kcore();
    let p = P0 + 40;
    k.meta.set(&k.m, &k.mb, p, PageInfo { owner: Owner::Host, count: 1, gfn: 0 });
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: 40, pfn: p }, Err(Error::Denied));
    expect(&k, &pools, Op::ProtMap { vmid: 1, gfn: 40, pfn: p, level: 3 }, Err(Error::Denied));
    expect(&k, &pools, Op::Donate { vmid: 1, pfn: p }, Err(Error::Denied));
}

/// Bug 5: SMMU tables changing after boot. In SeKVM a device's SMMU table could still be
/// changed once the VM it served was verified. Here the only SMMU translation is KCore's
/// host-DMA table, and nothing the host does after boot makes a VM's page reachable by a
/// device: not the host's own STEs (bypass, or stage 2 with its own table: shadowed to
/// stage-2-only through KCore's table, and to abort), not moving its stream table while
/// enabled, not assigning the page after a device had it cached.
#[test]
fn bug5_no_smmu_table_reaches_a_vm_page_after_boot() {
    use kcore::machine::Machine;
    use kcore::smmu::raw::{self, cr0, reg, ste};
    let (k, pools) = kcore();
    k.take_smmu((0x0905_0000, 0x0907_0000), (KMEM + (512 << 10), KMEM + (1 << 20)), &[0x0809_0000], true).unwrap();
    let vm_page = P0 + 60;
    let pa = vm_page << PAGE_SHIFT;
    let dma = |sid| k.m.smmu.lock().unwrap().dma(&k.m, sid, pa, true);
    // Before its reset the host's streams bypass (stage 2 only): the device has the page.
    assert_eq!(dma(0x18), Ok(pa));
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: 60, pfn: vm_page }, Ok(0));
    assert!(dma(0x18).is_err(), "gone from the device when the assignment returned");
    // The host's driver sets up its SMMU: a stream table of its own, one stream bypass and
    // one stage 2 through a table of its own mapping everything.
    let (l1, l2, cmdq, own_s2) = (RAM + (6 << 20), RAM + (6 << 20) + 0x4000, RAM + (6 << 20) + 0x8000, RAM + (7 << 20));
    k.m.store(l1, raw::l1_desc(l2, 8));
    k.m.store(l2 + 0x18 * 64, ste::V | ste::CONFIG_BYPASS << 1);
    k.m.store(l2 + 0x19 * 64, ste::V | ste::CONFIG_S2 << 1);
    k.m.store(l2 + 0x19 * 64 + 16, 0x8_0014 << 32);
    k.m.store(l2 + 0x19 * 64 + 24, own_s2);
    let w = |off, size, v| k.smmu_ops().host_access(off, size, true, v).unwrap();
    w(reg::STRTAB_BASE, 8, raw::BASE_RA | l1);
    w(reg::STRTAB_BASE_CFG, 4, 0x10210);
    w(reg::CMDQ_BASE, 8, raw::BASE_RA | cmdq | 8);
    w(reg::CR0, 4, u64::from(cr0::SMMUEN | cr0::CMDQEN));
    assert!(dma(0x18).is_err() && dma(0x19).is_err());
    // Moving its stream table while enabled is refused; KCore's table is what the device uses.
    w(reg::STRTAB_BASE, 8, raw::BASE_RA | own_s2);
    assert_eq!(k.m.smmu_read(reg::STRTAB_BASE, 8) & raw::ADDR_MASK_51_6, k.dma.dev.strtab());
    assert!(dma(0x18).is_err());
    // Scrubbed back to the host, the page is the host's devices' again.
    expect(&k, &pools, Op::Scrub { vmid: 1, pfn: vm_page }, Ok(0));
    assert_eq!(dma(0x18), Ok(pa));
}

// ---------------------------------------------------------------- pKVM's self-test, adapted

/// One page walked through every legal transition; in each state, every illegal transition
/// returns its error and changes nothing.
#[test]
fn ownership_transition_table() {
    let (k, pools) = kcore();
    let p = P0 + 100;
    let g = 100;
    // State: host-owned.
    for (op, err) in [
        (Op::Grant { vmid: 1, pfn: p }, Error::Denied),
        (Op::Revoke { vmid: 1, pfn: p }, Error::Denied),
        (Op::Scrub { vmid: 1, pfn: p }, Error::Denied),
        (Op::Map { vmid: 1, gfn: g, pfn: p, level: 3 }, Error::Denied),
        (Op::Assign { vmid: 9, gfn: g, pfn: p }, Error::NotFound),
        (Op::Assign { vmid: 1, gfn: 1 << 28, pfn: p }, Error::InvalidParameter),
    ] {
        expect(&k, &pools, op, Err(err));
    }
    expect(&k, &pools, Op::HostFault { ipa: p << PAGE_SHIFT }, Ok(0));
    // host -> VM 1 (assigned, not mapped).
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: g, pfn: p }, Ok(0));
    for (op, err) in [
        (Op::HostFault { ipa: p << PAGE_SHIFT }, Error::Denied),
        (Op::Assign { vmid: 2, gfn: g, pfn: p }, Error::Denied),
        (Op::Assign { vmid: 1, gfn: g + 1, pfn: p }, Error::Denied),
        (Op::Donate { vmid: 0, pfn: p }, Error::Denied),
        (Op::Grant { vmid: 2, pfn: p }, Error::Denied),
        (Op::Scrub { vmid: 2, pfn: p }, Error::Denied),
        (Op::Revoke { vmid: 1, pfn: p }, Error::BadState),
        (Op::Map { vmid: 1, gfn: g + 1, pfn: p, level: 3 }, Error::Denied),
    ] {
        expect(&k, &pools, op, Err(err));
    }
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: g, pfn: p }, Ok(0));
    // -> mapped in VM 1.
    expect(&k, &pools, Op::Map { vmid: 1, gfn: g, pfn: p, level: 3 }, Ok(0));
    expect(&k, &pools, Op::Map { vmid: 1, gfn: g, pfn: p, level: 3 }, Err(Error::Exists));
    // -> shared with the host, up to the cap.
    for n in 1..=100 {
        expect(&k, &pools, Op::Grant { vmid: 1, pfn: p }, Ok(n));
    }
    expect(&k, &pools, Op::Grant { vmid: 1, pfn: p }, Err(Error::BadState));
    expect(&k, &pools, Op::HostFault { ipa: p << PAGE_SHIFT }, Ok(0));
    assert!(k.host.expect_npt().walk(&k.m, p << PAGE_SHIFT).is_some_and(|l| l.level == 3));
    expect(&k, &pools, Op::Assign { vmid: 2, gfn: g, pfn: p }, Err(Error::Denied));
    for n in (0..100).rev() {
        expect(&k, &pools, Op::Revoke { vmid: 1, pfn: p }, Ok(n));
    }
    assert!(k.host.expect_npt().walk(&k.m, p << PAGE_SHIFT).is_none(), "unshared at count 0");
    // -> scrubbed back to the host, zeroed.
    k.m.fill_page(p << PAGE_SHIFT, 0xee);
    expect(&k, &pools, Op::Scrub { vmid: 1, pfn: p }, Ok(0));
    assert!(k.m.page_is_zero(p << PAGE_SHIFT));
    assert!(k.vms[0].expect_npt().walk(&k.m, g << PAGE_SHIFT).is_none());
    // -> donated to KCore: nothing can take it any more.
    expect(&k, &pools, Op::Donate { vmid: 1, pfn: p }, Ok(0));
    for (op, err) in [
        (Op::HostFault { ipa: p << PAGE_SHIFT }, Error::Denied),
        (Op::Assign { vmid: 1, gfn: g, pfn: p }, Error::Denied),
        (Op::Donate { vmid: 1, pfn: p }, Error::Denied),
        (Op::Scrub { vmid: 1, pfn: p }, Error::Denied),
    ] {
        expect(&k, &pools, op, Err(err));
    }
    // Device memory: only as IO, never as RAM.
    expect(&k, &pools, Op::MapIo { vmid: 1, gpa: 0x0800_0000, pa: RAM }, Err(Error::Denied));
    expect(&k, &pools, Op::MapIo { vmid: 1, gpa: 0x0800_0000, pa: 0x0901_0000 }, Ok(0));
    expect(&k, &pools, Op::Assign { vmid: 1, gfn: 0, pfn: 0x0901_0000 >> 12 }, Err(Error::InvalidParameter));
}

// ---------------------------------------------------------------- pools

/// A VM table whose pool runs dry refuses the mapping without changing anything; the host
/// donates pages and the same request then succeeds.
#[test]
fn pool_exhaustion_is_recoverable() {
    let (k, pools) = kcore();
    expect(&k, &pools, Op::CreateVm { vmid: 3, root: P0 + 3000 }, Ok(0));
    // Drain VM 3's pool with mappings far apart (each needs new tables).
    let mut gfn = 0;
    let mut pfn = P0;
    loop {
        match run(&k, Op::ProtMap { vmid: 3, gfn, pfn, level: 3 }) {
            Ok(_) => {}
            Err(Error::NoMemory) => break,
            Err(e) => panic!("{e:?}"),
        }
        gfn += BLOCK_2M >> PAGE_SHIFT;
        pfn += 1;
    }
    let before = abstraction(&k, &pools);
    assert_eq!(run(&k, Op::ProtMap { vmid: 3, gfn, pfn, level: 3 }), Err(Error::NoMemory));
    assert_eq!(abstraction(&k, &pools), before, "nothing assigned on NoMemory");
    assert_eq!(k.mem().page(pfn).unwrap().owner, Owner::Host);
    k.mem().donate_to_pool(3, P0 + 3010).unwrap();
    assert_eq!(run(&k, Op::ProtMap { vmid: 3, gfn, pfn, level: 3 }), Ok(0));
    invariants::check(&k).unwrap();
}

// ---------------------------------------------------------------- concurrency

/// Four CPUs drive donation, host faults, assignment, mapping, sharing and scrubbing on the
/// same pages through the real lock code; at every quiescent point the invariants hold.
#[test]
fn concurrent_transitions_keep_the_invariants() {
    let (k, _) = kcore();
    let k = Arc::new(k);
    let rounds = 100;
    let barrier = Arc::new(Barrier::new(4));
    let pages: Arc<Vec<u64>> = Arc::new((0..16).map(|i| P0 + 2048 + i).collect());
    let workers: Vec<_> = (0..4)
        .map(|cpu| {
            let (k, barrier, pages) = (k.clone(), barrier.clone(), pages.clone());
            std::thread::spawn(move || {
                kcore::machine::sim::SimMachine::set_cpu(cpu);
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ cpu as u64;
                for round in 0..rounds {
                    for _ in 0..24 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let p = pages[(seed % pages.len() as u64) as usize];
                        let vmid = 1 + (seed >> 8) as u16 % 2;
                        let gfn = p - P0 + 0x10_0000 * vmid as u64;
                        let mem = k.mem();
                        let r = match (seed >> 16) % 7 {
                            0 | 1 => mem.map_page_host(p << PAGE_SHIFT).map(|_| 0),
                            2 => mem.prot_and_map_vm(vmid, gfn, p, 3).map(|_| 0),
                            3 => mem.grant_vm_page(vmid, p),
                            4 => mem.revoke_vm_page(vmid, p),
                            5 => mem.clear_vm_page(vmid, p).map(|_| 0),
                            _ if round % 50 == 7 => mem.donate_to_pool(vmid, p).map(|_| 0),
                            _ => mem.map_page_host((p + 1) << PAGE_SHIFT).map(|_| 0),
                        };
                        assert!(!matches!(r, Err(Error::InvalidParameter) | Err(Error::NotFound)), "{r:?}");
                    }
                    barrier.wait();
                    if cpu == 0 {
                        invariants::check(&k).unwrap_or_else(|v| panic!("round {round}: {v:?}"));
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
