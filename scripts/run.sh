#!/usr/bin/env bash
# Boot KCore at EL2 with a stock Debian arm64 Linux host (KServ) at EL1 under its stage-2,
# in qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,iommu=smmuv3 (or GICv2, with
# --gic 2; no SMMU with --no-smmu). The host has a disk and a network card, both virtio-pci
# behind the SMMU (iommu_platform=on: without it QEMU's virtio DMA bypasses the SMMU, and
# -nic none, or virt adds a virtio-net that does): /dev/vda is out/host-disk.img, read-only,
# and on the network (10.0.2.15/24, or udhcpc) 'nc 10.0.2.100 1234' streams out/host-net.bin
# (a guestfwd rule; restrict=on, so nothing else leaves the machine). scripts/build.sh makes
# both files; the tests compare md5s.
#
#   scripts/run.sh                      interactive host shell on the console
#   scripts/run.sh --exec 'CMD'         run CMD in the host, print its output, exit with its status
#   scripts/run.sh --vm                 boot the host, then a Linux guest in it with Debian's QEMU
#                                       on /dev/kvm (2 vCPUs, virtio disk, network and console):
#                                       the guest's shell on this terminal; 'poweroff -f' in the
#                                       guest returns to the host's shell
#   scripts/run.sh --demo               the SeKVM demo: boot the host, then a protected Debian
#                                       guest (2 vCPUs) whose root is a LUKS2 disk: type the
#                                       passphrase on its console, log in, fetch a file from the
#                                       host over virtio-net (see README)
#
# Options:
#   --cpus N            CPUs (default 2)
#   --mem SIZE          RAM, QEMU syntax (default 1G)
#   --cpu MODEL         QEMU CPU model: max (default) or cortex-a57 (AMD Seattle's core)
#   --gic 2|3           the machine's GIC (default 3); 2 is a GICv2 with its virtualization
#                       extensions, as AMD Seattle's GIC-400 (KCore keeps GICH and GICV)
#   --no-smmu           no SMMUv3 (-M ...,iommu=smmuv3 left out): the PCI devices' DMA goes
#                       straight to physical addresses
#   --edu               also QEMU's edu PCI device (1234:11e8, all 64 address bits for its DMA),
#                       the DMA engine the tests' attack module drives (edu_attack.ko)
#   --host-kernel IMG   another Debian arm64 kernel Image (default: the 6.1 cloud kernel setup fetched)
#   --exec CMD          run CMD in the host after boot, then power off
#   --append ARGS       extra kernel command-line words (kcore.* words are KCore's)
#   --timeout SEC       give up after SEC seconds (with --exec; default 600)
#   --verbose           with --exec: also stream the whole console to stderr
#   --uefi              boot as a server does: QEMU's UEFI firmware (Debian's qemu-efi-aarch64,
#                       -M ...,acpi=off so that it publishes the device tree) starts KCore from a
#                       FAT EFI system partition (out/esp.*.img, built per run with mtools:
#                       \EFI\BOOT\BOOTAA64.EFI = KCore, \vmlinuz, \initrd.img and \kcore.cfg
#                       naming them with the command line); KCore runs wherever the firmware
#                       loaded it and boots the host from there (see README, "UEFI boot")
#   --uefi-dtb          --uefi with firmware that publishes only ACPI tables (-M ...,acpi=on), as
#                       many servers ship: the machine's device tree (dumped by QEMU) goes on the
#                       partition as \virt.dtb and kcore.cfg names it (dtb=\virt.dtb)
#   --direct            boot the host kernel directly at EL2 with no KCore (for comparison)
#   --debug             use the debug build of KCore (checks its invariants after every trap)
#   --no-setup          skip scripts/setup.sh (dependencies already installed)
#   --semihosting       let the emulated machine exit through semihosting (tests only)
#   --qemu-arg ARG      extra QEMU argument (repeatable)
#   --with-qemu         give the host Debian's qemu-system-aarch64 (10.0, bookworm-backports) at
#                       /usr/bin, and a Linux guest for it at /guest (Image, initrd.gz) (about
#                       30 MB more initramfs)
#   --vm                --with-qemu, and the host starts the guest at once on the console
#                       (run-guest --smp 2 --devices --shell; see README)
#   --with-demo         --with-qemu, and the demo at /guest/demo (scripts/build-demo-disk.sh: the
#                       signed demo kernel and the LUKS2 disk, about 40 MB more)
#   --demo              --with-demo, and the host starts the demo at once on the console
#                       (run-guest --demo), with an HTTP server for it on 127.0.0.1:8080
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/out"

