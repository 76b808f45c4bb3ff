//! KCore's UEFI loader: what runs when UEFI firmware starts KCore's image as an EFI
//! application (the PE/COFF header in `entry.S`), at EL2 with the firmware's MMU and boot
//! services.
//!
//! It reads `\kcore.cfg` from the volume KCore's image was loaded from (the EFI system
//! partition), loads the host kernel Image and initrd it names from that volume, copies the
//! firmware's device tree (the EFI configuration table entry with the device tree GUID) into a
//! larger buffer and adds to its `/chosen` the command line (with `kcore.host=ADDR`, where the
//! kernel went) and the initrd's place, exits boot services, adds the firmware's runtime and
//! reserved regions of the final memory map to the tree's memory reservation block, and starts
//! KCore the way the arm64 boot protocol does: MMU off, x0 = device tree (`kcore_efi_start`).
//! The host kernel is then booted by KCore with that device tree and no EFI system table, so
//! it runs without EFI runtime services.
//!
//! `kcore.cfg` is text, one `key=value` per line; lines starting with `#` are comments:
//!
//! ```text
//! # the host kernel Image on this volume (required), its initrd (optional), its command
//! # line (kcore.* words are KCore's own options)
//! kernel=\vmlinuz
//! initrd=\initrd.img
//! cmdline=console=ttyAMA0
//! # optional: a device tree file to use instead of the firmware's (firmware that
//! # publishes only ACPI tables)
//! dtb=\board.dtb
//! ```

use crate::fdtedit::FdtEdit;
use core::ffi::c_void;
use core::fmt::{self, Write};

type Handle = *mut c_void;
type Status = usize;

const SUCCESS: Status = 0;
const ERROR_BIT: usize = 1 << 63;
const LOAD_ERROR: Status = ERROR_BIT | 1;
const UNSUPPORTED: Status = ERROR_BIT | 3;
const BUFFER_TOO_SMALL: Status = ERROR_BIT | 5;
const NOT_FOUND: Status = ERROR_BIT | 14;

/// EFI_ALLOCATE_TYPE AllocateAnyPages and EFI_MEMORY_TYPE EfiLoaderData (UEFI spec 7.2).
const ALLOCATE_ANY_PAGES: u32 = 0;
const LOADER_DATA: u32 = 2;
const EFI_PAGE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;

#[repr(C)]
struct Guid(u32, u16, u16, [u8; 8]);

impl Guid {
    fn eq(&self, o: &Guid) -> bool {
        self.0 == o.0 && self.1 == o.1 && self.2 == o.2 && self.3 == o.3
    }
}

/// EFI_LOADED_IMAGE_PROTOCOL_GUID (UEFI spec 9.1).
const LOADED_IMAGE: Guid = Guid(0x5b1b_31a1, 0x9562, 0x11d2, [0x8e, 0x3f, 0x00, 0xa0, 0xc9, 0x69, 0x72, 0x3b]);
/// EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID (UEFI spec 13.4).
const SIMPLE_FS: Guid = Guid(0x964e_5b22, 0x6459, 0x11d2, [0x8e, 0x39, 0x00, 0xa0, 0xc9, 0x69, 0x72, 0x3b]);
/// EFI_DTB_TABLE_GUID: the flattened device tree as an EFI configuration table.
const DTB_TABLE: Guid = Guid(0xb1b6_21d5, 0xf19c, 0x41a5, [0x83, 0x0b, 0xd9, 0x15, 0x2c, 0x69, 0xaa, 0xe0]);

#[repr(C)]
struct TableHeader {
    signature: u64,
    revision: u32,
    header_size: u32,
    crc32: u32,
    reserved: u32,
}

/// EFI_SYSTEM_TABLE (UEFI spec 4.3).
#[repr(C)]
pub struct SystemTable {
    hdr: TableHeader,
    firmware_vendor: *const u16,
    firmware_revision: u32,
    console_in_handle: Handle,
    con_in: *mut c_void,
    console_out_handle: Handle,
    con_out: *mut TextOutput,
    standard_error_handle: Handle,
    std_err: *mut TextOutput,
    runtime_services: *mut c_void,
    boot_services: *mut BootServices,
    number_of_table_entries: usize,
    configuration_table: *const ConfigurationTable,
}

#[repr(C)]
struct ConfigurationTable {
    guid: Guid,
    table: *mut c_void,
}

/// EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL (UEFI spec 12.4), the part used.
#[repr(C)]
struct TextOutput {
    reset: usize,
    output_string: unsafe extern "efiapi" fn(*mut TextOutput, *const u16) -> Status,
}

/// EFI_BOOT_SERVICES (UEFI spec 4.4), up to ExitBootServices.
#[repr(C)]
struct BootServices {
    hdr: TableHeader,
    raise_tpl: usize,
    restore_tpl: usize,
    allocate_pages: unsafe extern "efiapi" fn(u32, u32, usize, *mut u64) -> Status,
    free_pages: usize,
    get_memory_map: unsafe extern "efiapi" fn(*mut usize, *mut u8, *mut usize, *mut usize, *mut u32) -> Status,
    allocate_pool: unsafe extern "efiapi" fn(u32, usize, *mut *mut u8) -> Status,
    free_pool: usize,
    events: [usize; 6],
    protocol_interfaces: [usize; 3],
    handle_protocol: unsafe extern "efiapi" fn(Handle, *const Guid, *mut *mut c_void) -> Status,
    reserved: usize,
    register_protocol_notify: usize,
    locate_handle: usize,
    locate_device_path: usize,
    install_configuration_table: usize,
    images: [usize; 4],
    exit_boot_services: unsafe extern "efiapi" fn(Handle, usize) -> Status,
}

const _: () = assert!(core::mem::offset_of!(BootServices, handle_protocol) == 152);
const _: () = assert!(core::mem::offset_of!(BootServices, exit_boot_services) == 232);

/// EFI_LOADED_IMAGE_PROTOCOL (UEFI spec 9.1), the part used.
#[repr(C)]
struct LoadedImage {
    revision: u32,
    parent_handle: Handle,
    system_table: *mut SystemTable,
    device_handle: Handle,
    file_path: *mut c_void,
    reserved: *mut c_void,
    load_options_size: u32,
    load_options: *mut c_void,
    image_base: *mut c_void,
    image_size: u64,
}

/// EFI_SIMPLE_FILE_SYSTEM_PROTOCOL (UEFI spec 13.4).
#[repr(C)]
struct SimpleFs {
    revision: u64,
    open_volume: unsafe extern "efiapi" fn(*mut SimpleFs, *mut *mut File) -> Status,
}

/// EFI_FILE_PROTOCOL (UEFI spec 13.5), the part used.
#[repr(C)]
struct File {
    revision: u64,
    open: unsafe extern "efiapi" fn(*mut File, *mut *mut File, *const u16, u64, u64) -> Status,
    close: unsafe extern "efiapi" fn(*mut File) -> Status,
    delete: usize,
    read: unsafe extern "efiapi" fn(*mut File, *mut usize, *mut u8) -> Status,
    write: usize,
    get_position: unsafe extern "efiapi" fn(*mut File, *mut u64) -> Status,
    set_position: unsafe extern "efiapi" fn(*mut File, u64) -> Status,
}

const FILE_MODE_READ: u64 = 1;

unsafe extern "C" {
    fn kcore_efi_start(dtb: u64) -> !;
}

/// The firmware's console, while boot services last.
struct Con(*mut TextOutput);

impl Write for Con {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut buf = [0u16; 128];
        let mut n = 0;
        let flush = |buf: &mut [u16; 128], n: &mut usize| {
            buf[*n] = 0;
            // SAFETY: the firmware's ConOut, valid until ExitBootServices (nothing prints
            // after); `buf` is NUL-terminated UCS-2.
            unsafe { ((*self.0).output_string)(self.0, buf.as_ptr()) };
            *n = 0;
        };
        for c in s.chars() {
            if n + 3 >= buf.len() {
                flush(&mut buf, &mut n);
            }
            if c == '\n' {
                buf[n] = '\r' as u16;
                n += 1;
            }
            buf[n] = if (c as u32) < 0x1_0000 { c as u16 } else { '?' as u16 };
            n += 1;
        }
        flush(&mut buf, &mut n);
        Ok(())
    }
}

