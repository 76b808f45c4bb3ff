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
# test host, not Linux. Prints figures only.
#
#   scripts/bench-vm.sh [--cpu MODEL] [--no-setup]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu=max setup=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu="$2"; shift 2 ;;
        --no-setup) setup=0; shift ;;
        *) echo "bench-vm.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$setup" = 1 ] && bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh"
(cd "$ROOT" && cargo build -q -p kcore-testhost --target aarch64-unknown-none-softfloat --release)
mkdir -p "$ROOT/out/tests"
aarch64-linux-gnu-objcopy -O binary "$ROOT/target/aarch64-unknown-none-softfloat/release/testhost" "$ROOT/out/tests/testhost.bin"
echo "KCore VM paths, instructions per operation (-cpu $cpu, -icount shift=0)"
timeout 300 qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu "$cpu" -smp 1 -m 1G \
    -nographic -no-reboot -nic none -semihosting -icount shift=0,sleep=off \
    -kernel "$ROOT/out/kcore.bin" -append "kcore.semihosting kcore.host=0x40400000 kcore.log=warn testhost.bench" \
    -device "loader,file=$ROOT/out/tests/testhost.bin,addr=0x40400000,force-raw=on" < /dev/null |
    sed -n 's/^BENCH /  /p'
