#!/usr/bin/env bash
# Build the SeKVM demo's guest side: a Debian root file system on a LUKS2-encrypted disk, the
# initramfs that unlocks it (passphrase typed on the guest's console), and the pKVM guest
# kernel with that initramfs built in (scripts/build-guest-kernel.sh --embed), so that the
# whole path from the first instruction to the passphrase prompt is in the signed image.
# scripts/build.sh signs that kernel and packs it with the disk for the host (/guest/demo);
# `run-guest --demo` in the host (or `scripts/run.sh --demo`) boots it as a protected VM.
#
# Everything comes from Debian arm64 packages fetched with `apt-get download` (the closure of
# their Depends resolved by apt as for an empty arm64 system) and used unmodified:
#   root (ext4, made with mke2fs -d: no mounts, no root needed): busybox (init, getty, login,
#        sh, ip, wget) and the glibc files it links (ld.so, libc, libresolv); the files of
#        kserv-shim/demo/rootfs; a user with a password; a marker file holding a known
#        plaintext line (DEMO-PLAINTEXT: ... with a random token) that must never show up in
#        the host's memory;
#   initramfs: busybox, cryptsetup (cryptsetup-bin) and every library it links (followed
#        through the ELF DT_NEEDED entries), kserv-shim/demo/unlock-init as /init;
#   disk: LUKS2 (aes-xts-plain64, sha256; PBKDF2 with 1000 iterations: a demo setting, see
#        kserv-shim/demo/format-init) holding the root. Filling it needs dm-crypt, which the
#        build machine may lack, so it is done in a short TCG VM of the build machine's
#        qemu-system-aarch64: the pKVM guest kernel booted directly (an ordinary guest there),
#        kserv-shim/demo/format-init as /init, the disk and the ext4 image as two virtio disks.
#
# The demo's secrets are fixed and public (this is a demo, not a key-management system):
#   LUKS2 passphrase  sekvm-demo-passphrase
#   login             demo, password demo (root has no password: locked)
#
# Cache (outside the work tree), keyed by a hash of every input (this script, the files of
# kserv-shim/demo, the resolved package versions, the guest kernel build):
#   ${SEKVM_CACHE:-$HOME/.cache/rust-sekvm}/demo-disk/<hash>/
#     disk.img           the LUKS2 disk (what the host gets)
#     Image              the pKVM guest kernel with the unlock initramfs built in (unsigned)
#     initramfs.cpio.gz  the same initramfs as an archive (for -initrd, e.g. with the plain kernel)
#     demo.env           DEMO_PASSPHRASE, DEMO_USER, DEMO_PASSWORD, DEMO_MARKER (shell syntax)
#     info               package versions, LUKS2 header dump, times
# A second run with the same inputs prints the directory and does nothing else.
#
# Usage: scripts/build-demo-disk.sh [--print-dir]
#   Builds if needed; the last line on stdout is the directory (progress goes to stderr).
#   --print-dir: print the directory that would be used and exit, 0 if it is complete,
#                1 if not (nothing on stdout if nothing can be resolved or is cached).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/kserv-shim/demo"
CACHE_BASE="${SEKVM_CACHE:-$HOME/.cache/rust-sekvm}/demo-disk"
PATH="$PATH:/usr/sbin:/sbin"

DEMO_PASSPHRASE="sekvm-demo-passphrase"
DEMO_USER="demo"
DEMO_PASSWORD="demo"
# The demo kernel's command line, built in and forced (the host's is ignored): the console,
# and the 32 MiB swiotlb a protected guest shares for its virtio DMA (as run-guest --protected).
DEMO_CMDLINE="console=ttyAMA0 panic=-1 swiotlb=16384"
PACKAGES=(busybox cryptsetup-bin)
ROOT_FS_MB=24 # the ext4 root: about 3 MiB of files and a 4 MiB journal
RECIPE="demo-disk v1"

say() { echo "build-demo-disk: $*" >&2; }
die() { say "error: $*"; exit 1; }

print_dir=0
for arg in "$@"; do
    case "$arg" in
        --print-dir) print_dir=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

