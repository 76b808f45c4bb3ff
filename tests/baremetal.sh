#!/usr/bin/env bash
# Tier 2: KCore with bare-metal EL1 test payloads under QEMU; verdict by semihosting exit code.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/out/tests"
mkdir -p "$OUT"
source "$ROOT/tests/lib.sh"

# The payload is linked where KCore looks for the host kernel: the first 2 MiB boundary after
# KCore's image (RAM base 0x40000000 + 2 MiB + image_size, rounded up).
image_size=$(od -A n -t u8 -j 16 -N 8 "$ROOT/out/kcore.bin" | tr -d ' ')
load=$(( (0x40200000 + image_size + 0x1fffff) & ~0x1fffff ))

build_payload() {
    local name="$1"
    aarch64-linux-gnu-gcc -nostdlib -static -Wl,-Ttext="$(printf '%#x' $load)" -Wl,--build-id=none \
        -o "$OUT/$name.elf" "$ROOT/tests/payloads/$name.S" &&
        aarch64-linux-gnu-objcopy -O binary "$OUT/$name.elf" "$OUT/$name.bin"
}

# run_payload NAME CPU [KCORE [SMP [GIC]]]: boot KCore + payload on a GICv3 (or GICv2: GIC=2)
# machine; echo the exit status.
run_payload() {
    local name="$1" cpu="$2" kcore="${3:-kcore}" smp="${4:-2}" gic="${5:-3}"
    timeout 120 qemu-system-aarch64 -M "virt,virtualization=on,gic-version=$gic" -cpu "$cpu" -smp "$smp" -m 1G \
        -nographic -no-reboot -nic none -semihosting -kernel "$ROOT/out/$kcore.bin" \
        -append "kcore.semihosting kcore.host=$(printf '%#x' $load)" \
        -device "loader,file=$OUT/$name.bin,addr=$(printf '%#x' $load),force-raw=on" \
        > "$OUT/$(log_name "$name" "$cpu" "$kcore" "$smp" "$gic")" 2>&1 < /dev/null
    echo $?
}
log_name() {
    echo "$1-$2-$3$([ "$4" = 2 ] || echo "-smp$4")$([ "$5" = 3 ] || echo "-gicv$5").log"
}

echo "bare-metal QEMU scenarios"
if ! build_payload smoke; then
    fail "build smoke payload"
else
    for cpu in max cortex-a57; do
        status=$(run_payload smoke "$cpu")
        if [ "$status" = 0 ]; then
            pass "smoke on $cpu: version, unknown call, UID, isolation (KCore's image reads as zeros, a write aborts), PSCI forward, device map"
        else
            fail "smoke on $cpu (failed check $status; see out/tests/smoke-$cpu-kcore.log)" "$(tail -5 "$OUT/smoke-$cpu-kcore.log")"
        fi
    done
    if grep -q "host access to 0x40200000 refused" "$OUT/smoke-max-kcore.log"; then
        pass "KCore logs the refused host access and keeps running"
    else
        fail "KCore logs the refused host access"
    fi
    # The same on a GICv2 machine (AMD Seattle's GIC-400; cortex-a57 is Seattle's core).
    status=$(run_payload smoke cortex-a57 kcore 2 2)
    if [ "$status" = 0 ] && grep -q "GICv2: distributor" "$OUT/smoke-cortex-a57-kcore-gicv2.log"; then
        pass "smoke on cortex-a57 with a GICv2: the same checks, KCore found the GICv2"
    else
        fail "smoke on cortex-a57 with a GICv2 (failed check $status; see out/tests/smoke-cortex-a57-kcore-gicv2.log)" "$(tail -5 "$OUT/smoke-cortex-a57-kcore-gicv2.log")"
    fi
fi
# The Rust test host (tests/testhost): the VM lifecycle through real hypercalls. It is linked
# at a fixed address; KCore is told where with kcore.host=.
testhost_load=$((0x40400000))
if [ "$load" != "$testhost_load" ]; then
    fail "test host link address $(printf '%#x' $testhost_load) != host load address $(printf '%#x' $load)"
elif ! (cd "$ROOT" && cargo build -q -p kcore-testhost --target aarch64-unknown-none-softfloat --release) ||
     ! aarch64-linux-gnu-objcopy -O binary "$ROOT/target/aarch64-unknown-none-softfloat/release/testhost" "$OUT/testhost.bin"; then
    fail "build the test host"
