//! `kvm-smoke --vault FILE` / `--vault-unprotected FILE`: the target of a malicious host's
//! attacks (tests/vm-attack.sh). FILE is the signed vault guest (guest-vault.S), run as a
//! protected VM (or, for the control, an ordinary one) with 4 MiB of memfd RAM, loaded 2 MiB
//! in as QEMU loads a kernel. Once the guest has planted its secrets it prints where its RAM
//! is (`KVM-SMOKE: vault: pid P ram HVA size N`), then keeps answering the guest's doorbell
//! reads with 0 (a pause between each) until the file `DONE_FILE` appears, while the host
//! attacks; then answers 1, the guest checks its secrets and says whether they are whole, and
//! powers off. The vCPU's x22 (where the guest keeps its register secret) is read through
//! KVM_GET_ONE_REG while the guest waits: a protected VM's reads as its reset value.

use super::*;

const DOORBELL: u64 = 0x0a00_0000;
const UART: u64 = 0x0900_0000;
const RAM_SIZE: usize = 4 << 20;
const DONE_FILE: &str = "/tmp/vault-done";
/// KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | regs.regs[22] (offset 22 * 2 in u32s).
const REG_X22: u64 = 0x6030_0000_0010_0000 + 22 * 2;

pub fn vault(path: &str, protect: bool) -> ! {
    let kind = if protect { "protected" } else { "unprotected" };
    let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm").unwrap_or_else(|_| fail("open /dev/kvm"));
    let file = std::fs::read(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    if file.len() > RAM_SIZE / 4 {
        fail("the signed kernel file is too big");
    }
    let vm_type = if protect { VM_TYPE_PROTECTED } else { 0 };
    let vm = fd(ioctl(&kvm, KVM_CREATE_VM, vm_type).unwrap_or_else(|e| fail(&format!("KVM_CREATE_VM: {e}"))));
    let vcpu = fd(ioctl(&vm, KVM_CREATE_VCPU, 0).unwrap_or_else(|_| fail("KVM_CREATE_VCPU")));
    let mut init = [0u32; 8];
    init[0] = 5; // KVM_ARM_TARGET_GENERIC_V8
    init[1] = 1 << 2; // KVM_ARM_VCPU_PSCI_0_2
    ioctl_ptr(&vcpu, KVM_ARM_VCPU_INIT, &mut init).unwrap_or_else(|_| fail("KVM_ARM_VCPU_INIT"));
    // SAFETY: memfd_create with a NUL-terminated name; the fd is checked and owned below.
    let memfd = unsafe { libc::memfd_create(c"vault-ram".as_ptr(), 0) };
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
    // SAFETY: the file (at most a quarter of RAM) lands inside the mapping, 2 MiB in; the
    // device-tree magic at 1 MiB too.
    unsafe {
        std::ptr::copy_nonoverlapping(file.as_ptr(), ram.add(0x20_0000), file.len());
        std::ptr::copy_nonoverlapping([0xd0u8, 0x0d, 0xfe, 0xed].as_ptr(), ram.add(0x10_0000), 4);
    }
    let mut region = [0u64, GUEST_RAM, RAM_SIZE as u64, ram as u64];
    ioctl_ptr(&vm, KVM_SET_USER_MEMORY_REGION, &mut region).unwrap_or_else(|e| fail(&format!("memory: {e}")));
    let size = ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0).unwrap_or_else(|_| fail("KVM_GET_VCPU_MMAP_SIZE")) as usize;
    let run = map(size, Some(&vcpu));
    let guest = Guest { vm, vcpu, ram, run };
    guest.set(REG_PSTATE, 0x3c5); // EL1h, DAIF masked
    guest.set(REG_PC, GUEST_RAM + 0x20_0000);
    guest.set(REG_X0, GUEST_RAM + 0x10_0000);
    let _ = std::fs::remove_file(DONE_FILE);
    let mut out = String::new();
    let mut announced = false;
    loop {
        if let Err(e) = ioctl(&guest.vcpu, KVM_RUN, 0) {
            let msg = std::io::Error::from_raw_os_error(e);
            println!("KVM-SMOKE: vault {kind}: KVM_RUN refused: errno {e} ({msg}); guest output '{}'", out.trim_end());
            std::process::exit(2);
        }
        match guest.rd(RUN_EXIT_REASON, 4) as u32 {
            KVM_EXIT_MMIO if guest.rd(RUN_MMIO_ADDR, 8) == UART && guest.rd(RUN_MMIO_WRITE, 1) == 1 => {
                out.push(guest.rd(RUN_MMIO_DATA, 1) as u8 as char);
            }
            KVM_EXIT_MMIO if guest.rd(RUN_MMIO_ADDR, 8) == DOORBELL && guest.rd(RUN_MMIO_WRITE, 1) == 0 => {
                if !announced {
                    announced = true;
                    println!(
                        "KVM-SMOKE: vault {kind}: pid {} ram {:#x} size {RAM_SIZE:#x} output '{}'",
                        std::process::id(),
                        guest.ram as u64,
                        out.trim_end()
                    );
                    let mut x22 = 0u64;
                    let mut reg = [REG_X22, &mut x22 as *mut u64 as u64];
                    match ioctl_ptr(&guest.vcpu, KVM_GET_ONE_REG, &mut reg) {
                        Ok(_) => println!("KVM-SMOKE: vault {kind}: KVM_GET_ONE_REG x22 {x22:#018x}"),
                        Err(e) => println!("KVM-SMOKE: vault {kind}: KVM_GET_ONE_REG x22 errno {e}"),
                    }
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                }
                let done = std::path::Path::new(DONE_FILE).exists();
                if !done {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                guest.wr(RUN_MMIO_DATA, done as u64);
            }
            KVM_EXIT_MMIO => {
                if guest.rd(RUN_MMIO_WRITE, 1) == 0 {
                    guest.wr(RUN_MMIO_DATA, 0);
                }
            }
            KVM_EXIT_SYSTEM_EVENT if guest.rd(RUN_MMIO_ADDR, 4) as u32 == KVM_SYSTEM_EVENT_SHUTDOWN => {
                println!("KVM-SMOKE: vault {kind}: guest output '{}'", out.trim_end().replace('\n', " / "));
                std::process::exit(0);
            }
            other => fail(&format!("vault: unexpected exit {other}")),
        }
    }
}
