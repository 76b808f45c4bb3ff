//! What KCore learns from the device tree the boot loader passes: RAM, CPUs, the console,
//! PSCI, the GIC, the initrd, and KCore's own command-line options.

use core::fmt;
use fdt::Fdt;
use kcore::mem::memblock::MAX_REGIONS;
use kcore::psci::CpuTable;

/// KCore's options, from `kcore.*` words of `/chosen/bootargs` (the host ignores them).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `kcore.host=ADDR`: where the host kernel Image was loaded.
    pub host_image: Option<u64>,
    /// `kcore.log=error|warn|info|debug|trace`.
    pub log_level: log::LevelFilter,
    /// `kcore.semihosting`: the emulator offers semihosting (tests only): a fatal error exits
    /// it with a failure status.
    pub semihosting: bool,
    /// `kcore.smmu=hidden`: KCore keeps the SMMU to itself and removes it from the host's
    /// device tree (the host runs without an IOMMU) instead of emulating it for the host's
    /// own driver (the default).
    pub smmu_hidden: bool,
}

/// The platform facts KCore needs.
pub struct Platform {
    ram: [(u64, u64); MAX_REGIONS],
    ram_count: usize,
    /// CPUs by MPIDR.
    pub cpus: CpuTable,
    /// PL011 console base.
    pub uart: u64,
    /// The interrupt controller.
    pub gic: Gic,
    /// Size of the device tree blob.
    pub dtb_size: u64,
    /// Initrd `[start, end)`, if any.
    pub initrd: Option<(u64, u64)>,
    /// The SMMUv3 (`arm,smmu-v3`): its register frame `(base, size)`, if there is one.
    pub smmu: Option<(u64, u64)>,
    /// The SMMU's global-error interrupt (the INTID of the SPI its `interrupt-names` calls
    /// `gerror`), if the tree says.
    pub smmu_gerror: Option<u32>,
    /// Pages that receive device MSIs (GICv3 ITS: the frame of GITS_TRANSLATER; GICv2m: the
    /// frame of MSI_SETSPI_NS); 0 for none. A device's MSI is a DMA write, so the host-DMA
    /// table maps these.
    pub msi_doorbells: [u64; 4],
    /// KCore's options.
    pub options: Options,
}

/// The interrupt controller, as the device tree describes it; regions are `(base, size)`.
#[derive(Clone, Copy, Debug)]
pub enum Gic {
    /// A GICv3 (`arm,gic-v3`): distributor base, and the (first) redistributor region.
    V3 { gicd: u64, gicr: (u64, u64) },
    /// A GICv2 with the virtualization extensions (`arm,cortex-a15-gic`, `arm,gic-400`; its
    /// `reg` lists GICD, GICC, GICH, GICV: Documentation/devicetree/bindings/interrupt-
    /// controller/arm,gic.yaml).
    V2 { gicd: (u64, u64), gicc: (u64, u64), gich: (u64, u64), gicv: (u64, u64) },
}

/// Why the device tree is not usable.
#[derive(Debug)]
pub enum DtbError {
    /// Not a valid FDT.
    Parse,
    /// A required node or property is missing or malformed.
    Missing(&'static str),
    /// PSCI is not reached through SMC.
    PsciConduit,
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtbError::Parse => write!(f, "not a valid flattened device tree"),
            DtbError::Missing(what) => write!(f, "missing or malformed {what}"),
            DtbError::PsciConduit => write!(f, "PSCI must use the smc conduit (KCore owns EL2)"),
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Options {
    fn parse(bootargs: &str) -> Options {
        let mut o =
            Options { host_image: None, log_level: log::LevelFilter::Info, semihosting: false, smmu_hidden: false };
        for word in bootargs.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "kcore.host" => o.host_image = parse_u64(value),
                "kcore.semihosting" => o.semihosting = true,
                "kcore.smmu" => o.smmu_hidden = value == "hidden",
                "kcore.log" => {
                    o.log_level = match value {
                        "error" => log::LevelFilter::Error,
                        "warn" => log::LevelFilter::Warn,
                        "debug" => log::LevelFilter::Debug,
                        "trace" => log::LevelFilter::Trace,
                        _ => log::LevelFilter::Info,
                    }
                }
                _ => {}
            }
        }
        o
    }
}

