#!/usr/bin/env bash
# Boot-time benchmark: the same Debian host kernel and initramfs booted (a) directly at EL2 and
# (b) at EL1 under KCore, in the same QEMU, in this one run. Reports, per mode:
#   - wall time from QEMU start to power-off after userspace ran (median of --runs; noisy);
#   - the kernel's timestamp of starting /init, under -icount shift=0,sleep=off, where the
#     virtual clock advances one nanosecond per guest instruction (deterministic; idle time
#     is skipped to the next timer deadline rather than slept);
# and the KCore/direct ratios. Prints figures only; nothing here is a pass/fail test.
#
#   scripts/bench-boot.sh [--runs N] [--cpus N] [--cpu MODEL] [--no-setup]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs=3 cpus=2 cpu=max setup=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --cpu) cpu="$2"; shift 2 ;;
        --no-setup) setup=0; shift ;;
        *) echo "bench-boot.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$setup" = 1 ] && bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh"

# The kernel's own timestamp (microseconds) of starting /init.
uptime_cmd='dmesg | sed -n "s/^\[ *\([0-9.]*\)\] Run \/init.*/\1/p"'
wall() { # wall MODE-ARGS...: print QEMU wall seconds of one boot
    "$ROOT/scripts/run.sh" --no-setup --cpus "$cpus" --cpu "$cpu" "$@" --exec "$uptime_cmd" 2>&1 >/dev/null |
        sed -n 's/^run.sh: QEMU ran \([0-9.]*\) s.*/\1/p'
}
virtual() { # virtual MODE-ARGS...: the host's uptime at userspace under icount
    "$ROOT/scripts/run.sh" --no-setup --cpus "$cpus" --cpu "$cpu" "$@" \
        --qemu-arg -icount --qemu-arg shift=0,sleep=off --exec "$uptime_cmd" 2>/dev/null | tail -1
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A W V
for mode in direct kcore; do
    args=()
    [ "$mode" = direct ] && args=(--direct)
    W[$mode]=$(for _ in $(seq "$runs"); do wall "${args[@]}"; done | median | xargs printf '%.2f')
    V[$mode]=$(virtual "${args[@]}")
done

echo "boot to userspace, host kernel $(basename "$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.1.*-cloud-arm64 | sort -V | tail -1)"), -cpu $cpu -smp $cpus"
printf '  %-34s %10s %10s %8s\n' "" "direct" "KCore" "ratio"
printf '  %-34s %10s %10s %8s\n' "wall s, QEMU start to poweroff" "${W[direct]}" "${W[kcore]}" \
    "$(echo "scale=3; ${W[kcore]} / ${W[direct]}" | bc)"
printf '  %-34s %10s %10s %8s\n' "virtual s at /init (icount)" "${V[direct]}" "${V[kcore]}" \
    "$(echo "scale=3; ${V[kcore]} / ${V[direct]}" | bc)"
