//! `kvm-smoke [LOOPS]` (or `kvm-smoke --guest hello|irq|bench|protected|mmio-guard > FILE`: a guest for another VMM): what a VMM does with `/dev/kvm`, checked against the KVM API
//! (Documentation/virt/kvm/api.rst), run in the host under KCore: the API version, VM
//! creation, vCPU creation (with the refusals a VMM can hit), and teardown by closing the fds,
//! LOOPS times (default 1), so vmids and pages are seen to come back; then a tiny guest runs
//! as a VMM runs one: a memory slot of the process's own memory, the boot registers set with
//! KVM_SET_ONE_REG, KVM_RUN serving its MMIO (a UART it writes to and reads from) until it
//! powers off; then a guest takes an interrupt: a GICv3 created with KVM_CREATE_DEVICE and
//! its attributes, as QEMU does, and an SPI raised and lowered with KVM_IRQ_LINE (on a GICv2
//! machine, where the module offers a GICv2 device instead, the GICv2 guest and device: an
//! SGI through GICD_SGIR, then the SPI). Prints a summary line each; exits non-zero on the
//! first surprise.
//! `kvm-smoke --fuzz COUNT [SEED]`: COUNT random ioctls from 4 threads, which the module must
//! refuse cleanly (see fuzz.rs); prints `KVM-FUZZ: ...` and exits 0.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

mod fuzz;
mod vault;

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
/// `_IOWR(KVMIO, 0xb0, struct kvm_reg_list)` (a u64 count, then the ids).
const KVM_GET_REG_LIST: libc::c_ulong = (3 << 30) | (8 << 16) | (0xae << 8) | 0xb0;
const KVM_IRQ_LINE: libc::c_ulong = iow(0x61, 8);
const KVM_IRQFD: libc::c_ulong = iow(0x76, 32);
const KVM_IOEVENTFD: libc::c_ulong = iow(0x79, 64);
const IOEVENTFD_DATAMATCH: u64 = 1 << 0;
const IOEVENTFD_PIO: u64 = 1 << 1;
const IOEVENTFD_DEASSIGN: u64 = 1 << 2;
const KVM_SET_DEVICE_ATTR: libc::c_ulong = iow(0xe1, 24);
const KVM_GET_DEVICE_ATTR: libc::c_ulong = iow(0xe2, 24);
/// `_IOWR(KVMIO, 0xe0, struct kvm_create_device)`.
const KVM_CREATE_DEVICE: libc::c_ulong = (3 << 30) | (12 << 16) | (0xae << 8) | 0xe0;
const KVM_DEV_TYPE_ARM_VGIC_V3: u32 = 7;
const KVM_DEV_TYPE_ARM_VGIC_V2: u32 = 5;
/// KVM_CREATE_DEVICE's flag: only say whether the device could be made.
const KVM_CREATE_DEVICE_TEST: u32 = 1;
/// The GICv2 device's address types (Documentation/virt/kvm/devices/arm-vgic.rst).
const VGIC_V2_ADDR_DIST: u64 = 0;
const VGIC_V2_ADDR_CPU: u64 = 1;
/// The GICv2 device's register groups: a 32-bit value, the CPU in attr bits 39:32.
const VGIC_GRP_DIST_REGS: u32 = 1;
const VGIC_GRP_CPU_REGS: u32 = 2;
/// Attribute groups and attributes of the GICv3 device (Documentation/virt/kvm/devices/arm-vgic-v3.rst).
const VGIC_GRP_ADDR: u32 = 0;
const VGIC_ADDR_DIST: u64 = 2;
const VGIC_ADDR_REDIST: u64 = 3;
const VGIC_GRP_NR_IRQS: u32 = 3;
const VGIC_GRP_CTRL: u32 = 4;
const VGIC_CTRL_INIT: u64 = 0;
/// KVM_IRQ_LINE's irq field: type (1 = SPI) in bits 24-27, the INTID below.
const IRQ_LINE_SPI: u32 = 1 << 24;
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
const REG_X0: u64 = 0x6030_0000_0010_0000;
const REG_X2: u64 = 0x6030_0000_0010_0004;
const REG_MPIDR: u64 = 0x6030_0000_0013_c005;

