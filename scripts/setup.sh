#!/usr/bin/env bash
# Idempotent setup: the only place this project installs dependencies.
#
# Installs (as root, through apt and rustup):
#   - qemu-system-arm 10.x from Debian bookworm-backports (bookworm's 7.2 lacks SMMUv3 stage-2),
#     the backports suite being added by reusing the URIs of the machine's Debian source entry;
#   - the aarch64 cross binutils/gcc (objcopy for the KCore Image, the kserv module), dtc, cpio, make,
#     xz (the guest's modules), mke2fs and debugfs (disk images) and openssl (the demo's
#     password hash);
#   - Debian's UEFI firmware for arm64 (qemu-efi-aarch64: edk2's ArmVirtQemu, from bookworm)
#     and mtools and dosfstools, which build the EFI system partition of scripts/run.sh --uefi
#     as a file, without mounting it;
#   - the Rust targets named in rust-toolchain.toml;
# and downloads (not installs) arm64 packages into .cache/debs, extracted under .cache/arm64:
#   - the current Debian 6.1 cloud arm64 kernel (resolved through the metapackage, never pinned);
#   - the current bookworm-backports cloud arm64 kernel (6.12 or later), a second host kernel;
#   - busybox-static for the host initramfs;
#   - for each of those kernels its headers and this machine's linux-kbuild tools, to build
#     the kserv module against them (scripts/build.sh);
#   - the arm64 qemu-system-arm of bookworm-backports with its dependency closure, for the host
#     (into .cache/host-qemu).
# A second run finds everything in place and touches no network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
DEBS="$CACHE/debs"
SYSROOT="$CACHE/arm64"
mkdir -p "$DEBS" "$SYSROOT"

say() { echo "setup: $*"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt sources
BACKPORTS_FILE=/etc/apt/sources.list.d/kcore-bookworm-backports.sources
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
}

debian_uri() {
    # The URI of the machine's existing Debian (non-security) entry, deb822 or one-line style.
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            /^URIs:/ { u=$2 }
            /^Suites:/ { if ($0 ~ /bookworm( |$)/ && u !~ /security/) { print u; exit } }
            /^$/ { u="" }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" && $3=="bookworm" { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) { print $i; exit } }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
}

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri="$(debian_uri)"
    if [ -z "$uri" ]; then
        echo "setup: no Debian bookworm source entry found to derive backports from" >&2
        exit 1
    fi
    say "adding bookworm-backports (same URIs as the existing Debian entry)"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" | $SUDO tee "$BACKPORTS_FILE" >/dev/null
    APT_UPDATED=0
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "dpkg --add-architecture arm64"
    $SUDO dpkg --add-architecture arm64
fi

# ---------------------------------------------------------------- host packages
qemu_ok() {
    command -v qemu-system-aarch64 >/dev/null &&
        qemu-system-aarch64 --version | head -1 | grep -Eq 'version (9\.[2-9]|[1-9][0-9])\.'
}
need=()
qemu_ok || need+=(qemu-system-arm)
for pkg_bin in gcc-aarch64-linux-gnu:aarch64-linux-gnu-gcc binutils-aarch64-linux-gnu:aarch64-linux-gnu-objcopy \
               device-tree-compiler:dtc cpio:cpio bc:bc make:make xz-utils:xz e2fsprogs:mke2fs \
               e2fsprogs:debugfs openssl:openssl; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "${pkg_bin#*:}" >/dev/null || need+=("${pkg_bin%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt_update
    say "apt-get install ${need[*]}"
    # -t: qemu's own dependencies (qemu-system-common, -data) must come from backports too.
    $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need[@]}" >/dev/null