# ------------------------------------------------------------------ inputs and their hash
# The packages and their Depends closure, as apt would install them on an empty arm64 system
# (apt's local lists only: no network): "name version" lines.
# The answer is kept per state of apt's lists (build.sh asks on every run).
resolve_packages() {
    local st memo
    memo="$CACHE_BASE/.resolved-$( { echo "${PACKAGES[*]}"; stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2> /dev/null; } |
        sha256sum | cut -c1-16)"
    if [ -s "$memo" ]; then cat "$memo"; return; fi
    st="$(mktemp -d)"
    : > "$st/status"
    apt-get install -s -q --no-install-recommends -o Dir::State::status="$st/status" \
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 \
        "${PACKAGES[@]/%/:arm64}" 2> /dev/null |
        awk '$1 == "Inst" { v = $3; sub(/^\(/, "", v); print $2, v }' | LC_ALL=C sort > "$st/resolved"
    if [ -s "$st/resolved" ]; then
        mkdir -p "$CACHE_BASE"
        cp "$st/resolved" "$memo"
        cat "$st/resolved"
    fi
    rm -rf "$st"
}
# The newest complete cache directory (when apt cannot resolve the packages now).
newest_cached() {
    local d best="" t bt=0
    for d in "$CACHE_BASE"/*/; do
        d="${d%/}"
        [ -f "$d/.complete" ] || continue
        t="$(stat -c %Y "$d/.complete")"
        if [ "$t" -gt "$bt" ]; then best="$d"; bt="$t"; fi
    done
    echo "$best"
}

kernel="$(bash "$ROOT/scripts/build-guest-kernel.sh" --print-path 2> /dev/null || true)"
pkgs="$(resolve_packages || true)"
dir=""
if [ -n "$pkgs" ] && [ -n "$kernel" ]; then
    hash="$( {
        echo "$RECIPE"
        sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
        (cd "$DEMO" && find . -type f | LC_ALL=C sort | xargs sha256sum)
        (cd "$DEMO" && find . -type f -perm -u+x | LC_ALL=C sort)
        echo "$pkgs"
        basename "$(dirname "$kernel")" # the kernel's version and configuration hash
    } | sha256sum | cut -c1-16)"
    dir="$CACHE_BASE/$hash"
else
    dir="$(newest_cached)"
fi

if [ "$print_dir" = 1 ]; then
    [ -n "$dir" ] || { say "nothing resolved (apt lists, guest kernel) and nothing cached"; exit 1; }
    echo "$dir"
    [ -f "$dir/.complete" ]
    exit
fi
if [ -n "$dir" ] && [ -f "$dir/.complete" ]; then
    echo "$dir"
    exit 0
fi
[ -n "$pkgs" ] || die "apt cannot resolve ${PACKAGES[*]} for arm64 (scripts/setup.sh adds the architecture and updates the lists)"
[ -n "$kernel" ] && [ -f "$kernel" ] || die "no pKVM guest kernel: run scripts/build-guest-kernel.sh first"

# ------------------------------------------------------------------ build
start=$SECONDS
mkdir -p "$CACHE_BASE"
exec 9> "$CACHE_BASE/.lock"
flock 9 # one build at a time; a concurrent run finds the result
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi

need=()
for tool_pkg in aarch64-linux-gnu-readelf:binutils-aarch64-linux-gnu mke2fs:e2fsprogs debugfs:e2fsprogs \
                openssl:openssl cpio:cpio gzip:gzip qemu-system-aarch64:qemu-system-arm; do
    command -v "${tool_pkg%%:*}" > /dev/null || need+=("${tool_pkg#*:}")
done
[ "${#need[@]}" = 0 ] || die "missing tools; install ${need[*]} (scripts/setup.sh installs them)"

work="$CACHE_BASE/build-${dir##*/}"
rm -rf "$work" "$dir" "$dir.tmp"
mkdir -p "$work/debs" "$work/pkgs"

say "apt-get download $(echo "$pkgs" | awk '{ printf "%s ", $1 }')(arm64)"
# (as root apt warns that the download is unsandboxed: harmless)
mapfile -t wanted < <(echo "$pkgs" | awk '{ print $1 ":arm64=" $2 }')
(cd "$work/debs" && apt-get download -q "${wanted[@]}" 2>&1) |
    { grep -vE 'unsandboxed|^Get:|^Fetched' || true; } >&2
[ "$(find "$work/debs" -name '*.deb' | wc -l)" = "$(echo "$pkgs" | wc -l)" ] || die "download incomplete"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/pkgs"; done
P="$work/pkgs"
[ -x "$P/bin/busybox" ] && [ -x "$P/sbin/cryptsetup" ] || die "busybox or cryptsetup missing from the packages"

