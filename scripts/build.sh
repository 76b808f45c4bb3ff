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

# The host's kserv module (kserv-shim/module), one per host kernel with a module build tree
# (scripts/setup.sh fetches them), built against that kernel's stock Debian headers. The ABI
# header is generated from kcore/src/abi.rs, so the module never restates a function id.
kmods="$OUT/kserv"
mkdir -p "$kmods"
cargo run -q -p kcore-abi-header > "$kmods/kcore_abi.h.new"
if ! cmp -s "$kmods/kcore_abi.h.new" "$kmods/kcore_abi.h"; then
    mv "$kmods/kcore_abi.h.new" "$kmods/kcore_abi.h"
else
    rm -f "$kmods/kcore_abi.h.new"
fi
# kserv-core, the shim's Rust logic, for the kernel: built for the soft-float target (kernel
# code must not touch FP/SIMD registers), its objects (with core's, compiler_builtins' and
# kcore's) linked into one relocatable object that keeps only what the kserv_core_* entry
# points reach, without debug information, bitcode or unwind tables.
cargo build -q -p kserv-core --target aarch64-unknown-none-softfloat --release
lib="$ROOT/target/aarch64-unknown-none-softfloat/release/libkserv_core.a"
objs="$kmods/core-objs"
rm -rf "$objs"
mkdir -p "$objs"
(cd "$objs" && aarch64-linux-gnu-ar x "$lib")
# compiler_builtins' generic memcpy, memset, memmove, memcmp, bcmp and strlen (one object
# each) stay out: calls to them, from Rust and from the module's C, then bind to the
# kernel's exported, optimised ones instead of these byte-and-word loops.
for o in "$objs"/compiler_builtins-*.o; do
    defs=$(aarch64-linux-gnu-readelf -sW "$o" | awk '$4 == "FUNC" && $7 != "UND" { print $8 }')
    case "$defs" in memcpy|memset|memmove|memcmp|bcmp|strlen) rm "$o" ;; esac
done
entries=$(for o in "$objs"/kserv_core-*.o; do aarch64-linux-gnu-readelf -sW "$o"; done |
    awk '$5 == "GLOBAL" && $7 != "UND" && $8 ~ /^kserv_core_/ { print "-u " $8 }')