/// The guests, assembled by build.rs from guest-hello.S and guest-irq.S for 0x4000_0000.
const GUEST_HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-hello.bin"));
const GUEST_IRQ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-irq.bin"));
/// Its GICv2 form (guest-irq-v2.S).
const GUEST_IRQ_V2: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-irq-v2.bin"));
/// The benchmark guest (guest-bench.S) for scripts/bench-vm.sh, given to QEMU.
const GUEST_BENCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-bench.bin"));
/// The protected guest (guest-protected.S), an arm64 Image in form for 0x4020_0000; signed by
/// the build (kcore-sign sign-file) into a signed kernel file.
const GUEST_PROTECTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-protected.bin"));
/// The MMIO-guard guest (guest-mmio-guard.S), the same form: enrols the UART with pKVM's
/// MMIO_GUARD and reports the external abort its store to a page it did not enrol takes.
const GUEST_MMIO_GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-mmio-guard.bin"));
/// KVM_CREATE_VM's type bit for a protected VM (upstream's KVM_VM_TYPE_ARM_PROTECTED).
const VM_TYPE_PROTECTED: libc::c_ulong = 1 << 31;
const GUEST_RAM: u64 = 0x4000_0000;
const GUEST_RAM_SIZE: usize = 2 << 20;
/// Capabilities offered: what QEMU 10 requires on arm64 with an in-kernel GICv3 (USER_MEMORY,
/// DESTROY_MEMORY_REGION_WORKS, JOIN_MEMORY_REGIONS_WORKS, INTERNAL_ERROR_DATA, IOEVENTFD,
/// IOEVENTFD_ANY_LENGTH, DEVICE_CTRL, IRQCHIP, IRQFD), and (number, value) pairs of others.
const CAPS_REQUIRED: [libc::c_ulong; 9] = [3, 21, 30, 40, 36, 122, 89, 0, 32];
const CAPS_VALUES: [(libc::c_ulong, i32); 3] = [(66, 8), (10, 8), (136, 1)]; // MAX_VCPUS, NR_MEMSLOTS, IMMEDIATE_EXIT
/// Capabilities not offered, so a VMM does not use them: READONLY_MEM, ARM_PMU_V3, ARM_SVE,
/// STEAL_TIME, ARM_EL1_32BIT, SET_GUEST_DEBUG.
const CAPS_ABSENT: [libc::c_ulong; 6] = [81, 126, 170, 187, 93, 23];

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
    if std::env::args().nth(1).as_deref() == Some("--fuzz") {
        fuzz::main(&std::env::args().skip(2).collect::<Vec<_>>());
    }
    // `kvm-smoke --guest hello|irq|bench`: the guest's flat binary on stdout, for another VMM
    // (load it at 0x4000_0000 and start there, e.g. QEMU's `-device loader,...,cpu-num=0`).
    if std::env::args().nth(1).as_deref() == Some("--guest") {
        use std::io::Write;
        let image = match std::env::args().nth(2).as_deref() {
            Some("hello") => GUEST_HELLO,
            Some("irq") => GUEST_IRQ,
            Some("irq-v2") => GUEST_IRQ_V2,
            Some("bench") => GUEST_BENCH,
            Some("protected") => GUEST_PROTECTED,
            Some("mmio-guard") => GUEST_MMIO_GUARD,
            _ => fail("--guest takes hello, irq, irq-v2, bench, protected or mmio-guard"),
        };
        std::io::stdout().write_all(image).unwrap_or_else(|_| fail("writing the guest"));
        return;
    }
    if let Some(mode @ ("--vault" | "--vault-unprotected")) = std::env::args().nth(1).as_deref() {
        let file = std::env::args().nth(2).unwrap_or_else(|| fail("--vault takes a signed kernel file"));
        vault::vault(&file, mode == "--vault");
    }
    if let Some(mode @ ("--protected" | "--unprotected")) = std::env::args().nth(1).as_deref() {
        let file = std::env::args().nth(2).unwrap_or_else(|| fail("--protected takes a signed kernel file"));
        protected(&file, mode == "--protected");
    }
    let loops: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm").unwrap_or_else(|_| fail("open /dev/kvm"));
    if ioctl(&kvm, KVM_GET_API_VERSION, 0) != Ok(12) {
        fail("KVM_GET_API_VERSION is not 12");
    }
    for cap in CAPS_REQUIRED {
        if ioctl(&kvm, KVM_CHECK_EXTENSION, cap) != Ok(1) {
            fail(&format!("KVM_CHECK_EXTENSION does not offer capability {cap}"));
        }
    }
    for (cap, value) in CAPS_VALUES {
        if ioctl(&kvm, KVM_CHECK_EXTENSION, cap) != Ok(value) {
            fail(&format!("KVM_CHECK_EXTENSION: capability {cap} is not {value}"));
        }
    }
    for cap in CAPS_ABSENT {
        if ioctl(&kvm, KVM_CHECK_EXTENSION, cap) != Ok(0) {
            fail(&format!("KVM_CHECK_EXTENSION offers capability {cap}, not there"));
        }
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
    run_hello(&kvm);
    // The module offers the GIC the machine has: one kind, never both.
    let probe = |kind: u32| {
        let vm = fd(ioctl(&kvm, KVM_CREATE_VM, 0).unwrap_or_else(|_| fail("KVM_CREATE_VM")));
        let mut create = [kind, 0, KVM_CREATE_DEVICE_TEST];
        ioctl_ptr(&vm, KVM_CREATE_DEVICE, &mut create)
    };
    match (probe(KVM_DEV_TYPE_ARM_VGIC_V3), probe(KVM_DEV_TYPE_ARM_VGIC_V2)) {
        (Ok(_), Err(libc::ENODEV)) => run_irq(&kvm),
        (Err(libc::ENODEV), Ok(_)) => run_irq_v2(&kvm),
        (v3, v2) => fail(&format!("KVM_CREATE_DEVICE test: GICv3 {v3:?}, GICv2 {v2:?}: want exactly one")),
    }
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

/// A VM with one vCPU at the guest's entry, `program` at the start of its RAM.
struct Guest {
    vm: OwnedFd,
    vcpu: OwnedFd,
    ram: *mut u8,
    run: *mut u8,
}

impl Guest {
    /// Create the VM and its vCPU; `before_run` sets up what must exist before KVM_RUN (an
    /// interrupt controller), after the vCPU and before the first run, as QEMU does.
    fn new(kvm: &std::fs::File, program: &[u8], before_run: impl FnOnce(&OwnedFd)) -> Guest {
        let vm = fd(ioctl(kvm, KVM_CREATE_VM, 0).unwrap_or_else(|_| fail("KVM_CREATE_VM")));
        let vcpu = fd(ioctl(&vm, KVM_CREATE_VCPU, 0).unwrap_or_else(|_| fail("KVM_CREATE_VCPU")));
        let mut init = [0u32; 8];
        init[0] = 5; // KVM_ARM_TARGET_GENERIC_V8
        init[1] = 1 << 2; // KVM_ARM_VCPU_PSCI_0_2
        ioctl_ptr(&vcpu, KVM_ARM_VCPU_INIT, &mut init).unwrap_or_else(|_| fail("KVM_ARM_VCPU_INIT"));
        // The guest's RAM is this process's memory; the program goes at its start.
        let ram = map(GUEST_RAM_SIZE, None);
        // SAFETY: the program (a few hundred bytes) fits in the mapping just made.
        unsafe { std::ptr::copy_nonoverlapping(program.as_ptr(), ram, program.len()) };
        let mut region = [0u64; 4];
        region[0] = 0; // slot 0, flags 0
        region[1] = GUEST_RAM;
        region[2] = GUEST_RAM_SIZE as u64;
        region[3] = ram as u64;
        ioctl_ptr(&vm, KVM_SET_USER_MEMORY_REGION, &mut region)
            .unwrap_or_else(|e| fail(&format!("KVM_SET_USER_MEMORY_REGION: {e}")));
        before_run(&vm);
        let size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0).unwrap_or_else(|_| fail("KVM_GET_VCPU_MMAP_SIZE")) as usize;
        let run = map(size, Some(&vcpu));
        let guest = Guest { vm, vcpu, ram, run };
        guest.set(REG_PSTATE, 0x3c5); // EL1h, DAIF masked
        guest.set(REG_PC, GUEST_RAM);
        guest
    }

    fn set(&self, id: u64, value: u64) {
        let mut v = value;
        let mut reg = [id, &mut v as *mut u64 as u64];
        ioctl_ptr(&self.vcpu, KVM_SET_ONE_REG, &mut reg)
            .unwrap_or_else(|e| fail(&format!("KVM_SET_ONE_REG {id:#x}: {e}")));
    }

    fn get(&self, id: u64) -> u64 {
        let mut v = 0u64;
        let mut reg = [id, &mut v as *mut u64 as u64];
        ioctl_ptr(&self.vcpu, KVM_GET_ONE_REG, &mut reg)
            .unwrap_or_else(|e| fail(&format!("KVM_GET_ONE_REG {id:#x}: {e}")));
        v
    }

    /// `n` bytes (n <= 8) of the kvm_run page at `off`, little-endian.
    fn rd(&self, off: usize, n: usize) -> u64 {
        assert!(n <= 8 && off + 8 <= 4096);
        let mut v = [0u8; 8];
        // SAFETY: `off + n` stays inside the kvm_run page mapped in `new` (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.run.add(off), v.as_mut_ptr(), n) };
        u64::from_le_bytes(v)
    }

    fn wr(&self, off: usize, v: u64) {
        assert!(off + 8 <= 4096);
        // SAFETY: as for `rd`: 8 bytes inside the kvm_run page.
        unsafe { std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), self.run.add(off), 8) }
    }

    /// KVM_RUN until the guest powers off, `mmio(addr, len, write)` serving each MMIO exit
    /// (its return value is what a read sees); the number of runs it took.
    fn run_to_shutdown(&self, mut mmio: impl FnMut(u64, u64, bool, u64) -> u64) -> u32 {
        for runs in 1..=100 {
            ioctl(&self.vcpu, KVM_RUN, 0).unwrap_or_else(|e| fail(&format!("KVM_RUN: {e}")));
            match self.rd(RUN_EXIT_REASON, 4) as u32 {
                KVM_EXIT_MMIO => {
                    let (addr, len, write) =
                        (self.rd(RUN_MMIO_ADDR, 8), self.rd(RUN_MMIO_LEN, 4), self.rd(RUN_MMIO_WRITE, 1));
                    let value = mmio(addr, len, write == 1, self.rd(RUN_MMIO_DATA, len as usize));
                    if write == 0 {
                        self.wr(RUN_MMIO_DATA, value);
                    }
                }
                KVM_EXIT_SYSTEM_EVENT if self.rd(RUN_MMIO_ADDR, 4) as u32 == KVM_SYSTEM_EVENT_SHUTDOWN => return runs,
                other => fail(&format!("unexpected exit {other}")),
            }
        }
        fail("the guest did not power off in 100 runs")
    }
}

