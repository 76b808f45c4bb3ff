//! `kvm-smoke --fuzz COUNT [SEED]`: COUNT random ioctls, from four threads, at /dev/kvm and at
//! the VM, vCPU and GIC (v3 or v2) device fds it hands out, to show that the kserv module checks every
//! argument a VMM gives it: bad input must come back as an error (-EINVAL, -EFAULT, -ENOMEM,
//! -ENOTTY, ...), never as an oops in the host nor a halt in KCore. Errors are the expected
//! outcome, so none of them fails the run: it ends with
//! `KVM-FUZZ: N ioctls, M errors, K successes, V VMs created` and exits 0 (1 only if /dev/kvm
//! cannot be opened); the verdict is the host's console (and that the line is printed at all).
//!
//! The strategy:
//! - Each thread draws from its own xorshift generator, seeded from SEED (default 1) and the
//!   thread's index, so each thread's choices repeat run after run (their interleaving does not).
//! - Fds live in a shared [`Pool`], each behind an `Arc<OwnedFd>`: a thread clones the `Arc` for
//!   the length of its ioctl, so closing (which the fuzzer does at random, to race ioctls on other
//!   threads) takes effect when the last user is done, and never closes a number that has since
//!   been reused by an unrelated file. At most [`MAX_VMS`] VMs are kept: a new one pushes the
//!   oldest out with its vCPUs, device and mappings, so the host's memory lasts.
//! - The ioctl number is mostly one KVM defines (one meant for the fd's kind, sometimes any),
//!   sometimes with its size or direction bits corrupted, sometimes random.
//! - The argument is mostly a pointer to a struct of the right shape, in a page of the thread's
//!   own followed by a guard page, with fields drawn from values that matter (valid ones, their
//!   edges, garbage); otherwise random bytes, a bad pointer (NULL, kernel, non-canonical,
//!   unmapped, straddling the guard page) or a plain integer.
//! - Whatever memory a call could make the kernel (or a guest) write is the thread's scratch
//!   page, the guest areas, or addresses where nothing is mapped; never this process's heap or
//!   stacks, so a call that succeeds cannot corrupt the fuzzer itself.
//! - Guest RAM comes from [`Areas`], a reservation of anonymous memory filled with random and
//!   chosen instructions. Areas are unmapped (replaced by PROT_NONE in one `mmap(MAP_FIXED)`, so
//!   the address range stays reserved) and mapped afresh while VMs use them: the module has
//!   pinned what guests touched, and must cope with the memory behind a slot going away.
//! - KVM_RUN runs guests (with random registers, on random code): on vCPUs of VMs given no RAM,
//!   or else with `immediate_exit` set (7 times in 8) in the vCPU's mmap'd kvm_run page. A
//!   watchdog thread sends SIGUSR1 to every fuzz thread every 50 ms (its handler does nothing
//!   and is installed without SA_RESTART), so a run that blocks ends with EINTR.
//! - Between ioctls (only ioctls count toward COUNT), the fds are mmap'd with right and wrong
//!   sizes, offsets and protections, the mappings touched and unmapped, fds closed, eventfds
//!   signalled (firing irqfds) and drained.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use super::{
    GUEST_RAM, IRQ_LINE_SPI, KVM_ARM_VCPU_INIT, KVM_CHECK_EXTENSION, KVM_CREATE_DEVICE, KVM_CREATE_VCPU, KVM_CREATE_VM,
    KVM_DEV_TYPE_ARM_VGIC_V2, KVM_DEV_TYPE_ARM_VGIC_V3, KVM_GET_API_VERSION, KVM_GET_ONE_REG, KVM_GET_REG_LIST,
    KVM_GET_VCPU_MMAP_SIZE, KVM_IOEVENTFD, KVM_IRQ_LINE, KVM_IRQFD, KVM_RUN, KVM_SET_DEVICE_ATTR, KVM_SET_ONE_REG,
    KVM_SET_USER_MEMORY_REGION, REG_MPIDR, REG_PC, REG_PSTATE, REG_X0, fail, fd, iow,
};

type Nr = libc::c_ulong;

const THREADS: usize = 4;
/// VMs kept at once (each with up to 8 vCPUs, a GIC, pinned guest pages).
const MAX_VMS: usize = 6;
const MAX_EVENTFDS: usize = 8;
/// Mappings of fds kept at once (besides each vCPU's kvm_run page).
const MAX_MAPS: usize = 16;
const KICK_EVERY: Duration = Duration::from_millis(50);
const PAGE: usize = 4096;
/// Guest RAM: AREAS slots of AREA_SIZE bytes each.
const AREAS: usize = 8;
const AREA_SIZE: usize = 4 << 20;
/// In the scratch page, structs start below VALUES; the values they point to (a register's,
/// an attribute's, a bitmap) go above it.
const VALUES: usize = 3072;

/// `_IOR(KVMIO, nr, size)`.
const fn ior(nr: Nr, size: Nr) -> Nr {
    (2 << 30) | (size << 16) | (0xae << 8) | nr
}
/// Ioctls beyond the ones main.rs uses (the KVM API's; struct sizes are arm64's).
const KVM_ARM_PREFERRED_TARGET: Nr = ior(0xaf, 32);
const KVM_GET_DEVICE_ATTR: Nr = iow(0xe2, 24);
const KVM_HAS_DEVICE_ATTR: Nr = iow(0xe3, 24);
const KVM_GET_MP_STATE: Nr = ior(0x98, 4);
const KVM_SET_MP_STATE: Nr = iow(0x99, 4);
const KVM_CREATE_IRQCHIP: Nr = 0xae60;
/// `struct kvm_signal_mask { u32 len; u8 sigset[]; }`.
const KVM_SET_SIGNAL_MASK: Nr = iow(0x8b, 4);
/// `struct kvm_dirty_log { u32 slot, pad; u64 dirty_bitmap; }`.
const KVM_GET_DIRTY_LOG: Nr = iow(0x42, 16);
/// `struct kvm_enable_cap { u32 cap, flags; u64 args[4]; u8 pad[64]; }`.
const KVM_ENABLE_CAP: Nr = iow(0xa3, 104);
const KVM_ARM_VCPU_FINALIZE: Nr = iow(0xc2, 4);
/// `struct kvm_guest_debug { u32 control, pad; u64 bcr[16], bvr[16], wcr[16], wvr[16]; }`.
const KVM_SET_GUEST_DEBUG: Nr = iow(0x9b, 520);

/// The fds an ioctl is meant for (a bit set).
const KVM: u8 = 1;
const VM: u8 = 2;
const VCPU: u8 = 4;
const DEV: u8 = 8;

/// What an ioctl's argument is, and so how to make one up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer that should be 0.
    Zero,
    VmType,
    VcpuId,
    Cap,
    MemRegion,
    OneReg,
    RegList,
    VcpuInit,
    IrqLine,
    Irqfd,
    Ioeventfd,
    DeviceAttr,
    CreateDevice,
    /// A struct of this many bytes that the kernel only writes.
    Out(usize),
    MpState,
    SignalMask,
    DirtyLog,
    EnableCap,
    Finalize,
    GuestDebug,
}

impl Kind {
    /// The size of the struct the argument points to (8 for integers).
    fn size(self) -> usize {
        match self {
            Kind::Zero | Kind::VmType | Kind::VcpuId | Kind::Cap | Kind::RegList | Kind::IrqLine => 8,
            Kind::MemRegion | Kind::VcpuInit | Kind::Irqfd => 32,
            Kind::OneReg | Kind::DirtyLog => 16,
            Kind::Ioeventfd => 64,
            Kind::DeviceAttr => 24,
            Kind::CreateDevice | Kind::SignalMask => 12,
            Kind::Out(n) => n,
            Kind::MpState | Kind::Finalize => 4,
            Kind::EnableCap => 104,
            Kind::GuestDebug => 520,
        }
    }
}

struct Cmd {
    name: &'static str,
    nr: Nr,
    kind: Kind,
    on: u8,
}

const fn cmd(name: &'static str, nr: Nr, kind: Kind, on: u8) -> Cmd {
    Cmd { name, nr, kind, on }
}