[ -n "$entries" ] || { echo "build: no kserv_core_ entry points in kserv-core" >&2; exit 1; }
# shellcheck disable=SC2086 # one -u per entry point
aarch64-linux-gnu-ld -r -S --gc-sections $entries "$objs"/*.o -o "$kmods/kserv_core.o.new"
aarch64-linux-gnu-objcopy -R .llvmbc -R .llvmcmd -R .eh_frame -R .comment "$kmods/kserv_core.o.new"
if ! cmp -s "$kmods/kserv_core.o.new" "$kmods/kserv_core.o"; then
    mv "$kmods/kserv_core.o.new" "$kmods/kserv_core.o"
else
    rm -f "$kmods/kserv_core.o.new"
fi

for kdir in "$ROOT"/.cache/arm64/usr/src/linux-headers-*-cloud-arm64; do
    [ -f "$kdir/Module.symvers" ] || continue
    v="${kdir##*/linux-headers-}"
    b="$kmods/build-$v"
    ko="$kmods/$v/kserv.ko"
    if [ -f "$ko" ] && [ -z "$(find "$ROOT/kserv-shim/module" "$kmods/kcore_abi.h" "$kmods/kserv_core.o" -newer "$ko" -print -quit)" ]; then
        continue
    fi
    rm -rf "$b"
    mkdir -p "$b" "$kmods/$v"
    cp "$ROOT"/kserv-shim/module/* "$kmods/kcore_abi.h" "$b/"
    cp "$kmods/kserv_core.o" "$b/kserv_core.o_shipped"
    # modpost reads each object's .cmd file; a shipped one has no build command of its own.
    echo "savedcmd_kserv_core.o := cp kserv_core.o_shipped kserv_core.o" > "$b/.kserv_core.o.cmd"
    # No BTF for the module: that needs pahole and the kernel's vmlinux, which headers lack.
    make -s -C "$kdir" M="$b" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CONFIG_DEBUG_INFO_BTF_MODULES= modules 2>&1 |
        { grep -v 'Skipping BTF generation' || true; }
    [ -f "$b/kserv.ko" ] || { echo "build: kserv.ko for $v failed" >&2; exit 1; }
    cp "$b/kserv.ko" "$ko"
done

# The project's malicious host module (kserv-shim/attack, tests only: it attacks protected
# VMs from the host kernel), built the same way, /lib/modules/VERSION/kserv_attack.ko.
for kdir in "$ROOT"/.cache/arm64/usr/src/linux-headers-*-cloud-arm64; do
    [ -f "$kdir/Module.symvers" ] || continue
    v="${kdir##*/linux-headers-}"
    b="$kmods/attack-$v"
    ko="$kmods/$v/kserv_attack.ko"
    if [ -f "$ko" ] && [ -z "$(find "$ROOT/kserv-shim/attack" "$kmods/kcore_abi.h" -newer "$ko" -print -quit)" ]; then
        continue
    fi
    rm -rf "$b"
    mkdir -p "$b" "$kmods/$v"
    cp "$ROOT"/kserv-shim/attack/* "$kmods/kcore_abi.h" "$b/"
    make -s -C "$kdir" M="$b" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CONFIG_DEBUG_INFO_BTF_MODULES= modules 2>&1 |
        { grep -v 'Skipping BTF generation' || true; }
    [ -f "$b/kserv_attack.ko" ] || { echo "build: kserv_attack.ko for $v failed" >&2; exit 1; }
    cp "$b/kserv_attack.ko" "$ko"
done

# The DMA attack module (kserv-shim/dma-attack, tests only: it makes QEMU's edu device DMA
# to physical addresses of its choosing), built the same way, /lib/modules/VERSION/edu_attack.ko.
for kdir in "$ROOT"/.cache/arm64/usr/src/linux-headers-*-cloud-arm64; do
    [ -f "$kdir/Module.symvers" ] || continue
    v="${kdir##*/linux-headers-}"
    b="$kmods/dma-attack-$v"
    ko="$kmods/$v/edu_attack.ko"
    if [ -f "$ko" ] && [ -z "$(find "$ROOT/kserv-shim/dma-attack" -newer "$ko" -print -quit)" ]; then
        continue
    fi
    rm -rf "$b"
    mkdir -p "$b" "$kmods/$v"
    cp "$ROOT"/kserv-shim/dma-attack/* "$b/"
    make -s -C "$kdir" M="$b" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CONFIG_DEBUG_INFO_BTF_MODULES= modules 2>&1 |
        { grep -v 'Skipping BTF generation' || true; }
    [ -f "$b/edu_attack.ko" ] || { echo "build: edu_attack.ko for $v failed" >&2; exit 1; }
    cp "$b/edu_attack.ko" "$ko"
done

# The virtio modules each host kernel needs for its disk and network card (virtio-pci
# devices behind the SMMU, scripts/run.sh), uncompressed into out/kserv/VERSION/virtio/ with
# a load order (boot-modules: dependencies first) that the host's /init follows. What the
# kernel has built in (modules.builtin) is left out; the order comes from each module's
# own "depends=" (the cache has no modules.dep).
modinfo_depends() {
    aarch64-linux-gnu-objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2> /dev/null |
        tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}
for mdir in "$ROOT"/.cache/arm64/lib/modules/*-cloud-arm64; do
    [ -f "$mdir/modules.order" ] || continue
    v="${mdir##*/}"
    vdir="$kmods/$v/virtio"
    [ -f "$vdir/boot-modules" ] && [ "$vdir/boot-modules" -nt "$mdir/modules.order" ] &&
        [ "$vdir/boot-modules" -nt "$ROOT/scripts/build.sh" ] && continue
    rm -rf "$vdir"
    mkdir -p "$vdir"
    order=()
    declare -A placed=()
    # add NAME: NAME's dependencies, then NAME (a module's file name uses _ or -; its
    # depends= line uses _).
    add() {
        local name="$1" path f dep
        [ -n "${placed[$name]:-}" ] && return 0
        placed[$name]=1
        path="$(grep -E "/${name//_/[_-]}\.ko(\.xz)?\$" "$mdir/modules.order" "$mdir/modules.builtin" | head -1 | cut -d: -f2-)" || true
        [ -n "$path" ] || { echo "build: no module $name for $v" >&2; exit 1; }
        grep -qxF "$path" "$mdir/modules.builtin" && return 0
        f="$mdir/$path"
        [ -f "$f" ] || f="$f.xz"
        [ -f "$f" ] || { echo "build: $path missing for $v" >&2; exit 1; }
        case "$f" in
            *.xz) xz -dc "$f" > "$vdir/$name.ko" ;;
            *) cp "$f" "$vdir/$name.ko" ;;
        esac
        for dep in $(modinfo_depends "$vdir/$name.ko"); do add "$dep"; done
        order+=("$name")
    }
    for m in virtio_pci virtio_blk virtio_net; do add "$m"; done
    printf '%s\n' "${order[@]}" > "$vdir/boot-modules"
    unset placed