/// The first guest: UART output, an emulated read, a RAM page faulted in, PSCI SYSTEM_OFF.
fn run_hello(kvm: &std::fs::File) {
    let guest = Guest::new(kvm, GUEST_HELLO, |_| {});
    guest.set(REG_X2, 0x1234);
    if guest.get(REG_X2) != 0x1234 || guest.get(REG_PC) != GUEST_RAM {
        fail("registers do not read back");
    }
    if guest.get(REG_MPIDR) != 1 << 31 {
        fail("MPIDR_EL1 of vCPU 0");
    }
    // QEMU's register sync: KVM_GET_REG_LIST asked with n = 0 (E2BIG and the count), then
    // every listed register read and written back unchanged.
    let mut probe = [0u64; 1];
    if ioctl_ptr(&guest.vcpu, KVM_GET_REG_LIST, &mut probe) != Err(libc::E2BIG) || probe[0] == 0 {
        fail("KVM_GET_REG_LIST with no room does not ask for more");
    }
    let mut list = vec![0u64; 1 + probe[0] as usize];
    list[0] = probe[0];
    // SAFETY: `list` is a u64 count followed by that many slots, struct kvm_reg_list's layout.
    let r = unsafe { libc::ioctl(guest.vcpu.as_raw_fd(), KVM_GET_REG_LIST as _, list.as_mut_ptr()) };
    if r != 0 || list[0] != probe[0] {
        fail("KVM_GET_REG_LIST");
    }
    for &id in &list[1..] {
        let size = 1usize << ((id >> 52) & 0xf);
        let mut v = [0u64; 2];
        let mut reg = [id, v.as_mut_ptr() as u64];
        if size > 16
            || ioctl_ptr(&guest.vcpu, KVM_GET_ONE_REG, &mut reg).is_err()
            || ioctl_ptr(&guest.vcpu, KVM_SET_ONE_REG, &mut reg).is_err()
        {
            fail(&format!("listed register {id:#x} does not round-trip"));
        }
    }
    if guest.get(REG_X2) != 0x1234 || guest.get(REG_PC) != GUEST_RAM {
        fail("registers changed by writing back what was read");
    }
    let mut console = String::new();
    let mut reads = 0;
    guest.run_to_shutdown(|addr, len, write, data| match (addr, write) {
        (0x0900_0000, true) if len == 1 => {
            console.push(data as u8 as char);
            0
        }
        (0x0900_0018, false) if len == 4 => {
            reads += 1;
            u64::from(b'Z')
        }
        _ => fail(&format!("unexpected MMIO at {addr:#x} (len {len}, write {write})")),
    });
    // SAFETY: the guest's RAM mapping; its page at 1 MiB is where the guest stored 'I'.
    let stored = unsafe { (guest.ram.add(0x10_0000) as *const u64).read_volatile() };
    if console != "HIZI\n" || reads != 1 || stored != u64::from(b'I') {
        fail(&format!("the guest said {console:?} after {reads} reads and left {stored:#x} in RAM"));
    }
    println!(
        "KVM-SMOKE: a guest ran over /dev/kvm: said HIZI, its RAM write seen by the VMM, powered off; {} listed registers round-tripped",
        probe[0]
    );
}

