// A Debian arm64 kernel as a non-protected guest (run with `testhost.linux` on the command
// line; tests/baremetal.sh loads the kernel Image and a device tree for it into the test
// host's memory). The test host lends the Image's pages and the device tree into the VM's
// RAM region, sets the boot registers as the arm64 boot protocol asks (PC = the Image, x0 =
// the device tree, MMU off, EL1h, interrupts masked), emulates the PL011 the kernel's earlycon
// writes to, backs every other RAM page the kernel touches with a lent page of its own, and
// stops once the kernel has printed its banner and has found PSCI and SMCCC 1.1 through
// KCore's answers to its HVCs.

use super::{check, exit, hvc, hvc5, pfn, print, print_dec, root_pages, status};
use kcore::abi;

/// Where tests/baremetal.sh has QEMU load the kernel Image and the guest's device tree in the
/// test host's memory (2 MiB aligned, clear of KCore and the test host).
const IMAGE_HOST: u64 = 0x5000_0000;
const DTB_HOST: u64 = 0x4f00_0000;
/// Host pages the test host lends for the rest of the guest's RAM.
const POOL_HOST: u64 = 0x6000_0000;
const POOL_END: u64 = 0x8000_0000;
/// The guest's RAM (as the device tree's /memory node says) and where its images go in it.
const RAM_IPA: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 256 << 20;
const IMAGE_IPA: u64 = 0x4020_0000;
const DTB_IPA: u64 = 0x4800_0000;
/// The PL011 of QEMU's `virt` layout the device tree names.
const UART: u64 = 0x0900_0000;

fn read64(pa: u64) -> u64 {
    // SAFETY: a load from the test host's own RAM, where QEMU put the files.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

fn lend_range(vm: u64, ipa: u64, host: u64, bytes: u64, code: u64) {
    for i in 0..bytes.div_ceil(4096) {
        let r = hvc(abi::LEND_PAGE, [vm, ipa + 4096 * i, pfn(host) + i, 0]);
        check(status(r) == 0, code);
    }
}

pub(super) fn run() -> ! {
    print("TESTHOST: booting a Linux kernel as a non-protected guest\n");
    // The arm64 Image header: magic "ARM\x64" at 56, image_size (with BSS) at 16.
    check(read64(IMAGE_HOST + 56) as u32 == 0x644d_5241, 201);
    let image_size = read64(IMAGE_HOST + 16);
    check(image_size > 0 && image_size < 128 << 20, 201);
    let dtb_size = u32::from_be(read64(DTB_HOST + 4) as u32) as u64;
    check(read64(DTB_HOST) as u32 == 0xedfe_0dd0 && dtb_size <= 1 << 20, 202);

    let r = hvc(abi::REGISTER_VM, [pfn(POOL_HOST), abi::VM_NON_PROTECTED, 0, 0]);
    check(status(r) == 0, 203);
    let vm = r[1];
    let mut next = POOL_HOST + root_pages() * 4096;
    for _ in 0..64 {
        check(status(hvc(abi::DONATE_PAGE, [vm, pfn(next), 0, 0])) == 0, 204);
        next += 4096;
    }
    check(status(hvc(abi::REGISTER_VCPU, [vm, 0, 0, 0])) == 0, 205);
    check(status(hvc(abi::ADD_RAM_REGION, [vm, RAM_IPA, RAM_SIZE, 0])) == 0, 206);
    check(status(hvc(abi::VERIFY_VM, [vm, 0, 0, 0])) == 0, 207);
    lend_range(vm, IMAGE_IPA, IMAGE_HOST, image_size, 208);
    lend_range(vm, DTB_IPA, DTB_HOST, dtb_size, 209);
    // The boot protocol's registers (Documentation/arch/arm64/booting.rst).
    for (reg, value) in [(32u64, IMAGE_IPA), (0, DTB_IPA), (1, 0), (2, 0), (3, 0), (33, 0x3c5)] {
        check(status(hvc(abi::SET_VCPU_REG, [vm, 0, reg, value])) == 0, 210);
    }

    let mut line = [0u8; 160];
    let mut len = 0;
    let (mut lines, mut banner, mut pages) = (0u64, false, 0u64);
    let (mut psci, mut smccc) = (false, false);
    let mut read_value = 0;
    for _ in 0..2_000_000u64 {
        let r = hvc5(abi::VCPU_RUN, [vm, 0, read_value, 0]);
        check(r[0] == 0, 211);
        read_value = 0;
        match r[1] {
            // A byte to the UART's data register: the console.
            1 if r[2] == UART && r[3] & 1 == 1 => {
                let c = r[4] as u8;
                if c == b'\n' {
                    print("GUEST| ");
                    print(core::str::from_utf8(&line[..len]).unwrap_or("?"));
                    print("\n");
                    let has = |s: &[u8]| line[..len].windows(s.len()).any(|w| w == s);
                    banner |= has(b"Linux version ");
                    psci |= has(b"psci: PSCIv1.1 detected");
                    smccc |= has(b"SMC Calling Convention v1.1");
                    lines += 1;
                    len = 0;
                } else if c != b'\r' && len < line.len() {
                    line[len] = c;
                    len += 1;
                }
            }
            // The UART's flag register: transmit FIFO empty, receive FIFO empty.
            1 if r[2] == UART + 0x18 => read_value = 0x90,
            // Other device registers: reads as zero, writes ignored.
            1 | 8 | 9 => {}
            2 => {
                check(next < POOL_END, 212);
                check(status(hvc(abi::MAP_VM_PAGE, [vm, 0, pfn(next), 0])) == 0, 212);
                next += 4096;
                pages += 1;
            }
            3 | 4 | 6 | 7 => {}
            5 => break,
            _ => check(false, 213),
        }
        if banner && psci && smccc {
            break;
        }
    }
    print("TESTHOST: the guest printed ");
    print_dec(lines);
    print(" lines and took ");
    print_dec(pages);
    print(" pages on demand\n");
    check(banner, 214);
    check(psci, 215);
    check(smccc, 216);
    print("TESTHOST: linux guest booted\n");
    exit(0)
}