else
    for run in "max kcore 2" "cortex-a57 kcore 2" "cortex-a53 kcore 2" "cortex-a76 kcore 2" "max kcore-debug 2" "max kcore 1" "cortex-a57 kcore 1"; do
        set -- $run
        status=$(run_payload testhost "$1" "$2" "$3")
        log="$OUT/$(log_name testhost "$1" "$2" "$3" 3)"
        what="VMs on $1 ($2, $3 CPUs): signed image verified, bad signature refused, VM and KCore pages out of the host's reach (its reads see KCore's zero page, its writes abort), destroy scrubs, vmid reused, malformed calls refused; a signed guest runs (PSCI in KCore, MMIO served by the host, RAM backed on fault, pKVM MEM_SHARE/UNSHARE and SeKVM grant/revoke: the host reads a shared page and loses it on unshare, a second vCPU started by PSCI CPU_ON and stopped by CPU_OFF, a host-injected virtual interrupt taken through the list registers, the guest timer interrupt, a WFI exit carrying the guest timer's deadline, FP/SIMD isolation, WFI, power-off; a non-protected VM whose lent memory and registers the host reads and writes while it runs; four vCPUs exchanging IPIs through the host's SGI routing; eight SPIs, edge and level, through four list registers with underflow and EOI maintenance exits; a guest spinning for 2 s gives the host its timer ticks; a probe guest sees sanitised ID registers and UNDEF for each hidden feature, and a both-ways register sweep finds no state crossing)"
        if [ "$status" = 0 ] && grep -q "TESTHOST: all passed" "$log"; then
            pass "$what"
        else
            fail "$what (failed check $status; see ${log#$ROOT/})" "$(tail -5 "$log")"
        fi
    done
    # GICv2 machines (gic-version=2, AMD Seattle's GIC-400): the guest's CPU interface is the
    # GICv2 virtual CPU interface (GICV, mapped by KCore where the guest expects its GICC),
    # KCore switches the list registers through GICH; SGIs are GICD_SGIR writes the test host
    # routes. The ID-register probe and sweep (written for GICv3) are left out there.
    for run in "max kcore 2" "cortex-a57 kcore 2" "cortex-a57 kcore-debug 2" "cortex-a57 kcore 1"; do
        set -- $run
        status=$(run_payload testhost "$1" "$2" "$3" 2)
        log="$OUT/$(log_name testhost "$1" "$2" "$3" 2)"
        what="VMs on $1 with a GICv2 ($2, $3 CPUs): the lifecycle, isolation and refusal checks above; a signed guest runs with a host-injected virtual interrupt (42) and its virtual timer (27) taken and completed through the GICv2 virtual CPU interface, a WFI exit with the timer's deadline, a second vCPU, memory sharing; a non-protected VM; four vCPUs exchanging IPIs through GICD_SGIR writes the host routes; eight SPIs, edge and level, through four GICH list registers with underflow and EOI maintenance exits; a spinning guest gives the host its timer ticks (KCore's EL2 timer enabled in the banked GICD_ISENABLER0)"
        if [ "$status" = 0 ] && grep -q "TESTHOST: all passed" "$log"; then
            pass "$what"
        else
            fail "$what (failed check $status; see ${log#$ROOT/})" "$(tail -5 "$log")"
        fi
    done
fi
# A Debian kernel (the bookworm-backports cloud kernel setup fetched) as a non-protected
# guest of the test host, with a device tree QEMU makes for a 256 MiB virt machine.
guest_kernel="$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.1[2-9]*-cloud-arm64 2>/dev/null | sort -V | tail -1)"
if [ -z "$guest_kernel" ]; then
    fail "Linux guest: no 6.12 cloud kernel in .cache (scripts/setup.sh fetches it)"
elif ! qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$OUT/guest.dtb" -cpu cortex-a57 -m 256M -nographic \
        -nic none -kernel "$guest_kernel" -append "console=ttyAMA0 earlycon=pl011,0x9000000" > /dev/null 2>&1 ||
     ! qemu-system-aarch64 -M virt,gic-version=2,dumpdtb="$OUT/guest-gicv2.dtb" -cpu cortex-a57 -m 256M -nographic \
        -nic none -kernel "$guest_kernel" -append "console=ttyAMA0 earlycon=pl011,0x9000000" > /dev/null 2>&1; then
    fail "Linux guest: make its device trees"
else
    # max and cortex-a57 on a GICv3 machine; cortex-a57 on a GICv2 machine with a guest
    # device tree that describes a GICv2 (the guest stops before it programs its GIC).
    for run in "max 3" "cortex-a57 3" "cortex-a57 2"; do
        set -- $run
        cpu="$1" gic="$2"
        log="$OUT/linux-guest-$cpu$([ "$gic" = 3 ] || echo "-gicv$gic").log"
        dtb="$OUT/guest$([ "$gic" = 3 ] || echo "-gicv$gic").dtb"
        timeout 300 qemu-system-aarch64 -M "virt,virtualization=on,gic-version=$gic" -cpu "$cpu" -smp 2 -m 2G \
            -nographic -no-reboot -nic none -semihosting -kernel "$ROOT/out/kcore.bin" \
            -append "kcore.semihosting kcore.host=$(printf '%#x' $testhost_load) testhost.linux" \
            -device "loader,file=$OUT/testhost.bin,addr=$(printf '%#x' $testhost_load),force-raw=on" \
            -device "loader,file=$guest_kernel,addr=0x50000000,force-raw=on" \
            -device "loader,file=$dtb,addr=0x4f000000,force-raw=on" > "$log" 2>&1 < /dev/null
        status=$?
        what="Linux guest on $cpu$([ "$gic" = 3 ] || echo " with a GICv$gic"): $(basename "$guest_kernel") boots as a non-protected VM to its banner, PSCI 1.1 and SMCCC 1.1 found through KCore"
        if [ "$status" = 0 ] && grep -q "TESTHOST: linux guest booted" "$log"; then
            pass "$what"
        else
            fail "$what (failed check $status; see ${log#$ROOT/})" "$(tail -5 "$log")"
        fi
    done
fi
summary