/// Set one attribute of the interrupt controller device.
fn device_attr(dev: &OwnedFd, group: u32, attr: u64, value: u64) {
    let mut v = value;
    let mut a = [u64::from(group) << 32, attr, &mut v as *mut u64 as u64];
    ioctl_ptr(dev, KVM_SET_DEVICE_ATTR, &mut a)
        .unwrap_or_else(|e| fail(&format!("KVM_SET_DEVICE_ATTR {group}/{attr}: {e}")));
}

/// A GICv3 made for `vm` as QEMU makes it: after the vCPUs, sized and initialised, the
/// distributor placed; the redistributors are placed by the caller (see [`run_irq`]).
fn make_gic(vm: &OwnedFd, refusals: bool) -> OwnedFd {
    let mut create = [KVM_DEV_TYPE_ARM_VGIC_V3, 0, 0];
    ioctl_ptr(vm, KVM_CREATE_DEVICE, &mut create).unwrap_or_else(|e| fail(&format!("KVM_CREATE_DEVICE: {e}")));
    let dev = fd(create[1] as i32);
    if refusals && ioctl_ptr(vm, KVM_CREATE_DEVICE, &mut create) != Err(libc::EEXIST) {
        fail("a second GIC is not refused");
    }
    // NR_IRQS takes a u32 behind the pointer; the rest of the u64 is not read.
    device_attr(&dev, VGIC_GRP_NR_IRQS, 0, 64);
    device_attr(&dev, VGIC_GRP_CTRL, VGIC_CTRL_INIT, 0);
    if refusals && ioctl(vm, KVM_CREATE_VCPU, 1) != Err(libc::EBUSY) {
        fail("a vCPU created after the GIC is not refused");
    }
    device_attr(&dev, VGIC_GRP_ADDR, VGIC_ADDR_DIST, 0x0800_0000);
    dev
}

