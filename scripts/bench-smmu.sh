#!/usr/bin/env bash
# SMMU benchmark: what KCore's emulation of the SMMUv3 costs the host, in guest instructions,
# side by side in one run. The same Debian host kernel boots six times on one CPU (so the
# instruction counters below count the whole machine): under KCore with the emulated SMMU
# (the host's own arm-smmu-v3 driver, default DMA domain, strict invalidation), with
# iommu.passthrough=1, with kcore.smmu=hidden (no IOMMU in the host; KCore's stage-2-only
# STEs still confine the devices), with no SMMU in the machine (--no-smmu), and directly at
# EL2 with no KCore (--direct) with and without the SMMU. In each, a small static program
# (kserv-shim/tools/smmu-bench, built here with the cross gcc, no C library) measures:
#
#   register reads   N 32-bit reads through a /dev/mem mapping (iomem=relaxed), between two
#                    CNTVCT_EL0 reads, the smallest of several rounds: an ordinary variable
#                    (the loop's own 4 instructions), GICD_IIDR (0x08000008: the host maps
#                    the distributor directly, no trap) and the SMMU's IDR0 (0x09050000:
#                    under KCore every access traps and is emulated; under --direct it goes
#                    to QEMU's SMMU model). KCore's cost per trapped read = IDR0 - GICD_IIDR
#                    under KCore.
#   disk             passes over the whole 4 MiB /dev/vda (virtio-blk-pci behind the SMMU) in
#                    4 KiB O_DIRECT reads, one request each, the smallest pass: instructions
#                    per request (all exception levels: KCore's included) and MB (10^6 bytes)
#                    per 10^9 instructions, with its ratio to KCore without an SMMU. The
#                    count is QEMU's instructions-retired PMU event through perf (it exists
#                    only with -icount and is QEMU's raw instruction count): a disk request
#                    waits for QEMU with the CPU idle, and the virtual clock's idle time is
#                    no instruction count (see --sleep).
#   command batches  the direct SMMU boot also runs with QEMU's smmuv3 trace events: the
#                    host driver's CMDQ_PROD writes during the passes, per request (strict
#                    mode: each DMA unmap is one batch, CMD_TLBI_NH_VA + CMD_SYNC, then one
#                    CMDQ_CONS read). The same kernel issues the same batches under KCore,
#                    where each is a trapped PROD write that KCore copies, filters and
#                    re-issues on its own queue (the stage-1 TLBI as one CMD_TLBI_S12_VMALL,
#                    with KCore's CMD_SYNC, waiting for it) plus a trapped CONS read.
#                    Instructions per batch = ((KCore emulated - KCore no SMMU) - (direct
#                    SMMU - direct no SMMU)) per request / batches per request: everything
#                    the emulation adds to the host's DMA map/unmap path, the CONS read's
#                    trap included, net of the host driver's own work (which --direct has
#                    too) and of KCore's cost for a disk request without an SMMU.
#
# QEMU: -cpu max (CNTFRQ 1 GHz), -icount shift=0 (one virtual nanosecond per instruction),
# -seed 1, dtb-randomness=off, -rtc clock=vm, nokaslr. --sleep on (default) lets the virtual
# clock follow real time while every CPU idles; with --sleep off, each disk request's wait
# skips the clock to the next timer deadline and that timer's work lands in the pass (about
# +30% on a pass, varying), which the register reads (no idle) do not see either way.
# Prints figures only; never a verdict.
#
#   scripts/bench-smmu.sh [--passes N] [--sleep on|off] [--no-setup]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LC_ALL=C
passes=16 sleep=on setup=1 reads=10000 rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --passes) passes="$2"; shift 2 ;;
        --sleep) sleep="$2"; shift 2 ;;
        --no-setup) setup=0; shift ;;
        *) echo "bench-smmu.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$sleep" in on|off) ;; *) echo "bench-smmu.sh: --sleep takes on or off" >&2; exit 2 ;; esac
[ "$setup" = 1 ] && bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh"

out="$ROOT/out/bench"
mkdir -p "$out"
aarch64-linux-gnu-gcc -O2 -static -nostdlib -ffreestanding -fno-builtin -fno-stack-protector \
    -fno-pie -no-pie -Wall -Wextra -Werror -Wl,--build-id=none -Wl,-n -s \
    -o "$out/smmu-bench" "$ROOT/kserv-shim/tools/smmu-bench/smmu-bench.c"