/// What went wrong, for the console, and the status handed back to the firmware.
struct Failure(&'static str, Status);

/// UEFI entry (from `efi_pe_entry`, after self-relocation).
#[unsafe(no_mangle)]
extern "C" fn kcore_efi_main(image: Handle, st: *mut SystemTable) -> Status {
    // SAFETY: the firmware passes a valid system table (UEFI spec 4.1).
    let mut con = Con(unsafe { (*st).con_out });
    let _ = writeln!(con, "KCore UEFI loader");
    // SAFETY: as above; this code runs with boot services until it calls ExitBootServices.
    match unsafe { load(image, st, &mut con) } {
        Ok(never) => match never {},
        Err(Failure(what, status)) => {
            let _ = writeln!(con, "KCore UEFI loader: {what} (status {status:#x}); not started");
            status
        }
    }
}

fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack, preserves_flags)) };
    (el >> 2) & 3
}

fn check(status: Status, what: &'static str) -> Result<(), Failure> {
    if status == SUCCESS { Ok(()) } else { Err(Failure(what, status)) }
}

/// The work of the loader; returns only on failure.
///
/// # Safety
/// `image` and `st` are what the firmware passed, and boot services are still running.
unsafe fn load(image: Handle, st: *mut SystemTable, con: &mut Con) -> Result<core::convert::Infallible, Failure> {
    if current_el() != 2 {
        return Err(Failure(
            "the firmware started KCore below EL2: it needs EL2 (QEMU: -M virt,virtualization=on)",
            UNSUPPORTED,
        ));
    }
    // SAFETY: the caller's promise: `st` and its boot services table are valid.
    let (st, bs) = unsafe { (&*st, &*(*st).boot_services) };

    // The volume KCore was loaded from.
    let mut li: *mut c_void = core::ptr::null_mut();
    // SAFETY: HandleProtocol with a valid handle, GUID and out pointer.
    check(unsafe { (bs.handle_protocol)(image, &LOADED_IMAGE, &mut li) }, "no loaded-image protocol")?;
    // SAFETY: the firmware returned its EFI_LOADED_IMAGE_PROTOCOL for KCore's image.
    let li = unsafe { &*(li as *const LoadedImage) };
    let mut fs: *mut c_void = core::ptr::null_mut();
    // SAFETY: as above, for the device KCore's image came from.
    let s = unsafe { (bs.handle_protocol)(li.device_handle, &SIMPLE_FS, &mut fs) };
    check(s, "KCore's image was not loaded from a file system")?;
    let fs = fs as *mut SimpleFs;
    let mut root: *mut File = core::ptr::null_mut();
    // SAFETY: `fs` is the device's EFI_SIMPLE_FILE_SYSTEM_PROTOCOL.
    check(unsafe { ((*fs).open_volume)(fs, &mut root) }, "cannot open KCore's volume")?;

    // kcore.cfg
    // SAFETY: `root` is an open directory of the volume; boot services run.
    let (cfg, cfg_len) = unsafe { read_file(bs, root, "\\kcore.cfg", 0, 0) }
        .map_err(|f| Failure("cannot read \\kcore.cfg from KCore's volume", f.1))?;
    // SAFETY: read_file returned a buffer of `cfg_len` bytes it filled.
    let cfg = unsafe { core::slice::from_raw_parts(cfg as *const u8, cfg_len as usize) };
    let cfg = Config::parse(cfg)?;
    let _ =
        writeln!(con, "KCore UEFI loader: kcore.cfg: kernel {}, initrd {}", cfg.kernel, cfg.initrd.unwrap_or("none"));

    // The host kernel: text_offset bytes above a 2 MiB boundary, with room for its
    // image_size (Linux arm64 boot protocol, Documentation/arch/arm64/booting.rst).
    // SAFETY: as above.
    let (kernel, kernel_len) = unsafe { read_file(bs, root, cfg.kernel, BLOCK_2M, 64 << 20) }
        .map_err(|f| Failure("cannot read the kernel named in kcore.cfg", f.1))?;
    // SAFETY: read_file filled at least the 64-byte Image header, or failed.
    let (text_offset, image_size, magic) = unsafe {
        (
            core::ptr::read_unaligned((kernel + 8) as *const u64),
            core::ptr::read_unaligned((kernel + 16) as *const u64),
            core::ptr::read_unaligned((kernel + 0x38) as *const u32),
        )
    };
    if kernel_len < 64 || magic != 0x644d_5241 || text_offset != 0 || image_size > (64 << 20) + kernel_len {
        return Err(Failure("the kernel is not an arm64 Image with text_offset 0 (uncompressed vmlinuz)", LOAD_ERROR));
    }

    // The device tree: the file kcore.cfg names (firmware that publishes only ACPI tables),
    // else the firmware's (the configuration table with the device-tree GUID).
    // SAFETY: the configuration table has `number_of_table_entries` entries (UEFI spec 4.6).
    let tables = unsafe { core::slice::from_raw_parts(st.configuration_table, st.number_of_table_entries) };
    let firmware_dtb = tables.iter().find(|t| t.guid.eq(&DTB_TABLE)).map(|t| t.table as u64);
    // `dtb_limit`: how many bytes of it there are to read (a file's length).
    let (fw_dtb, dtb_limit) = match cfg.dtb {
        Some(path) => {
            // SAFETY: as above.
            let (at, len) = unsafe { read_file(bs, root, path, EFI_PAGE, 0) }
                .map_err(|f| Failure("cannot read the device tree named in kcore.cfg", f.1))?;
            let has = if firmware_dtb.is_some() { "it offers one too" } else { "it offers none" };
            let _ = writeln!(con, "KCore UEFI loader: device tree from {path}, not the firmware's ({has})");
            if len < 8 {
                return Err(Failure("the device tree file is too short", LOAD_ERROR));
            }
            (at, len)
        }
        None => {
            let at = firmware_dtb.ok_or(Failure(
                "the firmware offers no device tree (QEMU: -M virt,acpi=off makes its UEFI publish one; \
                 or name one in kcore.cfg: dtb=\\PATH)",
                NOT_FOUND,
            ))?;
            (at, 64 << 20)
        }
    };

    let initrd = match cfg.initrd {
        // SAFETY: as above.
        Some(path) => Some(
            unsafe { read_file(bs, root, path, EFI_PAGE, 0) }
                .map_err(|f| Failure("cannot read the initrd named in kcore.cfg", f.1))?,
        ),
        None => None,
    };

    // The device tree, copied with room for the additions and for KCore's own edit of the
    // memory node later.
    // SAFETY: the firmware's table points at a device tree, and a file was checked to have
    // the 8 header bytes: its magic and total size (big-endian u32s).
    let (magic, fw_size) = unsafe {
        (
            u32::from_be(core::ptr::read_unaligned(fw_dtb as *const u32)),
            u32::from_be(core::ptr::read_unaligned((fw_dtb + 4) as *const u32)) as u64,
        )
    };
    if magic != 0xd00d_feed || !(40..=dtb_limit.min(64 << 20)).contains(&fw_size) {
        return Err(Failure("the device tree is not a flattened device tree", LOAD_ERROR));
    }
    let dtb_size = (fw_size + cfg.cmdline.len() as u64 + (64 << 10)).next_multiple_of(EFI_PAGE);
    // SAFETY: boot services run.
    let dtb = unsafe { alloc_pages(bs, dtb_size, EFI_PAGE) }?;
    // SAFETY: `dtb` has `dtb_size` >= `fw_size` bytes of KCore's; the source is the
    // firmware's tree of `fw_size` bytes.
    let tree = unsafe {
        core::ptr::copy_nonoverlapping(fw_dtb as *const u8, dtb as *mut u8, fw_size as usize);
        core::ptr::write_bytes((dtb + fw_size) as *mut u8, 0, (dtb_size - fw_size) as usize);
        core::slice::from_raw_parts_mut(dtb as *mut u8, dtb_size as usize)
    };
    tree[4..8].copy_from_slice(&(dtb_size as u32).to_be_bytes());
    let mut fdt = FdtEdit::new(tree).map_err(|_| Failure("the firmware's device tree is malformed", LOAD_ERROR))?;
    let mut bootargs = [0u8; 2048];
    let mut w = ByteWriter { buf: &mut bootargs, len: 0 };
    let _ = write!(w, "{} kcore.host={:#x}\0", cfg.cmdline, kernel);
    if w.len == w.buf.len() {
        return Err(Failure("the command line in kcore.cfg is too long", LOAD_ERROR));
    }
    let bootargs_len = w.len;
    let room = |_| Failure("no room in the device tree copy", LOAD_ERROR);
    fdt.set_prop("/chosen", "bootargs", &bootargs[..bootargs_len]).map_err(room)?;
    if let Some((start, len)) = initrd {
        fdt.set_prop("/chosen", "linux,initrd-start", &start.to_be_bytes()).map_err(room)?;
        fdt.set_prop("/chosen", "linux,initrd-end", &(start + len).to_be_bytes()).map_err(room)?;
    }
    let _ = writeln!(
        con,
        "KCore UEFI loader: KCore at {:#x}, kernel at {kernel:#x}, device tree at {dtb:#x}; exiting boot services",
        li.image_base as u64
    );

    // The final memory map, then ExitBootServices with its key (UEFI spec 7.4: a changed map
    // makes the call fail; get the map again, allocating nothing, and retry).
    let mut map_size = 0usize;
    let (mut key, mut desc_size, mut desc_version) = (0usize, 0usize, 0u32);
    // SAFETY: a size query with a null buffer.
    let s = unsafe {
        (bs.get_memory_map)(&mut map_size, core::ptr::null_mut(), &mut key, &mut desc_size, &mut desc_version)
    };
    if s != BUFFER_TOO_SMALL {
        return Err(Failure("GetMemoryMap", s));
    }
    let cap = map_size + 16 * desc_size.max(48);
    let mut map: *mut u8 = core::ptr::null_mut();
    // SAFETY: boot services run.
    check(unsafe { (bs.allocate_pool)(LOADER_DATA, cap, &mut map) }, "no memory for the memory map")?;
    let mut exited = false;
    for _ in 0..2 {
        map_size = cap;
        // SAFETY: `map` has `cap` bytes.
        let s = unsafe { (bs.get_memory_map)(&mut map_size, map, &mut key, &mut desc_size, &mut desc_version) };
        check(s, "GetMemoryMap")?;
        // SAFETY: `image` is KCore's handle and `key` the current map's.
        if unsafe { (bs.exit_boot_services)(image, key) } == SUCCESS {
            exited = true;
            break;
        }
    }
    if !exited {
        return Err(Failure("ExitBootServices failed twice", LOAD_ERROR));
    }

    // No boot services from here on, and no console: failures have nowhere to go but KCore.
    // The firmware's own regions go to the tree's memory reservation block, for the host
    // kernel and for KCore's memory plan.
    let mut run: Option<(u64, u64)> = None;
    for i in 0..map_size / desc_size {
        // SAFETY: the map holds `map_size / desc_size` descriptors of `desc_size` bytes:
        // Type (u32) at 0, PhysicalStart at 8, NumberOfPages at 24 (UEFI spec 7.2).
        let (ty, start, pages) = unsafe {
            let d = map.add(i * desc_size);
            (
                core::ptr::read_unaligned(d as *const u32),
                core::ptr::read_unaligned(d.add(8) as *const u64),
                core::ptr::read_unaligned(d.add(24) as *const u64),
            )
        };
        if !firmware_keeps(ty) {
            continue;
        }
        let end = start + pages * EFI_PAGE;
        run = match run {
            Some((s, e)) if e == start => Some((s, end)),
            Some((s, e)) => {
                let _ = fdt.add_mem_reserve(s, e - s);
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = run {
        let _ = fdt.add_mem_reserve(s, e - s);
    }

    // What the code after the MMU goes off reads must be in memory, not only in the caches
    // this code ran with; the arm64 boot protocol asks the same of the kernel Image.
    clean_to_poc(li.image_base as u64, li.image_size);
    clean_to_poc(dtb, dtb_size);
    clean_to_poc(kernel, kernel_len);
    if let Some((s, len)) = initrd {
        clean_to_poc(s, len);
    }
    // SAFETY: boot services are over; KCore takes the machine from here with this device tree.
    unsafe { kcore_efi_start(dtb) }
}

/// Memory types the firmware keeps after ExitBootServices (UEFI spec 7.2, table "Memory Type
/// Usage after ExitBootServices()"): reserved (0), runtime services code and data (5, 6),
/// unusable (8), ACPI reclaim and NVS (9, 10), PAL code (13). Memory-mapped I/O (11, 12) is not
/// RAM and lies outside the tree's memory nodes.
fn firmware_keeps(ty: u32) -> bool {
    matches!(ty, 0 | 5 | 6 | 8 | 9 | 10 | 13)
}

/// Clean and invalidate `[start, start + len)` to the point of coherency.
fn clean_to_poc(start: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut a = start & !(line - 1);
    while a < start + len {
        // SAFETY: cache maintenance by address on memory this loader allocated or runs from;
        // lines are written back, not discarded.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    // SAFETY: a barrier has no memory-safety preconditions.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Allocate `size` bytes of LoaderData pages at an `align`-aligned address (by allocating
/// `align` more and rounding up).
///
/// # Safety
/// Boot services must be running.
unsafe fn alloc_pages(bs: &BootServices, size: u64, align: u64) -> Result<u64, Failure> {
    let extra = if align > EFI_PAGE { align } else { 0 };
    let pages = (size + extra).div_ceil(EFI_PAGE) as usize;
    let mut addr = 0u64;
    // SAFETY: the caller's promise.
    check(unsafe { (bs.allocate_pages)(ALLOCATE_ANY_PAGES, LOADER_DATA, pages, &mut addr) }, "out of memory")?;
    Ok(addr.next_multiple_of(align))
}

/// Read the file at `path` (slashes or backslashes) of the volume `root` into new pages at an
/// `align`-aligned address, with `slack` bytes more (zeroed) after it. Returns (address, length).
///
/// # Safety
/// Boot services must be running and `root` must be an open directory.
unsafe fn read_file(
    bs: &BootServices,
    root: *mut File,
    path: &str,
    align: u64,
    slack: u64,
) -> Result<(u64, u64), Failure> {
    let mut name = [0u16; 256];
    if path.len() >= name.len() {
        return Err(Failure("path too long", LOAD_ERROR));
    }
    for (i, c) in path.bytes().enumerate() {
        name[i] = if c == b'/' { b'\\' as u16 } else { c as u16 };
    }
    let mut f: *mut File = core::ptr::null_mut();
    // SAFETY: `root` is an open directory; `name` is NUL-terminated UCS-2.
    check(unsafe { ((*root).open)(root, &mut f, name.as_ptr(), FILE_MODE_READ, 0) }, "open")?;
    let mut size = 0u64;
    // SAFETY: `f` is an open file; position u64::MAX means its end (UEFI spec 13.5).
    unsafe {
        check(((*f).set_position)(f, u64::MAX), "seek")?;
        check(((*f).get_position)(f, &mut size), "seek")?;
        check(((*f).set_position)(f, 0), "seek")?;
    }
    // SAFETY: boot services run.
    let buf = unsafe { alloc_pages(bs, size + slack + 1, align.max(EFI_PAGE)) }?;
    // SAFETY: `buf` has `size + slack + 1` bytes of fresh LoaderData pages.
    unsafe { core::ptr::write_bytes(buf as *mut u8, 0, (size + slack + 1) as usize) };
    let mut done = 0u64;
    while done < size {
        let mut n = (size - done) as usize;
        // SAFETY: the buffer has room for the rest of the file.
        check(unsafe { ((*f).read)(f, &mut n, (buf + done) as *mut u8) }, "read")?;
        if n == 0 {
            return Err(Failure("short read", LOAD_ERROR));
        }
        done += n as u64;
    }
    // SAFETY: `f` is open.
    unsafe { ((*f).close)(f) };
    Ok((buf, size))
}

/// `kcore.cfg`, parsed.
struct Config<'a> {
    kernel: &'a str,
    initrd: Option<&'a str>,
    cmdline: &'a str,
    /// A device tree file to use instead of the firmware's.
    dtb: Option<&'a str>,
}

impl<'a> Config<'a> {
    fn parse(text: &'a [u8]) -> Result<Config<'a>, Failure> {
        let text = core::str::from_utf8(text).map_err(|_| Failure("kcore.cfg is not text", LOAD_ERROR))?;
        let mut c = Config { kernel: "", initrd: None, cmdline: "", dtb: None };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(Failure("kcore.cfg: a line is not key=value", LOAD_ERROR))?;
            let v = v.trim();
            match k.trim() {
                "kernel" => c.kernel = v,
                "initrd" => c.initrd = Some(v).filter(|s| !s.is_empty()),
                "cmdline" => c.cmdline = v,
                "dtb" => c.dtb = Some(v).filter(|s| !s.is_empty()),
                _ => return Err(Failure("kcore.cfg: unknown key (kernel, initrd, cmdline, dtb)", LOAD_ERROR)),
            }
        }
        if c.kernel.is_empty() {
            return Err(Failure("kcore.cfg names no kernel (kernel=\\PATH)", LOAD_ERROR));
        }
        Ok(c)
    }
}

struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() { Err(fmt::Error) } else { Ok(()) }
    }
}