const CMDS: [Cmd; 27] = [
    cmd("KVM_GET_API_VERSION", KVM_GET_API_VERSION, Kind::Zero, KVM),
    cmd("KVM_CREATE_VM", KVM_CREATE_VM, Kind::VmType, KVM),
    cmd("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE, Kind::Zero, KVM),
    cmd("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, Kind::Cap, KVM | VM),
    cmd("KVM_CREATE_VCPU", KVM_CREATE_VCPU, Kind::VcpuId, VM),
    cmd("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION, Kind::MemRegion, VM),
    cmd("KVM_CREATE_DEVICE", KVM_CREATE_DEVICE, Kind::CreateDevice, VM),
    cmd("KVM_IRQ_LINE", KVM_IRQ_LINE, Kind::IrqLine, VM),
    cmd("KVM_IRQFD", KVM_IRQFD, Kind::Irqfd, VM),
    cmd("KVM_IOEVENTFD", KVM_IOEVENTFD, Kind::Ioeventfd, VM),
    cmd("KVM_ARM_PREFERRED_TARGET", KVM_ARM_PREFERRED_TARGET, Kind::Out(32), VM),
    cmd("KVM_CREATE_IRQCHIP", KVM_CREATE_IRQCHIP, Kind::Zero, VM),
    cmd("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG, Kind::DirtyLog, VM),
    cmd("KVM_ENABLE_CAP", KVM_ENABLE_CAP, Kind::EnableCap, VM | VCPU),
    cmd("KVM_RUN", KVM_RUN, Kind::Zero, VCPU),
    cmd("KVM_ARM_VCPU_INIT", KVM_ARM_VCPU_INIT, Kind::VcpuInit, VCPU),
    cmd("KVM_SET_ONE_REG", KVM_SET_ONE_REG, Kind::OneReg, VCPU),
    cmd("KVM_GET_ONE_REG", KVM_GET_ONE_REG, Kind::OneReg, VCPU),
    cmd("KVM_GET_REG_LIST", KVM_GET_REG_LIST, Kind::RegList, VCPU),
    cmd("KVM_GET_MP_STATE", KVM_GET_MP_STATE, Kind::Out(4), VCPU),
    cmd("KVM_SET_MP_STATE", KVM_SET_MP_STATE, Kind::MpState, VCPU),
    cmd("KVM_SET_SIGNAL_MASK", KVM_SET_SIGNAL_MASK, Kind::SignalMask, VCPU),
    cmd("KVM_ARM_VCPU_FINALIZE", KVM_ARM_VCPU_FINALIZE, Kind::Finalize, VCPU),
    cmd("KVM_SET_GUEST_DEBUG", KVM_SET_GUEST_DEBUG, Kind::GuestDebug, VCPU),
    cmd("KVM_SET_DEVICE_ATTR", KVM_SET_DEVICE_ATTR, Kind::DeviceAttr, VM | VCPU | DEV),
    cmd("KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR, Kind::DeviceAttr, VM | VCPU | DEV),
    cmd("KVM_HAS_DEVICE_ATTR", KVM_HAS_DEVICE_ATTR, Kind::DeviceAttr, VM | VCPU | DEV),
];

/// How often `cmd` is drawn for an fd of kind `on` (with `vms` VMs in the pool).
fn weight(cmd: &Cmd, on: u8, vms: usize) -> u32 {
    match cmd.nr {
        KVM_CREATE_VM if vms < MAX_VMS => 8,
        KVM_CREATE_VCPU | KVM_SET_USER_MEMORY_REGION | KVM_RUN | KVM_SET_ONE_REG => 3,
        KVM_SET_DEVICE_ATTR | KVM_GET_DEVICE_ATTR if on == DEV => 4,
        KVM_CREATE_DEVICE | KVM_IRQ_LINE | KVM_IRQFD | KVM_IOEVENTFD | KVM_GET_ONE_REG => 2,
        _ => 1,
    }
}

/// `nr`'s index in CMDS (CMDS.len() for a number not there).
fn index_of(nr: Nr) -> usize {
    CMDS.iter().position(|c| c.nr == nr).unwrap_or(CMDS.len())
}

fn name_of(index: usize) -> &'static str {
    CMDS.get(index).map_or("a corrupted or random number", |c| c.name)
}

/// Instructions a random guest is made of, half the time (the other half: random words).
const GUEST_WORDS: [u32; 16] = [
    0x1400_0000, // b .
    0xd503_207f, // wfi
    0xd503_205f, // wfe
    0xd503_201f, // nop
    0xd400_0002, // hvc #0
    0xd400_0003, // smc #0
    0xd420_0000, // brk #0
    0xd69f_03e0, // eret
    0x0000_0000, // udf #0
    0xf900_0000, // str x0, [x0]
    0xf940_0000, // ldr x0, [x0]
    0xd518_c000, // msr vbar_el1, x0
    0xd518_1000, // msr sctlr_el1, x0
    0xd508_871f, // tlbi vmalle1
    0xd503_4fff, // msr daifclr, #0xf
    0xd50b_7420, // dc zva, x0
];

// ------------------------------------------------------------------ randomness

/// xorshift64*, seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 if n is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.index(xs.len())]
    }

    fn weighted<T: Copy>(&mut self, choices: &[(u32, T)]) -> T {
        let mut n = self.below(choices.iter().map(|c| u64::from(c.0)).sum());
        for &(w, v) in choices {
            if n < u64::from(w) {
                return v;
            }
            n -= u64::from(w);
        }
        choices[choices.len() - 1].1
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8)).flat_map(|_| self.next().to_le_bytes()).take(n).collect()
    }

    /// A word of guest code.
    fn guest_word(&mut self) -> u32 {
        if self.one_in(2) { self.pick(&GUEST_WORDS) } else { self.next() as u32 }
    }
}

/// A struct's bytes, field by field, little-endian.
#[derive(Default)]
struct Fields(Vec<u8>);

