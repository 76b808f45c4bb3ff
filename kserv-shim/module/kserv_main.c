// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kserv: the KServ shim, loaded into a stock Debian kernel that KCore runs at EL1.
 *
 * It finds KCore, checks its ABI, and provides /dev/kvm (kserv_vm.c). KCore is found through
 * the SMCCC vendor-specific hypervisor service's Call UID over SMC: KCore traps the host's
 * SMCs and answers that query itself, while on a machine without it firmware answers
 * NOT_SUPPORTED. An HVC is issued only once KCore has answered, since at EL1 with no
 * hypervisor underneath it would be an undefined instruction.
 *
 * Every function id and value comes from kcore_abi.h, generated from KCore's own ABI
 * definition (kcore/src/abi.rs) by scripts/build.sh.
 */
#include <linux/arm-smccc.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sysfs.h>

#include "kcore_abi.h"
#include "kserv.h"

/* kserv-core's panic handler: a bug in the shim's logic (bad input gets errors, never this). */
void __noreturn kserv_core_panic(void);
void __noreturn kserv_core_panic(void)
{
	panic("kserv: bug in kserv-core\n");
}

static bool kcore_present(void)
{
	struct arm_smccc_res res;

	arm_smccc_smc(KCORE_VENDOR_HYP_CALL_UID, 0, 0, 0, 0, 0, 0, 0, &res);
	return (u32)res.a0 == KCORE_UID_0 && (u32)res.a1 == KCORE_UID_1 &&
	       (u32)res.a2 == KCORE_UID_2 && (u32)res.a3 == KCORE_UID_3;
}

static int __init kserv_init(void)
{
	struct arm_smccc_res res;
	unsigned long major, minor;

	if (!kcore_present()) {
		pr_info("kserv: no KCore underneath this kernel; not loading\n");
		return -ENODEV;
	}
	arm_smccc_1_1_hvc(KCORE_VERSION, &res);
	if ((long)res.a0 != KCORE_E_SUCCESS) {
		pr_err("kserv: KCORE_VERSION failed: %ld\n", (long)res.a0);
		return -EIO;
	}
	major = res.a1 >> 16;
	minor = res.a1 & 0xffff;
	if (major != KCORE_ABI_MAJOR || minor < KCORE_ABI_MINOR ||
	    (res.a2 & KCORE_FEATURES) != KCORE_FEATURES) {
		pr_err("kserv: KCore ABI %lu.%lu features %#lx; this module needs %lu.%lu features %#lx\n",
		       major, minor, res.a2, KCORE_ABI_MAJOR, KCORE_ABI_MINOR, KCORE_FEATURES);
		return -ENODEV;
	}
	if (kserv_core_abi_version() != ((KCORE_ABI_MAJOR << 16) | KCORE_ABI_MINOR)) {
		pr_err("kserv: kserv-core was built for ABI %#x\n", kserv_core_abi_version());
		return -ENODEV;
	}
	/* A VM's stage-2 root: 1 page, or 2/8 concatenated ones on a 40/42-bit PA CPU. */
	if (res.a3 != 1 && res.a3 != 2 && res.a3 != 4 && res.a3 != 8) {
		pr_err("kserv: KCore asks for a %lu-page stage-2 root\n", res.a3);
		return -ENODEV;
	}
	kserv_root_order = ilog2(res.a3);
	kserv_gic_v2 = res.a2 & KCORE_FEATURE_GICV2;
	pr_info("kserv: KCore ABI %lu.%lu, features %#lx, %lu-page VM roots\n", major, minor, res.a2,
		res.a3);
	return kserv_dev_register();
}

/*
 * /sys/module/kserv/parameters/kcore_vms (read-only): how many VMs KCore holds now, asked of
 * KCore itself (VM_STATE of every vmid until it answers that the vmid is out of range), so a
 * test or an administrator sees that VMs are really gone after their VMM exits.
 */
static int kserv_kcore_vms_get(char *buf, const struct kernel_param *kp)
{
	struct arm_smccc_res res;
	unsigned long vmid;
	unsigned int live = 0;

	for (vmid = 1; vmid < 4096; vmid++) {
		arm_smccc_1_1_hvc(KCORE_VM_STATE, vmid, &res);
		if ((long)res.a0 != KCORE_E_SUCCESS)
			break;
		if (res.a1 != 0)
			live++;
	}
	return sysfs_emit(buf, "%u\n", live);
}

static const struct kernel_param_ops kserv_kcore_vms_ops = { .get = kserv_kcore_vms_get };
module_param_cb(kcore_vms, &kserv_kcore_vms_ops, NULL, 0444);
MODULE_PARM_DESC(kcore_vms, "VMs KCore holds now (asked of KCore)");

static void __exit kserv_exit(void)
{
	kserv_dev_unregister();
	pr_info("kserv: unloaded\n");
}

module_init(kserv_init);
module_exit(kserv_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("KServ shim: the host side of KCore (Rust SeKVM)");