/// A GICv2 made for `vm` as QEMU makes it (hw/intc/arm_gic_kvm.c): after the vCPUs, sized and
/// initialised, then both frames placed; with the refusals a VMM can meet on the way.
fn make_gic_v2(vm: &OwnedFd) -> OwnedFd {
    let mut create = [KVM_DEV_TYPE_ARM_VGIC_V3, 0, 0];
    if ioctl_ptr(vm, KVM_CREATE_DEVICE, &mut create) != Err(libc::ENODEV) {
        fail("a GICv3 device is not refused on a GICv2 machine");
    }
    let mut create = [KVM_DEV_TYPE_ARM_VGIC_V2, 0, 0];
    ioctl_ptr(vm, KVM_CREATE_DEVICE, &mut create).unwrap_or_else(|e| fail(&format!("KVM_CREATE_DEVICE v2: {e}")));
    let dev = fd(create[1] as i32);
    if ioctl_ptr(vm, KVM_CREATE_DEVICE, &mut create) != Err(libc::EEXIST) {
        fail("a second GIC is not refused");
    }
    device_attr(&dev, VGIC_GRP_NR_IRQS, 0, 64);
    device_attr(&dev, VGIC_GRP_CTRL, VGIC_CTRL_INIT, 0);
    let try_attr = |group: u32, attr: u64, value: u64| {
        let mut v = value;
        let mut a = [u64::from(group) << 32, attr, &mut v as *mut u64 as u64];
        ioctl_ptr(&dev, KVM_SET_DEVICE_ATTR, &mut a)
    };
    if try_attr(VGIC_GRP_ADDR, VGIC_ADDR_REDIST, 0x080a_0000) != Err(libc::ENXIO) {
        fail("a GICv2 takes a redistributor address");
    }
    if try_attr(VGIC_GRP_ADDR, VGIC_V2_ADDR_DIST, 0x0800_0800) != Err(libc::EINVAL) {
        fail("a GICv2 distributor not 4 KiB aligned is not refused");
    }
    if try_attr(VGIC_GRP_ADDR, VGIC_V2_ADDR_CPU, 0x0802_0000) != Err(libc::EINVAL) {
        fail("a GICv2 CPU interface away from KCore's GICV window is not refused");
    }
    device_attr(&dev, VGIC_GRP_ADDR, VGIC_V2_ADDR_DIST, 0x0800_0000);
    device_attr(&dev, VGIC_GRP_ADDR, VGIC_V2_ADDR_CPU, 0x0801_0000);
    if try_attr(VGIC_GRP_ADDR, VGIC_V2_ADDR_DIST, 0x0800_0000) != Err(libc::EEXIST) {
        fail("a GICv2 distributor placed twice");
    }
    // The registers as QEMU's reset writes and its migration reads them: the distributor's
    // are the model's, per CPU; the CPU interface's are KCore's (writes accepted, no effect).
    let get_reg = |group: u32, attr: u64| {
        let mut v = 0u32;
        let mut a = [u64::from(group) << 32, attr, &mut v as *mut u32 as u64];
        ioctl_ptr(&dev, KVM_GET_DEVICE_ATTR, &mut a).map(|_| v)
    };
    if get_reg(VGIC_GRP_DIST_REGS, 4) != Ok(1) {
        fail("GICD_TYPER through the DIST_REGS group is not 64 lines, 1 CPU");
    }
    if get_reg(VGIC_GRP_DIST_REGS, 0x800) != Ok(0) || get_reg(VGIC_GRP_DIST_REGS, (1 << 32) | 4) != Err(libc::EINVAL) {
        fail("DIST_REGS: ITARGETSR0 of a uniprocessor is not 0, or a second CPU is not refused");
    }
    if try_attr(VGIC_GRP_CPU_REGS, 0x4, 0xf0) != Ok(0) || try_attr(VGIC_GRP_DIST_REGS, 0x1000, 0) != Err(libc::EINVAL) {
        fail("CPU_REGS: a GICC_PMR write is not accepted, or a distributor offset past 4 KiB is not refused");
    }
    dev
}

/// The GICv2 interrupt guest: an SGI it sends itself through the emulated GICD_SGIR, then a
/// level SPI 40 the VMM raises with KVM_IRQ_LINE on the guest's 'R' and lowers on its
/// acknowledgement, taken and completed through KCore's virtual CPU interface; then the same
/// with SPI 40 edge-triggered.
fn run_irq_v2(kvm: &std::fs::File) {
    // SAFETY: alarm(2) only arms a timer for this process (see run_irq).
    unsafe { libc::alarm(30) };
    let mut total = 0;
    for edge in [0, 1] {
        let mut dev_fd = None;
        let guest = Guest::new(kvm, GUEST_IRQ_V2, |vm| dev_fd = Some(make_gic_v2(vm)));
        let dev = dev_fd.unwrap_or_else(|| fail("no GIC"));
        guest.set(REG_X0, edge);
        let line = |level: u32| {
            let mut l = [IRQ_LINE_SPI | 40, level];
            ioctl_ptr(&guest.vm, KVM_IRQ_LINE, &mut l).unwrap_or_else(|e| fail(&format!("KVM_IRQ_LINE: {e}")));
        };
        let mut console = String::new();
        let mut acked = 0;
        total += guest.run_to_shutdown(|addr, len, write, data| match (addr, write) {
            (0x0900_0000, true) if len == 1 => {
                console.push(data as u8 as char);
                if data as u8 == b'R' {
                    line(1);
                }
                0
            }
            (0x0900_1000, true) if len == 4 => {
                acked = data;
                line(0);
                0
            }
            _ => fail(&format!("unexpected MMIO at {addr:#x} (len {len}, write {write})")),
        });
        drop(dev);
        if console != "SRG\n" || acked != 40 {
            fail(&format!("the GICv2 interrupt guest (edge {edge}) said {console:?} and acknowledged {acked}"));
        }
    }
    // SAFETY: as above: disarm the timer.
    unsafe { libc::alarm(0) };
    println!(
        "KVM-SMOKE: an interrupt reached a guest through the in-kernel GICv2: SGI 3 by GICD_SGIR, SPI 40 level and edge raised, taken, acknowledged in {total} runs"
    );
}

/// An eventfd (counter 0, blocking).
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd(2) takes no pointers.
    let r = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if r < 0 {
        fail("eventfd");
    }
    fd(r)
}

