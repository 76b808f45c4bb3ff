//! The bare-metal test host: KCore boots it at EL1 in place of Linux. It drives KCore's host
//! hypercalls through real `HVC`s and checks the answers and the isolation KCore enforces.
//! Verdict through semihosting: exit status 0 = all passed, otherwise the number of the
//! failed check (tens digit = scenario).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the test host only builds for aarch64-unknown-none-softfloat (tests/baremetal.sh)");
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[path = "."] // its file modules (probe.rs) sit next to this file
mod el1 {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU64, Ordering};
    use kcore::abi;

    core::arch::global_asm!(include_str!("entry.S"));

    /// A Linux kernel as a guest (`linuxguest.rs`, beside this file).
    mod linuxguest {
        include!("linuxguest.rs");
    }
    /// Interrupts between vCPUs and list-register refills (`irqs.rs`, beside this file).
    mod irqs {
        include!("irqs.rs");
    }
    /// Non-protected VMs (`nonprotected.rs`, beside this file).
    mod nonprotected {
        include!("nonprotected.rs");
    }
    /// The CPU a guest sees, and the register sweep (`probe.rs`, beside this file).
    mod probe;

    /// Written by the EL1 vector: [synchronous exceptions taken, last ESR_EL1, last FAR_EL1].
    #[unsafe(no_mangle)]
    static TESTHOST_FAULTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

    const GUEST_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.img"));
    const GUEST_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.sig"));
    const PROG_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-prog.img"));
    const PROG_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-prog.sig"));
    const BENCH_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-guest-prog.img"));
    const BENCH_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-guest-prog.sig"));
    const SPIN_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/spin-guest-prog.img"));
    const SPIN_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/spin-guest-prog.sig"));
    /// Where the guest image was signed to be loaded.
    const LOAD_IPA: u64 = 0x8000_0000;
    const UART: u64 = 0x0900_0000;
    /// The test host's scratch RAM (inside the host's part of RAM on QEMU virt, 1 GiB).
    const SCRATCH: u64 = 0x4200_0000;
    /// KCore's image: the test host must never be able to touch it.
    const KCORE_PFN: u64 = 0x40200;

    fn page(i: u64) -> u64 {
        SCRATCH + i * 4096
    }
    fn pfn(pa: u64) -> u64 {
        pa >> 12
    }

    /// Pages of a VM's stage-2 root (KCORE_VERSION x3): 1, or 2 on a CPU with 40 bits of
    /// physical address. The pages after a root this host lays out are the VM's table pool;
    /// the first `root_pages() - 1` of them belong to the root instead.
    fn root_pages() -> u64 {
        hvc(abi::KCORE_VERSION, [0; 4])[3]
    }

    fn hvc(id: u32, a: [u64; 4]) -> [u64; 4] {
        let r = hvc5(id, a);
        [r[0], r[1], r[2], r[3]]
    }

    fn hvc5(id: u32, a: [u64; 4]) -> [u64; 5] {
        let r: [u64; 5];
        // SAFETY: HVC #0 enters KCore, which follows SMCCC: x0..x4 carry results and KCore
        // preserves every other register (x5..x17 are declared clobbered anyway).
        unsafe {
            let (r0, r1, r2, r3, r4);
            asm!("hvc #0",
                inlateout("x0") id as u64 => r0, inlateout("x1") a[0] => r1,
                inlateout("x2") a[1] => r2, inlateout("x3") a[2] => r3, inlateout("x4") a[3] => r4,
                lateout("x5") _, lateout("x6") _, lateout("x7") _, options(nostack));
            r = [r0, r1, r2, r3, r4];
        }
        r
    }

    fn status(r: [u64; 4]) -> i64 {
        r[0] as i64
    }

    fn read(pa: u64) -> u64 {
        // SAFETY: a single aligned load from RAM or from a page KCore may refuse; a refused
        // load becomes an external abort that the EL1 vector counts and skips.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }

    fn write(pa: u64, v: u64) {
        // SAFETY: as for `read`, a single aligned store.
        unsafe { core::ptr::write_volatile(pa as *mut u64, v) }
    }

    fn fill(pa: u64, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            write(pa + 8 * i as u64, u64::from_le_bytes(w));
        }
    }

    /// The host's own FP/SIMD values around a guest run: set q0 and q7 to known patterns.
    fn host_fp_set() {
        // SAFETY: FP/SIMD at EL1 is enabled (CPACR_EL1.FPEN) before first use; only q0 and q7
        // change, and nothing else in the test host uses FP registers.
        unsafe {
            asm!(
                ".arch_extension fp", ".arch_extension simd",
                "fmov d0, {a}", "mov v0.d[1], {a}", "fmov d7, {b}", "mov v7.d[1], {b}",
                a = in(reg) 0x686f_7374_2d71_3030u64, b = in(reg) 0x686f_7374_2d71_3737u64,
                options(nostack)
            )
        };
    }

    /// Are the host's q0 and q7 still what [`host_fp_set`] put there?
    fn host_fp_intact() -> bool {
        let (a0, a1, b0, b1): (u64, u64, u64, u64);
        // SAFETY: reading FP/SIMD registers, enabled as above.
        unsafe {
            asm!(
                ".arch_extension fp", ".arch_extension simd",
                "fmov {a0}, d0", "mov {a1}, v0.d[1]", "fmov {b0}, d7", "mov {b1}, v7.d[1]",
                a0 = out(reg) a0, a1 = out(reg) a1, b0 = out(reg) b0, b1 = out(reg) b1,
                options(nostack)
            )
        };
        a0 == 0x686f_7374_2d71_3030 && a1 == a0 && b0 == 0x686f_7374_2d71_3737 && b1 == b0
    }

    fn enable_fp() {
        // SAFETY: CPACR_EL1.FPEN = 0b11: FP/SIMD usable at EL1 and EL0 by the test host.
        unsafe { asm!("msr cpacr_el1, {}", "isb", in(reg) 3u64 << 20, options(nostack)) };
    }

    /// Set up the physical GIC as a host OS does for its timer: distributor on (group 1,
    /// affinity routing), this CPU's redistributor awake with PPI 27 (the virtual timer)
    /// enabled in group 1, and the CPU interface taking group 1. The test host itself keeps
    /// interrupts masked; this lets a guest's timer reach KCore while the guest runs.
    /// Does the machine have a GICv2 (ID_AA64PFR0_EL1.GIC = 0: no GICv3 system registers)?
    /// Then the guests find their CPU interface as MMIO at 0x08010000 (KCore maps GICV there),
    /// the ID-register probe and sweep written for the GICv3 interface are left out.
    fn gic_v2() -> bool {
        let pfr0: u64;
        // SAFETY: reading an ID register has no side effects.
        unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nostack)) };
        (pfr0 >> 24) & 0xf == 0
    }

    fn gic_init() {
        const GICD: u64 = 0x0800_0000;
        const GICR: u64 = 0x080a_0000; // CPU 0's redistributor on QEMU virt
        const GICC: u64 = 0x0801_0000; // GICv2 CPU interface on QEMU virt
        let w32 = |pa: u64, v: u32| {
            // SAFETY: GIC registers of QEMU virt (device memory; the host's own GIC).
            unsafe { core::ptr::write_volatile(pa as *mut u32, v) }
        };
        let r32 = |pa: u64| {
            // SAFETY: as above.
            unsafe { core::ptr::read_volatile(pa as *const u32) }
        };
        if gic_v2() {
            // GICv2 (no security extensions on QEMU virt): distributor on, PPI 27 enabled in
            // this CPU's banked GICD_ISENABLER0, CPU interface on with every priority.
            w32(GICD, 1); // GICD_CTLR.Enable
            w32(GICD + 0x100, 1 << 27); // GICD_ISENABLER0
            w32(GICC + 0x4, 0xff); // GICC_PMR
            w32(GICC, 1); // GICC_CTLR.Enable
            return;
        }
        w32(GICD, 0x12); // GICD_CTLR: ARE | EnableGrp1
        w32(GICR + 0x14, r32(GICR + 0x14) & !2); // GICR_WAKER.ProcessorSleep = 0
        while r32(GICR + 0x14) & 4 != 0 {
            core::hint::spin_loop();
        }
        let sgi = GICR + 0x1_0000;
        w32(sgi + 0x80, r32(sgi + 0x80) | 1 << 27); // GICR_IGROUPR0: group 1
        w32(sgi + 0x100, 1 << 27); // GICR_ISENABLER0
        // SAFETY: the GIC CPU interface system registers at EL1, for this CPU.
        unsafe {
            asm!(
                "msr S3_0_C12_C12_5, {one}", // ICC_SRE_EL1.SRE
                "isb",
                "msr S3_0_C4_C6_0, {pmr}",   // ICC_PMR_EL1
                "msr S3_0_C12_C12_7, {one}", // ICC_IGRPEN1_EL1
                "isb",
                one = in(reg) 1u64, pmr = in(reg) 0xffu64, options(nostack)
            )
        };
    }

    fn faults() -> u64 {
        TESTHOST_FAULTS[0].load(Ordering::SeqCst)
    }

    fn print(s: &str) {
        for b in s.bytes() {
            // SAFETY: the PL011 data register of QEMU virt; the host owns the console.
            unsafe { core::ptr::write_volatile(UART as *mut u32, b as u32) };
        }
    }

    fn print_hex(v: u64) {
        let mut buf = [0u8; 18];
        buf[0] = b'0';
        buf[1] = b'x';
        for i in 0..16 {
            let d = ((v >> (60 - 4 * i)) & 0xf) as u8;
            buf[2 + i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        }
        print(core::str::from_utf8(&buf).unwrap_or("?"));
    }

    fn exit(code: u64) -> ! {
        let block = [0x20026u64, code];
        // SAFETY: semihosting SYS_EXIT; QEMU reads the parameter block and stops.
        unsafe { asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack)) };
        loop {
            core::hint::spin_loop();
        }
    }

    fn check(ok: bool, code: u64) {
        if !ok {
            print("TESTHOST: check failed\n");
            exit(code);
        }
    }

    /// A VM with root page `root`, table pool `tables`, the guest image in pages `img..img+2`
    /// and the signature `sig` in page `sigp`. Returns the vmid.
    fn load_vm(root: u64, tables: u64, img: u64, sigp: u64, sig: &[u8; 64], code: u64) -> u64 {
        let r = hvc(abi::REGISTER_VM, [pfn(root), 0, 0, 0]);
        check(status(r) == 0, code + 1);
        let vmid = r[1];
        for i in root_pages() - 1..8 {
            check(status(hvc(abi::DONATE_PAGE, [vmid, pfn(tables) + i, 0, 0])) == 0, code + 2);
        }
        fill(sigp, sig);
        fill(img, GUEST_IMG);
        let r = hvc(abi::SET_BOOT_INFO, [vmid, LOAD_IPA, GUEST_IMG.len() as u64, pfn(sigp)]);
        check(status(r) == 0 && r[1] == 0, code + 3);
        for i in 0..3 {
            check(status(hvc(abi::MAP_IMAGE_PAGE, [vmid, 0, i, pfn(img) + i])) == 0, code + 4);
        }
        vmid
    }

    /// Does the device tree at `dtb` (QEMU's, from x0) carry `word` in its bootargs? A plain
    /// byte search is enough for a test payload.
    fn dtb_has(dtb: u64, word: &[u8]) -> bool {
        if dtb == 0 || !dtb.is_multiple_of(8) {
            return false;
        }
        // SAFETY: the boot protocol passes the device tree's address; its header's totalsize
        // (big-endian, offset 4) bounds the bytes read.
        let size = u32::from_be(unsafe { core::ptr::read_volatile((dtb + 4) as *const u32) }) as u64;
        // SAFETY: as above; the slice lies inside the device tree.
        let bytes = unsafe { core::slice::from_raw_parts(dtb as *const u8, size.min(1 << 20) as usize) };
        bytes.windows(word.len()).any(|w| w == word)
    }

    fn print_dec(mut v: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        print(core::str::from_utf8(&buf[i..]).unwrap_or("?"));
    }

    fn counter() -> u64 {
        let v: u64;
        // SAFETY: reading the virtual counter has no side effects.
        unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nostack)) };
        v
    }

    /// Instructions per operation for `ticks` over `n` operations (icount shift=0: 1 ns per
    /// instruction), times 10 for one decimal.
    fn per_op_x10(ticks: u64, n: u64) -> u64 {
        let freq: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects.
        unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nostack)) };
        ticks * 10_000_000_000 / freq / n
    }

    fn report(name: &str, ticks: u64, n: u64) {
        let v = per_op_x10(ticks, n);
        print("BENCH ");
        print(name);
        print(" ");
        print_dec(v / 10);
        print(".");
        print_dec(v % 10);
        print(" instructions/op\n");
    }

    /// Benchmarks (run with `testhost.bench` on the command line, under -icount shift=0).
    fn bench() -> ! {
        const N: u64 = 256;
        let t0 = counter();
        for _ in 0..N {
            // SAFETY: an empty asm statement keeps the loop from being optimised away.
            unsafe { asm!("", options(nostack, nomem)) };
        }
        let base = counter() - t0;
        let t0 = counter();
        for _ in 0..N {
            let _ = hvc(abi::KCORE_VERSION, [0; 4]);
        }
        let host_null = counter() - t0;
        report("host-null-hypercall-roundtrip", host_null.saturating_sub(base), N);

        let root = page(200);
        let vm = hvc(abi::REGISTER_VM, [pfn(root), 0, 0, 0])[1];
        for i in root_pages() - 1..16 {
            hvc(abi::DONATE_PAGE, [vm, pfn(page(201)) + i, 0, 0]);
        }
        hvc(abi::REGISTER_VCPU, [vm, 0, 0, 0]);
        fill(page(220), BENCH_SIG);
        fill(page(221), BENCH_IMG);
        hvc(abi::SET_BOOT_INFO, [vm, LOAD_IPA, BENCH_IMG.len() as u64, pfn(page(220))]);
        hvc(abi::MAP_IMAGE_PAGE, [vm, 0, 0, pfn(page(221))]);
        check(status(hvc(abi::VERIFY_VM, [vm, 0, 0, 0])) == 0, 101);
        let mut results = [0u64; 4];
        let mut next_page = 300;
        loop {
            let r = hvc5(abi::VCPU_RUN, [vm, 0, 0, 0]);
            check(r[0] == 0, 102);
            match r[1] {
                1 if r[2] >= 0x0900_1000 && r[2] < 0x0900_1020 => results[((r[2] - 0x0900_1000) / 8) as usize] = r[4],
                1 => {}
                2 => {
                    hvc(abi::MAP_VM_PAGE, [vm, 0, pfn(page(next_page)), 0]);
                    next_page += 1;
                }
                5 => break,
                _ => {}
            }
        }
        let guest_base = results[0];
        report("guest-hypercall-answered-by-kcore", results[1].saturating_sub(guest_base), N);
        report("guest-mmio-write-served-by-host", results[2].saturating_sub(guest_base), N);
        report("guest-stage2-fault-to-first-mapping", results[3].saturating_sub(guest_base), N);
        exit(0)
    }

    #[unsafe(no_mangle)]
    extern "C" fn testhost_main(dtb: u64) -> ! {
        if dtb_has(dtb, b"testhost.bench") {
            bench();
        }
        if dtb_has(dtb, b"testhost.linux") {
            linuxguest::run();
        }
        print("TESTHOST: start\n");

        // 1x: discovery.
        let r = hvc(abi::KCORE_VERSION, [0; 4]);
        // Bit 5 says the machine's GIC is a GICv2, whichever this one is.
        check(status(r) == 0 && r[1] == abi::ABI_MINOR && r[2] & !abi::FEATURE_GICV2 == abi::FEATURES, 11);
        check(r[3] == 1 || r[3] == 2 || r[3] == 8, 11);

        // 2x: a VM from a correctly signed image.
        let vm1 = load_vm(page(0), page(1), page(16), page(32), GUEST_SIG, 20);
        check(vm1 == 1, 25);
        check(status(hvc(abi::REGISTER_VCPU, [vm1, 0, 0, 0])) == 0, 26);
        check(status(hvc(abi::REGISTER_VCPU, [vm1, 0, 0, 0])) == abi::EXISTS, 27);
        check(status(hvc(abi::VERIFY_VM, [vm1, 0, 0, 0])) == 0, 28);
        let r = hvc(abi::VM_STATE, [vm1, 0, 0, 0]);
        check(status(r) == 0 && r[1] == 2 && r[2] == 1, 29);

        // 3x: the VM's pages and KCore's are out of the host's reach; the host keeps running.
        // This host runs at EL1, like a kernel: its reads of them read KCore's zero page (the
        // image page holds the signed image, not zeros), its writes are refused with an abort.
        let before = faults();
        check(read(page(16)) == 0 && faults() == before, 31);
        write(page(17) + 8, 0xdead);
        check(faults() == before + 1, 34);
        let esr = TESTHOST_FAULTS[1].load(Ordering::SeqCst);
        check(esr >> 26 == 0x25 && esr & 0x3f == 0x10 && esr & (1 << 6) != 0, 32);
        check(TESTHOST_FAULTS[2].load(Ordering::SeqCst) == page(17) + 8, 33);
        write(page(16), 0xdead); // where the zero page is now: still refused
        check(faults() == before + 2, 37);
        let root = read(page(0)); // the VM's stage-2 root
        let table = read(page(1)); // a page-table page
        let kcore = read(KCORE_PFN << 12);
        check(root == 0 && table == 0 && kcore == 0 && faults() == before + 2, 35);
        let _ = read(page(40)); // still its own memory
        check(faults() == before + 2, 36);

        // 4x: a signature that does not match is refused, for good.
        let mut bad = *GUEST_SIG;
        bad[17] ^= 4;
        let vm2 = load_vm(page(64), page(65), page(80), page(96), &bad, 40);
        check(vm2 == 2, 45);
        check(status(hvc(abi::VERIFY_VM, [vm2, 0, 0, 0])) == abi::BAD_SIGNATURE, 46);
        check(hvc(abi::VM_STATE, [vm2, 0, 0, 0])[1] == 4, 47);
        check(status(hvc(abi::VERIFY_VM, [vm2, 0, 0, 0])) == abi::BAD_STATE, 48);
        check(status(hvc(abi::REGISTER_VCPU, [vm2, 1, 0, 0])) == abi::BAD_STATE, 49);

        // 5x: destroy scrubs: the host gets every page back, zeroed; the vmid is reused.
        check(status(hvc(abi::DESTROY_VM, [vm1, 0, 0, 0])) == 0, 51);
        let before = faults();
        let mut nonzero = 0;
        for p in [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 18] {
            for w in 0..512 {
                nonzero |= read(page(p) + 8 * w);
            }
        }
        check(faults() == before, 52);
        check(nonzero == 0, 53);
        check(hvc(abi::VM_STATE, [vm1, 0, 0, 0])[1] == 0, 54);
        let r = hvc(abi::REGISTER_VM, [pfn(page(0)), 0, 0, 0]);
        check(status(r) == 0 && r[1] == vm1, 55);
        check(status(hvc(abi::DESTROY_VM, [vm1, 0, 0, 0])) == 0, 56);

        // 6x: malformed and out-of-order requests get errors.
        check(status(hvc(abi::REGISTER_VCPU, [0, 0, 0, 0])) == abi::INVALID_PARAMETER, 61);
        check(status(hvc(abi::REGISTER_VCPU, [64, 0, 0, 0])) == abi::INVALID_PARAMETER, 62);
        check(status(hvc(abi::REGISTER_VCPU, [vm1, 0, 0, 0])) == abi::BAD_STATE, 63);
        check(status(hvc(abi::SET_BOOT_INFO, [u64::MAX, LOAD_IPA, 1, pfn(page(32))])) == abi::INVALID_PARAMETER, 64);
        check(status(hvc(abi::DONATE_PAGE, [0, KCORE_PFN, 0, 0])) == abi::DENIED, 65);
        check(status(hvc(abi::REGISTER_VM, [KCORE_PFN, 0, 0, 0])) == abi::DENIED, 66);
        check(status(hvc(abi::DESTROY_VM, [5, 0, 0, 0])) == abi::BAD_STATE, 67);
        check(status(hvc(abi::MAP_IMAGE_PAGE, [vm2, 0, 0, pfn(page(120))])) == abi::BAD_STATE, 68);
        check(status(hvc(0xC600_00FF, [1, 2, 3, 4])) == abi::NOT_SUPPORTED, 69);
        check(status(hvc(abi::DESTROY_VM, [vm2, 0, 0, 0])) == 0, 70);

        run_guest();
        nonprotected::run();
        irqs::run();
        if gic_v2() {
            print("TESTHOST: GICv2: the ID-register probe and sweep (written for GICv3) are left out\n");
        }
        spin_guest();
        if !gic_v2() {
            probe::run_all();
        }

        print("TESTHOST: all passed\n");
        exit(0)
    }

    /// 8x: a signed guest runs: the host serves its MMIO UART, backs its RAM on demand, and
    /// sees nothing of it beyond what each exit needs.
    fn run_guest() {
        let root = page(128);
        let r = hvc(abi::REGISTER_VM, [pfn(root), 0, 0, 0]);
        check(status(r) == 0, 81);
        let vm = r[1];
        for i in root_pages() - 1..8 {
            check(status(hvc(abi::DONATE_PAGE, [vm, pfn(page(129)) + i, 0, 0])) == 0, 82);
        }
        check(status(hvc(abi::REGISTER_VCPU, [vm, 0, 0, 0])) == 0, 82);
        check(status(hvc(abi::REGISTER_VCPU, [vm, 1, 0, 0])) == 0, 82);
        fill(page(140), PROG_SIG);
        fill(page(141), PROG_IMG);
        check(status(hvc(abi::SET_BOOT_INFO, [vm, LOAD_IPA, PROG_IMG.len() as u64, pfn(page(140))])) == 0, 83);
        for i in 0..(PROG_IMG.len() as u64).div_ceil(4096) {
            check(status(hvc(abi::MAP_IMAGE_PAGE, [vm, 0, i, pfn(page(141)) + i])) == 0, 83);
        }
        // Not verified yet: it must not run.
        check(status(hvc(abi::VCPU_RUN, [vm, 0, 0, 0])) == abi::BAD_STATE, 84);
        check(status(hvc(abi::INJECT_IRQ, [vm, 0, 42, 0])) == abi::BAD_STATE, 84);
        check(status(hvc(abi::VERIFY_VM, [vm, 0, 0, 0])) == 0, 84);
        // A virtual interrupt for vCPU 0, checked by KCore and put in a list register.
        check(status(hvc(abi::INJECT_IRQ, [vm, 0, 42, 0])) == 0, 79);
        check(status(hvc(abi::INJECT_IRQ, [vm, 0, 42, 0])) == abi::EXISTS, 79);
        check(status(hvc(abi::INJECT_IRQ, [vm, 0, 1020, 0])) == abi::INVALID_PARAMETER, 79);
        check(status(hvc(abi::INJECT_IRQ, [vm, 5, 43, 0])) == abi::BAD_STATE, 79);
        check(status(hvc(abi::INJECT_IRQ, [vm, 9, 43, 0])) == abi::INVALID_PARAMETER, 79);

        // vCPU 1 starts off: only the guest's CPU_ON can start it.
        check(status(hvc(abi::VCPU_RUN, [vm, 1, 0, 0])) == abi::BAD_STATE, 84);
        let mut console = [0u8; 128];
        let mut len = 0;
        let (mut faults_seen, mut wfis, mut timer_waits) = (0, 0, 0);
        let (mut started, mut stopped) = (0, 0);
        // A tiny scheduler: runnable vCPUs, round robin on WFI; MMIO read values per vCPU.
        let mut runnable = 1u64;
        let mut vcpu = 0u64;
        let mut pending = [0u64; 2];
        let data = page(150);
        let shared = page(151);
        fill(data, &[0xaa; 8]); // the host's old contents of the page it will give
        enable_fp();
        gic_init();
        for _ in 0..2000 {
            host_fp_set();
            let r = hvc5(abi::VCPU_RUN, [vm, vcpu, pending[vcpu as usize], 0]);
            check(host_fp_intact(), 80);
            check(r[0] == 0, 85);
            pending[vcpu as usize] = 0;
            match r[1] {
                1 if r[2] == 0x0900_0000 && r[3] == 1 => {
                    // A byte write: only the byte is disclosed.
                    check(r[4] <= 0xff, 86);
                    if len < console.len() {
                        console[len] = r[4] as u8;
                        len += 1;
                    }
                }
                1 if r[2] == 0x0900_0018 && r[3] == 4 => pending[vcpu as usize] = 0x90, // a 32-bit read
                2 => {
                    // Back the faulting page; which host page is the host's choice.
                    let backing = match r[2] {
                        0x8010_0000 => data,
                        0x8020_0000 => shared,
                        _ => 0,
                    };
                    check(backing != 0, 87);
                    faults_seen += 1;
                    check(status(hvc(abi::MAP_VM_PAGE, [vm, vcpu, pfn(backing), 0])) == 0, 87);
                }
                3 => {
                    wfis += 1;
                    // A wait for the guest's own timer: sleep until its deadline (KCore says
                    // when), then run it again and KCore delivers the interrupt.
                    check(r[3] == 0, 78); // WFI, not WFE
                    if r[2] == 0x7fff_0000_0000_0000 {
                        timer_waits += 1; // the guest's far deadline, exactly
                    } else if r[2] != u64::MAX {
                        while counter() < r[2] {
                            core::hint::spin_loop();
                        }
                    }
                    // Let another runnable vCPU have a go.
                    let other = (vcpu + 1) % 2;
                    if runnable & (1 << other) != 0 {
                        vcpu = other;
                    }
                    let before = faults();
                    let v = read(shared);
                    match wfis {
                        // Shared: readable, with the guest's value.
                        1 => check(faults() == before && v == 0x5a5a_5a5a_1234_5678, 97),
                        // Unshared: gone again (this EL1 host reads KCore's zero page).
                        2 => check(faults() == before && v == 0, 98),
                        _ => {}
                    }
                }
                4 => {}
                5 => break,
                6 => {
                    check(r[2] == 1, 99);
                    started += 1;
                    runnable |= 1 << r[2];
                }
                7 => {
                    stopped += 1;
                    runnable &= !(1 << vcpu);
                    vcpu = (vcpu + 1) % 2;
                }
                _ => {
                    print("TESTHOST: unexpected exit ");
                    for w in &r[1..] {
                        print_hex(*w);
                        print(" ");
                    }
                    print("\n");
                    check(false, 88)
                }
            }
        }
        let text = core::str::from_utf8(&console[..len]).unwrap_or("");
        print("TESTHOST: guest said: ");
        print(text);
        check(text == "GUEST-OK: running under KCore\n.GUEST-CPU1-UP\nGUEST-IRQ-42\nGUEST-TIMER-27\nGUEST-DONE\n", 89);
        check(faults_seen == 2 && wfis >= 4 && started == 1 && stopped == 1, 90);
        check(timer_waits == 1, 78);
        check(hvc(abi::VM_STATE, [vm, 0, 0, 0])[1] == 3, 91); // powered off
        // The page it wrote its secret into is not the host's any more: zeros, a write refused.
        let before = faults();
        check(read(data) == 0 && faults() == before, 92);
        write(data, 1);
        check(faults() == before + 1, 92);
        check(status(hvc(abi::VCPU_RUN, [vm, 0, 0, 0])) == abi::BAD_STATE, 93);
        check(status(hvc(abi::MAP_VM_PAGE, [vm, 0, pfn(page(151)), 0])) == abi::BAD_STATE, 94);
        check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 95);
        // Scrubbed and the host's again, the zero page gone: it writes and reads it back.
        check(read(data) == 0, 96);
        write(data, 0x77);
        check(read(data) == 0x77 && faults() == before + 1, 96);
    }

    /// A verified VM with one vCPU running the signed program `img` (signature `sig`), its
    /// root at `page(base)`, its table pool and image in the pages after it.
    fn load_prog(base: u64, img: &[u8], sig: &[u8; 64], code: u64) -> u64 {
        load_prog_vcpus(base, img, sig, code, 1)
    }

    /// [`load_prog`] with `vcpus` vCPUs.
    fn load_prog_vcpus(base: u64, img: &[u8], sig: &[u8; 64], code: u64, vcpus: u64) -> u64 {
        let r = hvc(abi::REGISTER_VM, [pfn(page(base)), 0, 0, 0]);
        check(status(r) == 0, code);
        let vm = r[1];
        for i in root_pages() - 1..8 {
            check(status(hvc(abi::DONATE_PAGE, [vm, pfn(page(base + 1)) + i, 0, 0])) == 0, code);
        }
        for v in 0..vcpus {
            check(status(hvc(abi::REGISTER_VCPU, [vm, v, 0, 0])) == 0, code);
        }
        fill(page(base + 9), sig);
        fill(page(base + 10), img);
        check(status(hvc(abi::SET_BOOT_INFO, [vm, LOAD_IPA, img.len() as u64, pfn(page(base + 9))])) == 0, code);
        for i in 0..(img.len() as u64).div_ceil(4096) {
            check(status(hvc(abi::MAP_IMAGE_PAGE, [vm, 0, i, pfn(page(base + 10)) + i])) == 0, code);
        }
        check(status(hvc(abi::VERIFY_VM, [vm, 0, 0, 0])) == 0, code);
        vm
    }

    /// The host's own tick: its EL1 virtual timer, `period` counter ticks from now.
    fn arm_host_tick(period: u64) {
        // SAFETY: the EL1 virtual timer is the test host's own (KCore switches it for guests).
        unsafe {
            asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                in(reg) counter() + period, in(reg) 1u64, options(nostack))
        };
    }

    /// Has the host's own timer fired (CNTV_CTL_EL0.ISTATUS)?
    fn host_tick_due() -> bool {
        let ctl: u64;
        // SAFETY: reading the EL1 virtual timer's control has no side effects.
        unsafe { asm!("mrs {}, cntv_ctl_el0", out(reg) ctl, options(nostack)) };
        ctl & 4 != 0
    }

    /// 11x: the host keeps its CPU. A guest spins for two seconds of counter time without a
    /// single exit of its own; the host's timer (armed every 10 ms) must take the CPU back at
    /// each deadline. KCore arms the EL2 timer with the host's deadline while the guest runs,
    /// so each tick is a host-interrupt exit with the host's timer fired.
    fn spin_guest() {
        let vm = load_prog(260, SPIN_IMG, SPIN_SIG, 111);
        let freq: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects.
        unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nostack)) };
        let period = freq / 100;
        let (mut ticks, mut other, mut said) = (0u64, 0u64, false);
        arm_host_tick(period);
        loop {
            let r = hvc5(abi::VCPU_RUN, [vm, 0, 0, 0]);
            check(r[0] == 0, 112);
            match r[1] {
                4 if host_tick_due() => {
                    ticks += 1;
                    arm_host_tick(period);
                }
                4 => other += 1,
                1 if r[2] == 0x0900_0000 && r[4] == b'S' as u64 => said = true,
                5 => break,
                _ => check(false, 113),
            }
        }
        // SAFETY: the host's timer off again.
        unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
        print("TESTHOST: host ticks while a guest spun for 2 s: ");
        print_dec(ticks);
        print(" (other interrupts: ");
        print_dec(other);
        print(")\n");
        check(said, 114);
        // 200 deadlines passed; without the EL2 timer the host sees none of them (the guest's
        // one run lasts the whole two seconds). Each tick costs the host a few hypercalls, so
        // a slow (debug) KCore sees fewer: the bound only asks that the CPU came back often.
        check(ticks >= 10, 115);
        check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 116);
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        print("TESTHOST: panic\n");
        exit(99)
    }
}