done

# The host's disk and the file its network card fetches (scripts/run.sh gives the host a
# virtio-blk-pci and a virtio-net-pci behind the SMMU): generated text, the same on every
# machine, every line different so a page in the wrong place changes the md5. The tests
# compute the md5s from these files.
if [ ! -f "$OUT/host-disk.img" ] || [ ! -f "$OUT/host-net.bin" ] || [ "$ROOT/scripts/build.sh" -nt "$OUT/host-disk.img" ]; then
    # (Written whole, then cut to size: a pipe into head would kill seq with SIGPIPE.)
    seq -f 'kcore host disk, line %07.0f of the virtio-blk test image' 1 80000 > "$OUT/host-disk.img.tmp"
    truncate -s 4M "$OUT/host-disk.img.tmp"
    mv "$OUT/host-disk.img.tmp" "$OUT/host-disk.img"
    seq -f 'kcore host network, line %07.0f of the file the guestfwd rule streams' 1 20000 > "$OUT/host-net.bin.tmp"
    truncate -s 1M "$OUT/host-net.bin.tmp"
    mv "$OUT/host-net.bin.tmp" "$OUT/host-net.bin"
fi

# kvm-smoke, the host-side check of /dev/kvm (static, musl).
cargo build -q -p kvm-smoke --target aarch64-unknown-linux-musl --release
aarch64-linux-gnu-strip -o "$kmods/kvm-smoke.new" "$ROOT/target/aarch64-unknown-linux-musl/release/kvm-smoke"
if ! cmp -s "$kmods/kvm-smoke.new" "$kmods/kvm-smoke"; then
    mv "$kmods/kvm-smoke.new" "$kmods/kvm-smoke"
else
    rm -f "$kmods/kvm-smoke.new"
fi

# kvm-smoke's protected guests as signed kernel files (kcore-sign sign-file, with the key
# KCore is built with: the test key), for the protected VMs the host starts: the protected
# guest (guest-protected.S, /guest-protected.signed in the host), the MMIO-guard guest
# (guest-mmio-guard.S) and the vault guest (guest-vault.S), the malicious-host tests' target.
cargo build -q -p kcore-sign --release
for g in protected mmio-guard vault; do
    bin="$(ls -t "$ROOT"/target/aarch64-unknown-linux-musl/release/build/kvm-smoke-*/out/guest-$g.bin | head -1)"
    "$ROOT/target/release/kcore-sign" sign-file "$ROOT/tests/keys/test-vm.seed" 0x40200000 "$bin" "$kmods/$g.signed.new"
    if ! cmp -s "$kmods/$g.signed.new" "$kmods/$g.signed"; then
        mv "$kmods/$g.signed.new" "$kmods/$g.signed"
    else
        rm -f "$kmods/$g.signed.new"
    fi
done

# Host initramfs: busybox (static, arm64), the project's /init, the kserv module of each
# host kernel (/lib/modules/VERSION/kserv.ko, the test modules beside it, the virtio modules
# in virtio/), kvm-smoke and its signed protected guests (/guest-protected.signed,
# /guest-mmio-guard.signed).
stage="$OUT/initramfs"

busybox="$ROOT/.cache/arm64/bin/busybox"
[ -x "$busybox" ] || { echo "build: busybox missing; run scripts/setup.sh" >&2; exit 1; }
if [ ! -f "$OUT/initramfs.cpio.gz" ] || [ "$busybox" -nt "$OUT/initramfs.cpio.gz" ] ||
   [ -n "$(find "$ROOT/kserv-shim/initramfs" "$kmods" -maxdepth 3 \( -name '*.ko' -o -name kvm-smoke -o -name protected.signed -o -name mmio-guard.signed -o -name vault.signed -o -name init -o -name run-guest -o -name boot-modules \) -newer "$OUT/initramfs.cpio.gz" -print -quit)" ]; then
    rm -rf "$stage"
    mkdir -p "$stage/bin" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/tmp"
    cp "$busybox" "$stage/bin/busybox"
    cp "$ROOT/kserv-shim/initramfs/init" "$stage/init"
    cp "$ROOT/kserv-shim/initramfs/run-guest" "$stage/bin/run-guest"
    cp "$kmods/kvm-smoke" "$stage/bin/kvm-smoke"
    cp "$kmods/protected.signed" "$stage/guest-protected.signed"
    cp "$kmods/mmio-guard.signed" "$stage/guest-mmio-guard.signed"
    cp "$kmods/vault.signed" "$stage/guest-vault.signed"
    for ko in "$kmods"/*/kserv.ko; do
        [ -f "$ko" ] || continue
        v="$(basename "$(dirname "$ko")")"
        # (build-VERSION/ holds the module's build tree, not a kernel's modules.)
        case "$v" in build-*) continue ;; esac
        mkdir -p "$stage/lib/modules/$v"
        cp "$ko" "$stage/lib/modules/$v/kserv.ko"
        [ -f "$kmods/$v/kserv_attack.ko" ] && cp "$kmods/$v/kserv_attack.ko" "$stage/lib/modules/$v/"
        # (Without its debug information: it only prints.)
        [ -f "$kmods/$v/edu_attack.ko" ] &&
            aarch64-linux-gnu-strip --strip-debug -o "$stage/lib/modules/$v/edu_attack.ko" "$kmods/$v/edu_attack.ko"
    done
    # The virtio modules, /lib/modules/VERSION/virtio/ with boot-modules, /init loads them.
    for vdir in "$kmods"/*/virtio; do
        [ -f "$vdir/boot-modules" ] || continue
        v="$(basename "$(dirname "$vdir")")"
        mkdir -p "$stage/lib/modules/$v"
        cp -r "$vdir" "$stage/lib/modules/$v/"
    done
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$OUT/initramfs.cpio.gz"
fi

