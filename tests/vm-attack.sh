# Run inside the Linux host (busybox sh) by tests/linux-host.sh through scripts/run.sh --exec:
# a malicious host goes after a protected VM. The vault guest (kvm-smoke --vault, a signed
# protected VM) holds a secret in 16 pages of its RAM and another in its registers, and waits
# while the project's malicious module (kserv_attack.ko) and root's userspace try every way
# in: /dev/mem, an unchecked /dev/mem (the module's mmap at any physical address), the VMM's
# memory through /proc/PID/mem, the kernel's linear map, every KCore hypercall with the
# VM's pages, its registers, interrupts it did not ask for, its image and layout after
# verification; then all of the host's RAM is searched for both secrets. The same guest as
# an ordinary VM is the control: there the host must find them. Prints KEY VALUE lines
# (prefixed "protected" or "control") the tier checks.
#
# The secrets as the module is given them: each byte plus one (so no copy of a secret is
# ever in the host's memory because of the test itself), twice over (16 bytes).
RAM_SECRET=075ce9d3c5923b80075ce9d3c5923b80   # 0x7f3a91c4d2e85b06, little-endian
REG_SECRET=63d9f53c0aa8e25d63d9f53c0aa8e25d   # 0x5ce1a7093bf4d862, little-endian
insmod "/lib/modules/$(uname -r)/kserv_attack.ko" || echo "attack-module-not-loaded"
A=/dev/kserv_attack
cmd() { echo "$*" > $A || echo "command-failed $*"; }
cmd pattern ram-secret $RAM_SECRET
cmd pattern reg-secret $REG_SECRET

round() {
    tag=$1 mode=$2 attack=$3
    rm -f /tmp/vault-done
    kvm-smoke "$mode" /guest-vault.signed > /tmp/vault.out 2>&1 &
    vmm=$!
    i=0
    while ! grep -q "ram 0x" /tmp/vault.out && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    sed "s/^/$tag: /" /tmp/vault.out
    set -- $(sed -n 's/.*pid \([0-9]*\) ram \(0x[0-9a-f]*\) size \(0x[0-9a-f]*\).*/\1 \2 \3/p' /tmp/vault.out)
    pid=$1 hva=$2 size=$3
    cmd reset
    cmd target "$pid" "$hva" "$size"
    # The secret page: 3 MiB into the guest's RAM (its 0x40300000).
    cmd locate 0x300000
    pa=$(sed -n 's/^LOCATE pa //p' $A)
    echo "$tag-secret-pa $pa"
    # Root's userspace first, before any kernel read of those pages.
    devmem "$pa" 32 > /tmp/devmem.out 2>&1
    echo "$tag-devmem-status $? $(head -c 80 /tmp/devmem.out | tr '\n' ' ')"
    mount --bind $A /dev/mem
    devmem "$pa" 64 > /tmp/devmem.out 2>&1
    echo "$tag-unchecked-mmap-status $? $(head -c 40 /tmp/devmem.out | tr '\n' ' ')"
    # And a write into its verified kernel image (its 0x40200000), through the same mapping.
    cmd locate 0x200000
    ipa_pa=$(sed -n 's/^LOCATE pa //p' $A | tail -1)
    devmem "$ipa_pa" 32 0 > /tmp/devmem.out 2>&1
    echo "$tag-image-write-status $? $(head -c 40 /tmp/devmem.out | tr '\n' ' ')"
    umount /dev/mem
    # The VMM's own memory through procfs (a kernel read of the guest's page).
    dd if=/proc/$pid/mem bs=4096 skip=$(( (hva + 0x300000) / 4096 )) count=1 2> /dev/null > /tmp/procmem.bin
    echo "$tag-procmem $(wc -c < /tmp/procmem.bin) bytes, first $(od -An -tx1 -N8 /tmp/procmem.bin | tr -d ' ')"
    rm -f /tmp/procmem.bin /tmp/devmem.out
    cmd "$attack"
    cmd scan
    sed "s/^/$tag: /" $A
    # The guest ran on through all of it: let it check its secrets and power off.
    touch /tmp/vault-done
    wait $vmm
    echo "$tag-vmm-status $?"
    sed -n "s/^\(KVM-SMOKE: vault.*guest output.*\)/$tag: \1/p" /tmp/vault.out
}
round protected --vault attack
# The control: only the reads (the host of an ordinary VM may reclaim its pages and set its
# registers; that would break nothing but its own VM).
round control --vault-unprotected attack-reads
rmmod kserv_attack
echo "vms-after-attack $(cat /sys/module/kserv/parameters/kcore_vms)"
echo "host-kernel-complaints $(dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|Internal error|kserv: bug')"
echo "host-alive $(cat /proc/loadavg | cut -d' ' -f4)"
