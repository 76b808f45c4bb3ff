#!/usr/bin/env bash
# Tier 3: KCore + the stock Debian arm64 kernel as the host, driven through scripts/run.sh
# --exec; verdicts from the command's output and KCore's console lines.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/out/tests"
mkdir -p "$OUT"
source "$ROOT/tests/lib.sh"

# host NAME RUN.SH-ARGS...: boot, leaving output in $OUT/NAME.out, console in $OUT/NAME.log,
# status in $OUT/NAME.status.
host() {
    local name="$1"; shift
    "$ROOT/scripts/run.sh" --no-setup --semihosting --timeout 300 "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo $? > "$OUT/$name.status"
    cp "$ROOT/out/console.log" "$OUT/$name.log" 2>/dev/null || true
}
out() { cat "$OUT/$1.out"; }
line() { sed -n "${2}p" "$OUT/$1.out"; }
status() { cat "$OUT/$1.status"; }
console_has() { grep -qF -- "$2" "$OUT/$1.log"; }

busybox_md5=$(md5sum "$ROOT/.cache/arm64/bin/busybox" | cut -c1-32)

# DMA and the SMMU (tests/dma-smmu.sh; scripts/run.sh --edu): KCore owns the machine's SMMUv3,
# so that a host device's DMA reaches only memory the host owns. The host has its disk and
# network card as virtio-pci behind the SMMU (scripts/run.sh), and QEMU's edu device, a DMA
# engine the project's edu_attack.ko (kserv-shim/dma-attack) aims at KCore's image
# (0x40200000) and at a protected VM's secret page (kvm-smoke's vault guest, its page found
# as tests/vm-attack.sh finds it): unbound (no IOMMU domain of the host's), bound as a PCI
# driver, and after turning the SMMU off through its registers. On 6.1 and 6.12 hosts, with
# the host's default DMA domain, with iommu.passthrough=1 (bypass stream table entries), and
# on 6.1 with arm-smmu-v3.disable_bypass=0 (unattached entries bypass): whatever the host
# asks of the SMMU, its own DMA works and none of it reaches KCore or the VM. Run alone with
# `tests/linux-host.sh dma`.
dma_checks() {
    local n="$1" tag="$2" mode="$3" f="$OUT/$1.out" domain=Translated
    [ "$mode" = passthrough ] && domain=Passthrough
    check "$tag: the host's stock driver probes the SMMU, its default domain is $domain" bash -c "test '$(status "$n")' = 0 && grep -qx 'smmu-probed 1' '$f' && grep -qx 'default-domain $domain' '$f'"
    check "$tag: the host's disk (virtio-blk-pci behind the SMMU) reads back right, before and after the attacks" bash -c "grep -qx 'disk-md5 $dma_disk_md5' '$f' && grep -qx 'disk-md5-after $dma_disk_md5' '$f'"
    check "$tag: a file over its network card (virtio-net-pci behind the SMMU) arrives whole" grep -qx "net-md5 $dma_net_md5" "$f"
    if [ "$mode" = default ]; then
        check "$tag: the edu device bound as a PCI driver does a DMA-API round trip in its IOMMU domain" grep -q "^bound: EDU: legit ok " "$f"
    fi
    # A read the SMMU refuses comes back as zeros in QEMU (got-zeros); KCore's image starts
    # with its Image header, never zeros. No got-data at all, and never KCore's first bytes.
    check "$tag: a raw DMA read of KCore's image, unbound and bound, never returns its bytes" bash -c "for p in nobind bound; do grep -qE \"^\$p: EDU: read 0x40200000 (got-zeros|unchanged|readback-failed)\" '$f' || exit 1; done; ! grep -E '^(nobind|bound): ' '$f' | grep -q 'got-data $dma_kcore_head'"
    check "$tag: a raw DMA read of a protected VM's secret page, unbound and bound, never returns the secret" bash -c "pa=\$(sed -n 's/^vm-secret-pa \(0x[0-9a-f]*\)\$/\1/p' '$f') && [ -n \"\$pa\" ] && for p in nobind-vm vm; do grep -qE \"^\$p: EDU: read \$pa (got-zeros|unchanged|readback-failed)\" '$f' || exit 1; done; ! grep -qE '^(nobind-vm|vm): .*065be8d2c4913a7f' '$f'"
    check "$tag: raw DMA writes into a protected VM's secret page, unbound and bound, leave it whole (the guest checks)" bash -c "pa=\$(sed -n 's/^vm-secret-pa \(0x[0-9a-f]*\)\$/\1/p' '$f') && [ -n \"\$pa\" ] && grep -q \"^vm: EDU: write \$pa issued\" '$f' && ! grep -q \"^vm: EDU: write-check \$pa landed\" '$f' && grep -qx \"vault-guest-output 'VAULT planted / VAULT intact'\" '$f' && grep -qx 'vault-vmm-status 0' '$f'"
    check "$tag: the SMMU's registers from the host (GBPA bypass, SMMU off, its own stream table and command queue) open no way to KCore's image" bash -c "grep -qE '^mmio: EDU: mmio-read 0x40200000 (got-zeros|unchanged|readback-failed)' '$f'"
    # forge=1 (edu_attack.c, step_forge): the SMMU programmed behind the running driver's
    # back, through a command queue of the module's own. A forged bypass STE is honoured as
    # KCore's stage 2 only: a host page read by its PA arrives (so the forged entry did take
    # effect), KCore's image and the VM's page do not.
    check "$tag: a forged bypass STE for the edu device (CFGI_STE through the host's own command queue) reaches host pages by PA, never KCore's image or the VM's secret page" bash -c "pa=\$(sed -n 's/^vm-secret-pa \(0x[0-9a-f]*\)\$/\1/p' '$f') && [ -n \"\$pa\" ] && grep -qE '^forge: EDU: forge bypass-own 0x[0-9a-f]+ got-data 4544556f776e2e2e' '$f' && grep -qE '^forge: EDU: forge bypass-read 0x40200000 (got-zeros|unchanged)' '$f' && grep -qE \"^forge: EDU: forge bypass-read \$pa (got-zeros|unchanged)\" '$f' && grep -q \"^forge: EDU: forge bypass-write \$pa issued\" '$f' && ! grep -E '^forge: ' '$f' | grep -qE 'got-data ($dma_kcore_head|065be8d2c4913a7f)'"
    check "$tag: a forged stage-2 STE with the host's own identity table aborts every access (even to host pages); the driver's STE is put back and its DMA works again" bash -c "pa=\$(sed -n 's/^vm-secret-pa \(0x[0-9a-f]*\)\$/\1/p' '$f') && for t in 0x[0-9a-f]+ 0x40200000 \$pa; do grep -qE \"^forge: EDU: forge s2-(own|read) \$t (got-zeros|unchanged)\" '$f' || exit 1; done && grep -qE '^forge: EDU: forge s2-own 0x[0-9a-f]+ got-zeros' '$f' && grep -qx 'forge: EDU: forge ste restored yes' '$f' && grep -q '^forge: EDU: legit ok ' '$f'"
    check "$tag: commands the host may not send (TLBI_EL2_ALL, TLBI_S12_VMALL, TLBI_S2_IPA, ATC_INV, PRI_RESP, RESUME, CFGI_VMS_PIDM, an undefined opcode) each stop the queue at that entry with CERROR_ILL and GERROR.CMDQ_ERR, and it resumes after GERRORN" bash -c "for c in tlbi-el2-all tlbi-s12-vmall tlbi-s2-ipa atc-inv pri-resp resume cfgi-vms-pidm undefined-0x7e; do grep -qE \"^forge: EDU: forge cmd \$c refused \\(entry (0x[0-9a-f]+) cons 0x10000[0-9a-f]{2} err 1 gerror toggled\\) acknowledged, resumed \" '$f' || exit 1; done && grep -q '^forge: EDU: forge cmd sync accepted ' '$f'"
    check "$tag: CMD_SYNC with an MSI to KCore's image or to a host page completes with the MSI dropped (the host page untouched); a command queue in KCore's memory stops with CERROR_ABT" bash -c "grep -q '^forge: EDU: forge cmd sync-msi-kcore accepted .*gerror unchanged' '$f' && grep -q '^forge: EDU: forge cmd sync-msi-own accepted .*gerror unchanged' '$f' && grep -qx 'forge: EDU: forge cmd sync-msi-own target untouched' '$f' && grep -q '^forge: EDU: forge cmdq-in-kcore refused-abt .* acknowledged yes ' '$f'"
    check "$tag: MSI addresses and the event queue aimed at KCore's image are refused (IRQ_CFG0 reads 0; EVTQ_BASE kept while enabled; enabling it there leaves CR0ACK.EVTQEN 0), and the driver's event queue comes back" bash -c "grep -qx 'forge: EDU: forge irq-cfg0 gerror read 0x0 evtq read 0x0 (refused)' '$f' && grep -q '^forge: EDU: forge evtq-base while-enabled read .* (kept)' '$f' && grep -q '^forge: EDU: forge evtq-base disabled .* (refused)' '$f' && grep -q '^forge: EDU: forge evtq restored .* (ok)' '$f'"
    # donate=1 (step_donate): the page a DMA-API mapping points at, donated to KCore while
    # the device writes into it; every write after the hypercall faults at stage 2 there.
    check "$tag: a page donated to KCore while the device writes into it: the writes before land, the donation succeeds, every write after it faults at stage 2 at that page" bash -c "grep -q '^donate: EDU: donate before .* writes landed' '$f' && grep -q '^donate: EDU: donate hypercall vmid 0 .* -> 0 (donated)' '$f' && set -- \$(sed -n 's/^donate: EDU: donate after 5 writes: smmu-events \([0-9]*\) stage-2-at-pa \([0-9]*\) .*/\1 \2/p' '$f') && [ \"\${1:-0}\" -ge 5 ] && [ \"\$1\" = \"\$2\" ]"
    check "$tag: the host survives it all (no oops or warning, still running) and KCore never halted" bash -c "grep -qx 'host-kernel-complaints 0' '$f' && grep -qx 'host-kernel-complaints-after-forge 0' '$f' && grep -qx 'host-kernel-complaints-after-mmio 0' '$f' && grep -q '^host-alive ' '$f' && ! grep -qE 'KCore halted|invariant broken' '$OUT/$n.log'"
}
dma_smmu_section() {
    local script
    script="$(cat "$ROOT/tests/dma-smmu.sh")"
    dma_disk_md5=$(md5sum "$ROOT/out/host-disk.img" | cut -c1-32)
    dma_net_md5=$(md5sum "$ROOT/out/host-net.bin" | cut -c1-32)
    dma_kcore_head=$(od -An -tx1 -N16 "$ROOT/out/kcore.bin" | tr -d ' \n')
    echo "DMA and the SMMU"
    host dma --edu --cpus 2 --timeout 300 --exec "$script"
    dma_checks dma "DMA (6.1 host, default domain)" default
    host dma-pt --edu --cpus 2 --timeout 300 --append iommu.passthrough=1 --exec "$script"
    dma_checks dma-pt "DMA (6.1 host, iommu.passthrough=1)" passthrough
    host dma-bypass --edu --cpus 2 --timeout 300 --append arm-smmu-v3.disable_bypass=0 --exec "$script"
    dma_checks dma-bypass "DMA (6.1 host, arm-smmu-v3.disable_bypass=0)" bypass
    host dma-612 --edu --cpus 2 --timeout 300 --host-kernel "$bpo_kernel" --exec "$script"
    dma_checks dma-612 "DMA (6.12 host, default domain)" default
    host dma-612-pt --edu --cpus 2 --timeout 300 --host-kernel "$bpo_kernel" --append iommu.passthrough=1 --exec "$script"
    dma_checks dma-612-pt "DMA (6.12 host, iommu.passthrough=1)" passthrough
    # A device on PCI bus 9 (behind the ninth root port: stream 0x900, beyond the 2048
    # streams KCore's stream table covers from boot): KCore gives its group a table when the
    # host's driver attaches it, so its DMA works through the IOMMU, and stays confined.
    local ports=() i
    for i in $(seq 1 9); do
        ports+=(--qemu-arg -device --qemu-arg "pcie-root-port,id=rp$i,bus=pcie.0,chassis=$i,addr=0x$((10 + i))")
    done
    host dma-bus9 --cpus 2 --timeout 300 "${ports[@]}" --qemu-arg -device --qemu-arg "edu,dma_mask=0xffffffffffffffff,bus=rp9" --exec '
insmod /lib/modules/$(uname -r)/edu_attack.ko target_pa=0x40200000
dmesg | grep "EDU: "
rmmod edu_attack'
    check "DMA (device on PCI bus 9, stream 0x900): bound, its DMA-API round trip works through the SMMU" bash -c "grep -q 'EDU: device 0000:09:00.0 bound' '$OUT/dma-bus9.out' && grep -q 'EDU: legit ok' '$OUT/dma-bus9.out'"
    check "DMA (device on PCI bus 9): its raw read of KCore's image gets nothing" bash -c "grep -q 'EDU: read 0x40200000 got-zeros' '$OUT/dma-bus9.out' && ! grep -q 'KCore halted' '$OUT/dma-bus9.log'"
}
# The newer Debian kernel (bookworm-backports, 6.12+) the tiers boot with --host-kernel.
bpo_kernel="$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.1[2-9]*-cloud-arm64 2>/dev/null | sort -V | tail -1)"
if [ "${1:-}" = dma ]; then
    dma_smmu_section
    summary
    exit
