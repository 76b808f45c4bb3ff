//! `kvm-smoke [LOOPS]`: what a VMM does with `/dev/kvm`, checked against the KVM API
//! (Documentation/virt/kvm/api.rst), run in the host under KCore: the API version, VM
//! creation, vCPU creation (with the refusals a VMM can hit), and teardown by closing the fds,
//! LOOPS times (default 1), so vmids and pages are seen to come back; then a tiny guest runs
//! as a VMM runs one: a memory slot of the process's own memory, the boot registers set with
//! KVM_SET_ONE_REG, KVM_RUN serving its MMIO (a UART it writes to and reads from) until it
//! powers off. Prints a summary line each; exits non-zero on the first surprise.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `_IO(KVMIO, n)` ioctl numbers (KVMIO = 0xAE).
const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
const KVM_CREATE_VM: libc::c_ulong = 0xae01;
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;
const KVM_CREATE_VCPU: libc::c_ulong = 0xae41;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xae04;
const KVM_RUN: libc::c_ulong = 0xae80;
/// `_IOW(KVMIO, n, size)`.
const fn iow(nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (1 << 30) | (size << 16) | (0xae << 8) | nr
}
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = iow(0x46, 32);
const KVM_GET_ONE_REG: libc::c_ulong = iow(0xab, 16);
const KVM_SET_ONE_REG: libc::c_ulong = iow(0xac, 16);
const KVM_ARM_VCPU_INIT: libc::c_ulong = iow(0xae, 32);
/// `struct kvm_run`: exit_reason at 8; the mmio exit (phys_addr, data[8], len, is_write) and
/// the system event (type) at 32.
const RUN_EXIT_REASON: usize = 8;
const RUN_MMIO_ADDR: usize = 32;
const RUN_MMIO_DATA: usize = 40;
const RUN_MMIO_LEN: usize = 48;
const RUN_MMIO_WRITE: usize = 52;
const KVM_EXIT_MMIO: u32 = 6;
const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// Core register ids (`KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | word offset`).
const REG_PC: u64 = 0x6030_0000_0010_0040;
const REG_PSTATE: u64 = 0x6030_0000_0010_0042;
const REG_X2: u64 = 0x6030_0000_0010_0004;
const REG_MPIDR: u64 = 0x6030_0000_0013_c005;

/// The guest: at 0x4000_0000, MMU off. It writes "HI" to the UART at 0x0900_0000, reads the
/// UART's flag register (0x18) and writes back what it read, stores 'I' to RAM at
/// 0x4010_0000 (a second page, faulted in), loads it back and writes it, then '\n', then
/// PSCI SYSTEM_OFF.
const GUEST: [u32; 18] = [
    0xd2a1_2001, // movz x1, #0x900, lsl #16
    0x5280_0902, // movz w2, #'H'
    0x3900_0022, // strb w2, [x1]
    0x5280_0922, // movz w2, #'I'
    0x3900_0022, // strb w2, [x1]
    0xb940_1823, // ldr w3, [x1, #0x18]
    0x3900_0023, // strb w3, [x1]
    0xd2a8_0204, // movz x4, #0x4010, lsl #16
    0xf900_0082, // str x2, [x4]
    0xf940_0085, // ldr x5, [x4]
    0x3900_0025, // strb w5, [x1]
    0x5280_0142, // movz w2, #'\n'
    0x3900_0022, // strb w2, [x1]
    0x5280_0100, // movz w0, #8
    0x72b0_8000, // movk w0, #0x8400, lsl #16  (PSCI SYSTEM_OFF)
    0xd400_0002, // hvc #0
    0x1400_0000, // b .
    0,
];
const GUEST_RAM: u64 = 0x4000_0000;
const GUEST_RAM_SIZE: usize = 2 << 20;
/// `KVM_CAP_IRQCHIP`, one of the capabilities a VMM needs: not offered yet.
const KVM_CAP_IRQCHIP: libc::c_ulong = 0;

