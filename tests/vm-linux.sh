# Run inside the Linux host (busybox sh) by tests/linux-host.sh through scripts/run.sh --exec,
# with MODE set first: "full" boots the Debian guest with its virtio devices and then the
# lifecycle checks (VMs in sequence and at once, a SIGKILLed QEMU, the ioctl fuzzer); "boot"
# only the first. Prints KEY VALUE lines the tier checks.
vms() { cat /sys/module/kserv/parameters/kcore_vms; }
avail_kb() { awk '/MemAvailable/ { print $2 }' /proc/meminfo; }
# guest NAME RUN-GUEST-ARGS...: one guest, its console in /tmp/NAME.txt; prints its status,
# whether QEMU was ended by the timeout, and whether the guest's /init got to power off.
guest() {
    n="$1"; shift
    timeout 300 run-guest --serial "/tmp/$n.txt" "$@" 2> "/tmp/$n.err"
    echo "$n-status $? killed $(grep -c terminating "/tmp/$n.err") off $(grep -c '^GUEST-LINUX: powering off' "/tmp/$n.txt")"
}
mkdir -p /tmp/www
head -c 300000 /dev/urandom > /tmp/www/file
echo "host-file-md5 $(md5sum < /tmp/www/file | cut -d' ' -f1)"
echo "host-disk-md5 $(md5sum < /guest/disk.img | cut -d' ' -f1)"
httpd -p 127.0.0.1:8080 -h /tmp/www
before=$(avail_kb)
# Each vCPU's last exits and interrupt state go to dmesg if a run ends on a signal (a guest
# that hangs is killed by the timeout): printed below for a failure's diagnosis.
echo 1 > /sys/module/kserv/parameters/trace_exits
guest full --smp 2 --devices
sed 's/^/full: /' /tmp/full.txt
grep -q terminating /tmp/full.err && { sed 's/^/qemu-stderr: /' /tmp/full.err; dmesg | grep "kserv: " | tail -120 | sed 's/^/trace: /'; }
echo 0 > /sys/module/kserv/parameters/trace_exits
echo "vc: $(cat /tmp/vc-*.txt)"
[ "$MODE" = full ] || exit 0

for i in 1 2 3; do guest "seq$i" --mem 128; done

# Two VMs at once, and a guest cannot reach another VM's memory or KCore's. VM par1 plants a
# secret, 16 MiB of it in its RAM, and stays up until the host's HTTP server has /done; once
# it has planted, VM par2 reads every page of its own RAM and looks for that secret, for a
# string of KCore's image (KCore's RAM is at the host-physical addresses par2's RAM has as
# guest-physical ones) and for a token it planted itself (the control: the scan reads RAM).
# A guest script is a raw disk (vdb), whole sectors. The patterns are searched for in the
# RAM's bytes with every letter shifted by one (A->B, z->a), in their shifted form: only RAM
# holding the plain text matches, not the scanning script, which holds the shifted form. (Not
# ROT13: shifting twice gives the text back, so the pipe buffers, which are RAM too and hold
# the shifted bytes of the script's page, would match when scanned in turn; a shift by one
# needs 26 such rounds.)
shift1() { tr 'A-Za-z' 'B-ZAb-za'; }
as_disk() { n=$(wc -c < "$1"); head -c $(( (512 - n % 512) % 512 )) /dev/zero | tr '\000' '\n' >> "$1"; }
secret="SEKVM-SECRET-$(head -c 8 /dev/urandom | md5sum | cut -c1-16)"
cat > /tmp/plant.sh <<PLANT
yes "$secret" | head -c 16777216 > /tmp/secret
echo "GUEST-LINUX: planted \$(wc -c < /tmp/secret) bytes"
i=0
until wget -q -O /dev/null http://10.0.2.2:8080/done 2> /dev/null || [ \$i -ge 240 ]; do sleep 1; i=\$((i + 1)); done
PLANT
cat > /tmp/scan.sh <<SCAN
other='$(echo "$secret" | shift1)'
kcore='$(echo "building KCore" | shift1)'
SCAN
cat >> /tmp/scan.sh <<'SCAN'
own="SEKVM-OWN-$(head -c 8 /dev/urandom | md5sum | cut -c1-16)"
yes "$own" | head -c 1048576 > /tmp/own
own=$(echo "$own" | tr 'A-Za-z' 'B-ZAb-za')
# /proc/kcore: an ELF file whose PT_LOAD segments map the kernel's view of RAM; each one with
# a physical address is read, but for the kernel image's alias of its own pages (_text).
text=$(sed -n 's/^\([0-9a-f]*\) . _text$/\1/p' /proc/kallsyms)
phoff=$(od -A n -t u8 -j 32 -N 8 /proc/kcore | tr -d ' ')
phnum=$(od -A n -t u2 -j 56 -N 2 /proc/kcore | tr -d ' ')
i=0 pages=0
while [ $i -lt "$phnum" ]; do
    # p_type and p_flags, p_offset, p_vaddr, p_paddr, p_filesz
    set -- $(od -A n -t x8 -j $((phoff + i * 56)) -N 40 /proc/kcore)
    case "$1" in
        *00000001) [ "$4" != ffffffffffffffff ] && [ "$3" != "$text" ] && echo "$2 $5" ;;
    esac
    i=$((i + 1))