fi
qemu_ok || { echo "setup: qemu-system-aarch64 >= 9.2 is required" >&2; exit 1; }
# UEFI boot (scripts/run.sh --uefi): the firmware, and FAT image tools; from the release itself
# (no -t), so the firmware is bookworm's.
need=()
[ -f /usr/share/qemu-efi-aarch64/QEMU_EFI.fd ] || need+=(qemu-efi-aarch64)
command -v mcopy >/dev/null || need+=(mtools)
PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.vfat >/dev/null || need+=(dosfstools)
if [ "${#need[@]}" -gt 0 ]; then
    apt_update
    say "apt-get install ${need[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- rust targets
# rust-toolchain.toml pins the toolchain; make sure its targets and components are there.
if command -v rustup >/dev/null; then
    installed="$(cd "$ROOT" && rustup target list --installed)"
    for t in aarch64-unknown-none-softfloat aarch64-unknown-linux-musl; do
        grep -qx "$t" <<<"$installed" || (cd "$ROOT" && rustup target add "$t")
    done
    components="$(cd "$ROOT" && rustup component list --installed)"
    for c in clippy rustfmt; do
        grep -q "^$c" <<<"$components" || (cd "$ROOT" && rustup component add "$c")
    done
fi

# ---------------------------------------------------------------- arm64 debs
# Kernel: resolve the ABI package through the metapackage; never pin the ABI number.
have_kernel() { compgen -G "$SYSROOT/boot/vmlinuz-6.1.*-cloud-arm64" >/dev/null; }
have_bpo_kernel() { compgen -G "$SYSROOT/boot/vmlinuz-*+bpo-cloud-arm64" >/dev/null || compgen -G "$SYSROOT/boot/vmlinuz-6.1[2-9].*-cloud-arm64" >/dev/null; }
have_busybox() { [ -x "$SYSROOT/bin/busybox" ]; }
# resolve_kernel SUITE-SUFFIX PATTERN: the ABI package the cloud metapackage depends on.
resolve_kernel() {
    apt-cache depends "linux-image-cloud-arm64:arm64$1" | awk -v pat="$2" '$1 == "Depends:" && $2 ~ pat { sub(/:arm64$/, "", $2); print $2; exit }'
}

