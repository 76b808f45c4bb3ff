//! Assemble kvm-smoke's guests for their load addresses (0x40000000; the protected ones,
//! arm64 Images in form, 0x40200000) as flat binaries.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=image-header.inc");
    for (name, base) in [
        ("guest-hello", "0x40000000"),
        ("guest-irq", "0x40000000"),
        ("guest-irq-v2", "0x40000000"),
        ("guest-bench", "0x40000000"),
        ("guest-protected", "0x40200000"),
        ("guest-vault", "0x40200000"),
        ("guest-mmio-guard", "0x40200000"),
    ] {
        println!("cargo:rerun-if-changed={name}.S");
        let elf = out.join(format!("{name}.elf"));
        let bin = out.join(format!("{name}.bin"));
        let ok = std::process::Command::new("aarch64-linux-gnu-gcc")
            .args(["-nostdlib", "-static", &format!("-Wl,-Ttext={base}"), "-Wl,--build-id=none"])
            .arg(format!("-Wa,-I,{}", dir.display()))
            .arg("-o")
            .arg(&elf)
            .arg(dir.join(format!("{name}.S")))
            .status()
            .expect("aarch64-linux-gnu-gcc (scripts/setup.sh installs it)")
            .success()
            && std::process::Command::new("aarch64-linux-gnu-objcopy")
                .args(["-O", "binary"])
                .arg(&elf)
                .arg(&bin)
                .status()
                .unwrap()
                .success();
        assert!(ok, "assembling {name} failed");
    }
}