# QEMU for the host (scripts/setup.sh fetched Debian's arm64 qemu-system-arm and its
# dependencies): the binary, the shared libraries it needs (followed through DT_NEEDED from
# the binary), the dynamic loader and QEMU's data files, as a second archive that
# scripts/run.sh --with-qemu appends to the host's initramfs.
hq="$ROOT/.cache/host-qemu/root"
if [ -x "$hq/usr/bin/qemu-system-aarch64" ] &&
   { [ ! -f "$OUT/host-qemu.cpio.gz" ] || [ "$hq/usr/bin/qemu-system-aarch64" -nt "$OUT/host-qemu.cpio.gz" ]; }; then
    qstage="$OUT/host-qemu"
    rm -rf "$qstage"
    mkdir -p "$qstage/usr/bin" "$qstage/lib" "$qstage/usr/share"
    cp "$hq/usr/bin/qemu-system-aarch64" "$qstage/usr/bin/"
    cp -a "$hq/usr/share/qemu" "$qstage/usr/share/"
    # The loader the binary names (PT_INTERP /lib/ld-linux-aarch64.so.1), then DT_NEEDED.
    cp -L "$hq/lib/ld-linux-aarch64.so.1" "$qstage/lib/"
    declare -A have=()
    todo=("$hq/usr/bin/qemu-system-aarch64")
    while [ "${#todo[@]}" -gt 0 ]; do
        f="${todo[0]}"
        todo=("${todo[@]:1}")
        for lib in $(aarch64-linux-gnu-readelf -dW "$f" | awk '/\(NEEDED\)/ { gsub(/[][]/, "", $5); print $5 }'); do
            [ -n "${have[$lib]:-}" ] && continue
            found=""
            for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
                if [ -e "$hq/$d/$lib" ]; then found="$d"; break; fi
            done
            [ -n "$found" ] || { echo "build: host QEMU needs $lib, not in its closure" >&2; exit 1; }
            have[$lib]=1
            mkdir -p "$qstage/$found"
            cp -L "$hq/$found/$lib" "$qstage/$found/$lib"
            todo+=("$qstage/$found/$lib")
        done
    done
    (cd "$qstage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$OUT/host-qemu.cpio.gz"
fi

# The protected guest's kernel (scripts/build-guest-kernel.sh: Debian's 7.3 source with the
# pKVM guest driver), signed with the test key into a signed kernel file for QEMU's -kernel,
# as /guest/Image-pkvm.signed (scripts/run.sh --with-qemu appends it; run-guest --protected).
if pkvm="$(bash "$ROOT/scripts/build-guest-kernel.sh" --print-path 2> /dev/null)" && [ -f "$pkvm" ] &&
   { [ ! -f "$OUT/guest-pkvm.cpio.gz" ] || [ "$pkvm" -nt "$OUT/guest-pkvm.cpio.gz" ] ||
     [ "$ROOT/target/release/kcore-sign" -nt "$OUT/guest-pkvm.cpio.gz" ]; }; then
    pstage="$OUT/guest-pkvm"
    rm -rf "$pstage"
    mkdir -p "$pstage/guest"
    "$ROOT/target/release/kcore-sign" sign-file "$ROOT/tests/keys/test-vm.seed" 0x40200000 "$pkvm" "$pstage/guest/Image-pkvm.signed"
    (cd "$pstage" && find guest | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$OUT/guest-pkvm.cpio.gz"
fi

# The SeKVM demo (scripts/build-demo-disk.sh, run by setup): its kernel (the pKVM guest kernel
# with the unlock initramfs built in) signed the same way, its LUKS2 disk, and strings.hex
# for the tests (the passphrase, login, password and plaintext marker hex-encoded, and the
# md5 of the marker file, so that no test needs the marker in the clear in the host), as
# /guest/demo in the host: scripts/run.sh --demo or --with-demo appends this uncompressed
# archive (the disk is ciphertext: gzip would not shrink it).
if demo="$(bash "$ROOT/scripts/build-demo-disk.sh" --print-dir 2> /dev/null)" &&
   { [ ! -f "$OUT/guest-demo.cpio" ] || [ "$demo/.complete" -nt "$OUT/guest-demo.cpio" ] ||
     [ "$ROOT/target/release/kcore-sign" -nt "$OUT/guest-demo.cpio" ] ||
     [ "$ROOT/scripts/build.sh" -nt "$OUT/guest-demo.cpio" ]; }; then
    dstage="$OUT/guest-demo"
    rm -rf "$dstage"
    mkdir -p "$dstage/guest/demo"
    "$ROOT/target/release/kcore-sign" sign-file "$ROOT/tests/keys/test-vm.seed" 0x40200000 "$demo/Image" "$dstage/guest/demo/Image.signed"
    cp "$demo/disk.img" "$dstage/guest/demo/disk.img"
    hex() { printf %s "$1" | od -An -tx1 | tr -d ' \n'; }
    (. "$demo/demo.env"
     printf 'passphrase %s\nuser %s\npassword %s\nmarker %s\nmarker-file-md5 %s\n' "$(hex "$DEMO_PASSPHRASE")" \
         "$(hex "$DEMO_USER")" "$(hex "$DEMO_PASSWORD")" "$(hex "$DEMO_MARKER")" \
         "$(printf '%s\n' "$DEMO_MARKER" | md5sum | cut -d' ' -f1)") > "$dstage/guest/demo/strings.hex"
    (cd "$dstage" && find guest | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$OUT/guest-demo.cpio.tmp"
    mv "$OUT/guest-demo.cpio.tmp" "$OUT/guest-demo.cpio"
fi

# A Linux guest for the host's QEMU (scripts/run.sh --with-qemu puts it at /guest): Debian's
# 6.12 cloud kernel Image (virtio-pci and the virtio console built in), a busybox initramfs
# with the virtio disk and network modules, whose /init (kserv-shim/guest/init) checks the
# devices and powers off (or gives a shell), and a small ext2 disk image.
guest_kernel="$(ls "$ROOT"/.cache/arm64/boot/vmlinuz-6.12.*-cloud-arm64 2>/dev/null | sort -V | tail -1)"
if [ -n "$guest_kernel" ] && [ -f "$busybox" ] &&
   { [ ! -f "$OUT/guest-linux.cpio.gz" ] || [ "$guest_kernel" -nt "$OUT/guest-linux.cpio.gz" ] ||
     [ "$ROOT/kserv-shim/guest/init" -nt "$OUT/guest-linux.cpio.gz" ] ||
     [ "$ROOT/scripts/build.sh" -nt "$OUT/guest-linux.cpio.gz" ]; }; then
    gv="$(basename "$guest_kernel")"
    gv="${gv#vmlinuz-}"
    gstage="$OUT/guest-linux"
    rm -rf "$gstage"
    mkdir -p "$gstage/guest" "$gstage/initrd/bin" "$gstage/initrd/lib/modules"
    cp "$busybox" "$gstage/initrd/bin/busybox"
    cp "$ROOT/kserv-shim/guest/init" "$gstage/initrd/init"
    for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk; do
        xz -dc "$ROOT/.cache/arm64/lib/modules/$gv/kernel/$m.ko.xz" > "$gstage/initrd/lib/modules/$(basename "$m").ko"
    done
    (cd "$gstage/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$gstage/guest/initrd.gz"
    cp "$guest_kernel" "$gstage/guest/Image"
    # The guest's disk: 4 MiB of ext2 with a file it reads back (the tests compare md5s).
    mkdir -p "$gstage/disk"
    echo "hello from the guest's virtio disk" > "$gstage/disk/hello.txt"
    head -c 1048576 /dev/urandom > "$gstage/disk/random.bin"
    PATH="$PATH:/usr/sbin:/sbin" mke2fs -q -F -t ext2 -d "$gstage/disk" "$gstage/guest/disk.img" 4M > /dev/null
    rm -rf "$gstage/disk"
    (cd "$gstage" && find guest | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$OUT/guest-linux.cpio.gz"
fi
