# Run inside the Linux host (busybox sh) by tests/linux-host.sh through scripts/run.sh --exec:
# pKVM's MMIO guard, enforced by KCore for protected VMs. kvm-smoke's MMIO-guard guest
# (guest-mmio-guard.S, a signed kernel file: /guest-mmio-guard.signed) as a protected VM: it
# finds MMIO_GUARD in KVM_FEATURES, enrols the UART's page, stores to a device page it did not
# enrol (an external abort its vector reports), and cannot enrol RAM; kvm-smoke lists every
# device page an MMIO exit named. The same guest as an ordinary VM is the control (no pKVM
# services, its store reaches the VMM). Prints KEY VALUE lines the tier checks.
kvm-smoke --protected /guest-mmio-guard.signed; echo "guard-protected-status $?"
kvm-smoke --unprotected /guest-mmio-guard.signed; echo "guard-control-status $?"
echo "vms-after-guard $(cat /sys/module/kserv/parameters/kcore_vms)"
echo "host-kernel-complaints $(dmesg | grep -cE 'WARNING:|Oops|BUG:|Call trace:|kserv: bug')"