# copy_elf STAGE FILE...: copy each file (a path inside the packages) into STAGE at the same
# path, with the program interpreter and every library named by DT_NEEDED, recursively
# (from lib/aarch64-linux-gnu or usr/lib/aarch64-linux-gnu of the packages).
copy_elf() {
    local stage="$1" f lib d found
    shift
    local todo=("$@")
    mkdir -p "$stage/lib"
    cp -L "$P/lib/ld-linux-aarch64.so.1" "$stage/lib/ld-linux-aarch64.so.1"
    while [ "${#todo[@]}" -gt 0 ]; do
        f="${todo[0]}"
        todo=("${todo[@]:1}")
        [ -e "$stage/$f" ] && continue
        mkdir -p "$stage/$(dirname "$f")"
        cp -L "$P/$f" "$stage/$f"
        for lib in $(aarch64-linux-gnu-readelf -dW "$P/$f" | awk '/\(NEEDED\)/ { gsub(/[][]/, "", $5); print $5 }'); do
            found=""
            for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
                if [ -e "$P/$d/$lib" ]; then found="$d/$lib"; break; fi
            done
            [ -n "$found" ] || die "$f needs $lib, which the packages do not have"
            [ -e "$stage/$found" ] || todo+=("$found")
        done
    done
}

# ---- the Debian root
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,home/$DEMO_USER,var/log,mnt}
copy_elf "$rootfs" bin/busybox
cp -a "$DEMO/rootfs/etc" "$rootfs/etc"
ln -s ../bin/busybox "$rootfs/sbin/init"
ln -s busybox "$rootfs/bin/sh"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
# The user's password as a SHA-512 crypt hash (busybox login checks those).
pwhash="$(openssl passwd -6 "$DEMO_PASSWORD")"
printf 'root:*:19000:0:99999:7:::\n%s:%s:19000:0:99999:7:::\n' "$DEMO_USER" "$pwhash" > "$rootfs/etc/shadow"
chmod 0640 "$rootfs/etc/shadow"
# The known plaintext: a line only this disk holds (never printed on the guest's console,
# which the host's QEMU carries), with a token random per build.
DEMO_MARKER="DEMO-PLAINTEXT: kept only on the encrypted root disk of the demo guest, token $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$DEMO_MARKER" > "$rootfs/home/$DEMO_USER/plaintext-marker.txt"
(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort) > "$work/rootfs.list"
mke2fs -q -F -t ext4 -b 4096 -L demo-root -d "$rootfs" "$work/root.ext4" "${ROOT_FS_MB}M" > /dev/null
# mke2fs -d keeps the builder's owners: make everything root's, the user's home the user's,
# /etc/shadow group shadow (42).
{
    sed 's#^\.##' "$work/rootfs.list" | while IFS= read -r p; do
        printf 'sif "%s" uid 0\nsif "%s" gid 0\n' "$p" "$p"
    done
    printf 'sif / uid 0\nsif / gid 0\n'
    printf 'sif "/home/%s" uid 1000\nsif "/home/%s" gid 1000\n' "$DEMO_USER" "$DEMO_USER"
    printf 'sif "/home/%s/plaintext-marker.txt" uid 1000\nsif "/home/%s/plaintext-marker.txt" gid 1000\n' "$DEMO_USER" "$DEMO_USER"
    printf 'sif /etc/shadow gid 42\n'
} > "$work/owners.debugfs"
debugfs -w -f "$work/owners.debugfs" "$work/root.ext4" > /dev/null 2> "$work/debugfs.err" ||
    { cat "$work/debugfs.err" >&2; die "debugfs could not set the owners"; }
! grep -qi 'error\|not found' "$work/debugfs.err" || { cat "$work/debugfs.err" >&2; die "debugfs could not set the owners"; }

# ---- the tools both initramfs have: busybox and cryptsetup with its libraries
tools="$work/tools"
mkdir -p "$tools"/{bin,sbin,dev,proc,sys,run,newroot}
copy_elf "$tools" bin/busybox sbin/cryptsetup

