#!/usr/bin/env bash
# Build the protected-guest kernel: an arm64 Linux Image with the pKVM guest driver
# (CONFIG_ARM_PKVM_GUEST) and the restricted DMA pool (CONFIG_DMA_RESTRICTED_POOL).
#
# Why: no Debian arm64 kernel (bookworm 6.1 up to trixie-backports 7.3 and sid 7.2) enables
# either option, so a Debian kernel run as a protected VM cannot share its virtio buffers with
# the host (see the pKVM guest reference notes). This script builds one from Debian's own
# patched kernel tree, the arch-all binary package linux-source-7.3 of trixie-backports (only
# downloaded, never installed), cross-compiled with the aarch64-linux-gnu gcc, with a minimal
# all-built-in virt-guest configuration:
#   make tinyconfig + kernel/configs/kvm_guest.config (if the tree has it)
#   + kserv-shim/guest/pkvm-guest.config, then make olddefconfig;
# the resulting .config must have the options listed in REQUIRED below, or the script fails.
#
# Cache (outside the work tree):
#   ${SEKVM_CACHE:-$HOME/.cache/rust-sekvm}/guest-kernel/<version>-<hash>/{Image,config,info}
# <version> is the source package's version, <hash> a short sha256 of the fragment and of
# RECIPE below (bump RECIPE when the configure/build steps change). When Image is there the
# script prints its path and exits at once. When apt does not (yet) know the package version,
# the newest cached build of the same fragment is used without touching the network.
# The source tree is unpacked and built under the cache (build-<key>/) and kept (about 1.5 GB)
# for --embed, which relinks it; --clean deletes it after a successful build. A kept or
# failed tree is reused by the next run.
#
# --embed LIST --cmdline ARGS: the same kernel with an initramfs built in, for a protected
# guest whose whole boot path must be signed (the SeKVM demo, scripts/build-demo-disk.sh):
# CONFIG_INITRAMFS_SOURCE=LIST (a gen_init_cpio description, files by absolute path),
# CONFIG_INITRAMFS_FORCE (an initrd the host offers is ignored), CONFIG_CMDLINE=ARGS with
# CONFIG_CMDLINE_FORCE (the host's command line too). Built in the kept tree (a relink and a
# few objects; the whole tree first if it is gone), cached beside the Image as
# <version>-<hash>/embed-<hash of LIST, its files and ARGS>/{Image,config}.
#
# Machine changes (as root, sudo otherwise), only when a build is needed:
#   - /etc/apt/sources.list.d/kcore-<suite>.sources: the suite (trixie-backports), with the
#     URIs of the machine's existing Debian entry, native architecture only;
#   - /etc/apt/preferences.d/kcore-<suite>: pin priority 1 for that suite, so that nothing is
#     installed or upgraded from it unless asked for by version;
#   - apt-get install of the missing build tools: gcc-aarch64-linux-gnu, gcc, libc6-dev, flex,
#     bison, bc, make, xz-utils.
# GUEST_KERNEL_PACKAGE / GUEST_KERNEL_SUITE select another source package, e.g.
# linux-source-7.2 from sid (7.2 trees need the VMM's restricted-dma-pool DT node; see notes).
#
# Usage: scripts/build-guest-kernel.sh [--print-path] [--clean] [--embed LIST --cmdline ARGS]
#   Builds if needed; the last line on stdout is the Image's path (progress goes to stderr).
#   --print-path: print the path that would be used and exit, 0 if the Image exists, 1 if not
#                 (nothing on stdout if the package version is unknown and nothing is cached).
#   --clean:      delete the source tree after a successful build (--keep, the default, keeps it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FRAGMENT="$ROOT/kserv-shim/guest/pkvm-guest.config"
PKG="${GUEST_KERNEL_PACKAGE:-linux-source-7.3}"
SUITE="${GUEST_KERNEL_SUITE:-trixie-backports}"
CACHE_BASE="${SEKVM_CACHE:-$HOME/.cache/rust-sekvm}/guest-kernel"
CROSS=aarch64-linux-gnu-
RECIPE="tinyconfig+kvm_guest+fragment/olddefconfig/Image v1"
EMBED_RECIPE="embed: INITRAMFS_SOURCE+INITRAMFS_FORCE+CMDLINE_FORCE v1"
# Options that must come out =y, or the kernel is useless as a protected Debian guest.
REQUIRED=(ARM_PKVM_GUEST DMA_RESTRICTED_POOL OF_RESERVED_MEM SWIOTLB VIRTIO_PCI VIRTIO_MMIO
          VIRTIO_BLK VIRTIO_NET VIRTIO_CONSOLE DM_CRYPT EXT4_FS SERIAL_AMBA_PL011_CONSOLE
          BLK_DEV_INITRD DEVTMPFS PCI_HOST_GENERIC)

