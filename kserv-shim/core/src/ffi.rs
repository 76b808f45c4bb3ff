//! The C entry points the kserv module calls (`kserv-shim/module/kserv.h` declares them).
//! Every pointer comes from the module's glue: a [`Vgic`] it allocated zero-filled with
//! [`kserv_core_vgic_size`] bytes and keeps for the VM's life, used under the VM's lock.

use crate::vgic::{AccessError, Injection, Vgic};

/// Bytes (and alignment, at most 8) a [`Vgic`] needs.
#[unsafe(no_mangle)]
pub extern "C" fn kserv_core_vgic_size() -> usize {
    const _: () = assert!(core::mem::align_of::<Vgic>() <= 8, "kzalloc alignment");
    core::mem::size_of::<Vgic>()
}

/// The VM's GIC from `p` (zero-filled or initialised memory of [`kserv_core_vgic_size`]).
///
/// # Safety
/// `p` points to such memory, which no one else uses while the returned reference lives.
unsafe fn vgic<'a>(p: *mut Vgic) -> &'a mut Vgic {
    // SAFETY: the caller's promise; an all-zero `Vgic` is valid (integers, booleans and arrays
    // of them).
    unsafe { &mut *p }
}

/// Reset the GIC at `p` for `vcpus` vCPUs and `nr_irqs` lines; 0, or -22 for bad sizes.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_init(p: *mut Vgic, vcpus: u32, nr_irqs: u32) -> i32 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    if g.reset_in_place(vcpus as usize, nr_irqs as usize) { 0 } else { -crate::errno::EINVAL }
}

/// [`kserv_core_vgic_init`] for a GICv2 distributor ([`crate::vgic::v2`]): at most 8 vCPUs.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_init_v2(p: *mut Vgic, vcpus: u32, nr_irqs: u32) -> i32 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    if g.reset_in_place_v2(vcpus as usize, nr_irqs as usize) { 0 } else { -crate::errno::EINVAL }
}

/// An access by vCPU `vcpu` to a GICv2 distributor at `offset` in its 4 KiB frame: 0 handled
/// (a read's value in `*value`), -22 refused (also for a GICv3 or a vCPU it does not have).
/// A GICD_SGIR write may make SGIs pending: the caller kicks the vCPUs after any write.
///
/// # Safety
/// See [`vgic`]; `value` is a valid `u64` the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_v2_mmio(
    p: *mut Vgic,
    vcpu: u32,
    offset: u64,
    size: u32,
    write: bool,
    value: *mut u64,
) -> i32 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    // SAFETY: the caller's `u64`.
    let v = unsafe { &mut *value };
    let (vcpu, size) = (vcpu as usize, u64::from(size));
    let r = if write {
        g.dist_v2_write(vcpu, offset, size, *v).map(|_| ())
    } else {
        g.dist_v2_read(vcpu, offset, size).map(|x| *v = x)
    };
    if r.is_ok() { 0 } else { -crate::errno::EINVAL }
}

/// A guest access to the distributor (`redist` < 0) or vCPU `redist`'s redistributor at
/// `offset` in its frame: 0 handled (a read's value in `*value`), -22 refused (the glue
/// injects an abort as hardware would; also any access to a GICv2).
///
/// # Safety
/// See [`vgic`]; `value` is a valid `u64` the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_mmio(
    p: *mut Vgic,
    redist: i32,
    offset: u64,
    size: u32,
    write: bool,
    value: *mut u64,
) -> i32 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    // SAFETY: the caller's `u64`.
    let v = unsafe { &mut *value };
    let size = u64::from(size);
    if g.v2 {
        return -crate::errno::EINVAL; // a GICv2 has neither these frames nor their layout
    }
    let r: Result<(), AccessError> = match (redist, write) {
        (r, true) if r < 0 => g.dist_write(offset, size, *v),
        (r, false) if r < 0 => g.dist_read(offset, size).map(|x| *v = x),
        (r, true) => g.redist_write(r as usize, offset, size, *v),
        (r, false) => g.redist_read(r as usize, offset, size).map(|x| *v = x),
    };
    if r.is_ok() { 0 } else { -crate::errno::EINVAL }
}

/// The VMM set SPI `intid`'s line to `level`: the vCPU to kick, or -1.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_spi(p: *mut Vgic, intid: u32, level: bool) -> i32 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    g.set_spi_line(intid, level).map_or(-1, |v| v as i32)
}

