# Run inside the Linux host (busybox sh) by tests/linux-host.sh through scripts/run.sh --exec:
# protected VMs from the host's userspace. kvm-smoke's protected guest, a signed kernel file
# (kcore-sign sign-file, in the host at /guest-protected.signed), as a protected VM of
# kvm-smoke (KVM_VM_TYPE_ARM_PROTECTED) and of Debian's QEMU (the module's policy
# kserv.protected_vms=1, QEMU unmodified); tampered and unsigned copies refused; the same
# guest as an ordinary VM, whose secret the host does read (the control). Prints KEY VALUE
# lines the tier checks.
vms() { cat /sys/module/kserv/parameters/kcore_vms; }
avail_kb() { awk '/MemAvailable/ { print $2 }' /proc/meminfo; }
before=$(avail_kb)
kvm-smoke --protected /guest-protected.signed; echo "smoke-signed-status $?"
kvm-smoke --unprotected /guest-protected.signed; echo "smoke-control-status $?"
# One byte of the image changed (the trailer and its signature kept); and the bare image.
cp /guest-protected.signed /tmp/tampered
printf 'X' | dd of=/tmp/tampered bs=1 seek=200 conv=notrunc 2> /dev/null
kvm-smoke --protected /tmp/tampered; echo "smoke-tampered-status $?"
kvm-smoke --guest protected > /tmp/unsigned
kvm-smoke --protected /tmp/unsigned; echo "smoke-unsigned-status $?"
# Debian's QEMU, which cannot ask for a protected VM: the administrator's policy makes every
# VM protected. A refused kernel stops QEMU's VM (it waits, paused): the timeout ends it.
echo 1 > /sys/module/kserv/parameters/protected_vms
q() {
    timeout "$1" qemu-system-aarch64 -M virt,gic-version=3,its=off -accel kvm -cpu host -smp 2 -m 64 \
        -nographic -nic none -monitor none -serial "file:/tmp/$2.txt" -kernel "$3" 2> "/tmp/$2.err"
    echo "$2-status $? output $(cat "/tmp/$2.txt")"
    grep -m1 "kvm run failed" "/tmp/$2.err" | sed "s/^/$2-stderr: /"
}
q 120 qemu-signed /guest-protected.signed
q 30 qemu-tampered /tmp/tampered
q 30 qemu-unsigned /tmp/unsigned
# A Linux guest as a protected VM: the kernel built from Debian's 7.3 source with the pKVM
# guest driver (signed), 2 vCPUs, the busybox initramfs, virtio disk, network and console
# (ACCESS_PLATFORM: its DMA bounces through memory it shares).
mkdir -p /tmp/www
head -c 300000 /dev/urandom > /tmp/www/file
echo "host-file-md5 $(md5sum < /tmp/www/file | cut -d' ' -f1)"
echo "host-disk-md5 $(md5sum < /guest/disk.img | cut -d' ' -f1)"
httpd -p 127.0.0.1:8080 -h /tmp/www
rm -f /tmp/vc-*.txt
timeout 300 run-guest --protected --smp 2 --devices --serial /tmp/pkvm.txt 2> /tmp/pkvm.err
echo "pkvm-status $? killed $(grep -c terminating /tmp/pkvm.err)"
grep "^GUEST-LINUX: " /tmp/pkvm.txt | sed 's/^/pkvm: /'
echo "pkvm-vc: $(cat /tmp/vc-*.txt)"
echo 0 > /sys/module/kserv/parameters/protected_vms
dmesg | sed -n 's/^\[[^]]*\] \(kserv: protected VM\)/\1/p'
echo "vms-after-protected $(vms)"
sleep 1
echo "mem-lost-kb $((before - $(avail_kb)))"
echo "host-kernel-complaints $(dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|kserv: bug')"