fi

echo "Linux host under KCore"

# 1 CPU, -cpu max: the host starts at EL1 under KCore, and KCore's RAM is not in its memory map.
host one --cpus 1 --exec '
grep -c ^processor /proc/cpuinfo
dmesg | grep -c "CPU: All CPU(s) started at EL1"
grep "System RAM" /proc/iomem | tr -d " "'
check "1 CPU: command exits 0" test "$(status one)" = 0
check "1 CPU: one CPU online" test "$(line one 1)" = 1
check "1 CPU: dmesg says all CPUs started at EL1" test "$(line one 2)" = 1
check "1 CPU: KCore's RAM is not in the host's memory map" test "$(line one 3)" = "40400000-7f5fffff:SystemRAM"
check "1 CPU: KCore announced itself at EL2" console_has one "starting at EL2"
check "1 CPU: KCore runs at its link address after -kernel" console_has one "KCore image at 0x40200000.."
# The kserv module (built against this kernel's stock Debian headers) finds KCore over SMC
# and checks its ABI over HVC.
check "1 CPU: the kserv module loads and finds KCore's ABI 0.6" console_has one "KSERV: kserv loaded (kserv: KCore ABI 0.6, features 0x1f, 1-page VM roots)"

# 2 CPUs, -cpu max: isolation. A read of KCore's image through /dev/mem dies with SIGBUS
# (status 135); the host keeps running: device reads still work and its RAM reads back right.
# (iomem=relaxed lets /dev/mem reach registers a driver has claimed, here the GIC.)
host iso --cpus 2 --append iomem=relaxed --exec '
grep -c ^processor /proc/cpuinfo
kvm-smoke 50
devmem 0x40200000 32; echo "kcore-read-status $?"
devmem 0x40200000 32; echo "kcore-read-again-status $?"
devmem 0x0800ffe8 32
md5sum /bin/busybox | cut -c1-32'
check "2 CPUs: command exits 0" test "$(status iso)" = 0
check "2 CPUs: both CPUs online" test "$(line iso 1)" = 2
check "isolation: reading KCore memory gets SIGBUS" grep -qx "kcore-read-status 135" "$OUT/iso.out"
check "isolation: and again (KCore still running)" grep -qx "kcore-read-again-status 135" "$OUT/iso.out"
check "isolation: KCore injected the abort" console_has iso "host access to 0x40200000 refused"
check "isolation: device reads still work (GICD_PIDR2)" grep -qiE "^0x0000003b$|^0x0000004b$" "$OUT/iso.out"
check "isolation: host RAM reads back correctly (busybox md5)" grep -qx "$busybox_md5" "$OUT/iso.out"
# /dev/kvm from the kserv module: 50 VMs of 4 vCPUs registered in KCore (pages donated from
# the host's allocator) and destroyed (pages scrubbed, handed back, freed), with the refusals.
check "/dev/kvm: 50 VMs with 4 vCPUs created and destroyed through KCore" grep -qx "KVM-SMOKE: API 12; 50 VMs with 4 vCPUs created and destroyed" "$OUT/iso.out"
# A VM launched from the host's userspace: memory slot, registers, KVM_RUN with MMIO exits,
# RAM lent on the guest's faults, power-off as a system event.
check "/dev/kvm: a guest runs from Linux userspace (MMIO, RAM, power-off)" grep -q "KVM-SMOKE: a guest ran over /dev/kvm" "$OUT/iso.out"
# QEMU's register sync: the list KVM_GET_REG_LIST gives (core, FP/SIMD, MPIDR, the EL1
# registers KCore switches) reads and writes back through KVM_GET/SET_ONE_REG.
check "/dev/kvm: all 98 registers KVM_GET_REG_LIST lists round-trip" grep -q "; 98 listed registers round-tripped" "$OUT/iso.out"
# The in-kernel GICv3 (KVM_CREATE_DEVICE, its attributes, KVM_IRQ_LINE): the guest programs
# the emulated distributor and redistributor, waits in WFI, and takes SPI 40 through a list
# register KCore loads.
check "/dev/kvm: an SPI raised with KVM_IRQ_LINE reaches the guest through the in-kernel GICv3" grep -q "KVM-SMOKE: an interrupt reached a guest" "$OUT/iso.out"
# A device thread's path: an irqfd signalled from userspace becomes an edge on SPI 40, and the
# guest's acknowledgement (a write an ioeventfd matches) is heard in the kernel, no exit.
check "/dev/kvm: an irqfd interrupts the guest, an ioeventfd hears it without an exit" grep -q "KVM-SMOKE: an irqfd interrupted a guest and an ioeventfd heard" "$OUT/iso.out"