/// vCPU `from` wrote `value` to ICC_SGI1R_EL1: the vCPUs to kick, as a bitmap.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_sgi(p: *mut Vgic, from: u32, value: u64) -> u64 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    if from as usize >= g.vcpus {
        return 0;
    }
    g.sgi(from as usize, value)
}

/// The next interrupt for one of vCPU `vcpu`'s free list registers, packed as INTID (31:0)
/// and INJECT_IRQ's attributes (40:32), or `u64::MAX` if none. It counts as given.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_take(p: *mut Vgic, vcpu: u32) -> u64 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    let mut out = [Injection { intid: 0, attrs: 0 }];
    if g.take(vcpu as usize, 1, &mut out) == 1 { u64::from(out[0].intid) | (out[0].attrs << 32) } else { u64::MAX }
}

/// KCore reported (VCPU_IRQ_STATE) that vCPU `vcpu`'s guest is done with `intid`.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_done(p: *mut Vgic, vcpu: u32, intid: u32) {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    g.deactivated(vcpu as usize, intid);
}

/// KCore refused the list register for `intid`, which [`kserv_core_vgic_take`] gave: it is
/// pending again.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_untake(p: *mut Vgic, vcpu: u32, intid: u32) {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    g.untake(vcpu as usize, intid);
}

/// A debugging view of interrupt `intid` as vCPU `vcpu` sees it (kserv.trace_exits): bits
/// enabled 0, latch 1, line 2, active 3, in a list register 4, edge 5, group 1 6, the route's
/// Aff0 at 15:8 and the priority at 23:16; `u64::MAX` if it does not exist.
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_irq_debug(p: *mut Vgic, vcpu: u32, intid: u32) -> u64 {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    match g.irq(vcpu as usize, intid) {
        Some(i) => {
            let bits = [i.enabled, i.latch, i.line, i.active, i.in_lr, i.edge, i.group1];
            let flags = bits.iter().enumerate().fold(0u64, |v, (n, &b)| v | (u64::from(b) << n));
            flags | ((i.route & 0xff) << 8) | (u64::from(i.priority) << 16)
        }
        None => u64::MAX,
    }
}

/// Has vCPU `vcpu` an interrupt it could take (so a WFI does not sleep)?
///
/// # Safety
/// See [`vgic`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_vgic_pending(p: *mut Vgic, vcpu: u32) -> bool {
    // SAFETY: forwarded.
    let g = unsafe { vgic(p) };
    g.has_pending(vcpu as usize)
}

/// The page at `p` (4096 bytes the caller has mapped) as a [`crate::boot::Page`].
///
/// # Safety
/// `p` points to 4096 readable bytes that stay mapped and unchanged by this thread while the
/// returned reference lives (another CPU may write them: only a wrong answer follows, which
/// KCore's own check of what it took catches).
unsafe fn page<'a>(p: *const u8) -> &'a crate::boot::Page {
    // SAFETY: the caller's promise; any bytes are a valid `[u8; 4096]`.
    unsafe { &*(p as *const crate::boot::Page) }
}

/// [`crate::boot::trailer_search_pages`] for the image's first page at `first`.
///
/// # Safety
/// See [`page`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_trailer_search_pages(first: *const u8) -> u64 {
    // SAFETY: forwarded.
    crate::boot::trailer_search_pages(unsafe { page(first) })
}

/// [`crate::boot::trailer_at`]: the signed image's size in bytes, or 0 if page `index` at `p`
/// is not its trailer.
///
/// # Safety
/// See [`page`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_trailer_at(p: *const u8, index: u64, load_ipa: u64) -> u64 {
    // SAFETY: forwarded.
    crate::boot::trailer_at(unsafe { page(p) }, index, load_ipa).unwrap_or(0)
}