# gen_init_cpio's description of the unlock initramfs (for CONFIG_INITRAMFS_SOURCE): the
# tools, /init, and /dev/console (the kernel opens it for /init's stdin/stdout).
initramfs_list() {
    local stage="$1" init="$2" p
    echo "file /init $init 0755 0 0"
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort) | sed 's#^\./##' | while IFS= read -r p; do
        if [ -L "$stage/$p" ]; then
            echo "slink /$p $(readlink "$stage/$p") 0777 0 0"
        elif [ -d "$stage/$p" ]; then
            echo "dir /$p 0755 0 0"
        else
            echo "file /$p $stage/$p $(stat -c %a "$stage/$p") 0 0"
        fi
    done
    echo "nod /dev/console 0600 0 0 c 5 1"
}
mkdir -p "$dir.tmp"
cp "$DEMO/unlock-init" "$work/unlock-init"
initramfs_list "$tools" "$work/unlock-init" > "$work/initramfs.list"
# The same as an archive (for -initrd): the kernel's own built-in archive provides /dev/console.
istage="$work/initramfs"
cp -a "$tools" "$istage"
cp "$DEMO/unlock-init" "$istage/init"
(cd "$istage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$dir.tmp/initramfs.cpio.gz"

# ---- the LUKS2 disk, made in a TCG VM
fstage="$work/format-initramfs"
cp -a "$tools" "$fstage"
cp "$DEMO/format-init" "$fstage/init"
printf '%s' "$DEMO_PASSPHRASE" > "$fstage/passphrase"
(cd "$fstage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$work/format.cpio.gz"
root_bytes=$(stat -c %s "$work/root.ext4")
truncate -s $((root_bytes + 1024 * 1024)) "$work/disk.img" # 1 MiB of LUKS2 header, then the root
say "formatting the LUKS2 disk in a TCG VM (qemu-system-aarch64, the pKVM guest kernel as an ordinary guest)"
t0=$SECONDS
set +e
timeout 900 qemu-system-aarch64 -M virt -cpu max -smp 2 -m 512 -nographic -no-reboot -nic none \
    -monitor none -serial "file:$work/format.log" \
    -kernel "$kernel" -initrd "$work/format.cpio.gz" -append "console=ttyAMA0 panic=-1" \
    -drive "file=$work/disk.img,if=none,format=raw,id=luks" -device virtio-blk-pci,drive=luks \
    -drive "file=$work/root.ext4,if=none,format=raw,readonly=on,id=root" -device virtio-blk-pci,drive=root \
    -device virtio-rng-pci > "$work/format.qemu" 2>&1
qrc=$?
set -e
tr -d '\r' < "$work/format.log" > "$work/format.txt"
if [ "$qrc" != 0 ] || ! grep -qx "FORMAT: done" "$work/format.txt"; then
    tail -n 30 "$work/format.txt" "$work/format.qemu" >&2
    die "the formatting VM failed (QEMU status $qrc; log in $work/format.txt)"
fi
image_md5="$(sed -n 's/^FORMAT: image md5 //p' "$work/format.txt")"
[ "$image_md5" = "$(md5sum < "$work/root.ext4" | cut -d' ' -f1)" ] || die "the VM read another root image"
[ "$(sed -n 's/^FORMAT: disk md5 //p' "$work/format.txt")" = "$image_md5" ] ||
    die "the root read back through dm-crypt differs from the image"
# The header must be LUKS2 and the marker must not be readable on the disk in the clear.
[ "$(head -c 6 "$work/disk.img" | od -An -tx1 | tr -d ' ')" = 4c554b53babe ] || die "disk.img has no LUKS header"
! grep -qaF "DEMO-PLAINTEXT" "$work/disk.img" || die "the marker is readable in the encrypted disk"
format_s=$((SECONDS - t0))
say "disk formatted and filled in $format_s s"
mv "$work/disk.img" "$dir.tmp/disk.img"

# ---- the kernel with the unlock initramfs built in (and the host's initrd and command line
# ignored), from the guest kernel's kept build tree: a relink, not a rebuild
say "building the demo kernel (the pKVM guest kernel with the unlock initramfs built in)"
t0=$SECONDS
demo_kernel="$(bash "$ROOT/scripts/build-guest-kernel.sh" --embed "$work/initramfs.list" --cmdline "$DEMO_CMDLINE" | tail -1)"
[ -f "$demo_kernel" ] || die "no demo kernel"
cp "$demo_kernel" "$dir.tmp/Image"
kernel_s=$((SECONDS - t0))

{
    printf 'DEMO_PASSPHRASE=%q\n' "$DEMO_PASSPHRASE"
    printf 'DEMO_USER=%q\n' "$DEMO_USER"
    printf 'DEMO_PASSWORD=%q\n' "$DEMO_PASSWORD"
    printf 'DEMO_MARKER=%q\n' "$DEMO_MARKER"
} > "$dir.tmp/demo.env"
{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s (the formatting VM $format_s s, the demo kernel $kernel_s s)"
    echo "guest kernel: $kernel"
    echo "demo kernel: $demo_kernel, command line '$DEMO_CMDLINE'"
    echo "root: ext4 ${ROOT_FS_MB} MiB; disk $(stat -c %s "$dir.tmp/disk.img") bytes"
    echo "packages:"
    echo "$pkgs" | sed 's/^/  /'
    sed -n 's/^FORMAT-DUMP: /  /p' "$work/format.txt"
} > "$dir.tmp/info"
mv "$dir.tmp" "$dir"
touch "$dir/.complete"
rm -rf "$work"
say "done in $((SECONDS - start)) s: $dir"
echo "$dir"