# 4 CPUs, cortex-a57 (AMD Seattle's core): CPU offline and online through the PSCI proxy.
host a57 --cpus 4 --cpu cortex-a57 --exec '
grep -c ^processor /proc/cpuinfo
echo 0 > /sys/devices/system/cpu/cpu1/online; cat /sys/devices/system/cpu/online
echo 0 > /sys/devices/system/cpu/cpu3/online; cat /sys/devices/system/cpu/online
echo 1 > /sys/devices/system/cpu/cpu1/online; echo 1 > /sys/devices/system/cpu/cpu3/online
cat /sys/devices/system/cpu/online
dmesg | grep -c "CPU: All CPU(s) started at EL1"
kvm-smoke 3'
check "cortex-a57: command exits 0" test "$(status a57)" = 0
check "cortex-a57: four CPUs online" test "$(line a57 1)" = 4
check "cortex-a57: cpu1 offline" test "$(line a57 2)" = "0,2-3"
check "cortex-a57: cpu3 offline too" test "$(line a57 3)" = "0,2"
check "cortex-a57: both back online" test "$(line a57 4)" = "0-3"
check "cortex-a57: started at EL1" test "$(line a57 5)" = 1
check "cortex-a57: a guest runs over /dev/kvm" grep -q "KVM-SMOKE: a guest ran over /dev/kvm" "$OUT/a57.out"
check "cortex-a57: the kserv module loads" console_has a57 "KSERV: kserv loaded (kserv: KCore ABI 0.6"

# A GICv2 machine (gic-version=2, as AMD Seattle's GIC-400), 4 cortex-a57 CPUs: the host
# runs on the GICv2 distributor and CPU interface; the virtual interface frames are KCore's
# (GICH 0x08030000, GICV 0x08040000 in QEMU virt): every read or write of them from the host
# dies of SIGBUS, and KCore logs the refused access. The GICC next to them still answers
# (GICC_IIDR: ARM's JEP106 code 0x43b). /dev/kvm offers the in-kernel GICv2 there (and no
# GICv3): kvm-smoke's GICv2 guest sends itself an SGI through the emulated GICD_SGIR, then
# takes SPI 40, level and edge, raised with KVM_IRQ_LINE, through KCore's virtual CPU
# interface; the ioctl fuzzer then throws both device types and their attributes at it.
host gicv2 --gic 2 --cpus 4 --cpu cortex-a57 --append iomem=relaxed --exec '
grep -c ^processor /proc/cpuinfo
dmesg | grep -c "CPU: All CPU(s) started at EL1"
grep -c "GIC-0 *27 " /proc/interrupts
devmem 0x08030000 32; echo "gich-read-status $?"
devmem 0x08030100 32 0; echo "gich-write-status $?"
devmem 0x08040000 32; echo "gicv-read-status $?"
devmem 0x080100fc 32
echo 0 > /sys/devices/system/cpu/cpu1/online; echo 1 > /sys/devices/system/cpu/cpu1/online; cat /sys/devices/system/cpu/online
md5sum /bin/busybox | cut -c1-32
kvm-smoke 2; echo "smoke-status $?"
kvm-smoke --fuzz 1000 5 > /tmp/fuzz.txt; echo "fuzz-status $?"
kvm-smoke 1 > /tmp/smoke.txt; echo "smoke-after-fuzz $? $(grep -c "in-kernel GICv2" /tmp/smoke.txt)"
echo "host-kernel-complaints $(dmesg | grep -cE "WARNING:|Oops|BUG:|Call trace:|kserv: bug")"'
check "GICv2: command exits 0" test "$(status gicv2)" = 0
check "GICv2: four CPUs online, started at EL1" test "$(line gicv2 1) $(line gicv2 2)" = "4 1"
check "GICv2: the host's timer ticks through the GICv2 driver (GIC-0, PPI 27)" test "$(line gicv2 3)" = 1
check "GICv2: KCore found the GICv2 and keeps GICH and GICV" console_has gicv2 "GICv2: distributor 0x8000000, CPU interface 0x8010000, virtual interface control 0x8030000"
check "GICv2: reading GICH from the host gets SIGBUS" grep -qx "gich-read-status 135" "$OUT/gicv2.out"
check "GICv2: writing a GICH list register from the host gets SIGBUS" grep -qx "gich-write-status 135" "$OUT/gicv2.out"
check "GICv2: reading GICV from the host gets SIGBUS" grep -qx "gicv-read-status 135" "$OUT/gicv2.out"
check "GICv2: KCore injected the aborts" console_has gicv2 "host access to 0x8030000 refused"
check "GICv2: the host's own GICC still answers (GICC_IIDR)" grep -qix "0x0002043b" "$OUT/gicv2.out"
check "GICv2: CPU offline and online" grep -qx "0-3" "$OUT/gicv2.out"
check "GICv2: host RAM reads back correctly (busybox md5)" grep -qx "$busybox_md5" "$OUT/gicv2.out"
check "GICv2: the kserv module hears from KCore that the GIC is a GICv2 (features bit 5)" console_has gicv2 "KSERV: kserv loaded (kserv: KCore ABI 0.6, features 0x3f,"
check "GICv2: /dev/kvm: an SGI by GICD_SGIR and an SPI raised with KVM_IRQ_LINE reach the guest through the in-kernel GICv2" grep -q "KVM-SMOKE: an interrupt reached a guest through the in-kernel GICv2: SGI 3 by GICD_SGIR, SPI 40 level and edge" "$OUT/gicv2.out"
check "GICv2: kvm-smoke passes (the GICv3 device refused, the GICv2 one made once)" grep -qx "smoke-status 0" "$OUT/gicv2.out"
check "GICv2: ioctl fuzzer: 1000 random ioctls on both GIC devices, the host survives" grep -qx "fuzz-status 0" "$OUT/gicv2.out"
check "GICv2: /dev/kvm still delivers interrupts after it" grep -qx "smoke-after-fuzz 0 1" "$OUT/gicv2.out"
check "GICv2: the host kernel never warned or oopsed (dmesg)" grep -qx "host-kernel-complaints 0" "$OUT/gicv2.out"

# A newer Debian kernel (bookworm-backports, 6.12+, bpo_kernel above) through --host-kernel.
# Kernels >= 6.5 use FEAT_MOPS memcpy in user space (glibc-static busybox here), which needs
# HCRX_EL2.MSCEn.
host newer --cpus 2 --host-kernel "$bpo_kernel" --exec '
uname -r
grep -c ^processor /proc/cpuinfo
cp /bin/busybox /tmp/b && cmp /bin/busybox /tmp/b && echo copy-ok
devmem 0x40200000 32; echo "kcore-read-status $?"
kvm-smoke 10'
check "newer kernel: command exits 0" test "$(status newer)" = 0
check "newer kernel: it is the 6.12+ kernel" grep -qE "^6[.]1[2-9]" "$OUT/newer.out"
check "newer kernel: both CPUs online" test "$(line newer 2)" = 2
check "newer kernel: user-space memcpy works" grep -qx copy-ok "$OUT/newer.out"
check "newer kernel: KCore memory still gets SIGBUS" grep -qx "kcore-read-status 135" "$OUT/newer.out"
check "newer kernel: its own kserv module loads" console_has newer "KSERV: kserv loaded (kserv: KCore ABI 0.6"
check "newer kernel: /dev/kvm VMs come and go" grep -q "KVM-SMOKE: API 12; 10 VMs" "$OUT/newer.out"
check "newer kernel: a guest runs over /dev/kvm" grep -q "KVM-SMOKE: a guest ran over /dev/kvm" "$OUT/newer.out"
check "newer kernel: and takes an interrupt from the in-kernel GICv3" grep -q "KVM-SMOKE: an interrupt reached a guest" "$OUT/newer.out"
check "newer kernel: irqfd and ioeventfd (6.8+ eventfd API)" grep -q "KVM-SMOKE: an irqfd interrupted a guest" "$OUT/newer.out"

