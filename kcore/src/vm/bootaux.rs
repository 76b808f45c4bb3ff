//! Layer 20 (BootAux): boot images. Pages are given to the VM one by one as the host supplies
//! them (ownership first: from then on the host cannot change them); verification reads them
//! back through the VM's stage-2 and checks one Ed25519 signature per image over
//!
//! ```text
//! "KCORE-VM-IMAGE-v1" || load IPA (u64 LE) || size in bytes (u64 LE) || the image bytes
//! ```
//!
//! so a signed image is accepted only at the address it was signed for.

use super::{Image, VmInfo};
use crate::error::{Error, Result};
use crate::kcore::KCore;
use crate::machine::Machine;
use crate::mem::pagemgmt::Owner;
use crate::{PAGE_SHIFT, PAGE_SIZE};
use ed25519_compact::{PublicKey, Signature};

/// A *signed kernel file* is what a user hands the VMM as the guest's kernel (QEMU's
/// `-kernel`), so the VMM's loader puts the signature in guest memory right behind the image:
///
/// ```text
/// [0, N)              the image (a Linux arm64 Image, or any code), N bytes
/// [N, P)              zeros, P = N rounded up to 4 KiB
/// [P, P + 4096)       the trailer page: the 64-byte signature (over signed_header(L, N) ||
///                     image), SIGNED_FILE_MAGIC, N (u64 LE), L = the load IPA it was signed
///                     for (u64 LE), zeros
/// ```
///
/// The host finds the trailer in the pages after the image's start, hands KCore the image
/// pages and the trailer page, and KCore checks the signature as for any boot image.
pub const SIGNED_FILE_MAGIC: &[u8; 16] = b"KCORE-SIGNED-IMG";

/// A trailer page's fields, if `page` is one: (image bytes N, load IPA L).
pub fn signed_file_trailer(page: &[u8]) -> Option<(u64, u64)> {
    if page.len() != PAGE_SIZE as usize || &page[64..80] != SIGNED_FILE_MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
    let (bytes, load_ipa) = (word(80), word(88));
    if bytes == 0 || page[96..].iter().any(|&b| b != 0) {
        return None;
    }
    Some((bytes, load_ipa))
}

/// The trailer page of a signed kernel file: `signature`, then the fields
/// [`signed_file_trailer`] reads.
pub fn signed_file_trailer_page(signature: &[u8; 64], bytes: u64, load_ipa: u64) -> [u8; PAGE_SIZE as usize] {
    let mut p = [0u8; PAGE_SIZE as usize];
    p[..64].copy_from_slice(signature);
    p[64..80].copy_from_slice(SIGNED_FILE_MAGIC);
    p[80..88].copy_from_slice(&bytes.to_le_bytes());
    p[88..96].copy_from_slice(&load_ipa.to_le_bytes());
    p
}

/// Domain separation for image signatures.
pub const IMAGE_SIGNATURE_DOMAIN: &[u8] = b"KCORE-VM-IMAGE-v1";

/// The prefix signed before the image bytes.
pub fn signed_header(load_ipa: u64, bytes: u64) -> [u8; 33] {
    let mut h = [0u8; 33];
    h[..17].copy_from_slice(IMAGE_SIGNATURE_DOMAIN);
    h[17..25].copy_from_slice(&load_ipa.to_le_bytes());
    h[25..33].copy_from_slice(&bytes.to_le_bytes());
    h
}

impl<M: Machine> KCore<M> {
    /// `unmap_and_load_vm_image`, one page at a time: host page `pfn` becomes page `index` of
    /// image `image` of VM `vmid` (owned and mapped at its guest address). Caller holds
    /// `vm(vmid)` and has checked the VM is `Ready`.
    pub fn load_image_page(&self, info: &VmInfo, vmid: u16, image: usize, index: u64, pfn: u64) -> Result<()> {
        if image >= info.image_count() {
            return Err(Error::InvalidParameter);
        }
        let img = info.image(image);
        if index >= img.pages() {
            return Err(Error::InvalidParameter);
        }
        let gfn = (img.load_ipa >> PAGE_SHIFT) + index;
        self.mem().prot_and_map_vm(vmid, gfn, pfn, 3)?;
        info.count_mapped(image);
        Ok(())
    }

    /// Check image `img` of VM `vmid` against `key`: every page present and the VM's own, and
    /// the signature valid. Reads only KCore-controlled state (the VM's table and pages).
    pub fn verify_image(&self, vmid: u16, img: &Image, key: &[u8; 32]) -> Result<()> {
        if img.mapped != img.pages() {
            return Err(Error::BadState);
        }
        let npt = self.mem().vm(vmid)?.expect_npt();
        let pk = PublicKey::new(*key);
        let sig = Signature::new(img.signature);
        let mut state = pk.verify_incremental(&sig).map_err(|_| Error::BadSignature)?;
        state.absorb(signed_header(img.load_ipa, img.bytes));
        let mut page = [0u8; PAGE_SIZE as usize];
        for i in 0..img.pages() {
            let ipa = img.load_ipa + i * PAGE_SIZE;
            let leaf = npt.walk(&self.m, ipa).ok_or(Error::BadState)?;
            let pa = leaf.output(ipa);
            if self.meta.owner(&self.m, &self.mb, pa >> PAGE_SHIFT) != Some(Owner::Vm(vmid)) {
                return Err(Error::BadState);
            }
            for (w, chunk) in page.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&self.m.load(pa + 8 * w as u64).to_le_bytes());
            }
            let len = (img.bytes - i * PAGE_SIZE).min(PAGE_SIZE) as usize;
            state.absorb(&page[..len]);
        }
        state.verify().map_err(|_| Error::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_file_trailer_reads_back_and_nothing_else_is_one() {
        let p = signed_file_trailer_page(&[7; 64], 12345, 0x4020_0000);
        assert_eq!(signed_file_trailer(&p), Some((12345, 0x4020_0000)));
        assert_eq!(&p[..64], &[7; 64]);
        let mut q = p;
        q[64] = b'k';
        assert_eq!(signed_file_trailer(&q), None, "magic");
        let mut q = p;
        q[4095] = 1;
        assert_eq!(signed_file_trailer(&q), None, "the rest is zero");
        assert_eq!(signed_file_trailer(&signed_file_trailer_page(&[0; 64], 0, 1)), None, "an empty image");
        assert_eq!(signed_file_trailer(&p[..4000]), None, "a whole page");
    }
}