/// An ioctl whose argument is a pointer to `T`.
fn ioctl_ptr<T>(fd: &impl AsRawFd, cmd: libc::c_ulong, arg: &mut T) -> Result<i32, i32> {
    ioctl(fd, cmd, arg as *mut T as libc::c_ulong)
}

fn ioctl(fd: &impl AsRawFd, cmd: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, i32> {
    // SAFETY: the KVM ioctls used here take an integer or a pointer to a live, correctly sized
    // structure of ours (`ioctl_ptr`).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(r) }
}

fn fd(r: i32) -> OwnedFd {
    // SAFETY: a file descriptor KVM_CREATE_VM or KVM_CREATE_VCPU just returned, owned by us.
    unsafe { OwnedFd::from_raw_fd(r) }
}

fn fail(what: &str) -> ! {
    eprintln!("KVM-SMOKE: FAIL {what}");
    std::process::exit(1)
}

fn main() {
    let loops: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm").unwrap_or_else(|_| fail("open /dev/kvm"));
    if ioctl(&kvm, KVM_GET_API_VERSION, 0) != Ok(12) {
        fail("KVM_GET_API_VERSION is not 12");
    }
    if ioctl(&kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) != Ok(0) {
        fail("KVM_CHECK_EXTENSION offers something not there yet");
    }
    if ioctl(&kvm, KVM_CREATE_VM, 0xdead) != Err(libc::EINVAL) {
        fail("a bad VM type is not refused");
    }
    for _ in 0..loops {
        let vm = fd(ioctl(&kvm, KVM_CREATE_VM, 0).unwrap_or_else(|_| fail("KVM_CREATE_VM")));
        let vcpus: Vec<OwnedFd> = (0..4)
            .map(|i| fd(ioctl(&vm, KVM_CREATE_VCPU, i).unwrap_or_else(|e| fail(&format!("KVM_CREATE_VCPU {i}: {e}")))))
            .collect();
        if ioctl(&vm, KVM_CREATE_VCPU, 2) != Err(libc::EEXIST) {
            fail("a second vCPU 2 is not refused");
        }
        if ioctl(&vm, KVM_CREATE_VCPU, 8) != Err(libc::EINVAL) {
            fail("vCPU 8 is not refused");
        }
        // Closing the VM fd first: the vCPU fds keep it alive until they go too.
        drop(vm);
        drop(vcpus);
    }
    println!("KVM-SMOKE: API 12; {loops} VMs with 4 vCPUs created and destroyed");
    run_guest(&kvm);
}

/// Map `len` bytes: anonymous memory (`fd` None) or a file's.
fn map(len: usize, fd: Option<&OwnedFd>) -> *mut u8 {
    let (flags, raw) = match fd {
        Some(f) => (libc::MAP_SHARED, f.as_raw_fd()),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping the kernel chooses the address of; nothing else refers to it.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, raw, 0) };
    if p == libc::MAP_FAILED {
        fail("mmap");
    }
    p as *mut u8
}

