//! `kcore-sign`: keys and signatures for KCore's VM image authentication.
//!
//! ```text
//! kcore-sign pubkey SEED_FILE                      print the public key (hex) for KCORE_VM_PUBKEY
//! kcore-sign sign SEED_FILE LOAD_IPA IMAGE SIG     write IMAGE's 64-byte signature for LOAD_IPA
//! kcore-sign verify PUBKEY_HEX LOAD_IPA IMAGE SIG  check a signature as KCore will
//! kcore-sign sign-file SEED_FILE LOAD_IPA IMAGE OUT write OUT, a signed kernel file: IMAGE,
//!                                                  zeros to 4 KiB, the trailer page with the
//!                                                  signature (what a protected VM boots, given
//!                                                  to QEMU as -kernel)
//! kcore-sign check-file PUBKEY_HEX OUT             check a signed kernel file
//! ```
//!
//! LOAD_IPA is where the VMM puts the image: QEMU's `virt` machine loads a Linux arm64 Image
//! (text offset 0) 2 MiB into RAM, at 0x40200000. The layout of a signed kernel file is
//! `kcore::vm::bootaux::SIGNED_FILE_MAGIC`'s.
//!
//! A seed file holds 64 hex digits (32 bytes); keep it secret. What is signed is defined once,
//! in `kcore::vm::bootaux::signed_header`.

use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};
use kcore::vm::bootaux;
use std::process::ExitCode;

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(format!("expected 64 hex digits, got {}", s.len()));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn number(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("bad number {s}: {e}"))
}

fn key_pair(seed_file: &str) -> Result<KeyPair, String> {
    let seed = std::fs::read_to_string(seed_file).map_err(|e| format!("{seed_file}: {e}"))?;
    Ok(KeyPair::from_seed(Seed::new(hex32(&seed)?)))
}

fn message(load_ipa: u64, image: &[u8]) -> Vec<u8> {
    let mut m = kcore::vm::bootaux::signed_header(load_ipa, image.len() as u64).to_vec();
    m.extend_from_slice(image);
    m
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, seed] if cmd == "pubkey" => {
            println!("{}", hex(&*key_pair(seed)?.pk));
            Ok(())
        }
        [cmd, seed, ipa, image, sig] if cmd == "sign" => {
            let kp = key_pair(seed)?;
            let img = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
            let s = kp.sk.sign(message(number(ipa)?, &img), None);
            std::fs::write(sig, *s).map_err(|e| format!("{sig}: {e}"))
        }
        [cmd, pk, ipa, image, sig] if cmd == "verify" => {
            let pk = PublicKey::new(hex32(pk)?);
            let img = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
            let s = std::fs::read(sig).map_err(|e| format!("{sig}: {e}"))?;
            let s = Signature::from_slice(&s).map_err(|e| e.to_string())?;
            pk.verify(message(number(ipa)?, &img), &s).map_err(|_| "signature does not verify".to_string())?;
            println!("ok");
            Ok(())
        }
        [cmd, seed, ipa, image, out] if cmd == "sign-file" => {
            let kp = key_pair(seed)?;
            let mut img = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
            if img.is_empty() {
                return Err(format!("{image}: empty"));
            }
            let load_ipa = number(ipa)?;
            if load_ipa % 4096 != 0 {
                return Err(format!("load IPA {load_ipa:#x} is not page aligned"));
            }
            let bytes = img.len() as u64;
            let s = kp.sk.sign(message(load_ipa, &img), None);
            img.resize(img.len().next_multiple_of(4096), 0);
            img.extend_from_slice(&bootaux::signed_file_trailer_page(&s, bytes, load_ipa));
            std::fs::write(out, img).map_err(|e| format!("{out}: {e}"))
        }
        [cmd, pk, file] if cmd == "check-file" => {
            let pk = PublicKey::new(hex32(pk)?);
            let f = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let trailer = f.len().checked_sub(4096).filter(|t| t % 4096 == 0).map(|t| &f[t..]);
            let Some((bytes, load_ipa)) = trailer.and_then(bootaux::signed_file_trailer) else {
                return Err(format!("{file}: not a signed kernel file (no trailer page at its end)"));
            };
            let img = f.get(..bytes as usize).ok_or(format!("{file}: the trailer's size is beyond the file"))?;
            let s = Signature::from_slice(&f[f.len() - 4096..f.len() - 4032]).map_err(|e| e.to_string())?;
            pk.verify(message(load_ipa, img), &s).map_err(|_| "signature does not verify".to_string())?;
            println!("ok: {bytes} bytes signed for load IPA {load_ipa:#x}");
            Ok(())
        }
        _ => Err("usage: kcore-sign pubkey SEED | sign SEED LOAD_IPA IMAGE SIG | verify PUBKEY LOAD_IPA IMAGE SIG \
             | sign-file SEED LOAD_IPA IMAGE OUT | check-file PUBKEY FILE"
            .into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcore-sign: {e}");
            ExitCode::FAILURE
        }
    }
}