# UEFI boot (scripts/run.sh --uefi): Debian's edk2 firmware starts KCore as an EFI application
# from a FAT EFI system partition; KCore's loader reads kcore.cfg, loads the kernel and initrd,
# takes the firmware's device tree, exits boot services, and KCore runs wherever the firmware
# put it. The host gets no EFI system table (so no runtime services).
host uefi --uefi --cpus 2 --exec '
grep -c ^processor /proc/cpuinfo
dmesg | grep -c "CPU: All CPU(s) started at EL1"
dmesg | grep -c "efi: UEFI not found"
grep "System RAM" /proc/iomem | tr -d " " | cut -d: -f1 | tr "\n" " "; echo
grep ": reserved$" /proc/iomem | tr -d " " | cut -d: -f1 | tr "\n" " "; echo
kvm-smoke 5'
uefi_addr=$(sed -n 's/.*KCore image at \(0x[0-9a-f]*\)[.][.]\(0x[0-9a-f]*\) .*/\1/p' "$OUT/uefi.log" | head -1)
uefi_end=$(sed -n 's/.*KCore image at \(0x[0-9a-f]*\)[.][.]\(0x[0-9a-f]*\) .*/\2/p' "$OUT/uefi.log" | head -1)
# in_host_ram ADDR: the address lies in one of the host's System RAM ranges (line 4).
in_host_ram() {
    local r
    for r in $(line uefi 4); do
        [ "$(($1))" -ge "$((0x${r%-*}))" ] && [ "$(($1))" -le "$((0x${r#*-}))" ] && return 0
    done
    return 1
}
image_hidden() {
    [ -n "$uefi_addr" ] && [ -n "$(line uefi 4)" ] && ! in_host_ram "$uefi_addr" && ! in_host_ram "$((uefi_end - 1))"
}
# fw_reserved_in_host: every region KCore logged as firmware-reserved lies within one the host
# kernel reserved (/proc/iomem "reserved", line 5): the host does not allocate it either.
fw_reserved_in_host() {
    local n=0 s e r ok
    while read -r s e; do
        ok=0
        for r in $(line uefi 5); do
            [ "$((s))" -ge "$((0x${r%-*}))" ] && [ "$((e - 1))" -le "$((0x${r#*-}))" ] && ok=1
        done
        [ "$ok" = 1 ] || return 1
        n=$((n + 1))
    done < <(sed -n 's/.*firmware-reserved \(0x[0-9a-f]*\)[.][.]\(0x[0-9a-f]*\):.*/\1 \2/p' "$OUT/uefi.log")
    [ "$n" -gt 0 ]
}
check "UEFI: command exits 0" test "$(status uefi)" = 0
check "UEFI: the firmware started KCore's loader, which read kcore.cfg" console_has uefi 'KCore UEFI loader: kcore.cfg: kernel \vmlinuz, initrd \initrd.img'
check "UEFI: KCore runs where the firmware loaded it ($uefi_addr), not at its link address" \
    bash -c "[ -n '$uefi_addr' ] && [ '$uefi_addr' != 0x40200000 ] && grep -q 'KCore image at $uefi_addr[.][.].* (relocated' '$OUT/uefi.log'"
check "UEFI: the firmware's runtime and reserved regions are kept out of KCore's memory" console_has uefi "firmware-reserved "
check "UEFI: and the host kernel reserves them too (not in its allocator)" fw_reserved_in_host
check "UEFI: both CPUs online, started at EL1" test "$(line uefi 1) $(line uefi 2)" = "2 1"
check "UEFI: the host runs without EFI runtime services (no EFI system table)" test "$(line uefi 3)" = 1
check "UEFI: KCore's image is not in the host's memory map" image_hidden
check "UEFI: the kserv module loads" console_has uefi "KSERV: kserv loaded (kserv: KCore ABI 0.6"
check "UEFI: /dev/kvm VMs come and go, a guest runs" bash -c "grep -q 'KVM-SMOKE: API 12; 5 VMs' '$OUT/uefi.out' && grep -q 'KVM-SMOKE: a guest ran over /dev/kvm' '$OUT/uefi.out'"
# Isolation at the address KCore logged: the firmware's choice is the same on the same
# machine and disk, which the second boot's log confirms.
host uefi-iso --uefi --cpus 2 --append iomem=relaxed --exec "
devmem ${uefi_addr:-0x40200000} 32; echo \"kcore-read-status \$?\"
devmem ${uefi_addr:-0x40200000} 32; echo \"kcore-read-again-status \$?\"
md5sum /bin/busybox | cut -c1-32"
check "UEFI: the second boot puts KCore at the same address" grep -q "KCore image at ${uefi_addr:-none}[.][.]" "$OUT/uefi-iso.log"
check "UEFI isolation: reading KCore's image at $uefi_addr gets SIGBUS" grep -qx "kcore-read-status 135" "$OUT/uefi-iso.out"
check "UEFI isolation: and again (KCore still running)" grep -qx "kcore-read-again-status 135" "$OUT/uefi-iso.out"
check "UEFI isolation: KCore refused the access" console_has uefi-iso "host access to ${uefi_addr:-none} refused"
check "UEFI isolation: host RAM reads back correctly (busybox md5)" grep -qx "$busybox_md5" "$OUT/uefi-iso.out"
# Firmware that publishes only ACPI tables (acpi=on): the device tree comes from a file on the
# partition (kcore.cfg dtb=), the loader says the firmware offered none, and the host boots
# on it with /dev/kvm working.
host uefi-dtb --uefi-dtb --cpus 2 --exec 'grep -c ^processor /proc/cpuinfo
kvm-smoke 2'
check "UEFI with ACPI-only firmware: the loader boots with the device tree kcore.cfg names (dtb=), the firmware offering none" console_has uefi-dtb 'KCore UEFI loader: device tree from \virt.dtb, not the firmware'"'"'s (it offers none)'
check "UEFI with ACPI-only firmware: both CPUs, and a guest runs over /dev/kvm" bash -c "test '$(status uefi-dtb):$(line uefi-dtb 1)' = 0:2 && grep -q 'KVM-SMOKE: a guest ran over /dev/kvm' '$OUT/uefi-dtb.out'"

