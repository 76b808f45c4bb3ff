#!/usr/bin/env bash
# Protected vs non-protected VM benchmark: in a host booted under KCore (scripts/run.sh
# --with-qemu --cpus 2), Debian's QEMU runs the same Linux guest kernel (the signed
# pKVM guest, /guest/Image-pkvm.signed, 2 vCPUs, 256 MiB) as a protected VM (run-guest
# --protected, kserv.protected_vms=1) and as a non-protected one (run-guest --pkvm), with the
# same virtio devices, all modern-only with ACCESS_PLATFORM (iommu_platform=on) in both: only
# the protection differs (the protected guest bounces its DMA through memory it shares with
# MEM_SHARE). Each guest, booted ROUNDS times (protected, non-protected, protected, ...):
#   boot       QEMU started to the guest's /init running ("GUEST-LINUX: userspace up")
#   blk-read   dd if=/dev/vdc of=/dev/null bs=1M in the guest: a BLK_MIB disk the host made
#              with dd (the guest's page cache dropped first)
#   net-fetch  wget of a NET_MIB file from busybox httpd in the host, over QEMU's user network
#   MEM_SHARE  the guest's calls, from KCore's report when the VM is destroyed (and
#              MEM_UNSHARE and MMIO_GUARD from the same report)
# blk-read and net-fetch run twice in each guest (the table has the first and second).
#
# Two passes, each one host boot with both guests in it (--mode wall|icount|both, default
# both; about 6 minutes on 2 cores):
#   wall    the emulator in real time: the host's and the guest's clocks, which time the
#           figures, follow the wall clock: seconds, noisy under TCG (cores shared with
#           whatever else runs, a trap costs the time of hundreds of ordinary instructions);
#   icount  -icount shift=0,sleep=off with -cpu max (a 1 GHz counter): every host and guest
#           clock counts instructions, one nanosecond each (all CPUs, KCore's and the host's
#           included; idle time skipped), so its "seconds" are 10^9 instructions. Much
#           closer from run to run than wall time, not bit-identical (boots within about
#           5%, the short reads within about 20%).
# Prints figures only; never a verdict (not part of scripts/test.sh).
#
#   scripts/bench-protected.sh [--mode wall|icount|both] [--rounds N (2)] [--blk-mib N (32)]
#                              [--net-mib N (16)] [--log PREFIX] [--no-setup]
#
# --log PREFIX keeps each pass's whole console (KCore's lines too) as PREFIX-MODE.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup=1 mode=both rounds=2 blk_mib=32 net_mib=16 keep_log=""
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --blk-mib) blk_mib="$2"; shift 2 ;;
        --net-mib) net_mib="$2"; shift 2 ;;
        --no-setup) setup=0; shift ;;
        --log) keep_log="$2"; shift 2 ;;
        *) echo "bench-protected.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$mode" in wall | icount | both) ;; *) echo "bench-protected.sh: --mode wall, icount or both" >&2; exit 2 ;; esac
[ "$setup" = 1 ] && bash "$ROOT/scripts/setup.sh" >&2

# The guest's script (a raw disk, vdb: the guest's /init runs it after its own checks), in
# the guest's busybox: GUEST-LINUX lines, which the host stamps with its clock.
# shellcheck disable=SC2016 # it expands in the guest
guest_script='
say() { echo "GUEST-LINUX: $*"; }
now() { awk "/^now at/ { print \$3; exit }" /proc/timer_list; }
for i in 1 2; do
    sync; echo 3 > /proc/sys/vm/drop_caches; drop=$?
    cached=$(grep "^Cached:" /proc/meminfo | tr -s " " | cut -d" " -f2)
    t0=$(now); dd if=/dev/vdc of=/dev/null bs=1M 2> /tmp/dd; s=$?; t1=$(now)
    say "BENCH blk-read $i $s $t0 $t1 drop_caches $drop, Cached ${cached} kB before, dd: $(tail -1 /tmp/dd)"
    t0=$(now); wget -q -O /dev/null http://10.0.2.2:8080/big; s=$?; t1=$(now)
    say "BENCH net-fetch $i $s $t0 $t1"