/// [`crate::boot::decode_boot_stub`]: true with `*entry` and `*x0` set if the page at `p`
/// holds QEMU's boot stub at `offset`.
///
/// # Safety
/// See [`page`]; `entry` and `x0` are valid `u64`s the caller owns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kserv_core_boot_stub(p: *const u8, offset: u64, entry: *mut u64, x0: *mut u64) -> bool {
    // SAFETY: forwarded.
    match crate::boot::decode_boot_stub(unsafe { page(p) }, offset as usize) {
        Some((e, a)) => {
            // SAFETY: the caller's promise.
            unsafe {
                *entry = e;
                *x0 = a;
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_gic_initialises_and_delivers() {
        let layout = std::alloc::Layout::from_size_align(kserv_core_vgic_size(), 8).unwrap();
        // SAFETY: a zeroed allocation of the right size and alignment, freed below.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Vgic;
        // SAFETY: `p` is that allocation, used by this thread alone, for every call below.
        unsafe {
            assert_eq!(kserv_core_vgic_init(p, 2, 100), -22);
            assert_eq!(kserv_core_vgic_init(p, 2, 96), 0);
            let mut v = 0x12u64;
            assert_eq!(kserv_core_vgic_mmio(p, -1, 0, 4, true, &mut v), 0); // GICD_CTLR
            v = u64::MAX;
            assert_eq!(kserv_core_vgic_mmio(p, -1, 0x84, 4, true, &mut v), 0); // IGROUPR1
            v = 1 << 8;
            assert_eq!(kserv_core_vgic_mmio(p, -1, 0x104, 4, true, &mut v), 0); // ISENABLER1: 40
            assert_eq!(kserv_core_vgic_mmio(p, -1, 0x2, 4, false, &mut v), -22);
            assert_eq!(kserv_core_vgic_spi(p, 40, true), 0);
            assert!(kserv_core_vgic_pending(p, 0));
            assert_eq!(kserv_core_vgic_take(p, 0), 40 | (0x100 << 32), "level, priority 0");
            assert_eq!(kserv_core_vgic_take(p, 0), u64::MAX);
            kserv_core_vgic_spi(p, 40, false);
            kserv_core_vgic_done(p, 0, 40);
            assert!(!kserv_core_vgic_pending(p, 0));
            v = 0;
            assert_eq!(kserv_core_vgic_mmio(p, 1, 0x8, 8, false, &mut v), 0);
            assert_eq!(v, (1 << 32) | (1 << 8) | (1 << 4), "GICR_TYPER of the last vCPU");
            assert_eq!(kserv_core_vgic_sgi(p, 0, (1 << 24) | 0b10), 0b10);
            assert_eq!(kserv_core_vgic_sgi(p, 5, 1), 0, "no such sender");
            std::alloc::dealloc(p as *mut u8, layout);
        }
    }

    #[test]
    fn a_zeroed_gicv2_initialises_and_delivers() {
        let layout = std::alloc::Layout::from_size_align(kserv_core_vgic_size(), 8).unwrap();
        // SAFETY: a zeroed allocation of the right size and alignment, freed below.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Vgic;
        // SAFETY: `p` is that allocation, used by this thread alone, for every call below.
        unsafe {
            assert_eq!(kserv_core_vgic_init_v2(p, 9, 64), -22, "GICv2 has 8 CPU interfaces");
            assert_eq!(kserv_core_vgic_init_v2(p, 2, 64), 0);
            let mut v = 1u64;
            assert_eq!(kserv_core_vgic_v2_mmio(p, 0, 0, 4, true, &mut v), 0); // GICD_CTLR
            v = 1 << 8;
            assert_eq!(kserv_core_vgic_v2_mmio(p, 0, 0x104, 4, true, &mut v), 0); // ISENABLER1: 40
            v = 2 << 16;
            assert_eq!(kserv_core_vgic_v2_mmio(p, 1, 0x828, 4, true, &mut v), 0); // 42 -> CPU 1
            v = 2;
            assert_eq!(kserv_core_vgic_v2_mmio(p, 0, 0x828, 4, true, &mut v), 0); // 40 -> CPU 1
            assert_eq!(kserv_core_vgic_spi(p, 40, true), 1);
            assert_eq!(kserv_core_vgic_take(p, 1), 40 | (0x100 << 32));
            assert_eq!(kserv_core_vgic_v2_mmio(p, 2, 0, 4, false, &mut v), -22, "no vCPU 2");
            assert_eq!(kserv_core_vgic_mmio(p, 0, 0, 4, false, &mut v), -22, "no redistributors");
            assert_eq!(kserv_core_vgic_v2_mmio(p, 1, 0x800, 4, false, &mut v), 0);
            assert_eq!(v, 0x0202_0202, "ITARGETSR0 names the reader");
            std::alloc::dealloc(p as *mut u8, layout);
        }
    }
}