/// The eventfd's counter, without waiting (0 if nothing was signalled).
fn eventfd_count(efd: &OwnedFd) -> u64 {
    let mut pfd = libc::pollfd { fd: efd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd; a zero timeout.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 {
        return 0;
    }
    let mut v = 0u64;
    // SAFETY: reading the 8-byte counter into a u64 of ours.
    if unsafe { libc::read(efd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) } != 8 {
        fail("eventfd read");
    }
    v
}

/// The interrupt guest, twice. First with a level SPI 40 the VMM raises with KVM_IRQ_LINE on
/// the guest's 'R' and lowers on its acknowledgement (an MMIO exit). Then, as a virtio
/// device's thread would, with SPI 40 edge-triggered and driven by an irqfd the VMM signals,
/// and the acknowledgement heard by an ioeventfd in the kernel, without an exit.
fn run_irq(kvm: &std::fs::File) {
    // An interrupt that never arrives leaves the guest in WFI, its vCPU thread asleep in
    // KVM_RUN; SIGALRM's default action ends this process (non-zero) instead of the test
    // waiting for its timeout.
    // SAFETY: alarm(2) only arms a timer for this process.
    unsafe { libc::alarm(30) };
    let mut dev_fd = None;
    let guest = Guest::new(kvm, GUEST_IRQ, |vm| dev_fd = Some(make_gic(vm, true)));
    let dev = dev_fd.unwrap_or_else(|| fail("no GIC"));
    if ioctl(&guest.vcpu, KVM_RUN, 0) != Err(libc::ENXIO) {
        fail("a guest ran with its GIC's redistributors never placed");
    }
    device_attr(&dev, VGIC_GRP_ADDR, VGIC_ADDR_REDIST, 0x080a_0000);
    let line = |level: u32| {
        let mut l = [IRQ_LINE_SPI | 40, level];
        ioctl_ptr(&guest.vm, KVM_IRQ_LINE, &mut l).unwrap_or_else(|e| fail(&format!("KVM_IRQ_LINE: {e}")));
    };
    let mut beyond = [IRQ_LINE_SPI | 64, 1];
    if ioctl_ptr(&guest.vm, KVM_IRQ_LINE, &mut beyond) != Err(libc::EINVAL) {
        fail("an SPI beyond the GIC's 64 lines is not refused");
    }
    let mut console = String::new();
    let mut acked = 0;
    let runs = guest.run_to_shutdown(|addr, len, write, data| match (addr, write) {
        (0x0900_0000, true) if len == 1 => {
            console.push(data as u8 as char);
            if data as u8 == b'R' {
                line(1);
            }
            0
        }
        (0x0900_1000, true) if len == 4 => {
            acked = data;
            line(0);
            0
        }
        _ => fail(&format!("unexpected MMIO at {addr:#x} (len {len}, write {write})")),
    });
    drop(dev);
    if console != "RG\n" || acked != 40 {
        fail(&format!("the interrupt guest said {console:?} and acknowledged {acked}"));
    }
    println!(
        "KVM-SMOKE: an interrupt reached a guest through the in-kernel GICv3: SPI 40 raised, taken, acknowledged in {runs} runs"
    );

    let mut dev_fd = None;
    let guest = Guest::new(kvm, GUEST_IRQ, |vm| dev_fd = Some(make_gic(vm, false)));
    let dev = dev_fd.unwrap_or_else(|| fail("no GIC"));
    device_attr(&dev, VGIC_GRP_ADDR, VGIC_ADDR_REDIST, 0x080a_0000);
    guest.set(REG_X0, 1); // SPI 40 edge-triggered
    // struct kvm_irqfd { u32 fd, gsi, flags, resamplefd; u8 pad[16] }: GSI 8 is SPI 40.
    let irq_efd = eventfd();
    let mut irqfd = [irq_efd.as_raw_fd() as u32, 8, 0, 0, 0, 0, 0, 0];
    ioctl_ptr(&guest.vm, KVM_IRQFD, &mut irqfd).unwrap_or_else(|e| fail(&format!("KVM_IRQFD: {e}")));
    if ioctl_ptr(&guest.vm, KVM_IRQFD, &mut irqfd) != Err(libc::EBUSY) {
        fail("a second irqfd on one eventfd is not refused");
    }
    // struct kvm_ioeventfd { u64 datamatch, addr; u32 len; s32 fd; u32 flags; u8 pad[36] }:
    // a 4-byte write of 40 at 0x0900_1000.
    let ack_efd = eventfd();
    let ioeventfd = |flags: u64, len: u64| {
        let mut a = [0u64; 9];
        a[0] = 40;
        a[1] = 0x0900_1000;
        a[2] = len | ((ack_efd.as_raw_fd() as u64) << 32);
        a[3] = flags;
        ioctl_ptr(&guest.vm, KVM_IOEVENTFD, &mut a)
    };
    if ioeventfd(IOEVENTFD_DATAMATCH, 3) != Err(libc::EINVAL) {
        fail("an ioeventfd of 3 bytes is not refused");
    }
    if ioeventfd(IOEVENTFD_DATAMATCH | IOEVENTFD_PIO, 4) != Err(libc::EINVAL) {
        fail("a port I/O ioeventfd is not refused");
    }
    ioeventfd(IOEVENTFD_DATAMATCH, 4).unwrap_or_else(|e| fail(&format!("KVM_IOEVENTFD: {e}")));
    if ioeventfd(IOEVENTFD_DATAMATCH, 4) != Err(libc::EEXIST) {
        fail("the same ioeventfd twice is not refused");
    }
    let mut console = String::new();
    let runs = guest.run_to_shutdown(|addr, len, write, data| match (addr, write) {
        (0x0900_0000, true) if len == 1 => {
            console.push(data as u8 as char);
            if data as u8 == b'R' {
                // SAFETY: writing an 8-byte count to the eventfd from a u64 of ours.
                let w = unsafe { libc::write(irq_efd.as_raw_fd(), &1u64 as *const u64 as *const libc::c_void, 8) };
                if w != 8 {
                    fail("eventfd write");
                }
            }
            0
        }
        _ => fail(&format!("unexpected MMIO at {addr:#x} (len {len}, write {write})")),
    });
    let acks = eventfd_count(&ack_efd);
    if console != "RG\n" || acks != 1 {
        fail(&format!("the irqfd guest said {console:?} and its ioeventfd counted {acks}"));
    }
    irqfd[2] = 1; // KVM_IRQFD_FLAG_DEASSIGN
    ioctl_ptr(&guest.vm, KVM_IRQFD, &mut irqfd).unwrap_or_else(|e| fail(&format!("KVM_IRQFD deassign: {e}")));
    if ioctl_ptr(&guest.vm, KVM_IRQFD, &mut irqfd) != Err(libc::ENOENT) {
        fail("an irqfd deassigned twice");
    }
    if ioeventfd(IOEVENTFD_DEASSIGN, 4) != Err(libc::ENOENT) {
        fail("an ioeventfd deassigned with the wrong match");
    }
    // Both assigned again and left so: the VM's teardown must unhook them.
    irqfd[2] = 0;
    ioctl_ptr(&guest.vm, KVM_IRQFD, &mut irqfd).unwrap_or_else(|e| fail(&format!("KVM_IRQFD again: {e}")));
    ioeventfd(IOEVENTFD_DATAMATCH | IOEVENTFD_DEASSIGN, 4)
        .unwrap_or_else(|e| fail(&format!("KVM_IOEVENTFD deassign: {e}")));
    ioeventfd(0, 0).unwrap_or_else(|e| fail(&format!("KVM_IOEVENTFD of any length: {e}")));
    drop(dev);
    // SAFETY: as above: disarm the timer.
    unsafe { libc::alarm(0) };
    println!(
        "KVM-SMOKE: an irqfd interrupted a guest and an ioeventfd heard its acknowledgement without an exit, in {runs} runs"
    );
}

/// `kvm-smoke --protected FILE`: FILE, a signed kernel file of the protected guest
/// (guest-protected.S, or guest-mmio-guard.S), as a protected VM (KVM_VM_TYPE_ARM_PROTECTED),
/// loaded as QEMU loads a kernel (2 MiB into RAM) with x0 pointing at a device tree's magic.
/// Once the guest says it planted its secret, this VMM, which mapped that RAM itself, tries to
/// read it (in a child process: the read must die with SIGBUS) and to read the vCPU's PC
/// (EPERM after the first run). Prints one KVM-SMOKE line for each; a kernel KCore refuses
/// ends KVM_RUN with the errno printed; at power-off, the guest's UART output and every
/// device page an MMIO exit named. `--unprotected FILE`: the same guest as an ordinary VM,
/// whose secret and registers the host reads (the control).
/// RAM of the VMs `signed_kernel_vm` makes.
const SIGNED_VM_RAM: usize = 4 << 20;

/// A VM of `vm_type` with one vCPU and 4 MiB of shared memory (a memfd) at GUEST_RAM, the
/// signed kernel file at `path` loaded 2 MiB in as QEMU loads a kernel, and x0 pointing at a
/// device tree's magic 1 MiB in: what the protected guests expect.
fn signed_kernel_vm(kvm: &std::fs::File, path: &str, vm_type: libc::c_ulong) -> Guest {
    const RAM_SIZE: usize = SIGNED_VM_RAM;
    let file = std::fs::read(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    if file.len() > RAM_SIZE / 2 {
        fail("the signed kernel file is too big");
    }
    let vm = fd(ioctl(kvm, KVM_CREATE_VM, vm_type).unwrap_or_else(|e| fail(&format!("KVM_CREATE_VM: {e}"))));
    let vcpu = fd(ioctl(&vm, KVM_CREATE_VCPU, 0).unwrap_or_else(|_| fail("KVM_CREATE_VCPU")));
    let mut init = [0u32; 8];
    init[0] = 5; // KVM_ARM_TARGET_GENERIC_V8
    init[1] = 1 << 2; // KVM_ARM_VCPU_PSCI_0_2
    ioctl_ptr(&vcpu, KVM_ARM_VCPU_INIT, &mut init).unwrap_or_else(|_| fail("KVM_ARM_VCPU_INIT"));
    // Shared memory (a memfd), as a protected VM's must be (a fork copies no page of it), so
    // a forked child reaches the guest's pages from user mode.
    // SAFETY: memfd_create with a NUL-terminated name; the fd is checked and owned below.
    let memfd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), 0) };
    if memfd < 0 {
        fail("memfd_create");
    }
    // SAFETY: a file descriptor memfd_create just returned, owned by us.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    // SAFETY: sizing our own memfd.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), RAM_SIZE as libc::off_t) } != 0 {
        fail("ftruncate");
    }
    let ram = map(RAM_SIZE, Some(&memfd));
    // SAFETY: both copies land inside the RAM_SIZE bytes just mapped (the file is at most half).
    unsafe {
        std::ptr::copy_nonoverlapping(file.as_ptr(), ram.add(0x20_0000), file.len());
        std::ptr::copy_nonoverlapping([0xd0u8, 0x0d, 0xfe, 0xed].as_ptr(), ram.add(0x10_0000), 4);
    }
    let mut region = [0u64, GUEST_RAM, RAM_SIZE as u64, ram as u64];
    ioctl_ptr(&vm, KVM_SET_USER_MEMORY_REGION, &mut region).unwrap_or_else(|e| fail(&format!("memory: {e}")));
    let size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0).unwrap_or_else(|_| fail("KVM_GET_VCPU_MMAP_SIZE")) as usize;
    let run = map(size, Some(&vcpu));
    let guest = Guest { vm, vcpu, ram, run };
    guest.set(REG_PSTATE, 0x3c5); // EL1h, DAIF masked (what KCore starts a protected vCPU in)
    guest.set(REG_PC, GUEST_RAM + 0x20_0000);
    guest.set(REG_X0, GUEST_RAM + 0x10_0000);
    guest
}