# Debian's own QEMU (10.0, unmodified) as the VMM over the kserv module's /dev/kvm: it checks
# the capabilities it requires, creates its scratch and real VMs, the in-kernel GICv3 (no
# ITS: its=off), its vCPUs, and runs kvm-smoke's first guest, loaded at 0x40200000, on KCore:
# the guest's UART output lands in QEMU's PL011 and its PSCI SYSTEM_OFF ends QEMU with 0.
qemu_guest='timeout 60 qemu-system-aarch64 -M virt,gic-version=3,its=off -accel kvm -cpu host -m 64 -nographic -nic none -display none -monitor none -device loader,file=/tmp/hello.bin,addr=0x40200000,cpu-num=0'
host vmm --with-qemu --cpus 2 --timeout 400 --exec "
kvm-smoke --guest hello > /tmp/hello.bin
$qemu_guest -serial file:/tmp/serial1.txt 2> /tmp/q1.err; echo \"qemu-1-status \$? killed \$(grep -c terminating /tmp/q1.err)\"
echo \"qemu-1-serial \$(tr -c A-Z . < /tmp/serial1.txt)\"
$qemu_guest -smp 2 -serial file:/tmp/serial2.txt 2> /tmp/q2.err; echo \"qemu-2-status \$? killed \$(grep -c terminating /tmp/q2.err)\"
echo \"qemu-2-serial \$(tr -c A-Z . < /tmp/serial2.txt)\"
timeout 60 qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host -m 64 -nographic -nic none -display none -monitor none -serial none 2>&1 | head -1"
check "stock QEMU: a guest runs over /dev/kvm and powers QEMU off (status 0, not timed out)" grep -qx "qemu-1-status 0 killed 0" "$OUT/vmm.out"
# 'H', 'I', the PL011 flag register QEMU's UART answered (not a letter), 'I' from RAM, '\n'.
check "stock QEMU: the guest's output reached QEMU's UART" grep -qx "qemu-1-serial HI.I." "$OUT/vmm.out"
check "stock QEMU: with 2 vCPUs too" grep -qx "qemu-2-status 0 killed 0" "$OUT/vmm.out"
check "stock QEMU: 2 vCPUs, same output" grep -qx "qemu-2-serial HI.I." "$OUT/vmm.out"
check "stock QEMU: asking for the in-kernel ITS fails cleanly (not offered yet)" grep -q "error creating in-kernel ITS" "$OUT/vmm.out"
# Debian's 6.12 cloud kernel as the guest of Debian's QEMU on KCore (tests/vm-linux.sh,
# through the host's run-guest): 2 vCPUs on the in-kernel GICv3 and KCore's timer, a virtio
# disk, network and console; then VMs in sequence and at once, a QEMU killed mid-boot and the
# ioctl fuzzer, after which KCore holds no VM and the host has its memory back. (The guest's
# kernel may print on its console in the middle of a line /init writes: lines are matched by
# their beginning.)
vm_checks() {
    local n="$1" tag="$2"
    check "$tag: the Debian guest reaches userspace with 2 vCPUs" grep -q "^full: GUEST-LINUX: userspace up, 2 CPUs, 6[.]1[2-9]" "$OUT/$n.out"
    check "$tag: both vCPUs online in the guest" grep -q "^full: GUEST-LINUX: online CPUs 0-1" "$OUT/$n.out"
    check "$tag: the guest sees no SVE, PAuth or MTE" bash -c "grep -q '^full: GUEST-LINUX: Features' '$OUT/$n.out' && ! grep -E '^full: GUEST-LINUX: Features.* (sve|paca|pacg|mte)( |$)' '$OUT/$n.out'"
    check "$tag: sleep 1 returns in the guest" grep -q "^full: GUEST-LINUX: sleep 1 returned" "$OUT/$n.out"
    check "$tag: the guest reads its virtio-blk disk (md5 as in the host)" bash -c "grep -q \"^full: GUEST-LINUX: disk vda md5 \$(sed -n 's/^host-disk-md5 //p' '$OUT/$n.out')\" '$OUT/$n.out'"
    check "$tag: and mounts it (ext2)" grep -q "^full: GUEST-LINUX: disk file: hello from the guest's virtio disk" "$OUT/$n.out"
    check "$tag: the guest fetches a file over virtio-net from the host's HTTP server (md5)" bash -c "grep -q \"^full: GUEST-LINUX: fetched md5 \$(sed -n 's/^host-file-md5 //p' '$OUT/$n.out'), 300000 bytes\" '$OUT/$n.out'"
    check "$tag: the virtio console carries the guest's output" grep -qx "vc: GUEST-LINUX: hello over the virtio console" "$OUT/$n.out"
    check "$tag: the guest powers off and QEMU exits 0 (not timed out)" grep -qx "full-status 0 killed 0 off 1" "$OUT/$n.out"
}
host linux --with-qemu --cpus 2 --timeout 1500 --exec "MODE=full
$(cat "$ROOT/tests/vm-linux.sh")"
vm_checks linux "Linux guest (6.1 host, max)"
for i in 1 2 3; do
    check "three VMs one after another: VM $i boots and powers off" grep -qx "seq$i-status 0 killed 0 off 1" "$OUT/linux.out"
