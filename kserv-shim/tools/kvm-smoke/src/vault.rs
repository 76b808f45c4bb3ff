//! `kvm-smoke --vault FILE` / `--vault-unprotected FILE`: the target of a malicious host's
//! attacks (tests/vm-attack.sh). FILE is the signed vault guest (guest-vault.S), run as a
//! protected VM (or, for the control, an ordinary one) made by `signed_kernel_vm`. Once the
//! guest has planted its secrets it prints where its RAM is (`KVM-SMOKE: vault: pid P ram HVA
//! size N`), then keeps answering the guest's doorbell reads with 0 (a pause between each)
//! until the file `DONE_FILE` appears, while the host attacks; then answers 1, the guest checks
//! its secrets and says whether they are whole, and powers off. The vCPU's x22 (where the
//! guest keeps its register secret) is read through KVM_GET_ONE_REG while the guest waits: a
//! protected VM's reads as its reset value.

use super::*;

const DOORBELL: u64 = 0x0a00_0000;
const UART: u64 = 0x0900_0000;
const DONE_FILE: &str = "/tmp/vault-done";
/// KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | regs.regs[22] (offset 22 * 2 in u32s).
const REG_X22: u64 = 0x6030_0000_0010_0000 + 22 * 2;

pub fn vault(path: &str, protect: bool) -> ! {
    let kind = if protect { "protected" } else { "unprotected" };
    let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm").unwrap_or_else(|_| fail("open /dev/kvm"));
    let guest = signed_kernel_vm(&kvm, path, if protect { VM_TYPE_PROTECTED } else { 0 });
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
                        "KVM-SMOKE: vault {kind}: pid {} ram {:#x} size {SIGNED_VM_RAM:#x} output '{}'",
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
