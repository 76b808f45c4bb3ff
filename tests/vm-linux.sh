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
    timeout 300 run-guest "$@" --serial "/tmp/$n.txt" 2> "/tmp/$n.err"
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
guest par1 --mem 128 > /tmp/par1.st & p1=$!
guest par2 --mem 128 > /tmp/par2.st & p2=$!
wait $p1; wait $p2
cat /tmp/par1.st /tmp/par2.st
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
