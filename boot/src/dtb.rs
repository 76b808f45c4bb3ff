//! Hiding KCore's memory from the host: the `reg` entry of the memory node that covers KCore
//! is rewritten in place (same length, so no device-tree writer is needed) to describe only
//! the host's part of that region. The host never learns KCore's RAM exists; the stage-2
//! table enforces it regardless.

use fdt::Fdt;

/// Rewrite the memory `reg` entry whose base is `region_base` to `[host.0, host.1)`.
pub fn give_host(dtb: u64, region_base: u64, host: (u64, u64)) -> Result<(), &'static str> {
    // SAFETY: the device tree was validated by `Platform::from_dtb` at the same address.
    let fdt = unsafe { Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "unparsable")?;
    let root = fdt.find_node("/").ok_or("no root node")?;
    let cells = |name| root.property(name).and_then(|p| p.as_usize()).unwrap_or(2);
    let (addr_cells, size_cells) = (cells("#address-cells"), cells("#size-cells"));
    if !(1..=2).contains(&addr_cells) || !(1..=2).contains(&size_cells) {
        return Err("unsupported #address-cells/#size-cells");
    }
    let entry_len = 4 * (addr_cells + size_cells);
    for node in fdt.all_nodes() {
        if node.property("device_type").and_then(|p| p.as_str()) != Some("memory") {
            continue;
        }
        let Some(reg) = node.property("reg") else { continue };
        for (i, entry) in reg.value.chunks_exact(entry_len).enumerate() {
            if read_cells(&entry[..4 * addr_cells]) != region_base {
                continue;
            }
            let size = host.1 - host.0;
            if (addr_cells == 1 && host.1 > u32::MAX as u64) || (size_cells == 1 && size > u32::MAX as u64) {
                return Err("host range does not fit the cell size");
            }
            let offset = reg.value.as_ptr() as u64 - dtb + (i * entry_len) as u64;
            write_cells(dtb + offset, addr_cells, host.0);
            write_cells(dtb + offset + 4 * addr_cells as u64, size_cells, size);
            return Ok(());
        }
    }
    Err("no memory node for KCore's region")
}

fn read_cells(b: &[u8]) -> u64 {
    b.chunks_exact(4).fold(0, |acc, c| (acc << 32) | u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
}

fn write_cells(pa: u64, cells: usize, value: u64) {
    let bytes = value.to_be_bytes();
    let src = &bytes[8 - 4 * cells..];
    for (i, b) in src.iter().enumerate() {
        // SAFETY: `pa` lies inside the `reg` property of the device tree, which is host RAM
        // that KCore may still write before the host runs; byte stores need no alignment.
        unsafe { core::ptr::write_volatile((pa + i as u64) as *mut u8, *b) };
    }
}
