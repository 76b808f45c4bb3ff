// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kserv: /dev/kvm's first part, the lifecycle of VMs and vCPUs in KCore.
 *
 * KVM_CREATE_VM registers a non-protected VM with KCore (its stage-2 root and table pool are
 * host pages the module donates; KCore owns them until the VM is destroyed) and returns a VM
 * fd; KVM_CREATE_VCPU registers a vCPU and returns its fd. Closing the last fd destroys the VM:
 * KCore scrubs every page it holds and hands it back, and only then are the pages freed.
 * Running vCPUs, memory slots and the rest of the KVM API come next; until then
 * KVM_CHECK_EXTENSION reports nothing, so a VMM does not mistake this for a usable KVM.
 */
#include <linux/anon_inodes.h>
#include <linux/arm-smccc.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>

#include "kcore_abi.h"
#include "kserv.h"

/* Table pages given to a new VM's pool: its root's levels and vCPU context pages. */
#define KSERV_INITIAL_POOL 8
#define KSERV_MAX_VCPUS 8
#define KSERV_MAX_PAGES 64

struct kserv_vm {
	struct mutex lock;
	unsigned long vmid;
	unsigned int vcpus;		/* bitmap of registered vCPUs */
	unsigned int npages;
	struct page *pages[KSERV_MAX_PAGES];	/* donated to KCore: freed after DESTROY_VM */
};

struct kserv_vcpu {
	struct kserv_vm *vm;
	struct file *vm_file;		/* keeps the VM alive while its vCPU fd is open */
	unsigned int id;
};

static long kcore_call(u32 fn, unsigned long a1, unsigned long a2, unsigned long *r1)
{
	struct arm_smccc_res res;

	arm_smccc_1_1_hvc(fn, a1, a2, &res);
	if (r1)
		*r1 = res.a1;
	return (long)res.a0;
}

/* Give one more zeroed host page to the VM's table pool. Caller holds vm->lock. */
static int kserv_donate(struct kserv_vm *vm)
{
	struct page *p;
	long r;

	if (vm->npages == KSERV_MAX_PAGES)
		return -ENOMEM;
	p = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!p)
		return -ENOMEM;
	r = kcore_call(KCORE_DONATE_PAGE, vm->vmid, page_to_pfn(p), NULL);
	if (r != KCORE_E_SUCCESS) {
		__free_page(p);
		return kserv_core_errno(r);
	}
	vm->pages[vm->npages++] = p;
	return 0;
}

static void kserv_vm_destroy(struct kserv_vm *vm)
{
	long r = kcore_call(KCORE_DESTROY_VM, vm->vmid, 0, NULL);
	unsigned int i;

	if (r != KCORE_E_SUCCESS) {
		/* KCore still holds the pages: never give them to the page allocator. */
		pr_err("kserv: DESTROY_VM %lu failed (%ld); %u pages left with KCore\n", vm->vmid, r,
		       vm->npages);
		kfree(vm);
		return;
	}
	for (i = 0; i < vm->npages; i++)
		__free_page(vm->pages[i]);
	kfree(vm);
}

static int kserv_vm_release(struct inode *inode, struct file *f)
{
	kserv_vm_destroy(f->private_data);
	return 0;
}

static int kserv_vcpu_release(struct inode *inode, struct file *f)
{
	struct kserv_vcpu *vcpu = f->private_data;

	fput(vcpu->vm_file);
	kfree(vcpu);
	return 0;
}

static long kserv_vcpu_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return -ENOTTY;
}

static const struct file_operations kserv_vcpu_fops = {
	.owner = THIS_MODULE,
	.release = kserv_vcpu_release,
	.unlocked_ioctl = kserv_vcpu_ioctl,
	.llseek = noop_llseek,
};

static long kserv_create_vcpu(struct file *vm_file, unsigned long id)
{
	struct kserv_vm *vm = vm_file->private_data;
	struct kserv_vcpu *vcpu;
	long r;
	int fd;

	if (id >= KSERV_MAX_VCPUS)
		return -EINVAL;
	vcpu = kzalloc(sizeof(*vcpu), GFP_KERNEL);
	if (!vcpu)
		return -ENOMEM;
	mutex_lock(&vm->lock);
	/* Its context page comes from the VM's pool: top it up when KCore asks for more. */
	r = kcore_call(KCORE_REGISTER_VCPU, vm->vmid, id, NULL);
	if (r == KCORE_E_NO_MEMORY) {
		r = kserv_donate(vm);
		if (!r)
			r = kcore_call(KCORE_REGISTER_VCPU, vm->vmid, id, NULL);
		else
			r = KCORE_E_NO_MEMORY;
	}
	if (r != KCORE_E_SUCCESS) {
		mutex_unlock(&vm->lock);
		kfree(vcpu);
		return kserv_core_errno(r);
	}
	vm->vcpus |= 1U << id;
	mutex_unlock(&vm->lock);
	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->vm_file = get_file(vm_file);
	fd = anon_inode_getfd("kvm-vcpu", &kserv_vcpu_fops, vcpu, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		/* The vCPU stays registered in KCore until the VM goes. */
		fput(vm_file);
		kfree(vcpu);
	}
	return fd;
}

static long kserv_vm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case KVM_CREATE_VCPU:
		return kserv_create_vcpu(f, arg);
	case KVM_CHECK_EXTENSION:
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations kserv_vm_fops = {
	.owner = THIS_MODULE,
	.release = kserv_vm_release,
	.unlocked_ioctl = kserv_vm_ioctl,
	.llseek = noop_llseek,
};

static long kserv_create_vm(unsigned long type)
{
	struct kserv_vm *vm;
	struct page *root;
	unsigned long vmid;
	long r;
	int i, fd;

	/* Type 0: the default IPA size. IPA-size requests and protected VMs come later. */
	if (type != 0)
		return -EINVAL;
	vm = kzalloc(sizeof(*vm), GFP_KERNEL);
	root = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!vm || !root) {
		kfree(vm);
		if (root)
			__free_page(root);
		return -ENOMEM;
	}
	mutex_init(&vm->lock);
	r = kcore_call(KCORE_REGISTER_VM, page_to_pfn(root), KCORE_VM_NON_PROTECTED, &vmid);
	if (r != KCORE_E_SUCCESS) {
		__free_page(root);
		kfree(vm);
		return kserv_core_errno(r);
	}
	vm->vmid = vmid;
	vm->pages[vm->npages++] = root;
	for (i = 0; i < KSERV_INITIAL_POOL; i++) {
		r = kserv_donate(vm);
		if (r)
			break;
	}
	if (r) {
		kserv_vm_destroy(vm);
		return r;
	}
	fd = anon_inode_getfd("kvm-vm", &kserv_vm_fops, vm, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		kserv_vm_destroy(vm);
	return fd;
}

static long kserv_dev_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case KVM_GET_API_VERSION:
		return arg ? -EINVAL : KVM_API_VERSION;
	case KVM_CREATE_VM:
		return kserv_create_vm(arg);
	case KVM_CHECK_EXTENSION:
		return 0;
	default:
		return -EINVAL;
	}
}

static const struct file_operations kserv_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kserv_dev_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice kserv_dev = {
	.minor = KVM_MINOR,
	.name = "kvm",
	.fops = &kserv_dev_fops,
};

int kserv_dev_register(void)
{
	return misc_register(&kserv_dev);
}

void kserv_dev_unregister(void)
{
	misc_deregister(&kserv_dev);
}
