//! Microbenchmark of the hot ownership transitions on the simulated machine: host fault
//! mapping, assign+map of 4 KiB pages and 2 MiB blocks, scrubbing; and how the cost of giving a
//! VM all its memory grows from 1 MiB to 1 GiB. Prints figures; asserts nothing about time.
//!
//!   cargo bench -p kcore --bench transitions
//!
//! Wall-clock figures of a simulation: they show the algorithmic cost of KCore's code (walks,
//! record updates, lock round trips), not EL2 instruction counts, which the QEMU benchmarks
//! measure.

use kcore::kcore::KCore;
use kcore::machine::sim::SimMachine;
use kcore::mem::memblock::MemBlocks;
use kcore::pt::ptalloc::PagePool;
use kcore::{BLOCK_2M, PAGE_SHIFT, PAGE_SIZE};
use std::time::Instant;

const RAM: u64 = 0x4000_0000;

/// A machine with `guest` bytes of host RAM to give away plus KCore's own 64 MiB at the top.
fn machine(guest: u64) -> KCore<SimMachine> {
    let size = guest + (64 << 20);
    let m = SimMachine::new(RAM, size);
    let mb = MemBlocks::new(&[(RAM, size)]).unwrap();
    let kmem = RAM + guest;
    let k = KCore::new(m, mb, kmem, PagePool::new(kmem + (32 << 20), RAM + size), 40).unwrap();
    k.mem().protect_kcore(kmem, RAM + size).unwrap();
    // VM 1's root and table pool: 16 MiB of KCore memory handed over as donated pages would be.
    k.vms[0].init_root_at(&k.m, &k.locks, kmem + (16 << 20)).unwrap();
    for pa in (kmem + (16 << 20) + 2 * PAGE_SIZE..kmem + (32 << 20)).step_by(PAGE_SIZE as usize) {
        k.vms[0].pool.add(&k.m, pa);
    }
    k
}

fn rate(label: &str, n: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    let per_s = n as f64 / s;
    println!("  {label:<44} {n:>8} ops  {:>10.0} ops/s  {:>8.2} us/op", per_s, 1e6 / per_s);
    per_s
}

fn main() {
    println!("hot transitions (256 MiB of guest memory)");
    let guest = 256 << 20;
    let pages = guest >> PAGE_SHIFT;
    let k = machine(guest);
    rate("host fault, cold 2 MiB blocks", guest / BLOCK_2M, || {
        for i in 0..guest / BLOCK_2M {
            k.mem().map_page_host(RAM + i * BLOCK_2M).unwrap();
        }
    });
    rate("host fault, already mapped", pages, || {
        for p in 0..pages {
            k.mem().map_page_host(RAM + (p << PAGE_SHIFT)).unwrap();
        }
    });
    rate("assign+map 4 KiB (host block split)", pages / 2, || {
        for p in 0..pages / 2 {
            k.mem().prot_and_map_vm(1, p, (RAM >> PAGE_SHIFT) + p, 3).unwrap();
        }
    });
    let blocks = (guest / 2) / BLOCK_2M;
    rate("assign+map 2 MiB block", blocks, || {
        for b in 0..blocks {
            let first = pages / 2 + b * 512;
            k.mem().prot_and_map_vm(1, first, (RAM >> PAGE_SHIFT) + first, 2).unwrap();
        }
    });
    rate("scrub 4 KiB (unmap VM, zero, return)", pages, || {
        for p in 0..pages {
            k.mem().clear_vm_page(1, (RAM >> PAGE_SHIFT) + p).unwrap();
        }
    });
    kcore::invariants::check(&k).unwrap();

    println!("giving a VM all its memory, 4 KiB pages vs 2 MiB blocks");
    for size in [1u64 << 20, 16 << 20, 128 << 20, 1 << 30] {
        let k = machine(size);
        let n = size >> PAGE_SHIFT;
        let t = Instant::now();
        for p in 0..n {
            k.mem().prot_and_map_vm(1, p, (RAM >> PAGE_SHIFT) + p, 3).unwrap();
        }
        let small = t.elapsed().as_secs_f64();
        let k = machine(size);
        let t = Instant::now();
        let mut blocks = 0;
        for b in 0..(size / BLOCK_2M) {
            k.mem().prot_and_map_vm(1, b * 512, (RAM >> PAGE_SHIFT) + b * 512, 2).unwrap();
            blocks += 1;
        }
        let big = t.elapsed().as_secs_f64();
        println!(
            "  {:>5} MiB: {:>7} pages {:>9.2} ms ({:>5.2} us/page)   {:>4} blocks {:>8.2} ms",
            size >> 20,
            n,
            small * 1e3,
            small * 1e6 / n as f64,
            blocks,
            big * 1e3
        );
    }
}