impl Platform {
    /// Parse the device tree at physical address `dtb`.
    pub fn from_dtb(dtb: u64) -> Result<Platform, DtbError> {
        if dtb == 0 || !dtb.is_multiple_of(8) {
            return Err(DtbError::Parse);
        }
        // SAFETY: the boot protocol passes the device tree's address in x0; `from_ptr` checks
        // the magic and reads no further than the header's totalsize.
        let fdt = unsafe { Fdt::from_ptr(dtb as *const u8) }.map_err(|_| DtbError::Parse)?;

        let mut ram = [(0, 0); MAX_REGIONS];
        let mut ram_count = 0;
        for node in fdt.all_nodes() {
            let is_memory = node.property("device_type").and_then(|p| p.as_str()) == Some("memory");
            if !is_memory {
                continue;
            }
            for r in node.reg().into_iter().flatten() {
                let size = r.size.unwrap_or(0) as u64;
                if size != 0 && ram_count < MAX_REGIONS {
                    ram[ram_count] = (r.starting_address as u64, size);
                    ram_count += 1;
                }
            }
        }
        if ram_count == 0 {
            return Err(DtbError::Missing("/memory"));
        }

        let cpus = CpuTable::new(fdt.cpus().map(|c| c.ids().first() as u64));
        if cpus.is_empty() {
            return Err(DtbError::Missing("/cpus"));
        }
        let method = fdt.find_node("/psci").and_then(|n| n.property("method")).and_then(|p| p.as_str());
        if method != Some("smc") {
            return Err(DtbError::PsciConduit);
        }

        let chosen = fdt.find_node("/chosen").ok_or(DtbError::Missing("/chosen"))?;
        let stdout = chosen.property("stdout-path").and_then(|p| p.as_str()).ok_or(DtbError::Missing("stdout-path"))?;
        let stdout = stdout.split(':').next().unwrap_or(stdout);
        let uart_node = fdt.find_node(stdout).ok_or(DtbError::Missing("console node"))?;
        let is_pl011 = uart_node.compatible().is_some_and(|c| c.all().any(|s| s == "arm,pl011"));
        if !is_pl011 {
            return Err(DtbError::Missing("a PL011 console"));
        }
        let uart = uart_node
            .reg()
            .and_then(|mut r| r.next())
            .map(|r| r.starting_address as u64)
            .ok_or(DtbError::Missing("console reg"))?;

        let gic = if let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) {
            let mut regs = gic.reg().ok_or(DtbError::Missing("GIC reg"))?;
            let gicd = regs.next().map(|r| r.starting_address as u64).ok_or(DtbError::Missing("GICD reg"))?;
            let gicr = regs
                .next()
                .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64))
                .ok_or(DtbError::Missing("GICR reg"))?;
            Gic::V3 { gicd, gicr }
        } else {
            let gic = fdt
                .find_compatible(&["arm,gic-400", "arm,cortex-a15-gic"])
                .ok_or(DtbError::Missing("a GICv3, or a GICv2 with virtualization (GIC-400)"))?;
            let mut regs = gic
                .reg()
                .ok_or(DtbError::Missing("GIC reg"))?
                .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
            let mut next = |what| regs.next().filter(|r| r.1 != 0).ok_or(DtbError::Missing(what));
            let (gicd, gicc) = (next("GICD reg")?, next("GICC reg")?);
            // Without GICH and GICV there are no virtualization extensions: no guests' GIC.
            let (gich, gicv) = (next("GICH reg (GICv2 virtualization)")?, next("GICV reg (GICv2 virtualization)")?);
            Gic::V2 { gicd, gicc, gich, gicv }
        };

        let initrd = match (
            chosen.property("linux,initrd-start").and_then(|p| p.as_usize()),
            chosen.property("linux,initrd-end").and_then(|p| p.as_usize()),
        ) {
            (Some(s), Some(e)) if e > s => Some((s as u64, e as u64)),
            _ => None,
        };
        let smmu = fdt
            .find_compatible(&["arm,smmu-v3"])
            .and_then(|n| n.reg()?.next())
            .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
        // The `gerror` entry of `interrupts`, in the GIC's three cells (type, number, flags;
        // type 0 is an SPI, INTID = number + 32: Documentation/devicetree/bindings/
        // interrupt-controller/arm,gic-v3.yaml).
        let smmu_gerror = fdt.find_compatible(&["arm,smmu-v3"]).and_then(|n| {
            let names = n.property("interrupt-names")?.value;
            let index = names.split(|&c| c == 0).position(|s| s == b"gerror")?;
            let entry = n.property("interrupts")?.value.chunks_exact(12).nth(index)?;
            let cell = |i: usize| u32::from_be_bytes([entry[i], entry[i + 1], entry[i + 2], entry[i + 3]]);
            (cell(0) == 0).then(|| cell(4) + 32)
        });
        let mut msi_doorbells = [0; 4];
        let mut n_doorbells = 0;
        for node in fdt.all_nodes() {
            let Some(c) = node.compatible() else { continue };
            // GICv3 12.19: GITS_TRANSLATER is at 0x10040, in the ITS's second 64 KiB frame.
            // GICv2m: MSI_SETSPI_NS at 0x40 of the frame.
            let offset = if c.all().any(|s| s == "arm,gic-v3-its") {
                0x1_0000
            } else if c.all().any(|s| s == "arm,gic-v2m-frame") {
                0
            } else {
                continue;
            };
            if let Some(r) = node.reg().and_then(|mut r| r.next())
                && n_doorbells < msi_doorbells.len()
            {
                msi_doorbells[n_doorbells] = r.starting_address as u64 + offset;
                n_doorbells += 1;
            }
        }
        let bootargs = chosen.property("bootargs").and_then(|p| p.as_str()).unwrap_or("");
        Ok(Platform {
            ram,
            ram_count,
            cpus,
            uart,
            gic,
            dtb_size: fdt.total_size() as u64,
            initrd,
            smmu,
            smmu_gerror,
            msi_doorbells,
            options: Options::parse(bootargs),
        })
    }

    /// RAM ranges `(base, size)`.
    pub fn ram(&self) -> &[(u64, u64)] {
        &self.ram[..self.ram_count]
    }
}
