#!/usr/bin/env bash
# VM path benchmark: instructions per operation, deterministic, under
# qemu-system-aarch64 -icount shift=0,sleep=off (the virtual counter advances one nanosecond
# per instruction, so counter deltas are instruction counts). The bare-metal test host runs a
# signed benchmark guest (tests/testhost/bench-guest.S) and measures:
#   host-null-hypercall-roundtrip        HVC KCORE_VERSION from the host, trap to return
#   guest-hypercall-answered-by-kcore    guest HVC PSCI_VERSION, answered in KCore
#   guest-mmio-write-served-by-host      guest MMIO write -> KCore -> host (test host) -> guest
#   guest-stage2-fault-to-first-mapping  first touch of a guest page -> host MAP_VM_PAGE -> retry
# Figures include the few instructions of the measuring loop; the host side is the minimal
# test host, not Linux.
#
# Then the Linux path, side by side with stock KVM (--linux, or alone with --linux-only): the
# same Debian host kernel and Debian QEMU, once as KCore's host with the kserv module's
# /dev/kvm and once booted directly at EL2 with stock KVM in nVHE mode (kvm-arm.mode=nvhe),
# run kvm-smoke's benchmark guest (kserv-shim/tools/kvm-smoke/guest-bench.S, 2 vCPUs, 1024
# rounds each) and then the Linux guest from QEMU's start to its exit:
#   hvc        a guest HVC of an unknown SMCCC function (KCore answers it; KVM's host does)
#   mmio-gic   a GICD_IIDR read, emulated in the host kernel (kserv / KVM's vGIC)
#   mmio-vmm   a read QEMU answers (virtio-mmio transport 0)
#   ipi        an SGI to the other vCPU, until its handler has run
#   linux-boot the Debian guest: QEMU started, guest userspace, power-off, QEMU gone
#              (instructions on all CPUs, the host's included)
# Prints figures only; never a verdict.
#
#   scripts/bench-vm.sh [--cpu MODEL] [--no-setup] [--linux | --linux-only]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu=max setup=1 linux=0 baremetal=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu="$2"; shift 2 ;;
        --linux) linux=1; shift ;;
        --linux-only) linux=1; baremetal=0; shift ;;
        --no-setup) setup=0; shift ;;
        *) echo "bench-vm.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$setup" = 1 ] && bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh"
if [ "$baremetal" = 1 ]; then
(cd "$ROOT" && cargo build -q -p kcore-testhost --target aarch64-unknown-none-softfloat --release)
mkdir -p "$ROOT/out/tests"
aarch64-linux-gnu-objcopy -O binary "$ROOT/target/aarch64-unknown-none-softfloat/release/testhost" "$ROOT/out/tests/testhost.bin"
echo "KCore VM paths, instructions per operation (-cpu $cpu, -icount shift=0)"
timeout 300 qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu "$cpu" -smp 1 -m 1G \
    -nographic -no-reboot -nic none -semihosting -icount shift=0,sleep=off \
    -kernel "$ROOT/out/kcore.bin" -append "kcore.semihosting kcore.host=0x40400000 kcore.log=warn testhost.bench" \
    -device "loader,file=$ROOT/out/tests/testhost.bin,addr=0x40400000,force-raw=on" < /dev/null |
    sed -n 's/^BENCH /  /p'
fi
[ "$linux" = 1 ] || exit 0

# The Linux path. -cpu max: CNTFRQ is 1 GHz, so with -icount shift=0 a counter tick is one
# instruction (and the host's nanoseconds are instructions).
linux_bench='
kvm-smoke --guest bench > /tmp/bench.bin
qemu-system-aarch64 -M virt,gic-version=3,its=off -accel kvm -cpu host -smp 2 -m 64 -nographic -nic none -monitor none -serial file:/tmp/bench.txt -device loader,file=/tmp/bench.bin,addr=0x40200000,cpu-num=0 > /dev/null 2>&1
cat /tmp/bench.txt
now() { sed -n "s/^now at \([0-9]*\) nsecs$/\1/p" /proc/timer_list; }
t0=$(now); run-guest --serial /tmp/boot.txt > /dev/null 2>&1; t1=$(now)
if grep -q "^GUEST-LINUX: powering off" /tmp/boot.txt; then printf "BENCH linux-boot %x\n" $((t1 - t0));
else echo "BENCH NOTE the Linux guest did not finish: $(tail -2 /tmp/boot.txt | tr "\n" " ")"; fi'
run_linux() {
    "$ROOT/scripts/run.sh" --no-setup --timeout 3600 --cpus 2 --with-qemu \
        --qemu-arg -icount --qemu-arg shift=0,sleep=off "$@" --exec "$linux_bench" 2> /dev/null |
        sed -n 's/^BENCH //p' || true
}
ours="$(run_linux)"
stock="$(run_linux --direct --append kvm-arm.mode=nvhe)"
sed -n 's/^NOTE /bench-vm.sh: KCore: /p' <<<"$ours" >&2
sed -n 's/^NOTE /bench-vm.sh: stock KVM: /p' <<<"$stock" >&2
echo "Linux host, Debian QEMU, instructions per operation (-cpu max, -icount shift=0): KCore + kserv vs stock KVM nVHE"
printf '  %-12s %14s %14s %8s\n' operation KCore+kserv "KVM nVHE" ratio
for op in hvc mmio-gic mmio-vmm ipi linux-boot; do
    div=1024
    [ "$op" = linux-boot ] && div=1
    a=$(sed -n "s/^$op //p" <<<"$ours")
    b=$(sed -n "s/^$op //p" <<<"$stock")
    fa=-; fb=-; r=-
    [ -n "$a" ] && fa=$(( 0x$a / div ))
    [ -n "$b" ] && fb=$(( 0x$b / div ))
    [ -n "$a" ] && [ -n "$b" ] && r=$(echo "scale=2; $fa / $fb" | bc)
    printf '  %-12s %14s %14s %8s\n' "$op" "$fa" "$fb" "$r"
done
