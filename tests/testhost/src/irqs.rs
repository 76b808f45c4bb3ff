// 6x-ish (codes 220-239): interrupts between vCPUs and more of them than list registers. The
// test host plays the virtual GIC a VMM would: it turns the guest's SGI register writes (exit
// 8; on a GICv2, MMIO writes of GICD_SGIR) into INJECT_IRQ for each target vCPU, runs four vCPUs round robin on one CPU, and feeds
// eight SPIs (edge and level) through four list registers, refilling on the underflow and EOI
// maintenance exits it asks for and learning from VCPU_IRQ_STATE what the guest took and
// which level interrupts it deactivated.

use super::{check, hvc, hvc5, load_prog_vcpus, status};
use kcore::abi;

const IRQ_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/irq-guest-prog.img"));
const IRQ_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/irq-guest-prog.sig"));

/// INJECT_IRQ x4: priority 0xa0, and bit 8 for level-triggered.
const EDGE: u64 = 0xa0;
const LEVEL: u64 = 0x1a0;

pub(super) fn run() {
    let vm = load_prog_vcpus(500, IRQ_IMG, IRQ_SIG, 220, 4);
    // Four vCPU pages and the image's tables leave one pool page; on a GICv2 KCore needs two
    // more for the tables of the guest's GIC CPU interface window (VCPU_RUN would say -5).
    for p in [520, 521] {
        check(status(hvc(abi::DONATE_PAGE, [vm, super::pfn(super::page(p)), 0, 0])) == 0, 220);
    }
    // The SPIs of the burst, in order; odd ones level-triggered.
    let burst: [(u64, u64); 8] =
        [(40, EDGE), (41, LEVEL), (42, EDGE), (43, LEVEL), (44, EDGE), (45, LEVEL), (46, EDGE), (47, LEVEL)];
    let mut next_spi = 8; // none queued until the guest asks
    let mut level_live = [false; 64];
    let (mut sgi_exits, mut full, mut levels_done, mut maint_exits) = (0, 0, 0, 0);
    let mut reports = [u64::MAX; 8];
    let mut runnable = 1u64;
    let mut vcpu = 0u64;
    let mut done = false;
    let mut hist = [0u64; 16];
    for _ in 0..5000 {
        // Refill vCPU 0's list registers from the burst, and ask to hear when they drain.
        if vcpu == 0 {
            let lrs = hvc5(abi::VCPU_IRQ_STATE, [vm, 0, 0, 0]);
            check(lrs[0] == 0, 221);
            for lr in &lrs[1..] {
                let (state, eoi, intid) = (lr >> 62, lr >> 41 & 1, lr & 0xffff_ffff);
                // A level interrupt the guest deactivated: its line is sampled again (here:
                // it has dropped, nothing to re-inject).
                if state == 0 && eoi == 1 && level_live[intid as usize] {
                    level_live[intid as usize] = false;
                    levels_done += 1;
                }
            }
            while next_spi < burst.len() {
                let (intid, attrs) = burst[next_spi];
                let r = hvc(abi::INJECT_IRQ, [vm, 0, intid, attrs]);
                if status(r) == abi::NO_MEMORY {
                    full += 1;
                    break;
                }
                check(status(r) == 0, 222);
                level_live[intid as usize] = attrs == LEVEL;
                next_spi += 1;
            }
        }
        let notify = (vcpu == 0 && next_spi < burst.len()) as u64;
        let r = hvc5(abi::VCPU_RUN, [vm, vcpu, 0, notify]);
        check(r[0] == 0, 223);
        hist[(r[1] as usize).min(15)] += 1;
        match r[1] {
            // An SGI register write: route it (INTID 27:24, TargetList 15:0 at Aff1-3 = 0).
            8 => {
                check(r[3] == 1, 224); // ICC_SGI1R_EL1
                sgi_exits += 1;
                let (intid, targets) = ((r[2] >> 24) & 0xf, r[2] & 0xffff);
                check(r[2] >> 40 & 1 == 0 && r[2] >> 16 & 0xff == 0, 224);
                for t in 0..4 {
                    if targets & (1 << t) != 0 {
                        // Already pending: SGIs coalesce, as on a GIC.
                        let st = status(hvc(abi::INJECT_IRQ, [vm, t, intid, EDGE]));
                        check(st == 0 || st == abi::EXISTS, 225);
                        runnable |= 1 << t;
                    }
                }
            }
            // GICv2: a GICD_SGIR write (CPUTargetList 23:16, TargetListFilter 25:24 = 0,
            // INTID 3:0), an MMIO exit for the host's virtual distributor.
            1 if r[2] == 0x0800_0f00 => {
                check(super::gic_v2() && r[3] == 0b101, 224); // a 32-bit write
                sgi_exits += 1;
                let (intid, targets) = (r[4] & 0xf, (r[4] >> 16) & 0xff);
                check(r[4] >> 24 == 0 && r[4] & 0xfff0 == 0, 224);
                for t in 0..4 {
                    if targets & (1 << t) != 0 {
                        let st = status(hvc(abi::INJECT_IRQ, [vm, t, intid, EDGE]));
                        check(st == 0 || st == abi::EXISTS, 225);
                        runnable |= 1 << t;
                    }
                }
            }
            1 if r[2] >= 0x0900_1000 && r[2] < 0x0900_1040 => {
                let k = ((r[2] - 0x0900_1000) / 8) as usize;
                reports[k] = r[4];
                if k == 1 {
                    next_spi = 0; // the guest is ready for the burst
                }
            }
            3 => vcpu = next_runnable(runnable, vcpu),
            4 => {
                if vcpu == 0 && next_spi < burst.len() {
                    maint_exits += 1;
                }
            }
            6 => runnable |= 1 << r[2],
            7 => {
                runnable &= !(1 << vcpu);
                vcpu = next_runnable(runnable, vcpu);
            }
            5 => {
                done = true;
                break;
            }
            _ => check(false, 226),
        }
    }
    if !done {
        super::print("TESTHOST: irq guest stuck: vcpu, runnable, next SPI, reports 0..2, full, maintenance exits: ");
        let lrs = hvc5(abi::VCPU_IRQ_STATE, [vm, 0, 0, 0]);
        for v in [vcpu, runnable, next_spi as u64, reports[0], reports[1], reports[2], full, maint_exits, hist[1], hist[3], hist[4], lrs[1], lrs[2], lrs[3], lrs[4]] {
            super::print_hex(v);
            super::print(" ");
        }
        super::print("\n");
    }
    check(done, 227);
    check(reports[7] == u64::MAX, 228); // the guest never failed
    check(reports[0] == 0x1c && reports[4] == 1 && reports[5] == 2 && reports[6] == 3, 229);
    check(sgi_exits == 6, 230);
    check(reports[2] >> 8 & 0xff == 0xff, 231); // SPIs 40-47 all taken
    check(full >= 1 && maint_exits >= 1, 232); // more than four at once: refilled on exits
    check(levels_done == 4, 233); // every deactivation of a level SPI was seen
    check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 234);
}

fn next_runnable(runnable: u64, from: u64) -> u64 {
    for i in 1..=4 {
        let v = (from + i) % 4;
        if runnable & (1 << v) != 0 {
            return v;
        }
    }
    from
}
