# Shared helpers for the QEMU test tiers: a check counter and a verdict line.
PASSED=0
FAILED=0
FAILED_NAMES=()

pass() { PASSED=$((PASSED + 1)); echo "  ok   $1"; }
fail() { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); echo "  FAIL $1"; [ -n "${2:-}" ] && echo "$2" | sed 's/^/       /'; }

# check NAME CONDITION-COMMAND...: pass if the command succeeds.
check() {
    local name="$1"; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# summary: one machine-readable line for scripts/test.sh.
summary() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
}
