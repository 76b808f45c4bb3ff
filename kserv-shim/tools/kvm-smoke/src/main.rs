//! `kvm-smoke [LOOPS]`: what a VMM does first with `/dev/kvm`, checked against the KVM API
//! (Documentation/virt/kvm/api.rst), run in the host under KCore: the API version, VM
//! creation, vCPU creation (with the refusals a VMM can hit), and teardown by closing the fds,
//! LOOPS times (default 1), so vmids and pages are seen to come back. Prints one summary line;
//! exits non-zero on the first surprise.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `_IO(KVMIO, n)` ioctl numbers (KVMIO = 0xAE).
const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
const KVM_CREATE_VM: libc::c_ulong = 0xae01;
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;
const KVM_CREATE_VCPU: libc::c_ulong = 0xae41;
/// `KVM_CAP_IRQCHIP`, one of the capabilities a VMM needs: not offered yet.
const KVM_CAP_IRQCHIP: libc::c_ulong = 0;

fn ioctl(fd: &impl AsRawFd, cmd: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, i32> {
    // SAFETY: these KVM ioctls take an integer argument, never a pointer.
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
}