fn run_guest(kvm: &std::fs::File) {
    let vm = fd(ioctl(kvm, KVM_CREATE_VM, 0).unwrap_or_else(|_| fail("KVM_CREATE_VM")));
    let vcpu = fd(ioctl(&vm, KVM_CREATE_VCPU, 0).unwrap_or_else(|_| fail("KVM_CREATE_VCPU")));
    let mut init = [0u32; 8];
    init[0] = 5; // KVM_ARM_TARGET_GENERIC_V8
    init[1] = 1 << 2; // KVM_ARM_VCPU_PSCI_0_2
    ioctl_ptr(&vcpu, KVM_ARM_VCPU_INIT, &mut init).unwrap_or_else(|_| fail("KVM_ARM_VCPU_INIT"));
    // The guest's RAM is this process's memory; the program goes at its start.
    let ram = map(GUEST_RAM_SIZE, None);
    for (i, w) in GUEST.iter().enumerate() {
        // SAFETY: inside the mapping just made.
        unsafe { (ram as *mut u32).add(i).write(*w) };
    }
    let mut region = [0u64; 4];
    region[0] = 0; // slot 0, flags 0
    region[1] = GUEST_RAM;
    region[2] = GUEST_RAM_SIZE as u64;
    region[3] = ram as u64;
    ioctl_ptr(&vm, KVM_SET_USER_MEMORY_REGION, &mut region)
        .unwrap_or_else(|e| fail(&format!("KVM_SET_USER_MEMORY_REGION: {e}")));
    let set = |id: u64, value: u64| {
        let mut v = value;
        let mut reg = [id, &mut v as *mut u64 as u64];
        ioctl_ptr(&vcpu, KVM_SET_ONE_REG, &mut reg).unwrap_or_else(|e| fail(&format!("KVM_SET_ONE_REG {id:#x}: {e}")));
    };
    let get = |id: u64| {
        let mut v = 0u64;
        let mut reg = [id, &mut v as *mut u64 as u64];
        ioctl_ptr(&vcpu, KVM_GET_ONE_REG, &mut reg).unwrap_or_else(|e| fail(&format!("KVM_GET_ONE_REG {id:#x}: {e}")));
        v
    };
    set(REG_PSTATE, 0x3c5); // EL1h, DAIF masked
    set(REG_PC, GUEST_RAM);
    set(REG_X2, 0x1234);
    if get(REG_X2) != 0x1234 || get(REG_PC) != GUEST_RAM {
        fail("registers do not read back");
    }
    if get(REG_MPIDR) != 1 << 31 {
        fail("MPIDR_EL1 of vCPU 0");
    }
    let size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0).unwrap_or_else(|_| fail("KVM_GET_VCPU_MMAP_SIZE")) as usize;
    let run = map(size, Some(&vcpu));
    let rd = |off: usize, n: usize| -> u64 {
        let mut v = [0u8; 8];
        // SAFETY: `off + n` stays inside the kvm_run page mapped above (n <= 8).
        unsafe { std::ptr::copy_nonoverlapping(run.add(off), v.as_mut_ptr(), n) };
        u64::from_le_bytes(v)
    };
    let wr = |off: usize, v: u64| {
        // SAFETY: as for `rd`: 8 bytes inside the kvm_run page.
        unsafe { std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), run.add(off), 8) }
    };
    let mut console = String::new();
    let mut reads = 0;
    for _ in 0..100 {
        ioctl(&vcpu, KVM_RUN, 0).unwrap_or_else(|e| fail(&format!("KVM_RUN: {e}")));
        match rd(RUN_EXIT_REASON, 4) as u32 {
            KVM_EXIT_MMIO => {
                let (addr, len, write) = (rd(RUN_MMIO_ADDR, 8), rd(RUN_MMIO_LEN, 4), rd(RUN_MMIO_WRITE, 1));
                match (addr, write) {
                    (0x0900_0000, 1) if len == 1 => console.push(rd(RUN_MMIO_DATA, 1) as u8 as char),
                    (0x0900_0018, 0) if len == 4 => {
                        reads += 1;
                        wr(RUN_MMIO_DATA, u64::from(b'Z'));
                    }
                    _ => fail(&format!("unexpected MMIO at {addr:#x} (len {len}, write {write})")),
                }
            }
            KVM_EXIT_SYSTEM_EVENT if rd(RUN_MMIO_ADDR, 4) as u32 == KVM_SYSTEM_EVENT_SHUTDOWN => break,
            other => fail(&format!("unexpected exit {other}")),
        }
    }
    // SAFETY: the guest's RAM mapping; its page at 1 MiB is where the guest stored 'I'.
    let stored = unsafe { (ram.add(0x10_0000) as *const u64).read_volatile() };
    if console != "HIZI\n" || reads != 1 || stored != u64::from(b'I') {
        fail(&format!("the guest said {console:?} after {reads} reads and left {stored:#x} in RAM"));
    }
    println!("KVM-SMOKE: a guest ran over /dev/kvm: said HIZI, its RAM write seen by the VMM, powered off");
}