done
check "two VMs at once: both boot and power off" bash -c "grep -qx 'par1-status 0 killed 0 off 1' '$OUT/linux.out' && grep -qx 'par2-status 0 killed 0 off 1' '$OUT/linux.out'"
check "isolation: one of the two VMs planted 16 MiB of a secret in its RAM" grep -qx "GUEST-LINUX: planted 16777216 bytes" "$OUT/linux.out"
check "isolation: the other read every page of its RAM (over 30000 of its 32768) and found its own token there (1 MiB of it: the scan works)" bash -c "grep -qE '^GUEST-LINUX: scanned ([3-9][0-9]{4}) pages: .* own (3[89][0-9]{3}|[4-9][0-9]{4})$' '$OUT/linux.out'"
check "isolation: but not one copy of the other VM's secret, nor KCore's text" grep -qE "^GUEST-LINUX: scanned [0-9]+ pages: other-vm 0 kcore 0 own" "$OUT/linux.out"
check "isolation: (the KCore text the guest looks for is in KCore's image)" grep -q "building KCore" "$ROOT/out/kcore.bin"
check "KCore holds no VM after them" grep -qx "vms-after-guests 0" "$OUT/linux.out"
check "QEMU killed with SIGKILL mid-boot (its console begun, userspace not reached)" grep -qE "^sigkill-status 137 console-bytes [1-9][0-9]* booted 0$" "$OUT/linux.out"
check "and KCore holds no VM after it" grep -qx "vms-after-sigkill 0" "$OUT/linux.out"
check "ioctl fuzzer: 4000 random ioctls from 4 threads, the host survives" grep -qx "fuzz-status 0" "$OUT/linux.out"
check "ioctl fuzzer: KCore holds no VM after it" grep -qx "vms-after-fuzz 0" "$OUT/linux.out"
check "ioctl fuzzer: /dev/kvm still runs guests after it" grep -qx "smoke-after-fuzz 0 1" "$OUT/linux.out"
check "the host's memory is back after all of it (under 32 MiB less available)" bash -c "v=\$(sed -n 's/^mem-lost-kb //p' '$OUT/linux.out'); [ -n \"\$v\" ] && [ \"\$v\" -lt 32768 ]"
check "the host still cannot read KCore's memory" grep -qx "kcore-read-status 135" "$OUT/linux.out"
check "the host kernel never warned or oopsed (dmesg)" grep -qx "host-kernel-complaints 0" "$OUT/linux.out"
check "KCore never halted" bash -c "! grep -qE 'KCore halted|invariant broken' '$OUT/linux.log'"
# Protected VMs from the host (tests/vm-protected.sh): a signed kernel file boots as a
# protected VM of kvm-smoke and of Debian's QEMU (kserv.protected_vms=1); the host cannot read
# its memory or registers; tampered and unsigned kernels are refused before they run, with
# the reason in the VMM's error and in dmesg. The same guest as an ordinary VM is the control.
# pKVM's MMIO guard for protected VMs (tests/vm-mmio-guard.sh): kvm-smoke's MMIO-guard guest
# (guest-mmio-guard.S, signed) finds MMIO_GUARD in KVM_FEATURES, enrols its UART's page and
# keeps printing; its store to a device page it did not enrol takes a synchronous external
# abort in the guest and never reaches the VMM; RAM cannot be enrolled. The same guest as an
# ordinary VM is offered none of it and its store reaches the VMM (the control).
host mmio-guard --cpus 1 --timeout 120 --exec "$(cat "$ROOT/tests/vm-mmio-guard.sh")"
check "MMIO guard: a protected VM sees MMIO_GUARD offered (KVM_FEATURES 0x9d: bits 0, 2, 3, 4, 7), enrols its UART's page (0) and prints through it" grep -q "^KVM-SMOKE: protected: guest output 'MMIO-GUARD features 0x9d enrol 0 " "$OUT/mmio-guard.out"
check "MMIO guard: its store to a page it did not enrol takes a synchronous external abort at that address (ESR_EL1 0x96000050: EC 0x25, WnR, FSC 0x10) and it runs on; enrolling RAM is refused (-3)" grep -qx "KVM-SMOKE: protected: guest output 'MMIO-GUARD features 0x9d enrol 0 SEA at 0xa000000 esr 0x96000050 ram -3'" "$OUT/mmio-guard.out"
check "MMIO guard: the refused store never reached the VMM (its MMIO exits name the UART's page only)" grep -qx "KVM-SMOKE: protected: MMIO pages the VMM saw: 0x9000000" "$OUT/mmio-guard.out"
check "MMIO guard: KCore held the one enrolment and reported it when the VM was destroyed" console_has mmio-guard "MMIO guard: [0x9000000, 0x9001000) 1 pages"
check "MMIO guard control: as an ordinary VM the guest is offered none of it (-1) and its store reaches the VMM" bash -c "grep -qx \"KVM-SMOKE: unprotected: guest output 'MMIO-GUARD features 0x1 enrol -1 ram -1'\" '$OUT/mmio-guard.out' && grep -qx 'KVM-SMOKE: unprotected: MMIO pages the VMM saw: 0x9000000 0xa000000' '$OUT/mmio-guard.out'"
check "MMIO guard: both VMs power off, KCore holds no VM after them, no kernel complaint, KCore never halted" bash -c "grep -qx 'guard-protected-status 0' '$OUT/mmio-guard.out' && grep -qx 'guard-control-status 0' '$OUT/mmio-guard.out' && grep -qx 'vms-after-guard 0' '$OUT/mmio-guard.out' && grep -qx 'host-kernel-complaints 0' '$OUT/mmio-guard.out' && ! grep -qE 'KCore halted|invariant broken' '$OUT/mmio-guard.log'"
protected_checks() {
    local n="$1" tag="$2"
    check "$tag: a signed kernel runs as a protected VM (x0 = its device tree, its secret planted and kept)" grep -qx "KVM-SMOKE: protected: guest output 'PROTECTED dtb ok planted kept'" "$OUT/$n.out"
    check "$tag: the VMM reading the guest's secret page through its own mapping dies of SIGBUS" grep -qx "KVM-SMOKE: protected: reading the guest's secret page killed the reader with signal 7" "$OUT/$n.out"
    check "$tag: its registers never reach the host: after the first run its PC reads as what the VMM set (0x40200000), not the guest's, and the guest runs on after the VMM writes it back" bash -c "grep -qx 'KVM-SMOKE: protected: KVM_GET_ONE_REG of its PC after the first run gave 0x40200000' '$OUT/$n.out' && grep -qx 'KVM-SMOKE: protected: KVM_SET_ONE_REG of its PC after the first run accepted' '$OUT/$n.out'"
    check "$tag: control: unprotected, the PC read is the guest's own" grep -qx "KVM-SMOKE: unprotected: KVM_GET_ONE_REG of its PC after the first run gave 0x402000c0" "$OUT/$n.out"
    check "$tag: control: the same guest unprotected, the host reads its secret" grep -qx "KVM-SMOKE: unprotected: the host read the guest's secret page: 0x53454b564d215345" "$OUT/$n.out"
    check "$tag: a tampered kernel is refused before it runs (EKEYREJECTED, no guest output)" grep -qx "KVM-SMOKE: protected: KVM_RUN refused: errno 129 (Key was rejected by service (os error 129)); guest output ''" "$OUT/$n.out"
    check "$tag: an unsigned kernel is refused before it runs (ENOKEY)" grep -qx "KVM-SMOKE: protected: KVM_RUN refused: errno 126 (Required key not available (os error 126)); guest output ''" "$OUT/$n.out"
    check "$tag: stock QEMU with kserv.protected_vms=1 boots the signed kernel (QEMU's boot stub decoded)" grep -qx "qemu-signed-status 0 output PROTECTED dtb ok planted kept" "$OUT/$n.out"
    check "$tag: stock QEMU: a tampered kernel is refused, QEMU says why" grep -qx "qemu-tampered-stderr: error: kvm run failed Key was rejected by service" "$OUT/$n.out"
    check "$tag: stock QEMU: an unsigned kernel is refused, QEMU says why" grep -qx "qemu-unsigned-stderr: error: kvm run failed Required key not available" "$OUT/$n.out"
    check "$tag: a Linux kernel built from Debian's 7.3 source with the pKVM guest driver boots signed as a protected VM to userspace, 2 vCPUs" grep -q "^pkvm: GUEST-LINUX: userspace up, 2 CPUs, 7[.]" "$OUT/$n.out"
    check "$tag: pKVM guest: both vCPUs online, sleep 1 returns, it powers off and QEMU exits 0" bash -c "grep -q '^pkvm: GUEST-LINUX: online CPUs 0-1' '$OUT/$n.out' && grep -q '^pkvm: GUEST-LINUX: sleep 1 returned' '$OUT/$n.out' && grep -q '^pkvm: GUEST-LINUX: powering off' '$OUT/$n.out' && grep -qx 'pkvm-status 0 killed 0' '$OUT/$n.out'"
    check "$tag: pKVM guest: reads its virtio-blk disk through memory it shares (md5 as in the host) and mounts it" bash -c "grep -q \"^pkvm: GUEST-LINUX: disk vda md5 \$(sed -n 's/^host-disk-md5 //p' '$OUT/$n.out')\" '$OUT/$n.out' && grep -q '^pkvm: GUEST-LINUX: disk file: hello' '$OUT/$n.out'"
    check "$tag: pKVM guest: fetches a file over virtio-net from the host's HTTP server (md5)" bash -c "grep -q \"^pkvm: GUEST-LINUX: fetched md5 \$(sed -n 's/^host-file-md5 //p' '$OUT/$n.out'), 300000 bytes\" '$OUT/$n.out'"
    check "$tag: pKVM guest: its virtio console carries its output" grep -qx "pkvm-vc: GUEST-LINUX: hello over the virtio console" "$OUT/$n.out"
    check "$tag: dmesg says why" bash -c "grep -q 'does not verify with KCore.s key: refused' '$OUT/$n.out' && grep -q 'is not a signed kernel file (kcore-sign sign-file): refused' '$OUT/$n.out'"
    check "$tag: KCore holds no VM after them, the memory is back, no kernel complaint" bash -c "grep -qx 'vms-after-protected 0' '$OUT/$n.out' && grep -qx 'host-kernel-complaints 0' '$OUT/$n.out' && v=\$(sed -n 's/^mem-lost-kb //p' '$OUT/$n.out') && [ \"\$v\" -lt 16384 ]"
}
host protected --with-qemu --cpus 2 --timeout 600 --exec "$(cat "$ROOT/tests/vm-protected.sh")"
protected_checks protected "protected VMs (6.1 host, max)"
host protected-a57 --with-qemu --cpus 2 --cpu cortex-a57 --host-kernel "$bpo_kernel" --timeout 600 --exec "$(cat "$ROOT/tests/vm-protected.sh")"
protected_checks protected-a57 "protected VMs (6.12 host, cortex-a57)"
# A malicious host against a protected VM (tests/vm-attack.sh): the project's own attack
# module (kserv-shim/attack) and root's userspace try every way into the vault guest's secrets
# (16 pages of RAM and x22..x28) while it runs; the same guest as an ordinary VM is the control,
# whose secrets the same attacks find (so the search is shown to work).
attack_checks() {
    local n="$1" tag="$2" f="$OUT/$1.out"
    at() { grep -qxE -- "$1" "$f"; }
    check "$tag: the vault guest plants its secrets as a protected VM; the control as an ordinary VM" bash -c "grep -q \"^protected: KVM-SMOKE: vault protected: pid .* output 'VAULT planted'\" '$f' && grep -q \"^control: KVM-SMOKE: vault unprotected: pid .* output 'VAULT planted'\" '$f'"
    check "$tag: /dev/mem refuses the guest's secret page (STRICT_DEVMEM)" bash -c "grep -q '^protected-devmem-status 1 devmem: mmap: Operation not permitted' '$f'"
    check "$tag: the module's unchecked /dev/mem maps the page into a process, whose read dies of SIGBUS; control: it reads the secret" bash -c "grep -q '^protected-unchecked-mmap-status 135 ' '$f' && grep -qx 'control-unchecked-mmap-status 0 0x7F3A91C4D2E85B06 ' '$f'"
    check "$tag: a write into its verified kernel image through that mapping dies of SIGBUS" grep -q "^protected-image-write-status 135 " "$f"
    check "$tag: /proc/PID/mem of its VMM (a kernel read) gives zeros, the host survives; control: the secret" bash -c "grep -qx 'protected-procmem 4096 bytes, first 0000000000000000' '$f' && grep -qx 'control-procmem 4096 bytes, first 065be8d2c4913a7f' '$f'"
    check "$tag: the kernel's linear map over all 1024 pages of its RAM (pages found through its VMM): no secret; control: the RAM secret, 16 pages of it" bash -c "grep -qx 'protected: ATTACK linear-map found ram-secret 0' '$f' && grep -qx 'protected: ATTACK linear-map found reg-secret 0' '$f' && grep -q '^protected: ATTACK linear-map pages 1024 unreadable 0 ' '$f' && v=\$(sed -n 's/^control: ATTACK linear-map found ram-secret //p' '$f') && [ \"\$v\" -ge 8176 ]"
    check "$tag: its registers: KVM_GET_ONE_REG x22 gives the reset value, never the secret; control: the secret" bash -c "grep -qx 'protected: KVM-SMOKE: vault protected: KVM_GET_ONE_REG x22 0x0000000000000000' '$f' && grep -qx 'control: KVM-SMOKE: vault unprotected: KVM_GET_ONE_REG x22 0x5ce1a7093bf4d862' '$f'"
    check "$tag: KCore refuses to donate, register on, lend, reclaim or map its page elsewhere (its pool, the host's pool, a VM of the attacker's, protected or not)" bash -c "for a in donate-to-host-pool donate-to-its-pool register-vm-on-it lend-to-it reclaim-from-it own-vm-signature-from-victim own-vm-map-victim-page-as-image own-vm-np-lend-victim-page; do grep -qE \"^protected: ATTACK hvc \$a -> -[0-9]+\$\" '$f' || exit 1; done"
    check "$tag: after verification its image, boot info, vCPU-0 entry, layout (RAM added, RAM over MMIO) cannot change: refused" bash -c "for a in map-image-page-again map-host-page-into-image set-boot-info-again verify-again map-vm-page add-ram-region add-ram-over-mmio; do grep -qE \"^protected: ATTACK hvc \$a -> -[0-9]+\$\" '$f' || exit 1; done"
    check "$tag: KCore refuses its registers to the host (GET/SET_VCPU_REG: denied)" bash -c "grep -qx 'protected: ATTACK hvc get-vcpu-reg-x22 -> -4' '$f' && grep -qx 'protected: ATTACK hvc set-vcpu-reg-pc -> -4' '$f'"
    check "$tag: interrupts it did not ask for (SPI 40, SGI 1) are only put pending; INTID 27 (KCore's) and 1020 are refused" bash -c "grep -qx 'protected: ATTACK hvc inject-intid-27 -> -3' '$f' && grep -qx 'protected: ATTACK hvc inject-intid-1020 -> -3' '$f'"
    check "$tag: all of the host's RAM searched (every page of System RAM, none unreadable): neither secret anywhere; control: the RAM secret found" bash -c "grep -qE '^protected: SCAN pages [0-9]{6} unreadable 0 ' '$f' && grep -qx 'protected: SCAN found ram-secret 0' '$f' && grep -qx 'protected: SCAN found reg-secret 0' '$f' && v=\$(sed -n 's/^control: SCAN found ram-secret //p' '$f') && [ \"\$v\" -ge 8176 ]"
    check "$tag: the guest ran through it all and its secrets are whole (RAM and registers), then powered off" bash -c "grep -qx \"protected: KVM-SMOKE: vault protected: guest output 'VAULT planted / VAULT intact'\" '$f' && grep -qx 'protected-vmm-status 0' '$f'"
    check "$tag: the host survived every attempt: no oops or warning, KCore holds no VM after, KCore never halted" bash -c "grep -qx 'host-kernel-complaints 0' '$f' && grep -qx 'vms-after-attack 0' '$f' && ! grep -qE 'KCore halted|invariant broken' '$OUT/$n.log'"
}
host attack --cpus 2 --timeout 300 --exec "$(cat "$ROOT/tests/vm-attack.sh")"
attack_checks attack "malicious host (6.1 host, max)"
host attack-a57 --cpus 2 --cpu cortex-a57 --host-kernel "$bpo_kernel" --timeout 300 --exec "$(cat "$ROOT/tests/vm-attack.sh")"
attack_checks attack-a57 "malicious host (6.12 host, cortex-a57)"
# And on a 40-bit-PA CPU, where the guest's stage-2 is two concatenated level-1 root tables.
host attack-a76 --cpus 2 --cpu cortex-a76 --timeout 300 --exec "$(cat "$ROOT/tests/vm-attack.sh")"
attack_checks attack-a76 "malicious host (6.1 host, cortex-a76)"
# The SeKVM demo (tests/vm-demo.sh; scripts/run.sh --demo runs it on the terminal): a
# protected Debian guest with 2 vCPUs boots the signed demo kernel (the pKVM guest kernel with
# its unlock initramfs and command line built in), asks on its console for the passphrase of
# its LUKS2 root disk, refuses a wrong one, opens the disk with the right one (dm-crypt in the
# guest), switches to the Debian root on it, takes a login with user and password, fetches a
# file from the host's HTTP server over virtio-net, and powers off when the user logs out.
# The test types on the guest's console (QEMU's -serial pipe) after each prompt.
host demo --with-demo --cpus 2 --timeout 600 --exec "$(cat "$ROOT/tests/vm-demo.sh")"
demo_has() { grep -qE -- "$1" "$OUT/demo.out"; }
check "demo: the signed demo kernel (its initramfs inside, $(sed -n 's/^demo-kernel-signed-bytes //p' "$OUT/demo.out") bytes signed) is verified by KCore and boots as a protected VM" demo_has "^kserv: protected VM [0-9]+: kernel of [0-9]{8,} bytes at 0x40200000 verified"
check "demo: the guest asks for the LUKS2 passphrase on its console" demo_has "^demo-passphrase-prompt 1 "
check "demo: a wrong passphrase is refused, and it asks again" bash -c "grep -q '^demo-wrong-refused 1 ' '$OUT/demo.out' && grep -q '^demo-passphrase-prompt-again 1 ' '$OUT/demo.out'"
check "demo: the right passphrase opens the disk and the guest's root is the dm-crypt device (ext4)" bash -c "grep -q '^demo-unlocked 1 ' '$OUT/demo.out' && grep -qx 'answer: DEMO-ROOT /dev/mapper/root / ext4' '$OUT/demo.out'"
check "demo: the Debian root's login prompt takes the user and password, a shell as that user" bash -c "grep -q '^demo-shell 1 ' '$OUT/demo.out' && grep -qE '^answer: DEMO-USER demo 7[.]' '$OUT/demo.out'"
check "demo: 2 vCPUs online in the guest" demo_has "^answer: DEMO-CPUS 2 0-1$"
check "demo: while the guest holds its disk's plaintext, all of the host's RAM is searched: the marker on the encrypted disk is nowhere (control: 32 bytes of the file the host serves are found)" bash -c "grep -qE '^demo-scan: SCAN pages [0-9]{6} unreadable 0 ' '$OUT/demo.out' && grep -qx 'demo-scan: SCAN found marker 0' '$OUT/demo.out' && ! grep -qx 'demo-scan: SCAN found served-file 0' '$OUT/demo.out' && grep -q '^demo-scan: SCAN found served-file ' '$OUT/demo.out'"
check "demo: the file fetched over virtio-net has the host's md5" bash -c "grep -qx \"answer: DEMO-FETCHED \$(sed -n 's/^host-file-md5 //p' '$OUT/demo.out') 200000\" '$OUT/demo.out'"
check "demo: the plaintext marker file on the encrypted disk reads back in the guest (md5 as built)" bash -c "grep -qx \"answer: DEMO-MARKER-MD5 \$(sed -n 's/^host-marker-md5 //p' '$OUT/demo.out')\" '$OUT/demo.out'"
check "demo: logging out powers the VM off and QEMU exits 0 (not timed out)" bash -c "grep -q '^demo-logged-out 1 ' '$OUT/demo.out' && grep -qE '^demo-qemu-status 0 at [0-9]+ s killed 0$' '$OUT/demo.out'"
check "demo: KCore holds no VM afterwards, no host kernel complaint, KCore never halted" bash -c "grep -qx 'vms-after-demo 0' '$OUT/demo.out' && grep -qx 'host-kernel-complaints 0' '$OUT/demo.out' && ! grep -qE 'KCore halted|invariant broken' '$OUT/demo.log'"
host linux-a57 --with-qemu --cpus 2 --cpu cortex-a57 --host-kernel "$bpo_kernel" --timeout 900 --exec "MODE=boot
$(cat "$ROOT/tests/vm-linux.sh")"
vm_checks linux-a57 "Linux guest (6.12 host, cortex-a57)"
host linux-bpo --with-qemu --cpus 2 --host-kernel "$bpo_kernel" --timeout 900 --exec "MODE=boot
$(cat "$ROOT/tests/vm-linux.sh")"
vm_checks linux-bpo "Linux guest (6.12 host, max)"
host linux-a57-61 --with-qemu --cpus 2 --cpu cortex-a57 --timeout 900 --exec "MODE=boot
$(cat "$ROOT/tests/vm-linux.sh")"
vm_checks linux-a57-61 "Linux guest (6.1 host, cortex-a57)"
# On a GICv2 machine (gic-version=2, 2 cortex-a57 CPUs): run-guest follows kserv.gic_v2 and
# Debian's QEMU asks for -M virt,gic-version=2: its kvm-arm-gic on the module's GICv2 device
# (distributor emulated in the host kernel, GICD_SGIR for the guest's IPIs, the guest's CPU
# interface KCore's GICV), QEMU's GICv2m MSI frame for virtio-pci, KCore's timer.
host linux-gicv2 --with-qemu --gic 2 --cpus 2 --cpu cortex-a57 --timeout 900 --exec "MODE=boot
echo \"run-guest-gic \$(cat /sys/module/kserv/parameters/gic_v2)\"
$(cat "$ROOT/tests/vm-linux.sh")"
vm_checks linux-gicv2 "Linux guest (GICv2 host, cortex-a57)"
check "Linux guest (GICv2 host): the module says VMs get a GICv2 (kserv.gic_v2)" grep -qx "run-guest-gic Y" "$OUT/linux-gicv2.out"
check "Linux guest (GICv2 host): the guest's kernel runs on a GICv2 with QEMU's GICv2m" grep -q "^full: .*GICv2m: range" "$OUT/linux-gicv2.out"