impl Fields {
    fn u32(mut self, v: u32) -> Fields {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(mut self, v: u64) -> Fields {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn raw(mut self, b: &[u8]) -> Fields {
        self.0.extend_from_slice(b);
        self
    }
}

// ------------------------------------------------------------------ memory

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// An mmap'd range, unmapped when dropped (it is kept in an `Arc` while a thread may touch it).
struct Mapping {
    addr: usize,
    len: usize,
    /// How many bytes from `addr` the fuzzer may read or write (0: none): only the first page
    /// of a readable or writable mapping of an fd at offset 0, which is a vCPU's kvm_run.
    touchable: usize,
    prot: i32,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, off)`: where the kernel chooses (`flags` is never
    /// MAP_FIXED), so nothing already mapped is replaced.
    fn new(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Mapping, i32> {
        let flags = flags & !libc::MAP_FIXED;
        // SAFETY: a new mapping at an address the kernel chooses; nothing refers to it yet.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        let len = len.next_multiple_of(PAGE);
        let touchable = if off == 0 && prot & RW != 0 { len.min(PAGE) } else { 0 };
        Ok(Mapping { addr: p as usize, len, touchable, prot })
    }

    /// Anonymous memory, or the end of the run if there is none.
    fn anon(len: usize, prot: i32) -> Mapping {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        Mapping::new(len, prot, flags, -1, 0).unwrap_or_else(|e| fail(&format!("mmap of {len} bytes: {e}")))
    }

    fn poke(&self, off: usize, v: u8) {
        if off < self.touchable && self.prot & libc::PROT_WRITE != 0 {
            // SAFETY: `off` is inside the mapping's first page, mapped writable for as long as
            // `self` lives; the kernel reads and writes the kvm_run page too, hence an atomic.
            unsafe { AtomicU8::from_ptr((self.addr + off) as *mut u8) }.store(v, Relaxed);
        }
    }

    fn peek(&self, off: usize) -> u8 {
        if off < self.touchable && self.prot & libc::PROT_READ != 0 {
            // SAFETY: as for `poke`, a readable byte of the first page.
            unsafe { AtomicU8::from_ptr((self.addr + off) as *mut u8) }.load(Relaxed)
        } else {
            0
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is this mapping's own, and the last `Arc` to it is going: no thread
        // touches it any more.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// This thread's page for ioctl arguments, followed by an inaccessible guard page: a struct at
/// the page's end is cut short by it (a partial copy: EFAULT).
struct Scratch(Mapping);

impl Scratch {
    fn new() -> Scratch {
        let m = Mapping::anon(2 * PAGE, RW);
        // SAFETY: the second page of the mapping just made; nothing refers to it.
        if unsafe { libc::mprotect((m.addr + PAGE) as *mut libc::c_void, PAGE, libc::PROT_NONE) } != 0 {
            fail("mprotect of the guard page");
        }
        Scratch(m)
    }

    fn addr(&self, off: usize) -> u64 {
        (self.0.addr + off) as u64
    }

    /// Write `bytes` at `off`, as far as the page goes.
    fn write(&mut self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(PAGE.saturating_sub(off));
        // SAFETY: `[off, off + n)` is in the scratch page, this thread's alone (the kernel
        // writes it only during this thread's ioctls).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.0.addr + off) as *mut u8, n) };
    }

    fn read_u32(&self, off: usize) -> Option<u32> {
        // SAFETY: 4 bytes inside the scratch page (checked), read unaligned.
        (off + 4 <= PAGE).then(|| unsafe { ((self.0.addr + off) as *const u32).read_unaligned() })
    }

    /// Where `addr` is in the scratch page, if it is.
    fn offset_of(&self, addr: u64) -> Option<usize> {
        addr.checked_sub(self.0.addr as u64).filter(|&o| o < PAGE as u64).map(|o| o as usize)
    }
}

/// The guest RAM that memory slots point at: AREAS slots of AREA_SIZE bytes in one reservation,
/// each either anonymous memory (`true`) or PROT_NONE (`false`, "unmapped"). A slot is never
/// really unmapped: an address range a guest may still write through (pages the module pinned
/// and lent) must not become one of this process's own allocations.
struct Areas {
    space: Mapping,
    mapped: Vec<Mutex<bool>>,
}

impl Areas {
    fn new(rng: &mut Rng) -> Areas {
        let areas = Areas {
            space: Mapping::anon(AREAS * AREA_SIZE, libc::PROT_NONE),
            mapped: (0..AREAS).map(|_| Mutex::new(false)).collect(),
        };
        for i in 0..AREAS {
            areas.replace(i, true);
            areas.fill(i, rng);
        }
        areas
    }

    fn slot(&self, i: usize) -> usize {
        self.space.addr + i * AREA_SIZE
    }

    /// The address of `pages` pages inside the reservation.
    fn range(&self, pages: u64, rng: &mut Rng) -> u64 {
        let total = (AREAS * AREA_SIZE / PAGE) as u64;
        self.space.addr as u64 + rng.below(total - pages.min(total) + 1) * PAGE as u64
    }

    /// Any address inside the reservation.
    fn any(&self, rng: &mut Rng) -> u64 {
        self.space.addr as u64 + rng.below((AREAS * AREA_SIZE - 16) as u64)
    }

    /// Slot `i` replaced, in one mmap(MAP_FIXED), by fresh zeroes (`accessible`) or PROT_NONE.
    fn replace(&self, i: usize, accessible: bool) {
        let mut mapped = lock(&self.mapped[i]);
        let prot = if accessible { RW } else { libc::PROT_NONE };
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
        // SAFETY: slot i of our own reservation, which nothing in Rust refers into; fills hold
        // the slot's lock, held here too.
        let p = unsafe { libc::mmap(self.slot(i) as *mut libc::c_void, AREA_SIZE, prot, flags, -1, 0) };
        *mapped = accessible && p != libc::MAP_FAILED;
    }

    /// Guest code in up to 16 pages of slot `i` (at its start half the time), if it is mapped.
    fn fill(&self, i: usize, rng: &mut Rng) {
        let mapped = lock(&self.mapped[i]);
        if !*mapped {
            return;
        }
        let start = if rng.one_in(2) { 0 } else { rng.index(AREA_SIZE / PAGE) * PAGE };
        let end = (start + (1 + rng.index(16)) * PAGE).min(AREA_SIZE);
        for off in (start..end).step_by(4) {
            let word = rng.guest_word();
            // SAFETY: inside slot i, readable and writable while we hold its lock; a guest may
            // write the same memory meanwhile (outside this program), hence an atomic store.
            unsafe { AtomicU32::from_ptr((self.slot(i) + off) as *mut u32) }.store(word, Relaxed);
        }
    }
}

// ------------------------------------------------------------------ the pool of fds

/// What the fuzzer knows of a VM, shared by its vCPUs.
#[derive(Default)]
struct VmState {
    /// A KVM_SET_USER_MEMORY_REGION succeeded: its guests run code, and only stop on a signal.
    has_memory: AtomicBool,
}

struct Vm {
    serial: u64,
    fd: Arc<OwnedFd>,
    state: Arc<VmState>,
}

struct Vcpu {
    serial: u64,
    fd: Arc<OwnedFd>,
    state: Arc<VmState>,
    /// Its kvm_run page, mapped shared (for `immediate_exit`).
    run: Option<Arc<Mapping>>,
}

struct Device {
    serial: u64,
    fd: Arc<OwnedFd>,
}

/// A mapping of an fd, and the VM it belongs to (0: none).
struct FdMap {
    serial: u64,
    map: Arc<Mapping>,
}

/// The fds and mappings the threads share. Whatever leaves it is dropped after the lock is let
/// go (closing a VM's last fd destroys it, which takes a while).
#[derive(Default)]
struct Pool {
    vms: Vec<Vm>,
    vcpus: Vec<Vcpu>,
    devices: Vec<Device>,
    maps: Vec<FdMap>,
    eventfds: Vec<Arc<OwnedFd>>,
}

/// Which of lists of `sizes` the `i`th element of their concatenation is in, and where.
fn locate(sizes: &[usize], mut i: usize) -> Option<(usize, usize)> {
    for (list, &n) in sizes.iter().enumerate() {
        if i < n {
            return Some((list, i));
        }
        i -= n;
    }
    None
}

/// The elements of `v` that `f` selects, taken out of it.
fn split_off<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep) = std::mem::take(v).into_iter().partition(f);
    *v = keep;
    out
}

impl Pool {
    /// The VMs something in the pool belongs to, oldest first.
    fn live(&self) -> Vec<u64> {
        let mut s: Vec<u64> = (self.vms.iter().map(|v| v.serial))
            .chain(self.vcpus.iter().map(|v| v.serial))
            .chain(self.devices.iter().map(|d| d.serial))
            .chain(self.maps.iter().map(|m| m.serial))
            .filter(|&s| s != 0)
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// VM `serial`'s fds and mappings, taken out.
    fn take_vm(&mut self, serial: u64) -> Pool {
        Pool {
            vms: split_off(&mut self.vms, |v| v.serial == serial),
            vcpus: split_off(&mut self.vcpus, |v| v.serial == serial),
            devices: split_off(&mut self.devices, |d| d.serial == serial),
            maps: split_off(&mut self.maps, |m| m.serial == serial),
            eventfds: Vec::new(),
        }
    }

    fn absorb(&mut self, other: Pool) {
        self.vms.extend(other.vms);
        self.vcpus.extend(other.vcpus);
        self.devices.extend(other.devices);
        self.maps.extend(other.maps);
        self.eventfds.extend(other.eventfds);
    }

    /// Back within bounds: the oldest VMs, mappings and eventfds go; returned to be dropped.
    fn trim(&mut self) -> Pool {
        let mut doomed = Pool::default();
        loop {
            let live = self.live();
            if live.len() <= MAX_VMS {
                break;
            }
            let oldest = self.take_vm(live[0]);
            doomed.absorb(oldest);
        }
        while self.maps.len() > MAX_MAPS {
            doomed.maps.push(self.maps.remove(0));
        }
        while self.eventfds.len() > MAX_EVENTFDS {
            doomed.eventfds.push(self.eventfds.remove(0));
        }
        doomed
    }
}

/// What the fuzz threads share.
struct Shared {
    /// First, so that the VMs go (when the run ends) while the guest areas are still there.
    pool: Mutex<Pool>,
    kvm: Arc<OwnedFd>,
    mmap_size: usize,
    /// KVM_GET_REG_LIST's ids (or a few known ones if it failed).
    reg_ids: Vec<u64>,
    areas: Areas,
    /// Address space with nothing accessible in it: memory slots there pin nothing.
    hole: Mapping,
    serials: AtomicU64,
}

impl Shared {
    fn new(kvm: Arc<OwnedFd>, seed: u64) -> Shared {
        let mmap_size = match ioctl_any(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0) {
            Ok(n) if n > 0 => n as usize,
            _ => PAGE,
        };
        let hole = [1usize << 41, 1 << 36, 1 << 32, 1 << 30]
            .into_iter()
            .find_map(|len| {
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
                Mapping::new(len, libc::PROT_NONE, flags, -1, 0).ok()
            })
            .unwrap_or_else(|| fail("reserving address space"));
        Shared {
            pool: Mutex::new(Pool::default()),
            reg_ids: register_ids(&kvm),
            kvm,
            mmap_size,
            areas: Areas::new(&mut Rng::new(seed, 0)),
            hole,
            serials: AtomicU64::new(0),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        lock(&self.pool)
    }

    fn add(&self, f: impl FnOnce(&mut Pool)) {
        let doomed = {
            let mut pool = self.pool();
            f(&mut pool);
            pool.trim()
        };
        drop(doomed);
    }

    fn add_vm(&self, vm: OwnedFd) {
        let serial = self.serials.fetch_add(1, Relaxed) + 1;
        self.add(|p| p.vms.push(Vm { serial, fd: Arc::new(vm), state: Arc::default() }));
    }

    fn map_run(&self, vcpu: &OwnedFd) -> Option<Arc<Mapping>> {
        Mapping::new(self.mmap_size, RW, libc::MAP_SHARED, vcpu.as_raw_fd(), 0).ok().map(Arc::new)
    }

    fn add_vcpu(&self, vcpu: OwnedFd, serial: u64, state: Arc<VmState>) {
        let run = self.map_run(&vcpu);
        self.add(|p| p.vcpus.push(Vcpu { serial, fd: Arc::new(vcpu), state, run }));
    }
}

/// The ids of a vCPU's registers, from KVM_GET_REG_LIST as a VMM asks (n = 0 first).
fn register_ids(kvm: &OwnedFd) -> Vec<u64> {
    let known = vec![REG_PC, REG_PSTATE, REG_X0, REG_MPIDR];
    let Ok(vm) = ioctl_any(kvm, KVM_CREATE_VM, 0) else { return known };
    let vm = fd(vm);
    let Ok(vcpu) = ioctl_any(&vm, KVM_CREATE_VCPU, 0) else { return known };
    let vcpu = fd(vcpu);
    let mut probe = [0u64];
    let _ = ioctl_any(&vcpu, KVM_GET_REG_LIST, probe.as_mut_ptr() as u64);
    let n = probe[0].min(4096) as usize;
    let mut list = vec![0u64; n + 1];
    list[0] = n as u64;
    match ioctl_any(&vcpu, KVM_GET_REG_LIST, list.as_mut_ptr() as u64) {
        Ok(_) if n > 0 => list[1..].to_vec(),
        _ => known,
    }
}

/// An ioctl, whatever its argument.
fn ioctl_any(fd: &OwnedFd, nr: Nr, arg: u64) -> Result<i32, i32> {
    // SAFETY: `fd` is open for the call. The arguments are made (see `Fuzzer::argument`) so that
    // all memory the kernel may write through them is the caller's scratch page or buffer, the
    // guest areas (raw memory nothing in Rust borrows), or addresses where nothing is mapped.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), nr as _, arg as libc::c_ulong) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

// ------------------------------------------------------------------ a fuzz thread

/// What a thread did.
struct Stats {
    ioctls: u64,
    errors: u64,
    successes: u64,
    vms: u64,
    /// Errors by errno (the last counts 255 and above).
    errnos: Vec<u64>,
    /// Successes by index in CMDS (the last: numbers not there).
    ok_by_cmd: Vec<u64>,
    slowest: (Duration, usize),
}

impl Stats {
    fn new() -> Stats {
        Stats {
            ioctls: 0,
            errors: 0,
            successes: 0,
            vms: 0,
            errnos: vec![0; 256],
            ok_by_cmd: vec![0; CMDS.len() + 1],
            slowest: (Duration::ZERO, CMDS.len()),
        }
    }

    fn record(&mut self, nr: Nr, r: Result<i32, i32>, took: Duration) {
        self.ioctls += 1;
        let cmd = index_of(nr);
        match r {
            Ok(_) => {
                self.successes += 1;
                self.ok_by_cmd[cmd] += 1;
            }
            Err(e) => {
                self.errors += 1;
                self.errnos[e.clamp(0, 255) as usize] += 1;
            }
        }
        if took > self.slowest.0 {
            self.slowest = (took, cmd);
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.ioctls += other.ioctls;
        self.errors += other.errors;
        self.successes += other.successes;
        self.vms += other.vms;
        for (a, b) in (self.errnos.iter_mut().zip(&other.errnos)).chain(self.ok_by_cmd.iter_mut().zip(&other.ok_by_cmd))
        {
            *a += b;
        }
        if other.slowest.0 > self.slowest.0 {
            self.slowest = other.slowest;
        }
    }
}

/// The fd an ioctl goes to, and what comes with it; the `Arc`s keep it all alive for the call.
struct Target {
    on: u8,
    fd: Arc<OwnedFd>,
    /// Its VM's serial (0 for /dev/kvm).
    serial: u64,
    vm: Option<Arc<VmState>>,
    run: Option<Arc<Mapping>>,
}

struct Fuzzer<'a> {
    sh: &'a Shared,
    rng: Rng,
    scratch: Scratch,
    stats: Stats,
    /// Fds whose numbers the current ioctl's argument holds (eventfds, ...).
    keep: Vec<Arc<OwnedFd>>,
}

fn fuzz_thread(sh: &Shared, seed: u64, index: usize, budget: u64) -> Stats {
    let mut f = Fuzzer {
        sh,
        rng: Rng::new(seed, index as u64 + 1),
        scratch: Scratch::new(),
        stats: Stats::new(),
        keep: Vec::new(),
    };
    while f.stats.ioctls < budget {
        if f.rng.one_in(8) {
            f.side_action();
        }
        f.one_ioctl();
    }
    f.stats
}

impl Fuzzer<'_> {
    fn one_ioctl(&mut self) {
        let (target, vms) = self.pick_target();
        let cmd = self.pick_cmd(target.on, vms);
        let mut nr = self.mutate(cmd.nr);
        let bytes = self.rng.bytes(PAGE);
        self.scratch.write(0, &bytes);
        let arg = self.argument(cmd.kind);
        if nr == KVM_RUN && target.on == VCPU && !self.prepare_run(&target) {
            // A guest with RAM and no kvm_run page to stop it by: no run.
            nr = KVM_GET_REG_LIST;
        }
        let start = Instant::now();
        let r = ioctl_any(&target.fd, nr, arg);
        self.stats.record(nr, r, start.elapsed());
        if let Ok(v) = r {
            self.adopt(nr, &target, v, arg);
        }
        self.keep.clear();
    }

    /// An fd from the pool (a vCPU's most often), and how many VMs the pool holds.
    fn pick_target(&mut self) -> (Target, usize) {
        let sh = self.sh;
        let want = self.rng.weighted(&[(6, KVM), (34, VM), (42, VCPU), (18, DEV)]);
        let pool = sh.pool();
        let target = match want {
            VCPU if !pool.vcpus.is_empty() => {
                let v = &pool.vcpus[self.rng.index(pool.vcpus.len())];
                let vm = Some(v.state.clone());
                Some(Target { on: VCPU, fd: v.fd.clone(), serial: v.serial, vm, run: v.run.clone() })
            }
            DEV if !pool.devices.is_empty() => {
                let d = &pool.devices[self.rng.index(pool.devices.len())];
                Some(Target { on: DEV, fd: d.fd.clone(), serial: d.serial, vm: None, run: None })
            }
            KVM => None,
            _ if !pool.vms.is_empty() => {
                let v = &pool.vms[self.rng.index(pool.vms.len())];
                Some(Target { on: VM, fd: v.fd.clone(), serial: v.serial, vm: Some(v.state.clone()), run: None })
            }
            _ => None,
        };
        let target = target.unwrap_or_else(|| Target { on: KVM, fd: sh.kvm.clone(), serial: 0, vm: None, run: None });
        (target, pool.vms.len())
    }

    /// Mostly an ioctl meant for an fd of kind `on`; one time in five, any.
    fn pick_cmd(&mut self, on: u8, vms: usize) -> &'static Cmd {
        if self.rng.one_in(5) {
            return &CMDS[self.rng.index(CMDS.len())];
        }
        let choices: Vec<(u32, &'static Cmd)> =
            CMDS.iter().filter(|c| c.on & on != 0).map(|c| (weight(c, on, vms), c)).collect();
        self.rng.weighted(&choices)
    }

    /// The ioctl number as is, mostly; else with its size or direction corrupted, or random.
    fn mutate(&mut self, nr: Nr) -> Nr {
        let nr = match self.rng.below(100) {
            0..=7 => (nr & !(0x3fff << 16)) | (self.rng.below(0x4000) << 16),
            8..=10 => (nr & !(3 << 30)) | (self.rng.below(4) << 30),
            11..=13 => self.rng.next() & 0xffff_ffff,
            14..=15 => (self.rng.next() & 0xffff_0000) | 0xae00 | self.rng.below(256),
            _ => return nr,
        };
        // Type 'X' is the VFS's (FIFREEZE, FITHAW, FICLONE, FITRIM), acted on before the
        // driver sees the call: not ours to fuzz.
        if (nr >> 8) & 0xff == 0x58 { (nr & !0xff00) | 0xae00 } else { nr }
    }

    /// KVM_RUN on `t` may go ahead: its VM has no RAM, or `immediate_exit` is set (mostly) in
    /// its kvm_run page. Either way the watchdog's signal ends a run that does not stop.
    fn prepare_run(&mut self, t: &Target) -> bool {
        let has_memory = t.vm.as_ref().is_some_and(|s| s.has_memory.load(Relaxed));
        match &t.run {
            Some(run) => {
                let stop = if has_memory { !self.rng.one_in(8) } else { self.rng.one_in(2) };
                run.poke(1, u8::from(stop));
                true
            }
            None => !has_memory,
        }
    }

    /// Keep what a successful ioctl made: fds, and that a VM has RAM.
    fn adopt(&mut self, nr: Nr, t: &Target, v: i32, arg: u64) {
        match (nr, t.on) {
            (KVM_CREATE_VM, KVM) => {
                self.stats.vms += 1;
                self.sh.add_vm(fd(v));
            }
            (KVM_CREATE_VCPU, VM) => {
                let state = t.vm.clone().unwrap_or_default();
                self.sh.add_vcpu(fd(v), t.serial, state);
            }
            (KVM_CREATE_DEVICE, VM) => {
                // struct kvm_create_device { u32 type, fd, flags }: the fd is there unless the
                // call only tested (flags bit 0); an argument outside the scratch page is lost.
                let off = self.scratch.offset_of(arg);
                let flags = off.and_then(|o| self.scratch.read_u32(o + 8));
                let dev = off.and_then(|o| self.scratch.read_u32(o + 4));
                if let (Some(0), Some(dev)) = (flags.map(|f| f & 1), dev.filter(|&d| d as i32 >= 0)) {
                    let serial = t.serial;
                    let dev = Arc::new(fd(dev as i32));
                    self.sh.add(|p| p.devices.push(Device { serial, fd: dev }));
                }
            }
            (KVM_SET_USER_MEMORY_REGION, VM) => {
                if let Some(s) = &t.vm {
                    s.has_memory.store(true, Relaxed);
                }
            }
            _ => {}
        }
    }

    // -------------------------------------------------------------- arguments

    /// An argument for an ioctl taking `kind`: mostly well-formed, else random bytes, a bad
    /// pointer or a plain integer.
    fn argument(&mut self, kind: Kind) -> u64 {
        match self.rng.below(20) {
            0..=11 => self.structured(kind),
            12..=14 => {
                let off = self.struct_offset(kind.size());
                self.scratch.addr(off)
            }
            15..=17 => self.bad_pointer(),
            _ => self.random_int(),
        }
    }

    fn structured(&mut self, kind: Kind) -> u64 {
        let fields = match kind {
            Kind::Zero => return if self.rng.one_in(8) { self.random_int() } else { 0 },
            Kind::VmType => return self.vm_type(),
            Kind::VcpuId => return self.vcpu_id(),
            Kind::Cap => return if self.rng.one_in(4) { self.rng.next() } else { self.rng.below(256) },
            Kind::MemRegion => self.mem_region(),
            Kind::OneReg => self.one_reg(),
            Kind::RegList => self.reg_list(),
            Kind::VcpuInit => self.vcpu_init(),
            Kind::IrqLine => self.irq_line(),
            Kind::Irqfd => self.irqfd(),
            Kind::Ioeventfd => self.ioeventfd(),
            Kind::DeviceAttr => self.device_attr(),
            Kind::CreateDevice => self.create_device(),
            Kind::Out(n) => Fields(self.rng.bytes(n)),
            Kind::MpState => Fields::default().u32(self.small_or_random(5)),
            Kind::SignalMask => self.signal_mask(),
            Kind::DirtyLog => self.dirty_log(),
            Kind::EnableCap => self.enable_cap(),
            Kind::Finalize => Fields::default().u32(self.small_or_random(8)),
            Kind::GuestDebug => self.guest_debug(),
        };
        self.place(&fields.0)
    }

    /// `bytes` put in the scratch page; their address.
    fn place(&mut self, bytes: &[u8]) -> u64 {
        let off = self.struct_offset(bytes.len());
        self.scratch.write(off, bytes);
        self.scratch.addr(off)
    }

    /// Where a struct of `size` bytes goes: mostly the page's start; else elsewhere below
    /// VALUES, aligned or not, or across the end of the page into the guard page.
    fn struct_offset(&mut self, size: usize) -> usize {
        let room = VALUES.saturating_sub(size) as u64;
        match self.rng.below(8) {
            0..=4 => 0,
            5 => 8 * self.rng.below(room / 8 + 1) as usize,
            6 => 1 + self.rng.below(room) as usize,
            _ => PAGE - 1 - self.rng.index(size.max(1)),
        }
    }

    /// A pointer to `value` (in the scratch page, sometimes across its end), or a bad one.
    fn value_ptr(&mut self, value: &[u8]) -> u64 {
        let off = match self.rng.below(10) {
            0..=6 => VALUES + 8 * self.rng.index((PAGE - VALUES) / 8 - 2),
            7 => PAGE - 1 - self.rng.index(15),
            _ => return self.bad_pointer(),
        };
        self.scratch.write(off, value);
        self.scratch.addr(off)
    }

    /// A pointer no ioctl should get anywhere with; or one into memory it may write (harmless).
    fn bad_pointer(&mut self) -> u64 {
        let (sh, r) = (self.sh, &mut self.rng);
        match r.below(13) {
            0 => 0,
            1 => 1,
            2 => 0xfff,
            3 => 0xffff_ffff_ffff_f000,
            4 => 0xffff_8000_0000_0000,
            5 => 0xffff_0000_0000_0000 | (r.next() & 0x0000_ffff_ffff_fff8),
            6 => 0x0100_0000_0000_0000 | sh.hole.addr as u64, // tagged / non-canonical
            7 => u64::MAX,
            8 => self.scratch.addr(PAGE),                  // the guard page
            9 => self.scratch.addr(PAGE - 1 - r.index(8)), // across into it
            10 => sh.hole.addr as u64 + r.below((sh.hole.len - PAGE) as u64),
            11 => sh.areas.any(r),
            _ => self.scratch.addr(1 + r.index(7)), // misaligned, random bytes
        }
    }

    /// An integer for an ioctl that wants a pointer or another integer (never one that could
    /// point at this process's memory).
    fn random_int(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => 1,
            2 => self.rng.below(16),
            3 => self.rng.below(1 << 15),
            4 => u64::MAX,
            _ => self.rng.next() | (1 << 63),
        }
    }

    /// Mostly below `n`, else random.
    fn small_or_random(&mut self, n: u64) -> u32 {
        if self.rng.one_in(4) { self.rng.next() as u32 } else { self.rng.below(n) as u32 }
    }

    fn vm_type(&mut self) -> u64 {
        if self.rng.below(8) != 0 {
            return 0;
        }
        let r = self.rng.next();
        self.rng.pick(&[1, 32, 36, 40, 44, 48, 52, 0xdead, 0x100, r])
    }

    fn vcpu_id(&mut self) -> u64 {
        if self.rng.below(5) != 0 {
            return self.rng.below(11);
        }
        let r = self.rng.next();
        self.rng.pick(&[u64::MAX, 1 << 32, 255, 256, 0x8000_0000, r])
    }

    /// A guest-physical address: mostly in guest RAM's usual place, else the device frames,
    /// elsewhere, near the top (sums overflow) or unaligned.
    fn gpa(&mut self) -> u64 {
        let r = self.rng.next();
        match self.rng.below(10) {
            0..=4 => GUEST_RAM + PAGE as u64 * self.rng.below(512),
            5 => 0,
            6 => self.rng.pick(&[0x0800_0000, 0x080a_0000, 0x0900_0000]),
            7 => r & ((1 << 40) - 1) & !0xfff,
            8 => self.rng.pick(&[0xffff_ffff_ffff_f000, 1 << 48, 1 << 52, 1 << 63]),
            _ => r,
        }
    }

    /// A memory slot's size and the VMM memory behind it, chosen together so that whatever this
    /// process has behind the slot is in the guest areas, or else inaccessible: small slots
    /// over the areas or the hole, a 1 GiB one over the hole, huge ones over the hole (if it is
    /// big enough) or kernel addresses, unaligned or empty ones anywhere.
    fn backing(&mut self) -> (u64, u64) {
        let (sh, r) = (self.sh, &mut self.rng);
        let hole = (sh.hole.addr as u64, sh.hole.len as u64);
        let kernel = 0xffff_8000_0000_0000;
        match r.below(10) {
            0..=5 => {
                let pages = 1 + r.below(1024);
                let uaddr = match r.below(10) {
                    0..=6 => sh.areas.range(pages, r),
                    7..=8 => hole.0 + r.below(hole.1 / PAGE as u64 - pages) * PAGE as u64,
                    _ => r.pick(&[kernel, sh.areas.space.addr as u64 + 1, 0xffff_ffff_ffff_f000]),
                };
                (pages * PAGE as u64, uaddr)
            }
            6 => (1 << 30, if hole.1 >= 1 << 30 { hole.0 } else { kernel }),
            7 => {
                let any = r.next() & !0xfff;
                let size = r.pick(&[1 << 40, 1 << 47, 1 << 48, 0xffff_ffff_ffff_f000, any]);
                (size, if size <= hole.1 { hole.0 } else { kernel })
            }
            8 => (0, sh.areas.range(1, r)),
            _ => (r.below(1024) * PAGE as u64 + 1 + r.below(PAGE as u64 - 1), sh.areas.range(1024, r)),
        }
    }

    /// `struct kvm_userspace_memory_region { u32 slot, flags; u64 guest_phys_addr,
    /// memory_size, userspace_addr; }`.
    fn mem_region(&mut self) -> Fields {
        let slot = if self.rng.one_in(5) { self.rng.next() as u32 } else { self.rng.below(10) as u32 };
        let flags = if self.rng.below(4) != 0 { 0 } else { self.small_or_random(8) };
        let gpa = self.gpa();
        let (size, uaddr) = self.backing();
        Fields::default().u32(slot).u32(flags).u64(gpa).u64(size).u64(uaddr)
    }

    fn reg_id(&mut self) -> u64 {
        let ids = &self.sh.reg_ids;
        let listed = ids[self.rng.index(ids.len())];
        match self.rng.below(10) {
            0..=3 => listed,
            4..=5 => REG_PC,
            6 => REG_PSTATE,
            7 => REG_X0 + 2 * self.rng.below(31),
            8 => (listed & !(0xf << 52)) | (self.rng.below(16) << 52), // its size field wrong
            _ if self.rng.one_in(2) => 0x6030_0000_0000_0000 | (self.rng.next() & 0xffff_ffff),
            _ => self.rng.next(),
        }
    }

    /// A value for register `id` (16 bytes: a 128-bit register's), mostly one that gets a
    /// guest somewhere: PC in guest RAM, PSTATE at EL1 (or at EL2, EL3, AArch32...).
    fn reg_value(&mut self, id: u64) -> Vec<u8> {
        let r = self.rng.next();
        let v = match id {
            REG_PC if !self.rng.one_in(4) => GUEST_RAM + 4 * self.rng.below(1 << 16),
            REG_PSTATE => self.rng.pick(&[0x3c5, 0x3c5, 0x3c4, 0x5, 0x4, 0x9, 0xd, 0x10, 0x1c5, r]),
            _ => self.rng.pick(&[0, 1, r, r & 0xffff, GUEST_RAM + (r & 0x1f_fff8)]),
        };
        let mut bytes = v.to_le_bytes().to_vec();
        bytes.extend(self.rng.bytes(8));
        bytes
    }

    /// `struct kvm_one_reg { u64 id, addr; }`.
    fn one_reg(&mut self) -> Fields {
        let id = self.reg_id();
        let value = self.reg_value(id);
        let addr = self.value_ptr(&value);
        Fields::default().u64(id).u64(addr)
    }

    /// `struct kvm_reg_list { u64 n; u64 reg[]; }` (the ids' room is the rest of the page).
    fn reg_list(&mut self) -> Fields {
        let listed = self.sh.reg_ids.len() as u64;
        let r = self.rng.next();
        Fields::default().u64(self.rng.pick(&[0, 1, listed - 1, listed, listed + 1, 1000, u64::MAX, r]))
    }

    /// `struct kvm_vcpu_init { u32 target, features[7]; }`.
    fn vcpu_init(&mut self) -> Fields {
        let target = if self.rng.below(5) < 3 { 5 } else { self.small_or_random(8) };
        let (r, bit) = (self.rng.next() as u32, 1 << self.rng.below(8));
        let feature0 = self.rng.pick(&[0, 1 << 2, (1 << 0) | (1 << 2), bit, r]);
        let mut f = Fields::default().u32(target).u32(feature0);
        for _ in 1..7 {
            let v = if self.rng.one_in(5) { self.rng.next() as u32 } else { 0 };
            f = f.u32(v);
        }
        f
    }

    /// `struct kvm_irq_level { u32 irq, level; }`: type in bits 24-27, vCPU in 16-23, number.
    fn irq_line(&mut self) -> Fields {
        let irq = if self.rng.one_in(8) {
            self.rng.next() as u32
        } else {
            let any_kind = (self.rng.below(16) as u32) << 24;
            let kind = self.rng.pick(&[IRQ_LINE_SPI, IRQ_LINE_SPI, 0, 2 << 24, 3 << 24, any_kind]);
            let vcpu = if self.rng.one_in(2) { 0 } else { (self.rng.below(256) as u32) << 16 };
            let (ppi, spi, r) =
                (self.rng.below(32) as u32, 32 + self.rng.below(64) as u32, self.rng.below(1 << 16) as u32);
            let num = self.rng.pick(&[ppi, spi, 40, 63, 64, 95, 1019, 1020, 1023, 1024, r]);
            kind | vcpu | num
        };
        let level = self.rng.pick(&[0, 1, 1, 2, u32::MAX]);
        Fields::default().u32(irq).u32(level)
    }

    /// An fd number for a struct: an eventfd mostly, else one of the pool's other fds, or none.
    fn some_fd(&mut self) -> u32 {
        match self.rng.below(10) {
            0..=5 => match self.an_eventfd() {
                Some(e) => {
                    let n = e.as_raw_fd() as u32;
                    self.keep.push(e);
                    n
                }
                None => u32::MAX,
            },
            6..=7 => {
                let sh = self.sh;
                let pool = sh.pool();
                let fds: Vec<&Arc<OwnedFd>> = (pool.vms.iter().map(|v| &v.fd))
                    .chain(pool.vcpus.iter().map(|v| &v.fd))
                    .chain(pool.devices.iter().map(|d| &d.fd))
                    .collect();
                if fds.is_empty() {
                    return u32::MAX;
                }
                let f = fds[self.rng.index(fds.len())].clone();
                drop(pool);
                let n = f.as_raw_fd() as u32;
                self.keep.push(f);
                n
            }
            _ => self.rng.pick(&[u32::MAX, 0, 1, 2, 1023, 65535, i32::MAX as u32, 0x8000_0000]),
        }
    }

    fn pad(&mut self, n: usize) -> Vec<u8> {
        if self.rng.one_in(4) { self.rng.bytes(n) } else { vec![0; n] }
    }

    /// `struct kvm_irqfd { u32 fd, gsi, flags, resamplefd; u8 pad[16]; }`.
    fn irqfd(&mut self) -> Fields {
        let efd = self.some_fd();
        let r = self.rng.next() as u32;
        let small = self.rng.below(64) as u32;
        let gsi = self.rng.pick(&[small, 8, 0, 991, 992, 1023, u32::MAX, r]);
        let flags = self.rng.pick(&[0, 0, 1, 2, 3, r]);
        let resample = self.some_fd();
        let pad = self.pad(16);
        Fields::default().u32(efd).u32(gsi).u32(flags).u32(resample).raw(&pad)
    }

    /// `struct kvm_ioeventfd { u64 datamatch, addr; u32 len; s32 fd; u32 flags; u8 pad[36]; }`.
    fn ioeventfd(&mut self) -> Fields {
        let r = self.rng.next();
        let datamatch = self.rng.pick(&[0, 40, r, r & 0xff]);
        let (device, top) = (0x0900_1000 + 4 * self.rng.below(16), u64::MAX - self.rng.below(8));
        let addr = self.rng.pick(&[device, 0x0800_0000, GUEST_RAM + (r & 0x1f_f000), top, r]);
        let len = self.rng.pick(&[0, 1, 2, 4, 4, 8, 3, 16, r as u32]);
        let efd = self.some_fd();
        let flags = self.rng.pick(&[0, 1, 1, 4, 5, 2, 8, r as u32 >> 16]);
        let pad = self.pad(36);
        Fields::default().u64(datamatch).u64(addr).u32(len).u32(efd).u32(flags).raw(&pad)
    }

    /// `struct kvm_device_attr { u32 flags, group; u64 attr, addr; }`, `addr` pointing at a
    /// value that matters for the GIC's groups (frame addresses, numbers of interrupts).
    fn device_attr(&mut self) -> Fields {
        let flags = if self.rng.below(10) != 0 { 0 } else { self.rng.next() as u32 };
        let group = self.small_or_random(9);
        let attr = match self.rng.below(10) {
            0 | 1 => self.rng.next(),
            // A GICv2 register (DIST_REGS, CPU_REGS): an offset, the CPU in bits 39:32.
            2..=4 => {
                self.rng.pick(&[0, 4, 0x100, 0x204, 0x800, 0x828, 0xc08, 0xf00, 0xf20, 0xffc, 0x1000])
                    | (self.rng.below(10) << 32)
            }
            _ => self.rng.below(5),
        };
        let r = self.rng.next();
        let value = self.rng.pick(&[
            0x0800_0000,
            0x080a_0000,
            0x0801_0000,
            64,
            96,
            1024,
            1056,
            0,
            63,
            u64::MAX,
            0x1000,
            r & ((1 << 40) - 1) & !0xffff,
            r,
        ]);
        let addr = self.value_ptr(&value.to_le_bytes());
        Fields::default().u32(flags).u32(group).u64(attr).u64(addr)
    }

    /// `struct kvm_create_device { u32 type, fd, flags; }`.
    fn create_device(&mut self) -> Fields {
        // Both GICs: the module makes the machine's kind and refuses the other.
        let kind = match self.rng.below(5) {
            0 | 1 => KVM_DEV_TYPE_ARM_VGIC_V3,
            2 => KVM_DEV_TYPE_ARM_VGIC_V2,
            _ => self.small_or_random(11),
        };
        let flags = if self.rng.below(10) < 7 { 0 } else { self.rng.pick(&[1, 2, u32::MAX]) };
        Fields::default().u32(kind).u32(self.rng.next() as u32).u32(flags)
    }

    /// `struct kvm_signal_mask { u32 len; u8 sigset[len]; }`, the set empty (nothing blocked,
    /// so KVM, which takes it, still lets the watchdog's signal through).
    fn signal_mask(&mut self) -> Fields {
        let any = self.rng.next() as u32;
        let len = self.rng.pick(&[8, 8, 0, 4, 128, any]);
        Fields::default().u32(len).raw(&[0; 128])
    }

    /// `struct kvm_dirty_log { u32 slot, pad; u64 dirty_bitmap; }`.
    fn dirty_log(&mut self) -> Fields {
        let slot = self.small_or_random(10);
        let bitmap = self.value_ptr(&[]);
        Fields::default().u32(slot).u32(0).u64(bitmap)
    }

    /// `struct kvm_enable_cap { u32 cap, flags; u64 args[4]; u8 pad[64]; }`.
    fn enable_cap(&mut self) -> Fields {
        let cap = self.small_or_random(256);
        let flags = if self.rng.one_in(4) { self.rng.next() as u32 } else { 0 };
        let mut f = Fields::default().u32(cap).u32(flags);
        for _ in 0..4 {
            let a = if self.rng.one_in(2) { self.rng.below(4) } else { self.rng.next() };
            f = f.u64(a);
        }
        let pad = self.pad(64);
        f.raw(&pad)
    }

    /// `struct kvm_guest_debug { u32 control, pad; u64 registers[64]; }`.
    fn guest_debug(&mut self) -> Fields {
        let r = self.rng.next() as u32;
        let control = self.rng.pick(&[0, 1, 3, 0x10001, r]);
        let regs = self.pad(512);
        Fields::default().u32(control).u32(0).raw(&regs)
    }

    // -------------------------------------------------------------- between ioctls

    fn side_action(&mut self) {
        let (sh, slot) = (self.sh, self.rng.index(AREAS));
        match self.rng.below(16) {
            0..=2 => self.close_something(),
            3..=4 => self.mmap_something(),
            5 => self.unmap_something(),
            6 => self.map_run_page(),
            7..=8 => self.touch_mapping(),
            9 => sh.areas.replace(slot, false),
            10 => sh.areas.replace(slot, true),
            11..=12 => sh.areas.fill(slot, &mut self.rng),
            13..=14 => self.signal_eventfd(),
            _ => self.drain_eventfd(),
        }
    }

    /// Close a VM, vCPU, device or eventfd fd (for good once no other thread is using it).
    fn close_something(&mut self) {
        let sh = self.sh;
        let mut pool = sh.pool();
        let sizes = [pool.vms.len(), pool.vcpus.len(), pool.devices.len(), pool.eventfds.len()];
        let mut gone = Pool::default();
        match locate(&sizes, self.rng.index(sizes.iter().sum())) {
            Some((0, i)) => gone.vms.push(pool.vms.remove(i)),
            Some((1, i)) => gone.vcpus.push(pool.vcpus.remove(i)),
            Some((2, i)) => gone.devices.push(pool.devices.remove(i)),
            Some((_, i)) => gone.eventfds.push(pool.eventfds.remove(i)),
            None => {}
        }
        drop(pool);
        drop(gone);
    }

    /// An fd to mmap (a vCPU's mostly), and the VM it belongs to.
    fn mappable(&mut self) -> (Arc<OwnedFd>, u64) {
        let sh = self.sh;
        let pool = sh.pool();
        match self.rng.below(10) {
            0..=6 if !pool.vcpus.is_empty() => {
                let v = &pool.vcpus[self.rng.index(pool.vcpus.len())];
                (v.fd.clone(), v.serial)
            }
            7 if !pool.vms.is_empty() => {
                let v = &pool.vms[self.rng.index(pool.vms.len())];
                (v.fd.clone(), v.serial)
            }
            8 if !pool.devices.is_empty() => {
                let d = &pool.devices[self.rng.index(pool.devices.len())];
                (d.fd.clone(), d.serial)
            }
            _ => (sh.kvm.clone(), 0),
        }
    }

    /// mmap an fd: the vCPU's kvm_run size at offset 0 mostly, else wrong sizes, offsets,
    /// protections and sharing.
    fn mmap_something(&mut self) {
        let (fd, serial) = self.mappable();
        let size = self.sh.mmap_size;
        let any = self.rng.index(1 << 16);
        let len = self.rng.pick(&[size, size, size, 0, 1, 2 * size, 3 * PAGE, any]);
        let off = match self.rng.below(8) {
            0..=4 => 0,
            5 => PAGE as i64,
            6 => (self.rng.below(64) * PAGE as u64) as i64,
            _ => self.rng.pick(&[1 << 40, -(PAGE as i64), size as i64 + 1]),
        };
        let prot = self.rng.pick(&[RW, RW, libc::PROT_READ, libc::PROT_WRITE, libc::PROT_NONE, RW | libc::PROT_EXEC]);
        let flags = self.rng.pick(&[
            libc::MAP_SHARED,
            libc::MAP_SHARED,
            libc::MAP_PRIVATE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            libc::MAP_PRIVATE | libc::MAP_POPULATE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        ]);
        if let Ok(m) = Mapping::new(len, prot, flags, fd.as_raw_fd(), off) {
            let map = Arc::new(m);
            self.sh.add(|p| p.maps.push(FdMap { serial, map }));
        }
    }

    /// munmap a mapping of an fd, or a vCPU's kvm_run page.
    fn unmap_something(&mut self) {
        let sh = self.sh;
        let mut pool = sh.pool();
        let gone = if self.rng.one_in(2) && !pool.maps.is_empty() {
            let i = self.rng.index(pool.maps.len());
            Some(pool.maps.remove(i).map)
        } else if !pool.vcpus.is_empty() {
            let i = self.rng.index(pool.vcpus.len());
            pool.vcpus[i].run.take()
        } else {
            None
        };
        drop(pool);
        drop(gone);
    }

    /// Give a vCPU without one its kvm_run page again.
    fn map_run_page(&mut self) {
        let sh = self.sh;
        let fd = {
            let pool = sh.pool();
            let bare: Vec<&Vcpu> = pool.vcpus.iter().filter(|v| v.run.is_none()).collect();
            if bare.is_empty() {
                return;
            }
            bare[self.rng.index(bare.len())].fd.clone()
        };
        let Some(run) = sh.map_run(&fd) else { return };
        let mut pool = sh.pool();
        let unused = match pool.vcpus.iter_mut().find(|v| Arc::ptr_eq(&v.fd, &fd) && v.run.is_none()) {
            Some(v) => v.run.replace(run),
            None => Some(run),
        };
        drop(pool);
        drop(unused);
    }

    /// Read and write bytes of a mapping (a kvm_run page: `immediate_exit`, an MMIO read's
    /// data, and fields only the kernel should write).
    fn touch_mapping(&mut self) {
        let sh = self.sh;
        let map = {
            let pool = sh.pool();
            let maps: Vec<&Arc<Mapping>> =
                pool.maps.iter().map(|m| &m.map).chain(pool.vcpus.iter().filter_map(|v| v.run.as_ref())).collect();
            if maps.is_empty() {
                return;
            }
            maps[self.rng.index(maps.len())].clone()
        };
        for _ in 0..1 + self.rng.below(8) {
            let off = if self.rng.one_in(2) { self.rng.index(64) } else { self.rng.index(map.touchable) };
            if self.rng.one_in(2) {
                map.poke(off, self.rng.next() as u8);
            } else {
                map.peek(off);
            }
        }
    }

    /// An eventfd: one of the pool's mostly, else a new one.
    fn an_eventfd(&mut self) -> Option<Arc<OwnedFd>> {
        let sh = self.sh;
        {
            let pool = sh.pool();
            if !pool.eventfds.is_empty() && !self.rng.one_in(4) {
                return Some(pool.eventfds[self.rng.index(pool.eventfds.len())].clone());
            }
        }
        let semaphore = if self.rng.one_in(4) { libc::EFD_SEMAPHORE } else { 0 };
        // SAFETY: eventfd(2) takes no pointers.
        let r = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | semaphore) };
        if r < 0 {
            return None;
        }
        let e = Arc::new(fd(r));
        let pooled = e.clone();
        sh.add(|p| p.eventfds.push(pooled));
        Some(e)
    }