fn protected(path: &str, protect: bool) -> ! {
    let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm").unwrap_or_else(|_| fail("open /dev/kvm"));
    let vm_type = if protect { VM_TYPE_PROTECTED } else { 0 };
    let kind = if protect { "protected" } else { "unprotected" };
    let guest = signed_kernel_vm(&kvm, path, vm_type);
    let mut out = String::new();
    let mut checked = false;
    // Every page an MMIO exit named: what of the guest's device accesses reached this VMM.
    let mut pages = std::collections::BTreeSet::new();
    for _ in 0..200 {
        if let Err(e) = ioctl(&guest.vcpu, KVM_RUN, 0) {
            let msg = std::io::Error::from_raw_os_error(e);
            println!("KVM-SMOKE: {kind}: KVM_RUN refused: errno {e} ({msg}); guest output '{}'", out.trim_end());
            std::process::exit(2);
        }
        let reason = guest.rd(RUN_EXIT_REASON, 4) as u32;
        if reason == KVM_EXIT_MMIO {
            pages.insert(guest.rd(RUN_MMIO_ADDR, 8) & !0xfff);
        }
        match reason {
            KVM_EXIT_MMIO if guest.rd(RUN_MMIO_ADDR, 8) == 0x0900_0000 && guest.rd(RUN_MMIO_WRITE, 1) == 1 => {
                out.push(guest.rd(RUN_MMIO_DATA, 1) as u8 as char);
                if out.ends_with("planted ") && !checked {
                    checked = true;
                    peek_protected(&guest, kind);
                }
            }
            KVM_EXIT_MMIO => {
                if guest.rd(RUN_MMIO_WRITE, 1) == 0 {
                    guest.wr(RUN_MMIO_DATA, 0);
                }
            }
            KVM_EXIT_SYSTEM_EVENT if guest.rd(RUN_MMIO_ADDR, 4) as u32 == KVM_SYSTEM_EVENT_SHUTDOWN => {
                println!("KVM-SMOKE: {kind}: guest output '{}'", out.trim_end());
                let seen: Vec<String> = pages.iter().map(|p| format!("{p:#x}")).collect();
                println!("KVM-SMOKE: {kind}: MMIO pages the VMM saw: {}", seen.join(" "));
                std::process::exit(0);
            }
            other => fail(&format!("protected: unexpected exit {other}")),
        }
    }
    fail("protected: the guest did not power off in 200 runs")
}