cpus=2 mem=1G cpu=max gic=3 host_kernel="" exec_cmd="" have_exec=0 append="" timeout_s=600
smmu=1 edu=0 verbose=0 direct=0 uefi=0 uefi_dtb=0 debug=0 setup=1 semihosting=0 qemu_extra=() with_qemu=0 vm=0 with_demo=0 demo=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift 2 ;;
        --mem) mem="$2"; shift 2 ;;
        --cpu) cpu="$2"; shift 2 ;;
        --gic) gic="$2"; shift 2 ;;
        --no-smmu) smmu=0; shift ;;
        --edu) edu=1; shift ;;
        --host-kernel) host_kernel="$2"; shift 2 ;;
        --exec) exec_cmd="$2"; have_exec=1; shift 2 ;;
        --append) append="$2"; shift 2 ;;
        --timeout) timeout_s="$2"; shift 2 ;;
        --verbose) verbose=1; shift ;;
        --direct) direct=1; shift ;;
        --uefi) uefi=1; shift ;;
        --uefi-dtb) uefi=1; uefi_dtb=1; shift ;;
        --debug) debug=1; shift ;;
        --no-setup) setup=0; shift ;;
        --semihosting) semihosting=1; shift ;;
        --qemu-arg) qemu_extra+=("$2"); shift 2 ;;
        --with-qemu) with_qemu=1; shift ;;
        --vm) with_qemu=1; vm=1; shift ;;
        --with-demo) with_qemu=1; with_demo=1; shift ;;
        --demo) with_qemu=1; with_demo=1; demo=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$uefi" = 1 ] && [ "$direct" = 1 ]; then
    echo "run.sh: --uefi boots KCore; it does not go with --direct" >&2; exit 2
fi
# A file name inside a QEMU option list: a comma is written twice.
qemu_path() { printf '%s' "${1//,/,,}"; }
# Debian's build of edk2's ArmVirtQemu (qemu-efi-aarch64, installed by scripts/setup.sh).
uefi_fw=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd

if [ "$setup" = 1 ]; then
    bash "$ROOT/scripts/setup.sh" >&2
fi
bash "$ROOT/scripts/build.sh"

if [ -z "$host_kernel" ]; then
    host_kernel="$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.1.*-cloud-arm64 2>/dev/null | sort -V | tail -1)"
fi
[ -f "$host_kernel" ] || { echo "run.sh: host kernel '$host_kernel' not found" >&2; exit 2; }

# Per-run initramfs: the base archive plus a second cpio with /kserv-exec (Linux unpacks
# concatenated archives in order).
initrd="$OUT/initrd-run.$$.img"
esp="$OUT/esp.$$.img"
trap 'rm -f "$initrd" "$esp"' EXIT
cp "$OUT/initramfs.cpio.gz" "$initrd"
if [ "$with_qemu" = 1 ]; then
    [ -f "$OUT/host-qemu.cpio.gz" ] || { echo "run.sh: no QEMU for the host (scripts/setup.sh fetches it)" >&2; exit 2; }
    cat "$OUT/host-qemu.cpio.gz" >> "$initrd"
    [ -f "$OUT/guest-linux.cpio.gz" ] && cat "$OUT/guest-linux.cpio.gz" >> "$initrd"
    [ -f "$OUT/guest-pkvm.cpio.gz" ] && cat "$OUT/guest-pkvm.cpio.gz" >> "$initrd"
fi
if [ "$with_demo" = 1 ]; then
    [ -f "$OUT/guest-demo.cpio" ] || { echo "run.sh: no demo (scripts/setup.sh builds it with scripts/build-demo-disk.sh)" >&2; exit 2; }
    # An uncompressed archive must start 4-byte aligned in the initrd.
    truncate -s %4 "$initrd"
    cat "$OUT/guest-demo.cpio" >> "$initrd"
fi
if [ "$demo" = 1 ] && [ "$have_exec" = 0 ]; then
    # The demo's secrets are fixed and public (scripts/build-demo-disk.sh).
    demo_env="$(bash "$ROOT/scripts/build-demo-disk.sh" --print-dir 2> /dev/null)/demo.env"
    [ -f "$demo_env" ] || { echo "run.sh: no demo.env of the demo (scripts/build-demo-disk.sh)" >&2; exit 2; }
    hint="$(. "$demo_env"; echo "passphrase '$DEMO_PASSPHRASE', then log in as '$DEMO_USER' with password '$DEMO_PASSWORD'; in the guest: wget -O - http://10.0.2.2:8080/hello; 'exit' logs out and powers the VM off")"
    echo "run.sh: SeKVM demo: $hint" >&2
    extra="$(mktemp -d)"
    printf '%s\n' "mkdir -p /tmp/www; echo 'hello from the host, over virtio-net' > /tmp/www/hello" \
        "httpd -p 127.0.0.1:8080 -h /tmp/www" "echo \"KSERV: SeKVM demo: $hint\"" "run-guest --demo" > "$extra/kserv-vm"
    (cd "$extra" && echo kserv-vm | cpio -o -H newc --quiet -R 0:0) | gzip -9 >> "$initrd"
    rm -rf "$extra"