say() { echo "build-guest-kernel: $*" >&2; }
die() { say "error: $*"; exit 1; }

print_path=0
keep=1
embed=""
embed_cmdline=""
while [ $# -gt 0 ]; do
    case "$1" in
        --print-path) print_path=1; shift ;;
        --keep) keep=1; shift ;;
        --clean) keep=0; shift ;;
        --embed) embed="${2:?--embed needs a file}"; shift 2 ;;
        --cmdline) embed_cmdline="${2?--cmdline needs an argument}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
if [ -n "$embed" ]; then
    [ -f "$embed" ] && [ "${embed#/}" != "$embed" ] || die "--embed needs an absolute path to a gen_init_cpio description"
    [ -n "$embed_cmdline" ] || die "--embed needs --cmdline (the forced command line)"
    while IFS= read -r f; do
        [ -f "$f" ] || die "$embed names $f, which does not exist"
    done < <(awk '$1 == "file" { print $3 }' "$embed")
    # The key of the embedded build: the description with each file's content in place of its
    # path (where the caller staged them does not matter), and the command line.
    embed_hash="$( {
        echo "$EMBED_RECIPE"
        echo "$embed_cmdline"
        while read -r type name from rest; do
            [ "$type" = file ] && from="$(sha256sum < "$from" | cut -d' ' -f1)"
            echo "$type $name $from $rest"
        done < "$embed"
    } | sha256sum | cut -c1-12)"
fi

[ -f "$FRAGMENT" ] || die "missing $FRAGMENT"
frag_hash="$( { cat "$FRAGMENT"; echo "$RECIPE"; } | sha256sum | cut -c1-12)"

# The candidate version of $PKG from apt's local lists (no network), or nothing.
known_version() {
    apt-cache policy "$PKG" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }'
}
key_of() { echo "${1//[^A-Za-z0-9.]/_}-$frag_hash"; }
# The newest cached build of this fragment, whatever its version.
newest_cached() {
    local d best=""
    for d in "$CACHE_BASE"/*-"$frag_hash"; do
        [ -f "$d/Image" ] && best="$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -1)"
    done
    echo "$best"
}

version="$(known_version)"
if [ -n "$version" ]; then
    dir="$CACHE_BASE/$(key_of "$version")"
else
    dir="$(newest_cached)"
fi

# The result: the Image, or with --embed the Image with the initramfs built in.
result() { if [ -n "$embed" ]; then echo "$1/embed-$embed_hash/Image"; else echo "$1/Image"; fi; }
if [ "$print_path" = 1 ]; then
    if [ -z "$dir" ]; then
        say "$PKG is unknown to apt and nothing is cached for this fragment"
        exit 1
    fi
    result "$dir"
    [ -f "$(result "$dir")" ]
    exit
fi
if [ -n "$dir" ] && [ -f "$(result "$dir")" ]; then
    result "$dir"
    exit 0
fi

# ------------------------------------------------------------------ a build is needed
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -q)
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        $SUDO apt-get "${APT_OPTS[@]}" update -qq >&2
        apt_updated=1
    fi
}

# The URIs of the machine's Debian entry for its own release (not the security archive).
debian_uris() {
    local codename f uris
    codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
    codename="${codename:-bookworm}"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uris="$(awk -v cn="$codename" '
            /^[[:space:]]*$/ { u = ""; s = 0; next }
            /^URIs:/ { u = $0; sub(/^URIs:[[:space:]]*/, "", u) }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == cn) s = 1 }
            s && u != "" && u !~ /security/ { print u; exit }' "$f")"
        if [ -n "$uris" ]; then echo "$uris"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uris="$(awk -v cn="$codename" '$1 == "deb" {
                for (i = 2; i < NF; i++) if ($i ~ /:\/\// && $(i + 1) == cn && $i !~ /security/) { print $i; exit } }' "$f")"
        if [ -n "$uris" ]; then echo "$uris"; return; fi
    done
}

