#!/usr/bin/env bash
# Build KCore's EL2 Image (out/kcore.bin) and the host's base initramfs
# (out/initramfs.cpio.gz). Needs what scripts/setup.sh installs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/out"
mkdir -p "$OUT"
cd "$ROOT"

# out/kcore.bin: release. out/kcore-debug.bin: debug assertions on, which also checks the
# security invariants after every host trap (slow; for tests).
for profile in release dev; do
    cargo build -q -p kcore-boot --target aarch64-unknown-none-softfloat --profile "$profile"
    dir=$([ "$profile" = dev ] && echo debug || echo release)
    name=$([ "$profile" = dev ] && echo kcore-debug || echo kcore)
    elf="$ROOT/target/aarch64-unknown-none-softfloat/$dir/kcore"
    aarch64-linux-gnu-objcopy -O binary "$elf" "$OUT/$name.bin.tmp"
    mv "$OUT/$name.bin.tmp" "$OUT/$name.bin"
    cp "$elf" "$OUT/$name.elf"
done

# Host initramfs: busybox (static, arm64) plus the project's /init.
stage="$OUT/initramfs"
busybox="$ROOT/.cache/arm64/bin/busybox"
[ -x "$busybox" ] || { echo "build: busybox missing; run scripts/setup.sh" >&2; exit 1; }
if [ ! -f "$OUT/initramfs.cpio.gz" ] || [ "$busybox" -nt "$OUT/initramfs.cpio.gz" ] ||
   [ -n "$(find "$ROOT/kserv-shim/initramfs" -newer "$OUT/initramfs.cpio.gz" -print -quit)" ]; then
    rm -rf "$stage"
    mkdir -p "$stage/bin" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/tmp"
    cp "$busybox" "$stage/bin/busybox"
    cp "$ROOT/kserv-shim/initramfs/init" "$stage/init"
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$OUT/initramfs.cpio.gz"
fi
