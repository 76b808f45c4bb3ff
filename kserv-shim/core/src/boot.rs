//! How the host starts a protected VM that a VMM has set up for an ordinary boot: where the
//! guest's kernel lies in its memory, the signed kernel file's trailer behind it
//! ([`kcore::vm::bootaux::SIGNED_FILE_MAGIC`]), and what the VMM wanted in x0. KCore then
//! takes the image pages, checks the signature and starts vCPU 0 inside the image; nothing
//! the VMM wrote runs unchecked.

use kcore::vm::bootaux;

/// A page of guest memory, as the module's glue maps it.
pub type Page = [u8; 4096];

/// The arm64 Linux Image header (the kernel's `Documentation/arch/arm64/booting.rst`): the
/// magic "ARM\x64" at byte 56, the image's size in memory (u64 LE) at byte 16.
const ARM64_IMAGE_MAGIC: u32 = 0x644d_5241;

/// Pages to search for the trailer after an image starting with page `first`: a Linux
/// Image's own size in memory (its file ends before that) plus one page; 64 MiB for any other
/// image. Never more than KCore accepts for one image (256 MiB).
pub fn trailer_search_pages(first: &Page) -> u64 {
    let word = |at: usize| u64::from_le_bytes(first[at..at + 8].try_into().expect("8 bytes"));
    let magic = u32::from_le_bytes(first[56..60].try_into().expect("4 bytes"));
    let pages = if magic == ARM64_IMAGE_MAGIC && word(16) != 0 { word(16).div_ceil(4096) + 1 } else { 16384 };
    pages.min(65536)
}

/// If page `index` (counted from the image's first page at `load_ipa`) is the trailer of a
/// signed kernel file signed for `load_ipa`, the image's size in bytes.
pub fn trailer_at(page: &Page, index: u64, load_ipa: u64) -> Option<u64> {
    let (bytes, ipa) = bootaux::signed_file_trailer(page)?;
    (ipa == load_ipa && index > 0 && bytes.div_ceil(4096) == index).then_some(bytes)
}

/// QEMU's AArch64 boot stub for a Linux kernel (written at the start of RAM; vCPU 0 starts
/// on it): x0 <- the device tree's address (the literal at +24), x1..x3 <- 0, then a branch
/// to the kernel's entry (the literal at +32).
const QEMU_STUB: [u32; 6] = [
    0x5800_00c0, // ldr x0, #24
    0xaa1f_03e1, // mov x1, xzr
    0xaa1f_03e2, // mov x2, xzr
    0xaa1f_03e3, // mov x3, xzr
    0x5800_0084, // ldr x4, #16 (from here: +32)
    0xd61f_0080, // br x4
];

/// Where vCPU 0 of a protected VM is really headed, given the page holding its initial PC
/// at byte `offset`: a QEMU boot stub there is decoded, not run (it is the host's code):
/// `(entry, x0)` from its literals. `None` if no stub is there: the PC is the entry itself.
pub fn decode_boot_stub(page: &Page, offset: usize) -> Option<(u64, u64)> {
    let code = page.get(offset..offset + 40)?;
    let insn = |i: usize| u32::from_le_bytes(code[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if (0..6).any(|i| insn(i) != QEMU_STUB[i]) {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(code[at..at + 8].try_into().expect("8 bytes"));
    Some((word(32), word(24)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Box<Page> {
        Box::new([0; 4096])
    }

    #[test]
    fn a_linux_image_bounds_the_search_by_its_size() {
        let mut p = page();
        p[56..60].copy_from_slice(b"ARM\x64");
        p[16..24].copy_from_slice(&(10u64 << 20).to_le_bytes());
        assert_eq!(trailer_search_pages(&p), 2561);
        p[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(trailer_search_pages(&p), 65536, "never beyond 256 MiB");
        assert_eq!(trailer_search_pages(&page()), 16384, "anything else: 64 MiB");
    }

    #[test]
    fn the_trailer_counts_only_where_its_image_ends_and_for_its_address() {
        let t = bootaux::signed_file_trailer_page(&[1; 64], 10000, 0x4020_0000);
        assert_eq!(trailer_at(&t, 3, 0x4020_0000), Some(10000));
        assert_eq!(trailer_at(&t, 2, 0x4020_0000), None, "10000 bytes end in page 2: the trailer is page 3");
        assert_eq!(trailer_at(&t, 3, 0x4040_0000), None, "signed for another address");
        assert_eq!(trailer_at(&page(), 3, 0x4020_0000), None);
    }

    #[test]
    fn qemus_stub_gives_the_entry_and_the_device_tree() {
        let mut p = page();
        for (i, w) in QEMU_STUB.iter().enumerate() {
            p[64 + 4 * i..64 + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        p[64 + 24..64 + 32].copy_from_slice(&0x4800_0000u64.to_le_bytes());
        p[64 + 32..64 + 40].copy_from_slice(&0x4020_0000u64.to_le_bytes());
        assert_eq!(decode_boot_stub(&p, 64), Some((0x4020_0000, 0x4800_0000)));
        assert_eq!(decode_boot_stub(&p, 0), None, "not at that offset");
        assert_eq!(decode_boot_stub(&p, 4090), None, "runs off the page");
        p[64] ^= 1;
        assert_eq!(decode_boot_stub(&p, 64), None, "another instruction");
    }
}