if ! have_kernel || ! have_bpo_kernel || ! have_busybox; then
    apt_update
    pkgs=()
    if ! have_kernel; then
        kpkg="$(resolve_kernel "" '^linux-image-6[.]1[.]')"
        [ -n "$kpkg" ] || { echo "setup: cannot resolve the Debian cloud arm64 kernel" >&2; exit 1; }
        pkgs+=("$kpkg:arm64")
    fi
    if ! have_bpo_kernel; then
        kpkg="$(resolve_kernel /bookworm-backports '^linux-image-6[.]1[2-9]')"
        [ -n "$kpkg" ] || { echo "setup: cannot resolve the bookworm-backports cloud arm64 kernel" >&2; exit 1; }
        pkgs+=("$kpkg:arm64")
    fi
    have_busybox || pkgs+=("busybox-static:arm64")
    say "apt-get download ${pkgs[*]}"
    (cd "$DEBS" && apt-get download -qq "${pkgs[@]}" 2>&1 | grep -v 'unsandboxed' || true)
    for d in "$DEBS"/*.deb; do
        say "extracting $(basename "$d")"
        dpkg-deb -x "$d" "$SYSROOT"
    done
fi
# Module build trees, one per host kernel: its arm64 headers, their common part, and the
# build tools (modpost, fixdep) of the matching linux-kbuild package for this machine's own
# architecture (the arm64 package's are aarch64 binaries). Extracted, not installed.
have_headers() { [ -f "$SYSROOT/usr/src/linux-headers-$1/Module.symvers" ] && [ -x "$SYSROOT/usr/src/linux-headers-$1/scripts/mod/modpost" ]; }
for k in "$SYSROOT"/boot/vmlinuz-*-cloud-arm64; do
    [ -e "$k" ] || continue
    v="${k##*/vmlinuz-}"
    have_headers "$v" && continue
    apt_update
    deps="$(apt-cache depends "linux-headers-$v:arm64")"
    common="$(awk '$1 == "Depends:" { gsub(/[<>]/, "", $2); sub(/:arm64$/, "", $2); if ($2 ~ /^linux-headers-.*-common$/) { print $2; exit } }' <<<"$deps")"
    kbuild="$(awk '$1 == "Depends:" { sub(/:arm64$/, "", $2); if ($2 ~ /^linux-kbuild-/) { print $2; exit } }' <<<"$deps")"
    [ -n "$common" ] && [ -n "$kbuild" ] || { echo "setup: cannot resolve the headers of $v" >&2; exit 1; }
    hdebs="$CACHE/debs-headers-$v"
    mkdir -p "$hdebs"
    say "apt-get download linux-headers-$v:arm64 $common $kbuild"
    (cd "$hdebs" && apt-get download -qq "linux-headers-$v:arm64" "$common" "$kbuild" 2>&1 | grep -v 'unsandboxed' || true)
    for d in "$hdebs"/*.deb; do
        dpkg-deb -x "$d" "$SYSROOT"
    done
    # The arch headers' Makefile includes the common part by absolute path.
    sed -i "s#^include /usr/src/#include $SYSROOT/usr/src/#" "$SYSROOT/usr/src/linux-headers-$v/Makefile"
    have_headers "$v" || { echo "setup: module build tree for $v incomplete" >&2; exit 1; }
done

have_kernel || { echo "setup: kernel missing after download" >&2; exit 1; }
have_bpo_kernel || { echo "setup: backports kernel missing after download" >&2; exit 1; }
have_busybox || { echo "setup: busybox missing after download" >&2; exit 1; }

# ---------------------------------------------------------------- QEMU for the host
# The Debian arm64 qemu-system-arm of bookworm-backports and the closure of its
# dependencies, resolved by apt as for an empty arm64 system (a status file of its own:
# nothing is installed on this machine), downloaded and extracted under .cache/host-qemu/root;
# scripts/build.sh packs the binary and the libraries it needs for the host.
HQ="$CACHE/host-qemu"
have_host_qemu() { [ -x "$HQ/root/usr/bin/qemu-system-aarch64" ] && [ -e "$HQ/root/lib/ld-linux-aarch64.so.1" ]; }
if ! have_host_qemu; then
    apt_update
    rm -rf "$HQ"
    mkdir -p "$HQ/archives/partial" "$HQ/state" "$HQ/root"
    : > "$HQ/state/status"
    say "apt-get download qemu-system-arm:arm64 (bookworm-backports) and its dependencies"
    apt-get install --download-only -y -qq --no-install-recommends -t bookworm-backports \
        -o Dir::State::status="$HQ/state/status" -o Dir::Cache::archives="$HQ/archives" \
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 \
        qemu-system-arm:arm64 > /dev/null
    for d in "$HQ"/archives/*.deb; do
        dpkg-deb -x "$d" "$HQ/root"
    done
    rm -rf "$HQ/archives"
    have_host_qemu || { echo "setup: QEMU for the host incomplete" >&2; exit 1; }
fi

# ---------------------------------------------------------------- the protected guest's kernel
# Debian's linux-source-7.3 built with the pKVM guest driver (no Debian kernel package has it):
# scripts/build-guest-kernel.sh, cached outside the work tree (about 11 minutes on 2 cores the
# first time, nothing after).
bash "$ROOT/scripts/build-guest-kernel.sh" > /dev/null

# ---------------------------------------------------------------- the SeKVM demo
# A Debian root on a LUKS2 disk and the kernel that unlocks it (scripts/build-demo-disk.sh:
# Debian arm64 packages, the disk filled in a short TCG VM, the kernel relinked with its
# initramfs built in; cached outside the work tree, nothing to do the second time).
bash "$ROOT/scripts/build-demo-disk.sh" > /dev/null

say "ok: $(qemu-system-aarch64 --version | head -1); kernel $(basename "$(ls "$SYSROOT"/boot/vmlinuz-6.1.*-cloud-arm64 | sort -V | tail -1)")"
