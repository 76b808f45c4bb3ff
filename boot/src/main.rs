//! The KCore EL2 binary.
//!
//! Boot flow on the primary CPU: the Image header and `entry.S` set a stack and the vectors;
//! [`kcore_primary_main`] reads the device tree, plans KCore's memory, hides it from the host
//! in the device tree it hands on, builds KCore's own EL2 map and turns the MMU on, sets up
//! the `kcore` state (ownership records, the host's stage-2 root), programs the EL2 state an
//! EL1 host needs, and enters the host kernel at EL1 with x0 = device tree. Other CPUs arrive
//! through the host's PSCI CPU_ON, which KCore rewrites so they start in
//! [`kcore_secondary_main`] first.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("kcore: the EL2 binary only builds for aarch64-unknown-none-softfloat; use scripts/build.sh");
    std::process::exit(2);
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod dtb;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod efi;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod fatal;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod fdtedit;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod layout;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod platform;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod sysreg;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod trap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod world;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod el2 {
    use crate::cpu::{self, El2Regs, Features};
    use crate::fatal::fatal;
    use crate::layout;
    use crate::platform::{Gic, Platform};
    use crate::{console, dtb};
    use kcore::el2map::{self, Kind, Segment};
    use kcore::kcore::{KCore, MemoryPlan};
    use kcore::machine::hw::Hardware;
    use kcore::mem::memblock::MemBlocks;
    use kcore::psci::{CpuTable, HostEntries};
    use kcore::pt::nptwalk::Npt;
    use kcore::pt::ptalloc::PagePool;
    use kcore::{BLOCK_2M, PAGE_SIZE, align_down, align_up};
    use spin::Once;

    core::arch::global_asm!(include_str!("entry.S"));

    unsafe extern "C" {
        fn kcore_secondary_entry();
        fn kcore_enter_el1(entry: u64, arg: u64, stack_top: u64) -> !;
    }

    /// KCore's state, set once by the primary CPU before any other CPU runs.
    pub static KCORE: Once<KCore<Hardware>> = Once::new();
    /// The machine's CPUs (device tree order; index 0 is the boot CPU).
    pub static CPUS: Once<CpuTable> = Once::new();
    /// EL2 register values every CPU loads.
    pub static EL2_REGS: Once<El2Regs> = Once::new();
    /// Where the host asked each CPU to start.
    pub static HOST_ENTRIES: HostEntries = HostEntries::new();
    /// The interrupt controller.
    pub static GIC: Once<Gic> = Once::new();
    /// Options from the command line.
    pub static OPTIONS: Once<crate::platform::Options> = Once::new();

    /// The Ed25519 public key VM images must be signed with (boot/build.rs).
    const VM_KEY: [u8; 32] = hex32(env!("KCORE_VM_PUBKEY_HEX"));

    const fn hex32(s: &str) -> [u8; 32] {
        const fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not hex"),
            }
        }
        let b = s.as_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
            i += 1;
        }
        out
    }

    /// Pages of the pool reserved for KCore's own EL2 tables.
    const EL2_POOL_PAGES: u64 = 64;

    fn current_cpu() -> usize {
        cpu::current_index()
    }

    /// Physical address where firmware starts secondary CPUs.
    pub fn secondary_entry() -> u64 {
        kcore_secondary_entry as *const () as u64
    }

    /// Enter the host at EL1 on this CPU.
    fn enter_host(cpu_index: usize, entry: u64, arg: u64) -> ! {
        cpu::set_host_return_state();
        // SAFETY: `entry` is the host's entry point (the kernel Image KCore checked, or what
        // the host gave PSCI); KCore's state for this CPU is complete, and the stack top is
        // this CPU's own stack, which nothing references once we leave EL2.
        unsafe { kcore_enter_el1(entry, arg, layout::stack_top(cpu_index)) }
    }

    /// The host's ranges of KCore's region, for the log.
    struct Ranges<'a>(&'a MemoryPlan);

    impl core::fmt::Display for Ranges<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (i, (s, e)) in self.0.host_ranges().enumerate() {
                write!(f, "{}{s:#x}..{e:#x}", if i > 0 { ", " } else { "" })?;
            }
            Ok(())
        }
    }

    /// Clean and invalidate `[start, end)` to the point of coherency by address. KCore writes
    /// its metadata and tables there with the MMU off (non-cacheable): a boot loader that ran
    /// with caches on (UEFI firmware) may have left dirty lines there, which would otherwise
    /// be written back over them later, or be read instead of them once the MMU is on.
    fn clean_inval_poc(start: u64, end: u64) {
        // CTR_EL0.DminLine (bits 19:16): log2 of the smallest data cache line in words.
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut a = start & !(line - 1);
        while a < end {
            // SAFETY: data cache maintenance by address on RAM KCore owns; it changes no
            // memory contents the program relies on (lines are written back, not discarded).
            unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
            a += line;
        }
        // SAFETY: a barrier has no memory-safety preconditions.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
    }

    /// Pages the host's devices reach (for the boot log).
    fn count_dma_pages(kc: &KCore<Hardware>) -> u64 {
        let mut n = 0;
        if let Some(w) = kc.dma.table.walker() {
            w.for_each_leaf(&kc.m, |_, _| n += 1);
        }
        n
    }

    #[unsafe(no_mangle)]
    extern "C" fn kcore_primary_main(dtb_pa: u64) -> ! {
        let plat = match Platform::from_dtb(dtb_pa) {
            Ok(p) => p,
            Err(e) => fatal(format_args!("device tree at {dtb_pa:#x}: {e}")),
        };
        console::init(plat.uart, plat.options.log_level);
        OPTIONS.call_once(|| plat.options);
        let features = Features::read();
        log::info!(
            "KCore {} starting at EL2: {} CPUs, uart {:#x}, dtb {:#x}, PA {} bits",
            env!("CARGO_PKG_VERSION"),
            plat.cpus.len(),
            plat.uart,
            dtb_pa,
            features.pa_bits
        );
        let Some(ipa_bits) = kcore::arch::host_ipa_bits(features.parange) else {
            fatal(format_args!(
                "the CPU's physical address size ({} bits) is below the {} bits KCore's stage-2 needs \
                 (a VM's IPA space is 40 bits): stopping",
                features.pa_bits,
                kcore::arch::MIN_PA_BITS
            ))
        };
        match plat.gic {
            Gic::V3 { gicd, gicr } => {
                log::info!("GICv3: distributor {gicd:#x}, redistributors {:#x} (+{:#x})", gicr.0, gicr.1)
            }
            Gic::V2 { gicd, gicc, gich, gicv } => log::info!(
                "GICv2: distributor {:#x}, CPU interface {:#x}, virtual interface control {:#x} and virtual CPU \
                 interface {:#x} (KCore's: kept from the host)",
                gicd.0,
                gicc.0,
                gich.0,
                gicv.0
            ),
        }
        CPUS.call_once(|| plat.cpus);

        let mb = MemBlocks::new(plat.ram()).unwrap_or_else(|e| fatal(format_args!("memory map: {e:?}")));
        let (image_start, image_end) = layout::image();
        let host_image = plat.options.host_image.unwrap_or(align_up(image_end, BLOCK_2M));
        if mb.search(host_image).is_none() {
            fatal(format_args!("host kernel address {host_image:#x} is not RAM"));
        }
        let host_size = match layout::linux_image_size(host_image) {
            Some(s) => s,
            None => fatal(format_args!(
                "no arm64 kernel Image at {host_image:#x} (load the host kernel there, or pass kcore.host=ADDR)"
            )),
        };
        let mut keep = [(dtb_pa, dtb_pa + plat.dtb_size), (host_image, host_image + host_size), (0, 0)];
        if let Some(initrd) = plat.initrd {
            keep[2] = initrd;
        }
        // What the firmware keeps for itself (UEFI runtime services and reserved memory, as
        // KCore's UEFI loader lists them in /memreserve/; /reserved-memory): KCore's pieces
        // step around them.
        let mut avoid = [(0, 0); 64];
        let n_avoid = dtb::reserved(dtb_pa, &mut avoid).unwrap_or_else(|e| fatal(format_args!("device tree: {e}")));
        let avoid = &avoid[..n_avoid];
        // With an SMMU, the table pool also holds the SMMU's tables and queues (at its end).
        let smmu_pool = match plat.smmu {
            Some(_) => kcore::kcore::smmu_pool_bytes(mb.total_pages() * PAGE_SIZE),
            None => 0,
        };
        let plan = MemoryPlan::with_extra_pool(&mb, (image_start, image_end), &keep, avoid, smmu_pool)
            .unwrap_or_else(|e| fatal(format_args!("no room for KCore's memory next to what the host needs ({e:?})")));
        clean_inval_poc(plan.kcore_high.0, plan.kcore_high.1);
        if let Err(e) = dtb::give_host(dtb_pa, plan.region.0, plan.host_ranges()) {
            fatal(format_args!("cannot hide KCore's memory in the device tree: {e}"));
        }
        // The SMMU is KCore's. By default the host keeps it in its device tree and its own
        // driver programs it through KCore's emulation; with kcore.smmu=hidden the host never
        // learns it exists. Either way its devices' DMA goes through KCore's host-DMA table.
        let smmu_regs =
            plat.smmu.map(|(base, size)| (align_down(base, PAGE_SIZE), align_up(base + size.max(0x2_0000), PAGE_SIZE)));
        let smmu_hidden = plat.options.smmu_hidden;
        if let Some((base, _)) = plat.smmu
            && smmu_hidden
            && let Err(e) = dtb::hide_smmu(dtb_pa, base)
        {
            fatal(format_args!("cannot hide the SMMU at {base:#x} in the device tree: {e}"));
        }

        // KCore's own EL2 identity map, written once here with the MMU off.
        let hw = Hardware {
            cpu_index: current_cpu,
            fp_save: crate::world::kcore_fp_save,
            fp_load: crate::world::kcore_fp_restore,
            ppi_frame: cpu::redistributor_sgi_frame,
            gich: match plat.gic {
                Gic::V2 { gich, .. } => gich.0,
                Gic::V3 { .. } => 0,
            },
            smmu: smmu_regs.map_or(0, |r| r.0),
            gicd: match plat.gic {
                Gic::V3 { gicd, .. } => gicd,
                Gic::V2 { gicd, .. } => gicd.0,
            },
        };
        let el2_pool = PagePool::new(plan.pool.0, plan.pool.0 + EL2_POOL_PAGES * PAGE_SIZE);
        let smmu_pool = (plan.pool.1 - align_up(smmu_pool, PAGE_SIZE), plan.pool.1);
        let host_pool = PagePool::new(plan.pool.0 + EL2_POOL_PAGES * PAGE_SIZE, smmu_pool.0);
        let el2_root = el2_pool.alloc(&hw).unwrap_or_else(|_| fatal(format_args!("EL2 table pool empty")));
        let el2 = Npt { root: el2_root, ia_bits: 48 };
        let mut segs = [Segment { start: 0, end: 0, kind: Kind::ReadWrite }; 48];
        // The GIC frames KCore itself programs: GICv3 redistributors (the EL2 timer's and the
        // maintenance interrupt's enables); GICv2 distributor (the same, banked per CPU) and
        // GICH (the guests' list registers).
        // And the SMMU's registers, which KCore alone programs, and (GICv3) the distributor,
        // where KCore pends the SMMU's global-error interrupt for the host's driver (its
        // 64 KiB frame, GICv3 12.9).
        let smmu_frame = smmu_regs.map_or((0, 0), |(s, e)| (s, e - s));
        let gic_frames = match plat.gic {
            Gic::V3 { gicd, gicr } => [gicr, (gicd, 0x1_0000), smmu_frame],
            Gic::V2 { gicd, gich, .. } => [gicd, gich, smmu_frame],
        };
        let n = layout::el2_segments(&mb, plat.uart, &gic_frames, &mut segs);
        if let Err(e) = el2map::build(&hw, &el2_pool, &el2, &segs[..n]) {
            fatal(format_args!("building KCore's EL2 map: {e:?}"));
        }
        // Built in place in its static: the state is tens of KiB, too big to move around.
        let kc = KCORE.call_once(|| {
            KCore::new_with_key(hw, mb, plan.meta_base, host_pool, ipa_bits, VM_KEY)
                .unwrap_or_else(|e| fatal(format_args!("KCore state: {e:?}")))
        });
        kc.guest_cpu.configure(&cpu::read_id_regs(), ipa_bits);
        if let Gic::V2 { gich, gicv, .. } = plat.gic {
            let page_range = |r: (u64, u64)| (align_down(r.0, PAGE_SIZE), align_up(r.0 + r.1, PAGE_SIZE));
            if let Err(e) = kc.configure_gic_v2(page_range(gich), page_range(gicv)) {
                fatal(format_args!("GICv2 virtual interface {gich:x?}, {gicv:x?}: {e:?}"));
            }
        }
        let gf = kc.guest_cpu.features();
        log::info!(
            "guests: SVE, SME, pointer authentication, MTE, PMU, RAS, LOR, AMU hidden; debug emulated (FGT {}, HCX {})",
            gf.fgt,
            gf.hcx
        );
        let regs = El2Regs::new(&features, el2_root, kc.host.expect_npt().root, ipa_bits);
        EL2_REGS.call_once(|| regs);
        cpu::enable_mmu(&regs);
        console::mmu_on();
        GIC.call_once(|| plat.gic);
        cpu::find_ppi_frame(&plat.gic);

        for (start, end) in [plan.kcore_low, plan.kcore_high] {
            if let Err(e) = kc.mem().protect_kcore(start, end) {
                fatal(format_args!("protecting KCore memory {start:#x}..{end:#x}: {e:?}"));
            }
        }
        if let Some(regs) = smmu_regs {
            let doorbells = plat.msi_doorbells;
            let doorbells = &doorbells[..doorbells.iter().take_while(|&&d| d != 0).count()];
            if let Some(intid) = plat.smmu_gerror {
                kc.smmu.set_gerror_intid(intid);
            }
            match kc.take_smmu(regs, smmu_pool, doorbells, !smmu_hidden) {
                Ok(info) => log::info!(
                    "SMMUv3 at {:#x} is KCore's ({}): {}-bit stream IDs, {}-bit output; streams 0..{:#x} \
                     through the host-DMA table ({} pages: the host's RAM and {} MSI doorbell page(s)), the \
                     rest refused; DMA aborts when disabled",
                    regs.0,
                    if smmu_hidden { "hidden from the host" } else { "emulated for the host's driver" },
                    info.sid_bits,
                    info.oas_bits,
                    u64::from(kcore::smmu::queue::L2_TABLES) << kcore::smmu::queue::SPLIT,
                    count_dma_pages(kc),
                    doorbells.len()
                ),
                // Devices the host drives could reach any page: KCore does not run like that.
                Err(e) => fatal(format_args!("cannot take the SMMU at {:#x}: {e:?}", regs.0)),
            }
        }
        log::info!(
            "memory: KCore {:#x}..{:#x} (image) and {:#x}..{:#x} (metadata {} KiB, tables {} KiB); host RAM {}",
            plan.kcore_low.0,
            plan.kcore_low.1,
            plan.kcore_high.0,
            plan.kcore_high.1,
            (plan.pool.0 - plan.meta_base) / 1024,
            (plan.pool.1 - plan.pool.0) / 1024,
            Ranges(&plan)
        );
        // Every memory node of the device tree; the host owns all of it but KCore's part.
        for r in kc.mb.regions() {
            log::info!("RAM {:#x}..{:#x} ({} MiB)", r.base, r.base + r.size, r.size >> 20);
        }
        // Where KCore runs: the tests probe this address from the host, wherever the loader put it.
        log::info!(
            "KCore image at {image_start:#x}..{image_end:#x} ({})",
            if image_start == layout::LINK_ADDR {
                "its link address"
            } else {
                "relocated: the loader chose the address"
            }
        );
        for (s, e) in avoid {
            log::info!("firmware-reserved {s:#x}..{e:#x}: neither KCore's nor the host's to allocate");
        }
        let host_s2 = kc.host.expect_npt();
        log::info!(
            "host stage-2: {ipa_bits}-bit IPA, level-{} root {:#x} ({} page{}), filled on demand",
            host_s2.start_level(),
            host_s2.root,
            host_s2.root_pages(),
            if host_s2.root_pages() == 1 { "" } else { "s" }
        );
        log::info!(
            "VM images must be signed with Ed25519 key {:02x}{:02x}{:02x}{:02x}... ({})",
            VM_KEY[0],
            VM_KEY[1],
            VM_KEY[2],
            VM_KEY[3],
            env!("KCORE_VM_KEY_SOURCE")
        );
        cpu::setup_host_el2(&features);
        cpu::enable_host_stage2(&regs);
        log::info!("entering host kernel at {host_image:#x} at EL1 (x0 = dtb {dtb_pa:#x})");
        enter_host(0, host_image, dtb_pa)
    }

    #[unsafe(no_mangle)]
    extern "C" fn kcore_secondary_main(index: u64) -> ! {
        let index = index as usize;
        let Some(regs) = EL2_REGS.get() else { fatal(format_args!("cpu {index} started before KCore was set up")) };
        cpu::enable_mmu(regs);
        if let Some(gic) = GIC.get() {
            cpu::find_ppi_frame(gic);
        }
        let features = Features::read();
        cpu::setup_host_el2(&features);
        cpu::enable_host_stage2(regs);
        let (entry, context) = HOST_ENTRIES.get(index);
        if entry == 0 {
            fatal(format_args!("cpu {index} started with no host entry point recorded"));
        }
        log::debug!("cpu {index} up, entering host at {entry:#x}");
        enter_host(index, entry, context)
    }
}
