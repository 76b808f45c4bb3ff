//! Link the test host at its load address, and make its guest image: a small image signed with
//! the test key for LOAD_IPA, exactly as `kcore-sign` would sign it.
use std::path::PathBuf;

const LOAD_IPA: u64 = 0x8000_0000;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let script = dir.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/entry.S");
    if std::env::var("TARGET").unwrap().ends_with("-none-softfloat") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
    let seed_file = dir.join("../keys/test-vm.seed");
    println!("cargo:rerun-if-changed={}", seed_file.display());
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    let seed: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&seed.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::from_slice(&seed).unwrap());
    let image: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(13) ^ (i >> 7)) as u8).collect();
    let mut msg = kcore::vm::bootaux::signed_header(LOAD_IPA, image.len() as u64).to_vec();
    msg.extend_from_slice(&image);
    std::fs::write(out.join("guest.img"), &image).unwrap();
    std::fs::write(out.join("guest.sig"), *kp.sk.sign(msg, None)).unwrap();

    // The runnable guests: assembled for their load address, then signed the same way.
    for name in ["guest", "bench-guest", "spin-guest", "np-guest", "irq-guest", "probe-guest", "sweep-guest"] {
        println!("cargo:rerun-if-changed={name}.S");
        let elf = out.join(format!("{name}.elf"));
        let bin = out.join(format!("{name}-prog.img"));
        let ok = std::process::Command::new("aarch64-linux-gnu-gcc")
            .args(["-nostdlib", "-static", "-Wl,-Ttext=0x80000000", "-Wl,--build-id=none", "-o"])
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
        let prog = std::fs::read(&bin).unwrap();
        let mut msg = kcore::vm::bootaux::signed_header(LOAD_IPA, prog.len() as u64).to_vec();
        msg.extend_from_slice(&prog);
        std::fs::write(out.join(format!("{name}-prog.sig")), *kp.sk.sign(msg, None)).unwrap();
    }
}
