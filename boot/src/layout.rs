//! KCore's image layout (from the linker script) and the EL2 map segments derived from it.

use kcore::el2map::{Kind, Segment};
use kcore::mem::memblock::MemBlocks;
use kcore::{PAGE_SIZE, align_down, align_up};

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    static __stacks_start: u8;
    static __stacks_end: u8;
    static __boot_stack_bottom: u8;
}

/// The address KCore is linked for (`linker/kcore.ld`); it runs wherever it was loaded.
pub const LINK_ADDR: u64 = 0x4020_0000;

/// Per-CPU EL2 stack slot; must match `entry.S` and `linker/kcore.ld`. The lowest page of
/// each slot is a guard page KCore's EL2 map leaves unmapped, so an overflow faults (and
/// halts KCore) instead of running into the next CPU's stack or BSS.
pub const STACK_SIZE: u64 = 0x10000;
/// Number of stack slots; must match `linker/kcore.ld`.
const STACK_SLOTS: u64 = kcore::locks::locks::MAX_CPUS as u64;

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// KCore's image extent `[start, end)` including BSS and stacks.
pub fn image() -> (u64, u64) {
    // SAFETY: linker-script symbols; only their addresses are taken.
    unsafe { (sym(&__image_start), sym(&__image_end)) }
}

/// Top of CPU `index`'s EL2 stack.
pub fn stack_top(index: usize) -> u64 {
    // SAFETY: linker-script symbol; only its address is taken.
    let base = unsafe { sym(&__stacks_start) };
    base + (index as u64 + 1) * STACK_SIZE
}

/// The `image_size` of the arm64 Linux Image at `pa`, if there is one (magic "ARM\x64" at
/// offset 0x38, Documentation/arch/arm64/booting.rst).
pub fn linux_image_size(pa: u64) -> Option<u64> {
    if !pa.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    // SAFETY: `pa` is page aligned and, being checked against the device tree's RAM by the
    // caller's memory plan afterwards, at worst reads RAM the loader left; with the MMU off
    // these are plain physical reads of 4 bytes and 8 bytes, aligned.
    let (magic, size) = unsafe {
        (core::ptr::read_volatile((pa + 0x38) as *const u32), core::ptr::read_volatile((pa + 0x10) as *const u64))
    };
    (magic == 0x644d_5241 && size != 0).then_some(size)
}

/// Segments of KCore's EL2 identity map: all RAM read/write and never executable, except
/// KCore's own text (read-only, executable), rodata (read-only) and the stack guard pages
/// (unmapped); the console UART and the GIC frames `gic` (`(base, size)`; size 0: none) as
/// device memory. Returns how many entries of `out` were filled.
pub fn el2_segments(mb: &MemBlocks, uart: u64, gic: &[(u64, u64)], out: &mut [Segment]) -> usize {
    // SAFETY: linker-script symbols; only their addresses are taken.
    let (start, text_end, rodata_end, stacks, stacks_end, end) = unsafe {
        (
            sym(&__image_start),
            sym(&__text_end),
            sym(&__rodata_end),
            sym(&__stacks_start),
            sym(&__stacks_end),
            sym(&__image_end),
        )
    };
    // SAFETY: linker-script symbol; only its address is taken.
    let boot_stack = unsafe { sym(&__boot_stack_bottom) };
    assert_eq!(stacks_end - stacks, STACK_SLOTS * STACK_SIZE, "stack slots match the linker script");
    let mut n = 0;
    let mut push = |s: u64, e: u64, kind: Kind| {
        if e > s && n < out.len() {
            out[n] = Segment { start: s, end: e, kind };
            n += 1;
        }
    };
    for r in mb.regions() {
        if r.contains(start) {
            push(r.base, start, Kind::ReadWrite);
            push(start, text_end, Kind::Text);
            push(text_end, rodata_end, Kind::ReadOnly);
            push(rodata_end, stacks, Kind::ReadWrite);
            for slot in 0..STACK_SLOTS {
                let base = stacks + slot * STACK_SIZE;
                push(base + PAGE_SIZE, base + STACK_SIZE, Kind::ReadWrite);
            }
            // The page between the slots and the boot stack is the boot stack's guard.
            push(boot_stack, end, Kind::ReadWrite);
            push(end, r.end(), Kind::ReadWrite);
        } else {
            push(r.base, r.end(), Kind::ReadWrite);
        }
    }
    let uart_page = align_down(uart, PAGE_SIZE);
    if mb.search(uart_page).is_none() {
        push(uart_page, uart_page + PAGE_SIZE, Kind::Device);
    }
    // The GIC frames: KCore enables the EL2 timer's interrupt in its own CPU's redistributor
    // (or GICv2 distributor), and on a GICv2 drives the guests' list registers in GICH.
    for &(base, size) in gic.iter().filter(|r| r.1 != 0) {
        let (s, e) = (align_down(base, PAGE_SIZE), align_up(base + size, PAGE_SIZE));
        if !mb.intersects(s, e) {
            push(s, e, Kind::Device);
        }
    }
    n
}