# The debug build of KCore checks every security invariant (kcore::invariants) after each
# host trap and halts on a violation; boot a host on it and touch KCore memory once.
host debug --debug --cpus 2 --exec '
grep -c ^processor /proc/cpuinfo
devmem 0x40200000 32; echo "kcore-read-status $?"
kvm-smoke 5'
check "debug KCore (invariants after every trap): host boots, 2 CPUs" test "$(status debug):$(line debug 1)" = "0:2"
check "debug KCore: KCore memory still gets SIGBUS" grep -qx "kcore-read-status 135" "$OUT/debug.out"
check "debug KCore: /dev/kvm VMs come and go with every invariant checked" grep -q "KVM-SMOKE: API 12; 5 VMs" "$OUT/debug.out"
check "debug KCore: and a guest runs over /dev/kvm" grep -q "KVM-SMOKE: a guest ran over /dev/kvm" "$OUT/debug.out"
check "debug KCore: and takes an interrupt from the in-kernel GICv3" grep -q "KVM-SMOKE: an interrupt reached a guest" "$OUT/debug.out"
check "debug KCore: no invariant violation" bash -c "! grep -q 'invariant broken' '$OUT/debug.log'"

# 8 GiB in two memory nodes (NUMA, 4 GiB each: RAM above 4 GiB and a split memory map).
# KCore's metadata and pools scale with RAM and it logs both nodes; the host fills 5 GiB of
# tmpfs (two files written and read back by both CPUs at once, checked against an md5 made
# here), so most of its memory, both nodes, is really its own; KCore's part stays out of
# reach.
numa8g=(--qemu-arg -object --qemu-arg memory-backend-ram,id=m0,size=4G --qemu-arg -object --qemu-arg memory-backend-ram,id=m1,size=4G
    --qemu-arg -numa --qemu-arg node,memdev=m0,cpus=0 --qemu-arg -numa --qemu-arg node,memdev=m1,cpus=1)
