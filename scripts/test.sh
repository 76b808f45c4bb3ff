#!/usr/bin/env bash
# The whole test suite, from a fresh machine (installs what it needs through setup.sh):
#   1. lint: rustfmt and clippy (-D warnings) for the host and the EL2 target
#   2. host tests: cargo test -p kcore -p kserv-core -p kcore-boot (the layers on the simulated
#      machine; the shim's virtual GIC; the boot code's device-tree editor)
#   3. bare-metal QEMU scenarios: KCore + EL1 test payloads, verdict by exit code
#   4. Linux host boots: KCore + stock Debian arm64 kernel, verdict from console output
# Ends with one line "N passed, N failed".
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

setup=1
[ "${1:-}" = "--no-setup" ] && setup=0
if [ "$setup" = 1 ]; then
    bash scripts/setup.sh || { echo "test.sh: setup failed"; echo "0 passed, 1 failed"; exit 1; }
fi

total_pass=0
total_fail=0
tier_start=$SECONDS
tier() { # tier NAME PASSED FAILED (and how long it took since the last one ended)
    echo "== $1: $2 passed, $3 failed ($((SECONDS - tier_start)) s)"
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    tier_start=$SECONDS
}
# Run a tier script and add its "N passed, N failed" line to the totals.
run_tier() {
    local name="$1"; shift
    local log
    log="$(mktemp)"
    "$@" 2>&1 | tee "$log"
    local line
    line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)"
    rm -f "$log"
    if [ -z "$line" ]; then
        tier "$name" 0 1
    else
        tier "$name" "$(echo "$line" | cut -d' ' -f1)" "$(echo "$line" | cut -d' ' -f3)"
    fi
}

echo "== lint"
lint_fail=0
cargo fmt --all -- --check || lint_fail=1
cargo clippy -q --workspace --all-targets -- -D warnings || lint_fail=1
cargo clippy -q -p kcore-boot -p kcore -p kcore-testhost -p kserv-core --target aarch64-unknown-none-softfloat -- -D warnings || lint_fail=1
tier lint $((1 - lint_fail)) $lint_fail

echo "== host tests (cargo test -p kcore -p kserv-core -p kcore-boot)"
log="$(mktemp)"
cargo test -p kcore -p kserv-core -p kcore-boot 2>&1 | tee "$log"
p=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$log" | paste -sd+ | bc)
f=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$log" | paste -sd+ | bc)
if [ -z "$p" ]; then p=0; f=1; fi
rm -f "$log"
tier "host tests" "$p" "$f"

echo "== build"
if bash scripts/build.sh; then
    tier build 1 0
    run_tier "bare-metal" bash tests/baremetal.sh
    run_tier "linux host" bash tests/linux-host.sh
else
    tier build 0 1
fi

echo
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