suite_configured() {
    grep -Eqs "^(Suites:.*[[:space:]]|deb[[:space:]].*[[:space:]])$SUITE([[:space:]]|$)" \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

if ! suite_configured; then
    uris="$(debian_uris)"
    [ -n "$uris" ] || die "no Debian source entry found to derive the $SUITE entry from"
    say "adding $SUITE (URIs of the existing Debian entry, pin priority 1)"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nArchitectures: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uris" "$SUITE" "$(dpkg --print-architecture)" |
        $SUDO tee "/etc/apt/sources.list.d/kcore-$SUITE.sources" >/dev/null
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n' "$SUITE" |
        $SUDO tee "/etc/apt/preferences.d/kcore-$SUITE" >/dev/null
    apt_update
fi
[ -n "$(known_version)" ] || apt_update
version="$(known_version)"
[ -n "$version" ] || die "apt knows no $PKG (suite $SUITE); try GUEST_KERNEL_PACKAGE=linux-source-7.2 GUEST_KERNEL_SUITE=sid"
key="$(key_of "$version")"
dir="$CACHE_BASE/$key"
work="$CACHE_BASE/build-$key"

mkdir -p "$CACHE_BASE"
exec 9>"$CACHE_BASE/.lock"
flock 9 # one build at a time; a concurrent run finds the result below
if [ -f "$(result "$dir")" ]; then
    result "$dir"
    exit 0
fi

# Build tools (command:package).
need=()
for tool_pkg in "${CROSS}gcc:gcc-${CROSS%-}" gcc:gcc flex:flex bison:bison bc:bc make:make xz:xz-utils; do
    command -v "${tool_pkg%%:*}" >/dev/null || need+=("${tool_pkg#*:}")
done
[ -f /usr/include/stdio.h ] || need+=(libc6-dev) # the host tools (fixdep, kconfig)
if [ "${#need[@]}" -gt 0 ]; then
    apt_update
    say "apt-get install ${need[*]}"
    $SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# ------------------------------------------------------------------ source
start=$SECONDS
src="$work/src"
if [ ! -f "$work/.unpacked" ]; then
    rm -rf "$work"
    mkdir -p "$work/deb"
    say "apt-get download $PKG=$version"
    # (as root apt warns that the download is unsandboxed: harmless)
    (cd "$work/deb" && apt-get "${APT_OPTS[@]}" download "$PKG=$version" 2>&1) | { grep -v unsandboxed || true; } >&2
    debs=("$work"/deb/*.deb)
    deb="${debs[0]}"
    [ -f "$deb" ] || die "download of $PKG=$version failed"
    tarball="$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -E '^(\./)?usr/src/linux-source-[0-9.]+\.tar\.xz$' | head -1)"
    [ -n "$tarball" ] || die "no usr/src/linux-source-*.tar.xz in $deb"
    say "unpacking $tarball"
    mkdir -p "$work/unpack"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "$tarball" | tar -xJ -C "$work/unpack"
    top="$(find "$work/unpack" -mindepth 1 -maxdepth 1 -type d | head -1)"
    [ -f "$top/Makefile" ] || die "unexpected layout of $tarball"
    mv "$top" "$src"
    rm -rf "$work/unpack" "$work/deb"
    touch "$work/.unpacked"
fi

# ------------------------------------------------------------------ configuration
mk() { make -C "$src" ARCH=arm64 CROSS_COMPILE="$CROSS" "$@"; }
# The plain configuration is made once per tree and kept as plain.config; each build below
# starts from it (an --embed build changes a few options on top).
if [ ! -f "$work/plain.config" ]; then
    say "configuring: tinyconfig + kvm_guest.config + $(basename "$FRAGMENT")"
    mk -s tinyconfig >&2
    frags=()
    [ -f "$src/kernel/configs/kvm_guest.config" ] && frags+=("$src/kernel/configs/kvm_guest.config")
    frags+=("$FRAGMENT")
    # merge_config.sh reports each value a later file overrides; only its summary matters here.
    (cd "$src" && ARCH=arm64 scripts/kconfig/merge_config.sh -m .config "${frags[@]}" >/dev/null)
    mk -s olddefconfig >&2

    # Every fragment line that did not survive olddefconfig is reported; REQUIRED ones are fatal.
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qxF "$line" "$src/.config" || say "note: '$line' not in the final config" ;;
            "# CONFIG_"*" is not set")
                sym="${line#\# }"; sym="${sym%% *}"
                grep -q "^$sym=" "$src/.config" && say "note: '$line' but the final config has $(grep "^$sym=" "$src/.config")" ;;
        esac
    done < "$FRAGMENT"
    missing=()
    for sym in "${REQUIRED[@]}"; do
        grep -qx "CONFIG_$sym=y" "$src/.config" || missing+=("CONFIG_$sym")
    done
    [ "${#missing[@]}" = 0 ] || die "not =y after olddefconfig: ${missing[*]} (tree kept in $work)"
    if grep -q '^CONFIG_MODULES=y' "$src/.config"; then die "CONFIG_MODULES=y: the guest kernel must be all built in"; fi
    cp "$src/.config" "$work/plain.config"
fi

# ------------------------------------------------------------------ build
jobs="$(nproc)"
image="$src/arch/arm64/boot/Image"
# build_image: make Image from the tree's .config, check the result.
build_image() {
    say "building Image (make -j$jobs) in $src"
    mk -j"$jobs" Image >&2
    # An arm64 Image header has the magic "ARM\x64" at offset 0x38.
    [ "$(od -An -tx1 -j56 -N4 "$image" | tr -d ' \n')" = 41524d64 ] || die "$image has no arm64 Image magic"
}
# Only what differs is rebuilt; keep .config's time when it is already the wanted one.
use_config() { cmp -s "$1" "$src/.config" || cp "$1" "$src/.config"; }

if [ ! -f "$dir/Image" ]; then
    use_config "$work/plain.config"
    build_image
    mkdir -p "$dir"
    cp "$src/.config" "$dir/config"
    {
        echo "package: $PKG $version (suite $SUITE)"
        echo "fragment: $FRAGMENT sha256/recipe $frag_hash"
        echo "compiler: $("${CROSS}gcc" --version | head -1)"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s with -j$jobs"
    } > "$dir/info"
    cp "$image" "$dir/Image.tmp"
    mv "$dir/Image.tmp" "$dir/Image"
    say "done in $((SECONDS - start)) s: $(stat -c %s "$dir/Image") bytes"
fi

if [ -n "$embed" ]; then
    t0=$SECONDS
    edir="$dir/embed-$embed_hash"
    cp "$work/plain.config" "$work/embed.config"
    (cd "$src" && scripts/config --file "$work/embed.config" --set-str INITRAMFS_SOURCE "$embed" \
        -d CMDLINE_FROM_BOOTLOADER -e CMDLINE_FORCE --set-str CMDLINE "$embed_cmdline" -e INITRAMFS_FORCE)
    use_config "$work/embed.config"
    mk -s olddefconfig >&2
    for want in "CONFIG_INITRAMFS_SOURCE=\"$embed\"" CONFIG_INITRAMFS_FORCE=y CONFIG_CMDLINE_FORCE=y \
                "CONFIG_CMDLINE=\"$embed_cmdline\""; do
        grep -qxF "$want" "$src/.config" || die "--embed: '$want' did not survive olddefconfig"
    done
    build_image
    mkdir -p "$edir"
    cp "$src/.config" "$edir/config"
    cp "$embed" "$edir/initramfs.list"
    cp "$image" "$edir/Image.tmp"
    mv "$edir/Image.tmp" "$edir/Image"
    say "embedded build done in $((SECONDS - t0)) s: $(stat -c %s "$edir/Image") bytes"
fi

if [ "$keep" = 0 ]; then
    rm -rf "$work"
else
    say "source tree kept in $work"
fi
result "$dir"
