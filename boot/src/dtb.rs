//! Hiding KCore's memory from the host: the `reg` entry of the memory node that covers KCore
//! is replaced by the host's part of that region (one range when KCore sits at the region's
//! ends as after QEMU's `-kernel`, up to three when the firmware placed it elsewhere; the tree
//! grows in place into the room its `totalsize` leaves). The host never learns KCore's RAM
//! exists; the stage-2 table enforces it regardless. Also: what the tree reserves.

use crate::fdtedit::FdtEdit;

/// The device tree at `dtb` as an editable byte slice of its `totalsize`.
fn edit(dtb: u64) -> Result<FdtEdit<'static>, &'static str> {
    // SAFETY: the device tree was validated by `Platform::from_dtb` at the same address; its
    // `totalsize` bytes are host RAM that only KCore touches before the host runs, and this
    // boot-time, single-CPU code holds no other reference into it while the slice lives.
    let b = unsafe {
        let size = u32::from_be(core::ptr::read_volatile((dtb + 4) as *const u32)) as usize;
        core::slice::from_raw_parts_mut(dtb as *mut u8, size)
    };
    FdtEdit::new(b).map_err(|_| "malformed device tree")
}

fn cells(e: &FdtEdit<'_>, root: usize, name: &str) -> usize {
    e.prop(root, name).and_then(|v| v.try_into().ok()).map_or(2, |v: [u8; 4]| u32::from_be_bytes(v) as usize)
}

fn read_cells(b: &[u8]) -> u64 {
    b.chunks_exact(4).fold(0, |acc, c| (acc << 32) | u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
}

fn write_cells(out: &mut [u8], cells: usize, value: u64) {
    out[..4 * cells].copy_from_slice(&value.to_be_bytes()[8 - 4 * cells..]);
}

/// Replace the memory `reg` entry whose base is `region_base` by the ranges `host`.
pub fn give_host(dtb: u64, region_base: u64, host: impl Iterator<Item = (u64, u64)>) -> Result<(), &'static str> {
    let mut e = edit(dtb)?;
    let root = e.node("/").ok_or("no root node")?;
    let (ac, sc) = (cells(&e, root, "#address-cells"), cells(&e, root, "#size-cells"));
    if !(1..=2).contains(&ac) || !(1..=2).contains(&sc) {
        return Err("unsupported #address-cells/#size-cells");
    }
    let entry = 4 * (ac + sc);
    let mut found = None;
    for node in e.nodes() {
        if e.prop(node, "device_type") != Some(b"memory\0") {
            continue;
        }
        let Some(reg) = e.prop(node, "reg") else { continue };
        if let Some(i) = reg.chunks_exact(entry).position(|c| read_cells(&c[..4 * ac]) == region_base) {
            found = Some((node, i));
            break;
        }
    }
    let (node, index) = found.ok_or("no memory node for KCore's region")?;
    let reg = e.prop(node, "reg").ok_or("no reg")?;
    let mut buf = [0u8; 512];
    let mut n = 0;
    let mut put = |buf: &mut [u8; 512], b: &[u8]| -> Result<(), &'static str> {
        buf.get_mut(n..n + b.len()).ok_or("memory node too long")?.copy_from_slice(b);
        n += b.len();
        Ok(())
    };
    put(&mut buf, &reg[..index * entry])?;
    let mut one = [0u8; 16];
    for (s, end) in host {
        if (ac == 1 && end > u32::MAX as u64) || (sc == 1 && end - s > u32::MAX as u64) {
            return Err("host range does not fit the cell size");
        }
        write_cells(&mut one, ac, s);
        write_cells(&mut one[4 * ac..], sc, end - s);
        put(&mut buf, &one[..entry])?;
    }
    put(&mut buf, &reg[(index + 1) * entry..])?;
    e.set_prop_at(node, "reg", &buf[..n]).map_err(|_| "no room in the device tree for the host's memory ranges")
}

/// Hide the SMMUv3 whose registers start at `base` from the host: its node goes, and so do
/// the properties that route other devices' DMA through it (`iommu-map`, `iommu-map-mask`
/// and `iommus` naming its phandle). The host then drives its devices with physical DMA
/// addresses, which KCore's host-DMA table maps for exactly the host's pages.
pub fn hide_smmu(dtb: u64, base: u64) -> Result<(), &'static str> {
    let mut e = edit(dtb)?;
    let root = e.node("/").ok_or("no root node")?;
    let ac = cells(&e, root, "#address-cells");
    let smmu = e
        .nodes()
        .find(|&n| {
            let compatible = e.prop(n, "compatible").unwrap_or(&[]);
            compatible.split(|&c| c == 0).any(|s| s == b"arm,smmu-v3")
                && e.prop(n, "reg").is_some_and(|r| r.len() >= 4 * ac && read_cells(&r[..4 * ac]) == base)
        })
        .ok_or("no arm,smmu-v3 node at its address")?;
    let phandle = e.prop(smmu, "phandle").and_then(|v| v.try_into().ok()).map(u32::from_be_bytes);
    e.nop_node(smmu).map_err(|_| "malformed SMMU node")?;
    let Some(phandle) = phandle else { return Ok(()) };
    let names = |e: &FdtEdit<'_>, n: usize, prop: &str, stride: usize, at: usize| {
        e.prop(n, prop).is_some_and(|v| {
            v.chunks_exact(4 * stride)
                .any(|c| u32::from_be_bytes([c[4 * at], c[4 * at + 1], c[4 * at + 2], c[4 * at + 3]]) == phandle)
        })
    };
    // NOPs move nothing, so node offsets stay valid while the properties go.
    let mut i = 0;
    loop {
        let Some(n) = e.nodes().nth(i) else { break };
        // iommu-map: (rid-base, iommu phandle, iommu-base, length) entries with
        // #iommu-cells = 1 (Documentation/devicetree/bindings/pci/pci-iommu.txt).
        if names(&e, n, "iommu-map", 4, 1) {
            e.nop_prop(n, "iommu-map");
            e.nop_prop(n, "iommu-map-mask");
        }
        if names(&e, n, "iommus", 2, 0) {
            e.nop_prop(n, "iommus");
        }
        i += 1;
    }
    Ok(())
}

/// What the device tree reserves: its memory reservation block (`/memreserve/`, where KCore's
/// UEFI loader puts the firmware's runtime and reserved regions) and the `reg` of every
/// `/reserved-memory` child. Fills `out` with `[start, end)` ranges, returns how many.
pub fn reserved(dtb: u64, out: &mut [(u64, u64)]) -> Result<usize, &'static str> {
    // SAFETY: the device tree was validated by `Platform::from_dtb` at the same address.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "unparsable")?;
    let mut n = 0;
    let mut push = |s: u64, size: u64| {
        if size == 0 {
            return Ok(());
        }
        let slot = out.get_mut(n).ok_or("too many reserved regions")?;
        *slot = (s, s.saturating_add(size));
        n += 1;
        Ok(())
    };
    for r in fdt.memory_reservations() {
        push(r.address() as u64, r.size() as u64)?;
    }
    if let Some(rm) = fdt.find_node("/reserved-memory") {
        for child in rm.children() {
            for r in child.reg().into_iter().flatten() {
                push(r.starting_address as u64, r.size.unwrap_or(0) as u64)?;
            }
        }
    }
    Ok(n)
}