fi
if [ "$vm" = 1 ] && [ "$have_exec" = 0 ]; then
    # /kserv-vm: what the host's /init runs on the console before its own shell.
    extra="$(mktemp -d)"
    # A file for the guest to fetch over virtio-net (http://10.0.2.2:8080/file in the guest).
    printf '%s\n' "mkdir -p /tmp/www; echo 'hello from the host, over virtio-net' > /tmp/www/file" \
        "httpd -p 127.0.0.1:8080 -h /tmp/www" "run-guest --smp 2 --devices --shell" > "$extra/kserv-vm"
    (cd "$extra" && echo kserv-vm | cpio -o -H newc --quiet -R 0:0) | gzip -9 >> "$initrd"
    rm -rf "$extra"
fi
if [ "$have_exec" = 1 ]; then
    extra="$(mktemp -d)"
    printf '%s\n' "$exec_cmd" > "$extra/kserv-exec"
    (cd "$extra" && echo kserv-exec | cpio -o -H newc --quiet -R 0:0) | gzip -9 >> "$initrd"
    rm -rf "$extra"
fi

# The host kernel goes at the first 2 MiB boundary after KCore's image (RAM base + 2 MiB +
# image_size from KCore's arm64 Image header); KCore looks for it there.
ram_base=$((0x40000000))
kcore_bin="$OUT/kcore.bin"
[ "$debug" = 1 ] && kcore_bin="$OUT/kcore-debug.bin"
image_size=$(od -A n -t u8 -j 16 -N 8 "$kcore_bin" | tr -d ' ')
host_addr=$(( (ram_base + 0x200000 + image_size + 0x1fffff) & ~0x1fffff ))

cmdline="console=ttyAMA0 panic=-1"
[ "$have_exec" = 1 ] && cmdline="$cmdline quiet"
[ "$semihosting" = 1 ] && [ "$direct" = 0 ] && cmdline="$cmdline kcore.semihosting"
[ -n "$append" ] && cmdline="$cmdline $append"

case "$gic" in
    2|3) ;;
    *) echo "run.sh: --gic takes 2 or 3" >&2; exit 2 ;;
esac
machine="virt,virtualization=on,gic-version=$gic"
[ "$smmu" = 1 ] && machine="$machine,iommu=smmuv3"
# -nic none: no default virtio-net (virt would add one without iommu_platform).
qemu=(qemu-system-aarch64 -M "$machine" -cpu "$cpu" -smp "$cpus" -m "$mem"
      -nographic -no-reboot -nic none)
# The host's disk and network card: virtio-pci, modern only, with iommu_platform=on so that
# QEMU sends their DMA through the SMMU (without it they reach physical addresses directly).
# First on the bus, so the disk is /dev/vda in every mode (with --uefi too).
[ -f "$OUT/host-disk.img" ] && [ -f "$OUT/host-net.bin" ] ||
    { echo "run.sh: no out/host-disk.img or out/host-net.bin (scripts/build.sh makes them)" >&2; exit 2; }
qemu+=(-drive "if=none,id=hostdisk,format=raw,readonly=on,file=$(qemu_path "$OUT/host-disk.img")"
       -device virtio-blk-pci,drive=hostdisk,iommu_platform=on,disable-legacy=on
       -netdev "user,id=hostnet,restrict=on,guestfwd=tcp:10.0.2.100:1234-cmd:cat $(qemu_path "$OUT/host-net.bin")"
       -device virtio-net-pci,netdev=hostnet,romfile=,iommu_platform=on,disable-legacy=on)