done
'
# The host's side (busybox sh): make the disks and the file, serve it, run the guests. Every
# line the benchmark reads goes to the console at once (KCore's reports land between them).
# shellcheck disable=SC2016 # it expands in the host
host_script="
blk_mib=$blk_mib net_mib=$net_mib rounds=$rounds
"'
con() { echo "$*" > /dev/console; }
now() { awk "/^now at/ { print \$3; exit }" /proc/timer_list; }
cr=$(printf "\r")
mkdir -p /tmp/www
echo small > /tmp/www/file
dd if=/dev/zero of=/tmp/www/big bs=1M count=$net_mib 2> /dev/null
dd if=/dev/zero of=/tmp/data.img bs=1M count=$blk_mib 2> /dev/null
cat > /tmp/script.img <<"SCRIPT"
'"$guest_script"'
SCRIPT
n=$(wc -c < /tmp/script.img)
head -c $(( (512 - n % 512) % 512 )) /dev/zero | tr "\000" "\n" >> /tmp/script.img
httpd -p 127.0.0.1:8080 -h /tmp/www
d=iommu_platform=on,disable-legacy=on
# Stamp the guest console lines that matter with the host clock as they arrive.
stamp() {
    while IFS= read -r l; do
        case "$l" in *GUEST-LINUX:*) u=$(now); l=${l%"$cr"}; con "BENCH-LINE $1 $u ${l#*GUEST-LINUX: }" ;; esac
    done
}
one() {
    tag=$1; shift
    con "BENCH-RUN $tag"
    t0=$(now)
    timeout 900 run-guest "$@" --smp 2 --devices --serial /proc/self/fd/1 -- \
        -drive file=/tmp/script.img,if=none,format=raw,readonly=on,id=script -device virtio-blk-pci,drive=script,$d \
        -drive file=/tmp/data.img,if=none,format=raw,readonly=on,id=data -device virtio-blk-pci,drive=data,$d \
        2> /tmp/$tag.err | stamp $tag
    t1=$(now)
    con "BENCH-QEMU $tag $t0 $t1 $(grep -c terminating /tmp/$tag.err)"
    sleep 1
}
r=1
while [ $r -le $rounds ]; do
    echo 1 > /sys/module/kserv/parameters/protected_vms
    one protected --protected
    echo 0 > /sys/module/kserv/parameters/protected_vms
    one plain --pkvm
    r=$((r + 1))