/// The host's side of the protected guest's secret: its page read through this VMM's own
/// mapping (in a child, which the injected abort kills), and its PC through KVM_GET_ONE_REG.
fn peek_protected(guest: &Guest, kind: &str) {
    // SAFETY: fork has no preconditions here (one thread); the child only reads memory and
    // exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: 0x30_0000 is inside the guest RAM mapping; a volatile read of a u64 there.
        let v = unsafe { std::ptr::read_volatile(guest.ram.add(0x30_0000) as *const u64) };
        println!("KVM-SMOKE: {kind}: the host read the guest's secret page: {v:#x}");
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        println!(
            "KVM-SMOKE: {kind}: reading the guest's secret page killed the reader with signal {}",
            libc::WTERMSIG(status)
        );
    } else {
        println!("KVM-SMOKE: {kind}: reading the guest's secret page did not fault (status {status:#x})");
    }
    let mut v = 0u64;
    let mut reg = [REG_PC, &mut v as *mut u64 as u64];
    match ioctl_ptr(&guest.vcpu, KVM_GET_ONE_REG, &mut reg) {
        Err(e) => println!("KVM-SMOKE: {kind}: KVM_GET_ONE_REG of its PC after the first run: errno {e}"),
        Ok(_) => println!("KVM-SMOKE: {kind}: KVM_GET_ONE_REG of its PC after the first run gave {v:#x}"),
    }
    // Written back (as QEMU does after reading): for a protected vCPU accepted with no effect.
    let mut reg = [REG_PC, &mut v as *mut u64 as u64];
    match ioctl_ptr(&guest.vcpu, KVM_SET_ONE_REG, &mut reg) {
        Err(e) => println!("KVM-SMOKE: {kind}: KVM_SET_ONE_REG of its PC after the first run: errno {e}"),
        Ok(_) => println!("KVM-SMOKE: {kind}: KVM_SET_ONE_REG of its PC after the first run accepted"),
    }
}
