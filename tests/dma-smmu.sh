# Run inside the Linux host (busybox sh) by tests/linux-host.sh (dma_smmu_section) through
# scripts/run.sh --edu --exec: the host's devices DMA through the SMMU, and a malicious host
# aims a DMA engine (QEMU's edu device, driven by the project's edu_attack.ko) at memory it
# does not own: KCore's image and a protected VM's page. Prints KEY VALUE lines (and the
# module's "EDU: ..." lines) for the tier's checks. The order matters: the unbound use of the
# device comes first, while it has never been bound (then 6.1 with
# arm-smmu-v3.disable_bypass=0 leaves its stream table entry in bypass), and the attack on
# the SMMU's registers comes last, after the verdicts that need a working host.
M="/lib/modules/$(uname -r)"
KCORE_PA=0x40200000
# edu TAG PARAMS...: one load of the module; its EDU: lines and the SMMU events the host's
# driver logged meanwhile, prefixed with TAG.
edu() {
    tag=$1; shift
    n=$(dmesg | grep -c 'EDU: ') e=$(dmesg | grep -c 'arm-smmu-v3 .*: event 0x')
    insmod "$M/edu_attack.ko" "$@" || echo "$tag: insmod failed"
    rmmod edu_attack 2> /dev/null
    dmesg | grep 'EDU: ' | tail -n +$((n + 1)) | sed "s/^\[ *[0-9.]*\] /$tag: /"
    echo "$tag: smmu-events $(($(dmesg | grep -c 'arm-smmu-v3 .*: event 0x') - e))"
}
complaints() { dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|Internal error|kserv: bug'; }

echo "smmu-probed $(dmesg | grep -c 'arm-smmu-v3 .*: allocated [0-9]* entries for cmdq')"
echo "default-domain $(dmesg | sed -n 's/.*iommu: Default domain type: \([A-Za-z]*\).*/\1/p' | head -1)"
# The host's own DMA through the SMMU: its disk, its network card.
echo "disk-md5 $(md5sum /dev/vda | cut -c1-32)"
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
echo "net-md5 $(nc 10.0.2.100 1234 | md5sum | cut -c1-32)"

# The target VM: kvm-smoke's vault guest as a protected VM (16 pages of a RAM secret at its
# 0x40300000), and the physical address of its first secret page, found the way
# tests/vm-attack.sh does (kserv_attack.ko reads it from the VMM's page tables; nothing read).
rm -f /tmp/vault-done
kvm-smoke --vault /guest-vault.signed > /tmp/vault.out 2>&1 &
vmm=$!
i=0
while ! grep -q "ram 0x" /tmp/vault.out && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
sed 's/^/vault: /' /tmp/vault.out
set -- $(sed -n 's/.*pid \([0-9]*\) ram \(0x[0-9a-f]*\) size \(0x[0-9a-f]*\).*/\1 \2 \3/p' /tmp/vault.out)
insmod "$M/kserv_attack.ko" || echo "attack-module-not-loaded"
echo "target $1 $2 $3" > /dev/kserv_attack
echo "locate 0x300000" > /dev/kserv_attack
vm_pa=$(sed -n 's/^LOCATE pa //p' /dev/kserv_attack | tail -1)
rmmod kserv_attack
echo "vm-secret-pa $vm_pa"

# 1. The device used without a driver (no IOMMU domain of the kernel's), never bound before.
#    Its raw read of KCore's image, then a raw read and a raw write of the VM's secret page.
edu nobind nobind=1 target_pa=$KCORE_PA
[ -n "$vm_pa" ] && edu nobind-vm nobind=1 legit=0 do_write=1 target_pa="$vm_pa"
# 2. Bound as a PCI driver (the kernel's domain for it): the DMA API round trip, the raw read
#    of KCore's image, then a raw read and a raw write of the VM's secret page.
edu bound target_pa=$KCORE_PA
[ -n "$vm_pa" ] && edu vm legit=0 do_write=1 target_pa="$vm_pa"
# 3. Bound, while the kernel's SMMU driver runs: the SMMU programmed behind its back (the
#    device's stream table entry rewritten as bypass, then stage 2 with the module's own
#    table, each invalidated through a command queue of the module's; commands the host may
#    not send; the event queue and MSI addresses at KCore's memory), raw reads of KCore's
#    image and of the VM's secret page in each state, a raw write of that page in bypass;
#    everything put back. Then a page the device is writing into, donated to KCore.
c=$(complaints)
edu forge legit=0 forge=1 ${vm_pa:+vm_pa=$vm_pa}
edu donate legit=0 donate=1
echo "host-kernel-complaints-after-forge $(($(complaints) - c))"
# The VM ran on through it: it checks its secret and powers off.
touch /tmp/vault-done
wait $vmm
echo "vault-vmm-status $?"
sed -n "s/^KVM-SMOKE: vault protected: guest output \(.*\)/vault-guest-output \1/p" /tmp/vault.out
echo "disk-md5-after $(md5sum /dev/vda | cut -c1-32)"
echo "host-kernel-complaints $(complaints)"

# 4. Last: the SMMU's registers behind the kernel's driver (GBPA bypass, SMMU off, its own
#    stream table and command queue), a raw read of KCore's image in that state, then the
#    registers put back.
c=$(complaints)
edu mmio legit=0 mmio=1 target_pa=$KCORE_PA
echo "host-kernel-complaints-after-mmio $(($(complaints) - c))"
echo "host-alive $(cat /proc/loadavg | cut -d' ' -f4)"