    /// One of the pool's eventfds, if there is one.
    fn pooled_eventfd(&mut self) -> Option<Arc<OwnedFd>> {
        let pool = self.sh.pool();
        (!pool.eventfds.is_empty()).then(|| pool.eventfds[self.rng.index(pool.eventfds.len())].clone())
    }

    /// Signal an eventfd (an irqfd on it raises its SPI), or try to overflow it.
    fn signal_eventfd(&mut self) {
        let Some(e) = self.pooled_eventfd() else { return };
        let v: u64 = if self.rng.one_in(8) { self.rng.pick(&[0, u64::MAX - 1, u64::MAX]) } else { 1 };
        // SAFETY: 8 bytes from a u64 of ours, to an eventfd the Arc keeps open (non-blocking).
        unsafe { libc::write(e.as_raw_fd(), &v as *const u64 as *const libc::c_void, 8) };
    }

    /// Read an eventfd's count (an ioeventfd's writes), without waiting.
    fn drain_eventfd(&mut self) {
        let Some(e) = self.pooled_eventfd() else { return };
        let mut v = 0u64;
        // SAFETY: 8 bytes into a u64 of ours, from an eventfd the Arc keeps open (non-blocking).
        unsafe { libc::read(e.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

// ------------------------------------------------------------------ signals and the run

extern "C" fn on_signal(_: libc::c_int) {}

/// SIGUSR1 and SIGALRM interrupt a blocking call (no SA_RESTART) and do nothing else.
fn install_handlers() {
    for sig in [libc::SIGUSR1, libc::SIGALRM] {
        // SAFETY: a zeroed sigaction is a valid one (empty mask, no flags); the handler is an
        // `extern "C"` function that does nothing, so it is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                fail("sigaction");
            }
        }
    }
}

/// SIGUSR1 to each of `threads` (pthread_t values) every KICK_EVERY until `stop`.
fn watchdog(threads: Vec<usize>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            std::thread::sleep(KICK_EVERY);
            for &t in &threads {
                // SAFETY: the fuzz threads are joinable and are joined only after this watchdog
                // has stopped, so each pthread_t still names its thread (or its exited remains).
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
        }
    })
}