[ "$edu" = 1 ] && qemu+=(-device edu,dma_mask=0xffffffffffffffff)
[ "$uefi" = 0 ] && qemu+=(-initrd "$initrd" -append "$cmdline")
[ "$semihosting" = 1 ] && qemu+=(-semihosting)
if [ "$uefi" = 1 ]; then
    [ -f "$uefi_fw" ] || { echo "run.sh: no UEFI firmware at $uefi_fw (scripts/setup.sh installs qemu-efi-aarch64)" >&2; exit 2; }
    # The EFI system partition: KCore as the removable-media boot file the firmware's boot
    # manager starts on its own (UEFI spec 3.5.1.1), the host kernel, the initrd, and the
    # kcore.cfg KCore's UEFI loader reads (boot/src/efi.rs). Built without mounting anything.
    cfg="$(mktemp)"
    printf '%s\n' "# KCore's UEFI boot (scripts/run.sh --uefi): the host kernel, its initrd, its command line" \
        'kernel=\vmlinuz' 'initrd=\initrd.img' "cmdline=$cmdline" > "$cfg"
    if [ "$uefi_dtb" = 1 ]; then
        # Firmware that publishes only ACPI tables (acpi=on), as many servers ship: this same
        # machine's device tree (QEMU's, dumped with the same options, firmware and ACPI, so
        # it has the ACPI machine's devices) goes on the partition and kcore.cfg names it.
        dtb_file="$(mktemp)"
        "${qemu[@]}" "${qemu_extra[@]}" -M acpi=on -bios "$uefi_fw" -M "dumpdtb=$dtb_file" > /dev/null 2>&1 ||
            { echo "run.sh: could not dump the machine's device tree" >&2; exit 2; }
        echo 'dtb=\virt.dtb' >> "$cfg"
    fi
    kib=$(( ($(stat -c %s "$kcore_bin") + $(stat -c %s "$host_kernel") + $(stat -c %s "$initrd")) / 1024 + 8192 ))
    rm -f "$esp"
    PATH="$PATH:/usr/sbin:/sbin" mkfs.vfat -C -n KCORE-ESP "$esp" "$kib" > /dev/null
    mmd -i "$esp" ::/EFI ::/EFI/BOOT
    mcopy -i "$esp" "$kcore_bin" ::/EFI/BOOT/BOOTAA64.EFI
    mcopy -i "$esp" "$host_kernel" ::/vmlinuz
    mcopy -i "$esp" "$initrd" ::/initrd.img
    mcopy -i "$esp" "$cfg" ::/kcore.cfg
    rm -f "$cfg"
    if [ "$uefi_dtb" = 1 ]; then
        mcopy -i "$esp" "$dtb_file" ::/virt.dtb
        rm -f "$dtb_file"
        # acpi=on: edk2's ArmVirtQemu publishes QEMU's ACPI tables and no device tree.
        qemu+=(-M acpi=on -bios "$uefi_fw")
    else
        # acpi=off: edk2's ArmVirtQemu then publishes QEMU's device tree to the OS loader.
        qemu+=(-M acpi=off -bios "$uefi_fw")
    fi
    # The partition on a virtio-blk-pci behind the SMMU like the host's other devices
    # (if=virtio would make one without iommu_platform); bootindex=0 so the firmware boots
    # it before it tries the host's disk or the network.
    qemu+=(-drive "if=none,id=esp,format=raw,file=$(qemu_path "$esp")"
           -device virtio-blk-pci,drive=esp,iommu_platform=on,disable-legacy=on,bootindex=0)
elif [ "$direct" = 1 ]; then
    qemu+=(-kernel "$host_kernel")
else
    qemu+=(-kernel "$kcore_bin" -device "loader,file=$host_kernel,addr=$(printf '%#x' $host_addr),force-raw=on")
fi
qemu+=("${qemu_extra[@]}")

if [ "$have_exec" = 0 ]; then
    exec "${qemu[@]}"
fi

# RUN_CONSOLE_LOG: another file for the console, so runs side by side keep theirs apart.
log="${RUN_CONSOLE_LOG:-$OUT/console.log}"
set +e
t0=$(date +%s.%N)
if [ "$verbose" = 1 ]; then
    timeout --foreground "$timeout_s" "${qemu[@]}" < /dev/null 2>&1 | tee "$log" >&2
    qrc=${PIPESTATUS[0]}
else
    timeout --foreground "$timeout_s" "${qemu[@]}" < /dev/null > "$log" 2>&1
    qrc=$?
fi
t1=$(date +%s.%N)
set -e
echo "run.sh: QEMU ran $(echo "$t1 - $t0" | bc | sed 's/^\./0./') s (status $qrc)" >&2
tr -d '\r' < "$log" > "$log.tmp" && mv "$log.tmp" "$log"
status=$(sed -n 's/^KSERV-EXIT: \([0-9]*\)$/\1/p' "$log" | tail -1)
if [ -z "$status" ]; then
    echo "run.sh: the host did not finish the command (QEMU status $qrc); last console lines:" >&2
    tail -n 40 "$log" >&2
    exit 125
fi
# The command's output, without KCore's console lines that may interleave with it.
sed -n '/^KSERV-OUTPUT-BEGIN$/,/^KSERV-OUTPUT-END$/p' "$log" | sed '1d;$d' |
    grep -Ev '^\[kcore cpu[0-9]+ ' || true
exit "$status"