done
con "BENCH-DONE"
'
log="$(mktemp)"
trap 'rm -f "$log" "$log.tmp"' EXIT
# One pass: boot the host, run the guests, print the table.
bench_pass() {
    local icount=$1 qemu_args=()
    [ "$icount" = 1 ] && qemu_args=(--qemu-arg -icount --qemu-arg "shift=0,sleep=off")
    # The whole console, KCore's lines too (its report when a VM is destroyed), in a file of
    # this run's; --exec's own output is not needed.
    set +e
    RUN_CONSOLE_LOG="$log" "$ROOT/scripts/run.sh" --no-setup --timeout 1800 --cpus 2 --cpu max --with-qemu \
        "${qemu_args[@]}" --exec "$host_script" > /dev/null 2>&1
    rc=$?
    set -e
    grep -q '^BENCH-DONE' "$log" || {
        echo "bench-protected.sh: the host did not finish (run.sh status $rc); last console lines:" >&2
        tail -n 30 "$log" >&2
        return 1
    }
    [ -z "$keep_log" ] || cp "$log" "$keep_log-$([ "$icount" = 1 ] && echo icount || echo wall).log"

    if [ "$icount" = 1 ]; then
        unit="instructions: -icount shift=0,sleep=off, one host or guest clock nanosecond per instruction, all CPUs"
        secs="G insns" rate="MiB/G insns"
    else
        unit="wall-clock time as the emulated clocks see it: TCG, noisy (shared cores, traps costly)"
        secs="s" rate="MiB/s"
    fi
    echo "Protected vs non-protected VM: the signed pKVM guest kernel, 2 vCPUs, 256 MiB, virtio with"
    echo "ACCESS_PLATFORM in both, one host under KCore (-cpu max -smp 2); $rounds boot(s) of each"
    echo "Figures in $unit"
    awk -v blk="$blk_mib" -v net="$net_mib" -v rounds="$rounds" -v secs="$secs" -v rate="$rate" '
    function num(x) { gsub(/[^0-9.]/, "", x); return x + 0 }
    /^BENCH-RUN / { tag = $2; r = ++n[tag] }
    /^BENCH-QEMU / { start[$2, n[$2]] = $3; killed[$2, n[$2]] = $5 }
    /^BENCH-LINE .* userspace up/ { up[$2, n[$2]] = $3 }
    /^BENCH-LINE [a-z]+ [0-9]+ BENCH (blk-read|net-fetch) / {
        # tag, stamp, BENCH, what, i, status, guest t0, guest t1
        k = $2 SUBSEP n[$2]
        mib = ($5 == "blk-read") ? blk : net
        if ($7 == 0 && $9 > $8) val[$5 " " $6, k] = sprintf("%.2f", mib * 1e9 / ($9 - $8))
        else val[$5 " " $6, k] = "failed"
    }
    / destroyed: MEM_SHARE / {
        for (i = 1; i <= NF; i++) {
            if ($i == "MEM_SHARE") { val["MEM_SHARE", tag, r] = $(i + 1); val["MEM_SHARE refused", tag, r] = num($(i + 2)) }
            if ($i == "MEM_UNSHARE") val["MEM_UNSHARE", tag, r] = $(i + 1)
        }
    }
    / destroyed: [0-9]+ MMIO_GUARD / { for (i = 1; i <= NF; i++) if ($i == "MMIO_GUARD") val["MMIO_GUARD", tag, r] = $(i - 1) }
    END {
        for (r = 1; r <= rounds; r++)
            for (t = 0; t < 2; t++) {
                tg = t ? "plain" : "protected"
                if ((tg, r) in up) val["boot", tg, r] = sprintf("%.3f", (up[tg, r] - start[tg, r]) / 1e9)
                if (killed[tg, r] > 0) val["boot", tg, r] = "killed"
            }
        nf = split("boot|blk-read 1|blk-read 2|net-fetch 1|net-fetch 2|MEM_SHARE|MEM_SHARE refused|MEM_UNSHARE|MMIO_GUARD", f, "|")
        name["boot"] = "boot to userspace, " secs
        name["blk-read 1"] = "virtio-blk read " blk " MiB, " rate " (1st)"
        name["blk-read 2"] = "virtio-blk read " blk " MiB, " rate " (2nd)"
        name["net-fetch 1"] = "virtio-net fetch " net " MiB, " rate " (1st)"
        name["net-fetch 2"] = "virtio-net fetch " net " MiB, " rate " (2nd)"
        name["MEM_SHARE"] = "MEM_SHARE calls per boot"
        name["MEM_SHARE refused"] = "  of them refused"
        name["MEM_UNSHARE"] = "MEM_UNSHARE calls per boot"
        name["MMIO_GUARD"] = "MMIO_GUARD enrolments per boot"
        printf "  %-44s %5s %11s %14s %8s\n", "figure", "boot", "protected", "non-protected", "ratio"
        for (i = 1; i <= nf; i++)
            for (r = 1; r <= rounds; r++) {
                a = ((f[i], "protected", r) in val) ? val[f[i], "protected", r] : "-"
                b = ((f[i], "plain", r) in val) ? val[f[i], "plain", r] : "-"
                # KCore reports only a VM that made calls: none is 0.
                if (f[i] ~ /^M/ && b == "-" && a != "-") b = 0
                ratio = (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) ? sprintf("%.2f", a / b) : "-"
                printf "  %-44s %5d %11s %14s %8s\n", name[f[i]], r, a, b, ratio
            }
    }' "$log"
    echo "ratio: protected / non-protected. Throughput: the guest's clock around dd and wget, run"
    echo "twice in each guest (1st, 2nd; the guest's page cache dropped before each dd); boot: the"
    echo "host's clock, QEMU's start to the guest's /init. MEM_SHARE, MEM_UNSHARE and MMIO_GUARD:"
    echo "KCore's report when the VM is destroyed (a VM offered none makes none)."
    [ "$icount" = 1 ] || echo "Wall time under TCG is noisy: compare figures of one run, and expect runs to differ."
}
case "$mode" in
    wall) bench_pass 0 ;;
    icount) bench_pass 1 ;;
    both) bench_pass 0 && echo && bench_pass 1 ;;
esac