gicd_iidr=0x08000008 smmu_idr0=0x09050000 smmu_aidr=0x0905001c
# The host's command: the program (base64 in the command: run.sh passes a command, not
# files), the register reads, then the disk passes between two single SMMU_AIDR reads
# (markers for the trace; the host driver does not read AIDR).
host_cmd() { # host_cmd SMMU-VISIBLE(0|1)
    printf '%s\n' "base64 -d > /tmp/smmu-bench <<'EOF'" "$(base64 -w 76 "$out/smmu-bench")" EOF \
        "chmod +x /tmp/smmu-bench" \
        "/tmp/smmu-bench loop $reads $rounds" \
        "/tmp/smmu-bench mmio $gicd_iidr $reads $rounds"
    if [ "$1" = 1 ]; then
        printf '%s\n' "/tmp/smmu-bench mmio $smmu_idr0 $reads $rounds" \
            "/tmp/smmu-bench mmio $smmu_aidr 1 1 > /dev/null"
    fi
    echo "/tmp/smmu-bench read /dev/vda 4096 $passes"
    [ "$1" = 1 ] && echo "/tmp/smmu-bench mmio $smmu_aidr 1 1 > /dev/null"
    true
}
trace="$out/smmu-trace.log"
run() { # run NAME SMMU-VISIBLE RUN.SH-ARGS...: the program's lines, prefixed with NAME
    local name="$1" vis="$2"
    shift 2
    RUN_CONSOLE_LOG="$out/console-$name.log" "$ROOT/scripts/run.sh" --no-setup --cpus 1 --timeout 300 \
        --append "nokaslr iomem=relaxed ${append:-}" \
        --qemu-arg -icount --qemu-arg "shift=0,sleep=$sleep" --qemu-arg -seed --qemu-arg 1 \
        --qemu-arg -M --qemu-arg dtb-randomness=off \
        --qemu-arg -rtc --qemu-arg base=2026-01-01T00:00:00,clock=vm \
        "$@" --exec "$(host_cmd "$vis")" 2> /dev/null | sed "s/^/$name /" ||
        echo "bench-smmu.sh: the $name boot did not finish (see $out/console-$name.log)" >&2
}
rm -f "$trace"
results="$(
    append="" run kcore 1
    append="iommu.passthrough=1" run kcore-pt 1
    append="kcore.smmu=hidden" run kcore-hidden 0
    append="" run kcore-nosmmu 0 --no-smmu
    append="" run direct 1 --direct --qemu-arg -D --qemu-arg "$trace" \
        --qemu-arg -trace --qemu-arg smmuv3_write_mmio --qemu-arg -trace --qemu-arg smmuv3_read_mmio
    append="" run direct-nosmmu 0 --direct --no-smmu
)"
# CMDQ_PROD (0x98) writes between the two AIDR (0x1c) reads of the direct boot.
batches=-
if [ -f "$trace" ]; then
    batches=$(awk '/^smmuv3_read_mmio addr: 0x1c / { m++; next }
                   m == 1 && /^smmuv3_write_mmio addr: 0x98 / { n++ }
                   END { if (m == 2) print n + 0; else print "-" }' "$trace")
    rm -f "$trace"
fi

# min NAME KIND FIELD: the smallest FIELD (3 = counter delta, 4 = instructions) of NAME's KIND lines
min() { awk -v n="$1" -v k="$2" -v f="$3" -v a="${4:-}" '$1 == n && $2 == k && (a == "" || $3 == a) && $f != "-" {
    if (m == "" || $f + 0 < m) m = $f + 0 } END { print m == "" ? "-" : m }' <<<"$results"; }
per() { [ "$1" = - ] && { echo -; return; }; printf '%.1f' "$(echo "scale=2; $1 / $2" | bc)"; }
requests=$(awk '$2 == "read" { print $3; exit }' <<<"$results")
requests=${requests:-1024}

kver="$(basename "$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.1.*-cloud-arm64 | sort -V | tail -1)")"
echo "SMMU emulation, host kernel ${kver#vmlinuz-}, 1 CPU, -cpu max, -icount shift=0,sleep=$sleep"
echo "register reads: instructions per read, smallest of $rounds rounds of $reads (the loop's 4 included)"
printf '  %-34s %10s %10s\n' "" KCore direct
for r in "loop only (ordinary memory)|loop|0" "GICD_IIDR (never trapped)|mmio|$((gicd_iidr))" \
         "SMMU IDR0 (KCore: trapped)|mmio|$((smmu_idr0))"; do
    IFS='|' read -r label kind addr <<<"$r"
    printf '  %-34s %10s %10s\n' "$label" "$(per "$(min kcore "$kind" 4 "$addr")" "$reads")" \
        "$(per "$(min direct "$kind" 4 "$addr")" "$reads")"