host mem8g --cpus 2 --mem 8G --timeout 900 "${numa8g[@]}" --append iomem=relaxed --exec '
grep -c "System RAM" /proc/iomem
mkdir -p /t; mount -t tmpfs -o size=7G tmpfs /t
head -c 1048576 /bin/busybox > /tmp/s1; for i in $(seq 64); do cat /tmp/s1; done > /tmp/s64; rm /tmp/s1
( for i in $(seq 40); do cat /tmp/s64; done > /t/a ) & ( for i in $(seq 40); do cat /tmp/s64; done > /t/b ) & wait
rm /tmp/s64; free -m | awk "/^Mem:/ { print \$4 }"
md5sum /t/a > /tmp/a.md5 & md5sum /t/b > /tmp/b.md5 & wait; cut -c1-32 /tmp/a.md5 /tmp/b.md5
devmem 0x13fe00000 32; echo "kcore-read-status $?"'
fill_md5=$(head -c 1048576 "$ROOT/.cache/arm64/bin/busybox" > "$OUT/mem8g.seed" && for i in $(seq 2560); do cat "$OUT/mem8g.seed"; done | md5sum | cut -c1-32)
check "8 GiB, 2 nodes: the host boots and sees both as System RAM" test "$(status mem8g):$(line mem8g 1)" = 0:2
check "8 GiB, 2 nodes: KCore logs both memory nodes and places its metadata for 8 GiB" bash -c "grep -q 'RAM 0x40000000..0x140000000 (4096 MiB)' '$OUT/mem8g.log' && grep -q 'RAM 0x140000000..0x240000000 (4096 MiB)' '$OUT/mem8g.log' && grep -q 'metadata 16384 KiB' '$OUT/mem8g.log'"
check "8 GiB, 2 nodes: 5 GiB of tmpfs written leaves under 3 GiB free" test "$(line mem8g 2)" -lt 3072
check "8 GiB, 2 nodes: both 2.5 GiB files read back intact (md5)" test "$(line mem8g 3):$(line mem8g 4)" = "$fill_md5:$fill_md5"
check "8 GiB, 2 nodes: KCore's memory at the top of node 0 is out of the host's reach (SIGBUS)" bash -c "grep -q 'and 0x13cc00000..0x140000000 (metadata' '$OUT/mem8g.log' && grep -qx 'kcore-read-status 135' '$OUT/mem8g.out'"

# Every other 64-bit CPU model QEMU offers with EL2 (max and cortex-a57 are covered above),
# one short boot each with 2 CPUs: the host comes up at EL1 under KCore and runs VMs through
# kserv (created and destroyed, a guest that runs and takes an interrupt). The 40-bit-PA
# models (a64fx, A35, A53, A55, A76, A710) get a stage-2 starting at level 1 with two
# concatenated root tables, the host's and each VM's; three models also take a CPU offline and
# back through KCore's PSCI proxy. `max` without PAuth, SVE and SME checks the feature gates.
sweep_hotplug='
echo 0 > /sys/devices/system/cpu/cpu1/online; cat /sys/devices/system/cpu/online
echo 1 > /sys/devices/system/cpu/cpu1/online; cat /sys/devices/system/cpu/online'
for model in a64fx:40 cortex-a35:40 cortex-a53:40:hotplug cortex-a55:40 cortex-a72:44 cortex-a76:40:hotplug \
    cortex-a710:40 neoverse-n1:48:hotplug neoverse-n2:48 neoverse-v1:48 max,pauth=off,sve=off,sme=off:48; do
    IFS=: read -r cpu pa plug <<< "$model"
    name="cpu-${cpu%%,*}$([ "$cpu" = "${cpu%%,*}" ] || echo -reduced)"
    host "$name" --cpus 2 --cpu "$cpu" --timeout 120 --exec "grep -c ^processor /proc/cpuinfo${plug:+$sweep_hotplug}
kvm-smoke 2"
    root="level-0 root"
    [ "$pa" = 40 ] && root="level-1 root"
    check "CPU $cpu: host up with 2 CPUs, ${pa}-bit stage-2 with a $root" bash -c "test '$(status "$name"):$(line "$name" 1)' = 0:2 && grep -q 'host stage-2: ${pa}-bit IPA, $root' '$OUT/$name.log'"
    check "CPU $cpu: VMs through /dev/kvm, a guest runs and takes an interrupt" bash -c "grep -q 'KVM-SMOKE: API 12; 2 VMs' '$OUT/$name.out' && grep -q 'KVM-SMOKE: a guest ran over /dev/kvm' '$OUT/$name.out' && grep -q 'KVM-SMOKE: an interrupt reached a guest' '$OUT/$name.out'"
    if [ -n "$plug" ]; then
        check "CPU $cpu: CPU 1 offline and back online" test "$(line "$name" 2):$(line "$name" 3)" = "0:0-1"
    fi
done

# `max` with MTE's tag memory (-M mte=on, FEAT_MTE2 and up): the host gets allocation-tag
# access as on bare metal (its first MTE register access used to trap and hang the boot),
# and its guests, which have none, run beside it.
host cpu-max-mte --cpus 2 --timeout 120 --qemu-arg -M --qemu-arg mte=on --exec 'grep -c "^Features.* mte" /proc/cpuinfo
dmesg | grep -c "MTE"
kvm-smoke 2'
check "CPU max with MTE tags: the host boots with MTE on both CPUs" test "$(status cpu-max-mte):$(line cpu-max-mte 1)" = 0:2
check "CPU max with MTE tags: VMs through /dev/kvm, a guest runs and takes an interrupt" bash -c "grep -q 'KVM-SMOKE: a guest ran over /dev/kvm' '$OUT/cpu-max-mte.out' && grep -q 'KVM-SMOKE: an interrupt reached a guest' '$OUT/cpu-max-mte.out'"

# Without KCore (the same kernel booted directly at EL2, VHE on max) the module finds no
# KCore over SMC, issues no HVC, and declines to load; the host carries on.
host direct --direct --cpus 1 --exec 'echo alive'
check "direct boot: kserv declines without KCore, host fine" test "$(status direct):$(line direct 1)" = "0:alive"
check "direct boot: it said why" console_has direct "KSERV: kserv not loaded (kserv: no KCore underneath this kernel"

# Stock Debian QEMU (bookworm-backports, with its library closure) runs in the host under
# KCore: what a user will launch VMs with once /dev/kvm exists.
host qemu --cpus 2 --with-qemu --exec '
qemu-system-aarch64 --version | head -1
qemu-system-aarch64 -accel help | tail -n +2 | tr "\n" " "'
check "host QEMU: command exits 0" test "$(status qemu)" = 0
check "host QEMU: Debian's qemu-system-aarch64 10.0 runs in the host" grep -qE "^QEMU emulator version 10[.]0" "$OUT/qemu.out"
check "host QEMU: its TCG accelerator is there" grep -q "tcg" "$OUT/qemu.out"

dma_smmu_section

# The command's exit status is run.sh's.
host status --cpus 2 --exec 'exit 7'
check "--exec passes the command's status through" test "$(status status)" = 7

summary