fn errno_name(e: usize) -> String {
    let name = match e as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// `kvm-smoke --fuzz COUNT [SEED]` (`args`: COUNT and SEED).
pub fn main(args: &[String]) -> ! {
    let usage = || -> ! {
        eprintln!("usage: kvm-smoke --fuzz COUNT [SEED]");
        std::process::exit(2)
    };
    let count: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    let seed: u64 = match args.get(1) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 1,
    };
    let kvm = match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(f) => Arc::new(OwnedFd::from(f)),
        Err(e) => {
            eprintln!("KVM-FUZZ: cannot open /dev/kvm: {e}");
            std::process::exit(1)
        }
    };
    install_handlers();
    let shared = Arc::new(Shared::new(kvm, seed));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let budget = count / THREADS as u64 + u64::from((i as u64) < count % THREADS as u64);
            let (sh, tx) = (shared.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(fuzz_thread(&sh, seed, i, budget));
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dog = {
        use std::os::unix::thread::JoinHandleExt;
        watchdog(handles.iter().map(|h| h.as_pthread_t() as usize).collect(), stop.clone())
    };
    let mut total = Stats::new();
    for stats in rx.iter().take(THREADS) {
        total.merge(&stats);
    }
    stop.store(true, Relaxed);
    let _ = dog.join();
    for h in handles {
        let _ = h.join();
    }
    // The VMs left go now, as the module tears them down.
    drop(shared);
    let list = |counts: &[u64], name: &dyn Fn(usize) -> String| {
        let items: Vec<String> =
            (counts.iter().enumerate()).filter(|&(_, &n)| n > 0).map(|(i, n)| format!("{} {n}", name(i))).collect();
        if items.is_empty() { "none".to_string() } else { items.join(", ") }
    };
    eprintln!(
        "kvm-fuzz: seed {seed}, {THREADS} threads; errors: {}; successes: {}; slowest ioctl: {} ({} ms)",
        list(&total.errnos, &errno_name),
        list(&total.ok_by_cmd, &|i| name_of(i).to_string()),
        name_of(total.slowest.1),
        total.slowest.0.as_millis()
    );
    println!(
        "KVM-FUZZ: {} ioctls, {} errors, {} successes, {} VMs created",
        total.ioctls, total.errors, total.successes, total.vms
    );
    std::process::exit(0)
}