done
k_idr=$(min kcore mmio 4 $((smmu_idr0))) k_gicd=$(min kcore mmio 4 $((gicd_iidr)))
d_idr=$(min direct mmio 4 $((smmu_idr0)))
trap_cost=- ; vs_direct=-
[ "$k_idr" != - ] && [ "$k_gicd" != - ] && trap_cost=$(per $((k_idr - k_gicd)) "$reads")
[ "$k_idr" != - ] && [ "$d_idr" != - ] && vs_direct=$(per $((k_idr - d_idr)) "$reads")
printf '  %-34s %10s\n' "KCore's cost per trapped read" "$trap_cost" "  (IDR0: KCore - direct)" "$vs_direct"

echo "disk: /dev/vda ($requests x 4 KiB O_DIRECT reads = 4 MiB), smallest of $passes passes; instructions on every EL"
printf '  %-30s %12s %14s %10s %12s\n' config "insns/request" "MB/1e9 insns" "vs KCore" "vs same"
printf '  %-30s %12s %14s %10s %12s\n' "" "" "" "no SMMU" "no SMMU"
declare -A I
for n in kcore kcore-pt kcore-hidden kcore-nosmmu direct direct-nosmmu; do I[$n]=$(min "$n" read 5); done
mb() { [ "$1" = - ] && { echo -; return; }; printf '%.1f' "$(echo "scale=2; $requests * 4096 * 1000 / $1" | bc)"; }
ratio() { { [ "$1" = - ] || [ "$2" = - ]; } && { echo -; return; }; printf '%.3f' "$(echo "scale=4; $2 / $1" | bc)"; }
for r in "kcore|KCore, emulated SMMU|kcore-nosmmu" "kcore-pt|KCore, iommu.passthrough=1|kcore-nosmmu" \
         "kcore-hidden|KCore, kcore.smmu=hidden|kcore-nosmmu" "kcore-nosmmu|KCore, no SMMU|kcore-nosmmu" \
         "direct|direct (no KCore), SMMU|direct-nosmmu" "direct-nosmmu|direct (no KCore), no SMMU|direct-nosmmu"; do
    IFS='|' read -r n label same <<<"$r"
    printf '  %-30s %12s %14s %10s %12s\n' "$label" "$(per "${I[$n]}" "$requests")" "$(mb "${I[$n]}")" \
        "$(ratio "${I[$n]}" "${I[kcore-nosmmu]}")" "$(ratio "${I[$n]}" "${I[$same]}")"
done
echo "host command batches (direct boot, QEMU trace): $batches CMDQ_PROD writes in $((requests * passes)) requests"
ok=1
for n in kcore kcore-nosmmu direct direct-nosmmu; do [ "${I[$n]}" = - ] && ok=0; done
if [ "$ok" = 1 ] && [ "$batches" != - ] && [ "$batches" -gt 0 ]; then
    extra=$(echo "scale=2; ((${I[kcore]} - ${I[kcore-nosmmu]}) - (${I[direct]} - ${I[direct-nosmmu]})) / $requests" | bc)
    bpr=$(echo "scale=3; $batches / ($requests * $passes)" | bc)
    printf '  %-58s %10s\n' "batches per request" "$(printf '%.2f' "$bpr")" \
        "emulation's insns per request (net of no-SMMU, vs direct)" "$(printf '%.1f' "$extra")" \
        "instructions per forwarded batch (PROD write + CONS read)" "$(printf '%.1f' "$(echo "scale=2; $extra / $bpr" | bc)")"
fi