done > /tmp/segments
while read -r off size; do
    dd if=/proc/kcore bs=4096 skip=$((0x$off / 4096)) count=$((0x$size / 4096)) 2> /dev/null
done < /tmp/segments | tr -s '\000' '\n' | tr 'A-Za-z' 'B-ZAb-za' |
    grep -F -o -e "$other" -e "$kcore" -e "$own" > /tmp/hits
while read -r off size; do pages=$((pages + 0x$size / 4096)); done < /tmp/segments
echo "GUEST-LINUX: scanned $pages pages: other-vm $(grep -cxF "$other" /tmp/hits) kcore $(grep -cxF "$kcore" /tmp/hits) own $(grep -cxF "$own" /tmp/hits)"
SCAN
as_disk /tmp/plant.sh; as_disk /tmp/scan.sh
disk() { echo "-drive file=$1,if=none,format=raw,readonly=on,id=script -device virtio-blk-pci,drive=script"; }
guest par1 --mem 128 --devices -- $(disk /tmp/plant.sh) > /tmp/par1.st & p1=$!
i=0
while ! grep -q "^GUEST-LINUX: planted" /tmp/par1.txt 2> /dev/null && [ $i -lt 240 ]; do sleep 1; i=$((i + 1)); done
guest par2 --mem 128 --devices -- $(disk /tmp/scan.sh) > /tmp/par2.st
touch /tmp/www/done
wait $p1
cat /tmp/par1.st /tmp/par2.st
grep -h "^GUEST-LINUX: planted\|^GUEST-LINUX: scanned" /tmp/par1.txt /tmp/par2.txt
echo "vms-after-guests $(vms)"

# SIGKILL in the middle of the guest's boot: once its console has its first line.
run-guest --serial /tmp/kill.txt 2> /dev/null & k=$!
i=0
while [ ! -s /tmp/kill.txt ] && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done
kill -9 $k
wait $k
echo "sigkill-status $? console-bytes $(wc -c < /tmp/kill.txt) booted $(grep -c "^GUEST-LINUX: userspace" /tmp/kill.txt)"
echo "vms-after-sigkill $(vms)"

kvm-smoke --fuzz 4000 7
echo "fuzz-status $?"
echo "vms-after-fuzz $(vms)"
kvm-smoke 3 > /tmp/smoke.txt; echo "smoke-after-fuzz $? $(grep -c 'a guest ran over /dev/kvm' /tmp/smoke.txt)"
sleep 1
after=$(avail_kb)
echo "mem-lost-kb $((before - after))"
devmem 0x40200000 32 > /dev/null 2>&1; echo "kcore-read-status $?"
echo "host-kernel-complaints $(dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|kserv: bug')"
