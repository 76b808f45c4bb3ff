//! Link the EL2 binary with `linker/kcore.ld` (cargo does not notice script changes unless
//! told, hence rerun-if-changed).
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = dir.join("../linker/kcore.ld").canonicalize().unwrap();
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/entry.S");
    // The Ed25519 key VM images must be signed with: KCORE_VM_PUBKEY (64 hex digits) from the
    // build configuration, else the public test key (tests/keys), which KCore then announces.
    println!("cargo:rerun-if-env-changed=KCORE_VM_PUBKEY");
    let test_key = dir.join("../tests/keys/test-vm.pub");
    println!("cargo:rerun-if-changed={}", test_key.display());
    let (key, source) = match std::env::var("KCORE_VM_PUBKEY") {
        Ok(k) => (k, "build configuration"),
        Err(_) => (std::fs::read_to_string(&test_key).unwrap(), "TEST key from tests/keys: not for real VMs"),
    };
    let key = key.trim();
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "KCORE_VM_PUBKEY must be 64 hex digits");
    println!("cargo:rustc-env=KCORE_VM_PUBKEY_HEX={key}");
    println!("cargo:rustc-env=KCORE_VM_KEY_SOURCE={source}");
    if std::env::var("TARGET").unwrap().ends_with("-none-softfloat") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        // Position-independent: the image runs wherever it is loaded (entry.S relocates it).
        // `-z notext`: the precompiled `core` is built for static relocation, so some of its
        // read-only data holds absolute addresses that become relocations in rodata.
        println!("cargo:rustc-link-arg-bins=--pie");
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    }
}
