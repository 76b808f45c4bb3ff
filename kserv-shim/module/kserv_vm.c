// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kserv: /dev/kvm's first part, the lifecycle of VMs and vCPUs in KCore.
 *
 * KVM_CREATE_VM registers a non-protected VM with KCore (its stage-2 root and table pool are
 * host pages the module donates; KCore owns them until the VM is destroyed) and returns a VM
 * fd; KVM_CREATE_VCPU registers a vCPU and returns its fd. Memory slots declare the VM's RAM
 * to KCore; the VMM's pages are pinned and lent to the guest as it first touches them.
 * KVM_ARM_VCPU_INIT, KVM_GET_REG_LIST and KVM_GET/SET_ONE_REG (the ids kserv-core maps onto
 * KCore's registers)
 * and KVM_RUN (MMIO exits to the VMM, faults backed here, WFI slept until the guest timer's
 * deadline, power-off as a system event) run a guest. Closing the last fd destroys the VM:
 * KCore scrubs what it owns and hands every page back, and only then are pages unpinned or
 * freed. KVM_CREATE_DEVICE makes the VM's GIC, a GICv3 or, when KCore runs on a GICv2, a
 * GICv2 (whose CPU interface is KCore's GICV, mapped in the guest): its distributor (and a
 * GICv3's redistributors) are emulated here (kserv-core's model, under the VM's irq_lock),
 * KVM_IRQ_LINE drives SPIs, and before each run the most urgent pending interrupts go into
 * the vCPU's list registers through KCore (VCPU_IRQ_STATE, INJECT_IRQ); a vCPU in WFI sleeps
 * until one is pending.
 * irqfd, ioeventfd and the rest come next; until then KVM_CHECK_EXTENSION reports nothing,
 * so a VMM does not mistake this for a complete KVM.
 */
#include <linux/anon_inodes.h>
#include <linux/arm-smccc.h>
#include <linux/hrtimer.h>
#include <linux/math64.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/spinlock.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <linux/miscdevice.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>

#include "kcore_abi.h"
#include "kserv.h"

static long kcore_call4(u32 fn, unsigned long a1, unsigned long a2, unsigned long a3,
			unsigned long a4, unsigned long *r1)
{
	struct arm_smccc_res res;

	arm_smccc_1_1_hvc(fn, a1, a2, a3, a4, &res);
	if (r1)
		*r1 = res.a1;
	return (long)res.a0;
}

static long kcore_call(u32 fn, unsigned long a1, unsigned long a2, unsigned long a3, unsigned long *r1)
{
	return kcore_call4(fn, a1, a2, a3, 0, r1);
}

/*
 * VCPU_RUN with KCORE_RUN_LRS_IN_REGS in opts: inject[] go into the list registers first;
 * x1..x4 of the exit into x[0..3], the list registers it reports (x5..x7) into lrs[].
 */
static long kcore_run(unsigned long vmid, unsigned long vcpu, u64 value, unsigned long opts,
		      const u64 inject[KSERV_HOST_LRS], unsigned long x[4], u64 lrs[KSERV_HOST_LRS])
{
	struct arm_smccc_1_2_regs args = {
		.a0 = KCORE_VCPU_RUN, .a1 = vmid, .a2 = vcpu, .a3 = value, .a4 = opts,
		.a5 = inject[0], .a6 = inject[1], .a7 = inject[2],
	};
	struct arm_smccc_1_2_regs res;

	arm_smccc_1_2_hvc(&args, &res);
	x[0] = res.a1;
	x[1] = res.a2;
	x[2] = res.a3;
	x[3] = res.a4;
	lrs[0] = res.a5;
	lrs[1] = res.a6;
	lrs[2] = res.a7;
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
	r = kcore_call(KCORE_DONATE_PAGE, vm->vmid, page_to_pfn(p), 0, NULL);
	if (r != KCORE_E_SUCCESS) {
		__free_page(p);
		return kserv_core_errno(r);
	}
	vm->pages[vm->npages++] = p;
	return 0;
}

static void kserv_slot_release(struct kserv_slot *s);

static void kserv_vm_destroy(struct kserv_vm *vm)
{
	long r;
	unsigned int i;

	/* No eventfd reaches the VM any more (and no injection is still queued). */
	kserv_events_release(vm);
	r = kcore_call(KCORE_DESTROY_VM, vm->vmid, 0, 0, NULL);
	if (r != KCORE_E_SUCCESS) {
		/* KCore still holds the pages: never give them to the page allocator. */
		pr_err("kserv: DESTROY_VM %lu failed (%ld); %u pages left with KCore\n", vm->vmid, r,
		       vm->npages);
		kvfree(vm->vgic);
		kfree(vm);
		return;
	}
	for (i = 0; i < vm->npages; i++)
		__free_page(vm->pages[i]);
	/* Lent pages came back with the VM's end: the VMM's again. */
	for (i = 0; i < KSERV_MAX_SLOTS; i++)
		kserv_slot_release(&vm->slots[i]);
	kvfree(vm->vgic);
	kfree(vm);
}

static int kserv_vm_release(struct inode *inode, struct file *f)
{
	kserv_vm_destroy(f->private_data);
	return 0;
}


/* ------------------------------------------------------------------ memory slots */

/* The slot holding guest address `gpa`, if any. Caller holds vm->lock. */
static struct kserv_slot *kserv_slot_of(struct kserv_vm *vm, u64 gpa)
{
	unsigned int i;

	for (i = 0; i < KSERV_MAX_SLOTS; i++) {
		struct kserv_slot *s = &vm->slots[i];

		if (s->size && gpa >= s->gpa && gpa - s->gpa < s->size)
			return s;
	}
	return NULL;
}

static void kserv_slot_release(struct kserv_slot *s)
{
	unsigned long i;

	if (!s->pages)
		return;
	for (i = 0; i < s->size >> PAGE_SHIFT; i++)
		if (s->pages[i])
			unpin_user_page(s->pages[i]);
	kvfree(s->pages);
	memset(s, 0, sizeof(*s));
}

/*
 * A protected VM's memory becomes KCore's and the VM's page by page, and the host kernel must
 * never touch it: a fork would copy pinned private pages in the kernel (and the kernel's
 * access abort). So its slots must be memory a fork does not copy: shared mappings, or
 * private ones the VMM marked MADV_DONTFORK (as QEMU does for guest RAM). A guard for honest
 * VMMs: a host that undoes it later only crashes itself; the VM's pages stay unreadable.
 */
static bool kserv_uncopied_on_fork(unsigned long start, unsigned long len)
{
	struct mm_struct *mm = current->mm;
	unsigned long addr = start, end = start + len;
	bool ok = true;

	mmap_read_lock(mm);
	while (ok && addr < end) {
		struct vm_area_struct *vma = find_vma(mm, addr);

		ok = vma && vma->vm_start <= addr && (vma->vm_flags & (VM_SHARED | VM_DONTCOPY));
		if (ok)
			addr = vma->vm_end;
	}
	mmap_read_unlock(mm);
	return ok;
}

/*
 * KVM_SET_USER_MEMORY_REGION: guest RAM at [gpa, gpa + size) backed by the VMM's memory at
 * userspace_addr. KCore learns the range is RAM (its layout is fixed when the VM first runs);
 * pages are pinned and lent to the VM as the guest first touches them.
 */
static long kserv_set_memory(struct kserv_vm *vm, void __user *argp)
{
	struct kvm_userspace_memory_region m;
	struct kserv_slot *s;
	unsigned int i;
	long r;

	if (copy_from_user(&m, argp, sizeof(m)))
		return -EFAULT;
	if (m.slot >= KSERV_MAX_SLOTS || m.flags || !PAGE_ALIGNED(m.guest_phys_addr) ||
	    !PAGE_ALIGNED(m.memory_size) || !PAGE_ALIGNED(m.userspace_addr) ||
	    m.guest_phys_addr + m.memory_size < m.guest_phys_addr ||
	    m.guest_phys_addr + m.memory_size > KSERV_IPA_LIMIT ||
	    !access_ok((void __user *)(unsigned long)m.userspace_addr, m.memory_size))
		return -EINVAL;
	if (vm->protected && m.memory_size && !kserv_uncopied_on_fork(m.userspace_addr, m.memory_size)) {
		pr_warn_ratelimited("kserv: protected VM %lu: guest memory must be shared or MADV_DONTFORK\n", vm->vmid);
		return -EINVAL;
	}
	mutex_lock(&vm->lock);
	s = &vm->slots[m.slot];
	if (!m.memory_size || s->size) {
		/* Deleting or moving a slot: not before KCore can take pages back from a layout. */
		mutex_unlock(&vm->lock);
		return m.memory_size || !s->size ? -EINVAL : -EBUSY;
	}
	for (i = 0; i < KSERV_MAX_SLOTS; i++) {
		struct kserv_slot *o = &vm->slots[i];

		if (o->size && m.guest_phys_addr < o->gpa + o->size && o->gpa < m.guest_phys_addr + m.memory_size) {
			mutex_unlock(&vm->lock);
			return -EEXIST;
		}
	}
	if (vm->verified) {
		mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	/* One pointer per page, charged to the VMM; too large a slot is -ENOMEM, quietly. */
	s->pages = kvcalloc(m.memory_size >> PAGE_SHIFT, sizeof(struct page *),
			    GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!s->pages) {
		mutex_unlock(&vm->lock);
		return -ENOMEM;
	}
	r = kcore_call(KCORE_ADD_RAM_REGION, vm->vmid, m.guest_phys_addr, m.memory_size, NULL);
	if (r != KCORE_E_SUCCESS) {
		kvfree(s->pages);
		s->pages = NULL;
		mutex_unlock(&vm->lock);
		return kserv_core_errno(r);
	}
	s->gpa = m.guest_phys_addr;
	s->size = m.memory_size;
	s->uaddr = m.userspace_addr;
	mutex_unlock(&vm->lock);
	return 0;
}

/*
 * The VMM's page at guest address `ipa`, pinned and kept in its slot: a page kept there is
 * one KCore was given at that address (lent at a fault, or an image page). Caller holds
 * vm->lock.
 */
static struct page *kserv_slot_page(struct kserv_vm *vm, u64 ipa)
{
	struct kserv_slot *s = kserv_slot_of(vm, ipa);
	unsigned long idx;
	struct page *page;

	if (!s)
		return NULL;
	idx = (ipa - s->gpa) >> PAGE_SHIFT;
	if (!s->pages[idx]) {
		if (pin_user_pages_fast(s->uaddr + (idx << PAGE_SHIFT), 1, FOLL_WRITE | FOLL_LONGTERM, &page) != 1)
			return NULL;
		s->pages[idx] = page;
	}
	return s->pages[idx];
}

/* The VMM's page at `ipa`, pinned for a moment to be read (unpin_user_page after). */
static struct page *kserv_pin_page(struct kserv_vm *vm, u64 ipa)
{
	struct kserv_slot *s = kserv_slot_of(vm, ipa);
	struct page *page;

	if (!s || pin_user_pages_fast(s->uaddr + ((ipa - s->gpa) & PAGE_MASK), 1, 0, &page) != 1)
		return NULL;
	return page;
}

/* A KCore call that may need a table page from the VM's pool: donate and retry. */
static long kcore_call_donating(struct kserv_vm *vm, unsigned long fn, unsigned long a1,
				unsigned long a2, unsigned long a3, unsigned long a4, unsigned long *r1)
{
	long r = kcore_call4(fn, a1, a2, a3, a4, r1);

	while (r == KCORE_E_NO_MEMORY && !kserv_donate(vm))
		r = kcore_call4(fn, a1, a2, a3, a4, r1);
	return r;
}

/*
 * The first run of a protected VM: its kernel must be a signed kernel file (kcore-sign
 * sign-file), which the VMM loaded as the guest's kernel. vCPU 0's PC is the kernel's entry,
 * or QEMU's boot stub, decoded rather than run (the entry and the device tree's address are
 * its literals). The image's pages and the trailer's signature go to KCore, which owns them
 * from then on and checks the signature; vCPU 0 starts at the image's first byte with x0 =
 * the VMM's boot argument. Caller holds vm->lock. An error is final for the VM.
 */
static long kserv_protected_boot(struct kserv_vm *vm)
{
	u64 entry = vm->boot_pc, x0 = vm->boot_x0, bytes = 0, k, limit, n;
	struct page *page;
	void *p;
	long r;

	/* Pages only read here are pinned for the moment; the image's are kept (KCore's). */
	page = kserv_pin_page(vm, entry);
	if (!page) {
		pr_err("kserv: protected VM %lu: vCPU 0 starts at %#llx, outside its memory\n", vm->vmid, entry);
		return -ENOEXEC;
	}
	p = kmap_local_page(page);
	kserv_core_boot_stub(p, entry & ~PAGE_MASK, &entry, &x0);
	kunmap_local(p);
	unpin_user_page(page);
	if (entry & ~PAGE_MASK || !(page = kserv_pin_page(vm, entry))) {
		pr_err("kserv: protected VM %lu: its kernel's entry %#llx is not a page in its memory\n",
		       vm->vmid, entry);
		return -ENOEXEC;
	}
	p = kmap_local_page(page);
	limit = kserv_core_trailer_search_pages(p);
	kunmap_local(p);
	unpin_user_page(page);
	for (k = 1; k <= limit && !bytes; k++) {
		page = kserv_pin_page(vm, entry + (k << PAGE_SHIFT));
		if (!page)
			break;
		p = kmap_local_page(page);
		bytes = kserv_core_trailer_at(p, k, entry);
		kunmap_local(p);
		if (!bytes)
			unpin_user_page(page);
	}
	if (!bytes) {
		pr_err("kserv: protected VM %lu: the kernel at %#llx is not a signed kernel file (kcore-sign sign-file): refused\n",
		       vm->vmid, entry);
		return -ENOKEY;
	}
	/* `page` is the trailer, still pinned; the signature is its first 64 bytes (copied). */
	r = kcore_call4(KCORE_SET_BOOT_INFO, vm->vmid, entry, bytes, page_to_pfn(page), NULL);
	unpin_user_page(page);
	n = DIV_ROUND_UP(bytes, PAGE_SIZE);
	for (k = 0; r == KCORE_E_SUCCESS && k < n; k++) {
		page = kserv_slot_page(vm, entry + (k << PAGE_SHIFT));
		if (!page)
			return -EFAULT;
		r = kcore_call_donating(vm, KCORE_MAP_IMAGE_PAGE, vm->vmid, 0, k, page_to_pfn(page), NULL);
	}
	if (r == KCORE_E_SUCCESS)
		r = kcore_call(KCORE_VERIFY_VM, vm->vmid, x0, 0, NULL);
	if (r == KCORE_E_BAD_SIGNATURE) {
		pr_err("kserv: protected VM %lu: the kernel's signature (%llu bytes at %#llx) does not verify with KCore's key: refused\n",
		       vm->vmid, bytes, entry);
		return -EKEYREJECTED;
	}
	if (r != KCORE_E_SUCCESS) {
		pr_err("kserv: protected VM %lu: KCore refused its kernel (%ld)\n", vm->vmid, r);
		return kserv_core_errno(r);
	}
	pr_info("kserv: protected VM %lu: kernel of %llu bytes at %#llx verified; vCPU 0 starts there, x0 %#llx\n",
		vm->vmid, bytes, entry, x0);
	return 0;
}

static long kserv_back_page(struct kserv_vcpu *vcpu, u64 ipa)
{
	struct kserv_vm *vm = vcpu->vm;
	struct kserv_slot *s;
	struct page *page;
	bool lent;
	long r;

	mutex_lock(&vm->lock);
	s = kserv_slot_of(vm, ipa);
	lent = s && s->pages[(ipa - s->gpa) >> PAGE_SHIFT];
	page = kserv_slot_page(vm, ipa);
	if (!page) {
		mutex_unlock(&vm->lock);
		return -EFAULT;
	}
	r = kcore_call_donating(vm, KCORE_MAP_VM_PAGE, vm->vmid, vcpu->id, page_to_pfn(page), 0, NULL);
	mutex_unlock(&vm->lock);
	/*
	 * Two vCPUs faulted on the same page at once and the other one lent it first: KCore
	 * refuses to lend it again (it is the VM's already, mapped at this very gfn), and the
	 * fault is resolved; the guest just runs on.
	 */
	if (r == KCORE_E_DENIED && lent)
		return 0;
	return kserv_core_errno(r);
}


/* ------------------------------------------------------------------ the virtual GIC */

#define KSERV_GIC_DIST_SIZE 0x10000
#define KSERV_GIC_REDIST_SIZE 0x20000
#define KSERV_GIC_ADDR_UNDEF (~0ULL)	/* a frame not placed yet */
/* GICv2: a 4 KiB distributor (GIC architecture v2, 4.1.2); the CPU interface is where KCore
 * maps the GICV frame for every guest (docs/ABI.md, "On a GICv2 machine"), nowhere else. */
#define KSERV_GICV2_DIST_SIZE 0x1000
#define KSERV_GICV2_CPU_IPA 0x08010000ULL

bool kserv_gic_v2;
module_param_named(gic_v2, kserv_gic_v2, bool, 0444);
MODULE_PARM_DESC(gic_v2, "KCore runs on a GICv2 (it says so at load): VMs get an in-kernel GICv2, not a GICv3");

/* Is `ipa` the GIC's? Then its frame (-1 the distributor, else a redistributor) and offset. */
static bool kserv_gic_frame(struct kserv_vm *vm, u64 ipa, int *frame, u64 *offset)
{
	if (!vm->vgic)
		return false;
	if (vm->gic_v2) {
		/* Only the distributor: the CPU interface is KCore's (an access there that
		 * reaches the host is not the GIC's: RAM or the VMM's). */
		if (ipa < vm->gicd || ipa - vm->gicd >= KSERV_GICV2_DIST_SIZE)
			return false;
		*frame = -1;
		*offset = ipa - vm->gicd;
		return true;
	}
	if (ipa >= vm->gicd && ipa - vm->gicd < KSERV_GIC_DIST_SIZE) {
		*frame = -1;
		*offset = ipa - vm->gicd;
		return true;
	}
	if (ipa >= vm->gicr && ipa - vm->gicr < (u64)vm->gic_vcpus * KSERV_GIC_REDIST_SIZE) {
		*frame = (ipa - vm->gicr) / KSERV_GIC_REDIST_SIZE;
		*offset = (ipa - vm->gicr) % KSERV_GIC_REDIST_SIZE;
		return true;
	}
	return false;
}

static bool kserv_irq_pending(struct kserv_vcpu *vcpu)
{
	struct kserv_vm *vm = vcpu->vm;
	bool p;

	spin_lock(&vm->irq_lock);
	p = vm->vgic && kserv_core_vgic_pending(vm->vgic, vcpu->id);
	spin_unlock(&vm->irq_lock);
	return p;
}

/*
 * Before a run: fill the list registers that were free at the last exit (KCore reported
 * them) with the most urgent pending interrupts, as VCPU_RUN injection words in inject[]
 * (KCore places them as the run begins: one hypercall, not one per interrupt). Returns
 * VCPU_RUN's options: KCORE_RUN_LRS_IN_REGS, and bit 0 (an exit when the list registers
 * drain) if more is waiting than fits.
 */
#define KSERV_RUN_UNDERFLOW 1UL		/* VCPU_RUN option: more is waiting than fits */

static unsigned long kserv_fill_lrs(struct kserv_vcpu *vcpu, u64 inject[KSERV_HOST_LRS])
{
	struct kserv_vm *vm = vcpu->vm;
	unsigned long opts = KCORE_RUN_LRS_IN_REGS;
	unsigned int i, n = 0;

	for (i = 0; i < KSERV_HOST_LRS; i++)
		inject[i] = 0;
	if (!vm->vgic)
		return opts;
	spin_lock(&vm->irq_lock);
	for (i = 0; i < KSERV_HOST_LRS; i++) {
		u64 t;

		if (vcpu->lrs[i] >> 62)
			continue;	/* still pending or active in the guest */
		t = kserv_core_vgic_take(vm->vgic, vcpu->id);
		if (t == ~0ULL)
			break;
		/* take's INTID (31:0) and attributes (40:32) are the word's layout. */
		inject[n++] = KCORE_RUN_INJECT_VALID | t;
	}
	if (kserv_core_vgic_pending(vm->vgic, vcpu->id))
		opts |= KSERV_RUN_UNDERFLOW;
	spin_unlock(&vm->irq_lock);
	return opts;
}

/* VCPU_RUN refused the run and with it the injections: back to the model, pending again. */
static void kserv_unfill_lrs(struct kserv_vcpu *vcpu, const u64 inject[KSERV_HOST_LRS])
{
	struct kserv_vm *vm = vcpu->vm;
	unsigned int i;

	if (!vm->vgic)
		return;
	spin_lock(&vm->irq_lock);
	for (i = 0; i < KSERV_HOST_LRS; i++)
		if (inject[i])
			kserv_core_vgic_untake(vm->vgic, vcpu->id, inject[i] & 0xffffffff);
	spin_unlock(&vm->irq_lock);
}

/*
 * A run's exit reported the list registers (VCPU_IRQ_STATE's view, in x5..x7): the ones the
 * guest is done with go back to the GIC model, which may give a level interrupt again.
 */
static void kserv_lrs_reported(struct kserv_vcpu *vcpu, const u64 lrs[KSERV_HOST_LRS])
{
	struct kserv_vm *vm = vcpu->vm;
	unsigned int i;
	bool done = false;

	for (i = 0; i < KSERV_HOST_LRS; i++) {
		vcpu->lrs[i] = lrs[i];
		done |= lrs[i] && !(lrs[i] >> 62);
	}
	if (!done || !vm->vgic)
		return;
	spin_lock(&vm->irq_lock);
	for (i = 0; i < KSERV_HOST_LRS; i++)
		if (lrs[i] && !(lrs[i] >> 62))
			kserv_core_vgic_done(vm->vgic, vcpu->id, lrs[i] & 0xffffffff);
	spin_unlock(&vm->irq_lock);
}

/*
 * Something may now be pending for the VM's vCPUs: wake those asleep in WFI, and interrupt
 * those in the guest (a reschedule IPI to their CPU; KCore takes the guest out on any
 * physical interrupt), so their next entry fills the list registers.
 */
void kserv_kick(struct kserv_vm *vm)
{
	unsigned int i;

	wake_up_interruptible_all(&vm->wq);
	spin_lock(&vm->irq_lock);
	/* Only those in the guest need the IPI: one polling or asleep in WFI was woken above
	 * or sees the change itself. (in_guest is set before the list registers are filled
	 * under this lock, so a change made after that fill finds it set.) */
	for (i = 0; i < KSERV_MAX_VCPUS; i++)
		if (vm->running[i] && vm->running[i] != current && READ_ONCE(vm->in_guest[i]))
			kick_process(vm->running[i]);
	spin_unlock(&vm->irq_lock);
}

/* KVM_IRQ_LINE: an SPI's line from the VMM. */
static long kserv_irq_line(struct kserv_vm *vm, void __user *argp)
{
	struct kvm_irq_level l;
	u32 type, num;
	int target;

	if (copy_from_user(&l, argp, sizeof(l)))
		return -EFAULT;
	type = l.irq >> KVM_ARM_IRQ_TYPE_SHIFT;
	num = l.irq & KVM_ARM_IRQ_NUM_MASK;
	if (type != KVM_ARM_IRQ_TYPE_SPI || num < 32 || l.level > 1)
		return -EINVAL;
	spin_lock(&vm->irq_lock);
	if (!vm->vgic || num >= vm->nr_irqs) {
		spin_unlock(&vm->irq_lock);
		return -EINVAL;
	}
	target = kserv_core_vgic_spi(vm->vgic, num, l.level);
	spin_unlock(&vm->irq_lock);
	if (target >= 0)
		kserv_kick(vm);
	return 0;
}

struct kserv_gic_dev {
	struct kserv_vm *vm;
	struct file *vm_file;
};

static long kserv_gic_attr(struct kserv_gic_dev *dev, void __user *argp, bool set, bool has)
{
	struct kserv_vm *vm = dev->vm;
	struct kvm_device_attr a;
	u64 v = 0;
	long r = 0;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	switch (a.group) {
	case KVM_DEV_ARM_VGIC_GRP_ADDR:
		if (vm->gic_v2 ? a.attr != KVM_VGIC_V2_ADDR_TYPE_DIST && a.attr != KVM_VGIC_V2_ADDR_TYPE_CPU
			       : a.attr != KVM_VGIC_V3_ADDR_TYPE_DIST && a.attr != KVM_VGIC_V3_ADDR_TYPE_REDIST)
			return -ENXIO;
		break;
	case KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
	case KVM_DEV_ARM_VGIC_GRP_CTRL:
		if (a.group == KVM_DEV_ARM_VGIC_GRP_CTRL && a.attr != KVM_DEV_ARM_VGIC_CTRL_INIT)
			return -ENXIO;
		break;
	case KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
	case KVM_DEV_ARM_VGIC_GRP_CPU_REGS:
		/* GICv2 only (QEMU writes them at every reset of its kvm-arm-gic). */
		if (!vm->gic_v2)
			return -ENXIO;
		break;
	default:
		/* No GICv3 state save or restore groups: a VMM then skips them (QEMU
		 * registers a migration blocker). */
		return -ENXIO;
	}
	if (has)
		return 0;
	mutex_lock(&vm->lock);
	switch (a.group) {
	case KVM_DEV_ARM_VGIC_GRP_ADDR: {
		/* The distributor's address type differs between the two UAPIs (0 and 2). */
		bool dist = a.attr == (vm->gic_v2 ? KVM_VGIC_V2_ADDR_TYPE_DIST : KVM_VGIC_V3_ADDR_TYPE_DIST);

		if (set) {
			u64 *slot = dist ? &vm->gicd : &vm->gicr;
			/* As KVM: GICv3 frames 64 KiB aligned, GICv2 ones 4 KiB. */
			u64 align = vm->gic_v2 ? 0xfff : 0xffff;

			/* As KVM: set once, before the VM first runs (QEMU places the frames
			 * after CTRL_INIT, kvmtool before). */
			if (copy_from_user(&v, (void __user *)(unsigned long)a.addr, sizeof(v)))
				r = -EFAULT;
			else if (v & align || v == KSERV_GIC_ADDR_UNDEF || v >= KSERV_IPA_LIMIT)
				r = -EINVAL;
			else if (vm->gic_v2 && !dist && v != KSERV_GICV2_CPU_IPA)
				r = -EINVAL;	/* KCore puts the guest's CPU interface there alone */
			else if (vm->verified)
				r = -EBUSY;
			else if (*slot != KSERV_GIC_ADDR_UNDEF)
				r = -EEXIST;
			else
				*slot = v;
		} else {
			v = dist ? vm->gicd : vm->gicr;
			if (copy_to_user((void __user *)(unsigned long)a.addr, &v, sizeof(v)))
				r = -EFAULT;
		}
		break;
	}
	case KVM_DEV_ARM_VGIC_GRP_NR_IRQS: {
		u32 n;

		if (!set) {
			r = put_user(vm->nr_irqs, (u32 __user *)(unsigned long)a.addr);
			break;
		}
		if (get_user(n, (u32 __user *)(unsigned long)a.addr))
			r = -EFAULT;
		else if (vm->vgic || n < 64 || n > 1024 || n % 32)
			r = vm->vgic ? -EBUSY : -EINVAL;
		else
			vm->nr_irqs = n;
		break;
	}
	case KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
	case KVM_DEV_ARM_VGIC_GRP_CPU_REGS: {
		/*
		 * A GICv2 register as CPU `cpu` sees it (KVM API, arm-vgic.rst: a 32-bit value,
		 * the CPU in bits 39:32 of attr, the offset in 31:0). The distributor's are the
		 * model's, read and written as that CPU's own accesses. The CPU interface's state
		 * (GICC_CTLR, PMR, BPR, APRs: GICH_VMCR and GICH_APR) is KCore's, switched with
		 * the vCPU and not shown to the host: writes are accepted and have no effect
		 * (each vCPU's interface starts from its reset state), reads give 0.
		 */
		u32 cpu = (a.attr & KVM_DEV_ARM_VGIC_CPUID_MASK) >> KVM_DEV_ARM_VGIC_CPUID_SHIFT, val = 0;
		u64 off = a.attr & KVM_DEV_ARM_VGIC_OFFSET_MASK, w;
		u32 __user *uval = (u32 __user *)(unsigned long)a.addr;

		if (a.attr & ~(KVM_DEV_ARM_VGIC_CPUID_MASK | KVM_DEV_ARM_VGIC_OFFSET_MASK) || off & 3 ||
		    off >= (a.group == KVM_DEV_ARM_VGIC_GRP_DIST_REGS ? KSERV_GICV2_DIST_SIZE : 0x2000))
			r = -EINVAL;
		else if (!vm->vgic)
			r = -EBUSY;	/* not initialised yet (CTRL_INIT) */
		else if (cpu >= vm->gic_vcpus)
			r = -EINVAL;
		else if (set && get_user(val, uval))
			r = -EFAULT;
		if (r || a.group == KVM_DEV_ARM_VGIC_GRP_CPU_REGS)
			goto regs_done;
		w = val;
		spin_lock(&vm->irq_lock);
		r = kserv_core_vgic_v2_mmio(vm->vgic, cpu, off, 4, set, &w);
		spin_unlock(&vm->irq_lock);
		val = w;
regs_done:
		if (!r && !set && put_user(val, uval))
			r = -EFAULT;
		break;
	}
	case KVM_DEV_ARM_VGIC_GRP_CTRL: {
		/* CTRL_INIT: the GIC for the vCPUs created so far. */
		void *g;

		if (!set) {
			r = -ENXIO;
			break;
		}
		if (vm->vgic)
			break;
		g = kvzalloc(kserv_core_vgic_size(), GFP_KERNEL);
		if (!g) {
			r = -ENOMEM;
			break;
		}
		/* A redistributor (GICv2: a CPU interface) for each vCPU id up to the highest
		 * created. */
		if (vm->gic_v2)
			r = kserv_core_vgic_init_v2(g, fls(vm->vcpus), vm->nr_irqs ? vm->nr_irqs : 64);
		else
			r = kserv_core_vgic_init(g, fls(vm->vcpus), vm->nr_irqs ? vm->nr_irqs : 64);
		if (r) {
			kvfree(g);
			break;
		}
		if (!vm->nr_irqs)
			vm->nr_irqs = 64;
		vm->gic_vcpus = fls(vm->vcpus);
		spin_lock(&vm->irq_lock);
		vm->vgic = g;
		spin_unlock(&vm->irq_lock);
		break;
	}
	}
	mutex_unlock(&vm->lock);
	return r;
}

static long kserv_gic_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case KVM_SET_DEVICE_ATTR:
		return kserv_gic_attr(f->private_data, (void __user *)arg, true, false);
	case KVM_GET_DEVICE_ATTR:
		return kserv_gic_attr(f->private_data, (void __user *)arg, false, false);
	case KVM_HAS_DEVICE_ATTR:
		return kserv_gic_attr(f->private_data, (void __user *)arg, false, true);
	default:
		return -ENOTTY;
	}
}

static int kserv_gic_release(struct inode *inode, struct file *f)
{
	struct kserv_gic_dev *dev = f->private_data;

	fput(dev->vm_file);
	kfree(dev);
	return 0;
}

static const struct file_operations kserv_gic_fops = {
	.owner = THIS_MODULE,
	.release = kserv_gic_release,
	.unlocked_ioctl = kserv_gic_ioctl,
	.llseek = noop_llseek,
};

/*
 * KVM_CREATE_DEVICE: the VM's GIC (one), of the kind the machine's GIC lets KCore give its
 * guests: a GICv3 on a GICv3, a GICv2 on a GICv2 (KCORE_VERSION says which). The other kind
 * is refused with ENODEV, test mode included, so a VMM probing for both finds the right one.
 */
static long kserv_create_device(struct file *vm_file, void __user *argp)
{
	struct kserv_vm *vm = vm_file->private_data;
	struct kvm_create_device cd;
	struct kserv_gic_dev *dev;
	int fd;

	if (copy_from_user(&cd, argp, sizeof(cd)))
		return -EFAULT;
	if (cd.type != (kserv_gic_v2 ? KVM_DEV_TYPE_ARM_VGIC_V2 : KVM_DEV_TYPE_ARM_VGIC_V3) ||
	    cd.flags & ~KVM_CREATE_DEVICE_TEST)
		return -ENODEV;
	if (cd.flags & KVM_CREATE_DEVICE_TEST)
		return 0;
	mutex_lock(&vm->lock);
	if (vm->gic_created) {
		mutex_unlock(&vm->lock);
		return -EEXIST;
	}
	vm->gic_created = true;
	vm->gic_v2 = kserv_gic_v2;
	mutex_unlock(&vm->lock);
	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	fd = -ENOMEM;
	if (dev) {
		dev->vm = vm;
		dev->vm_file = get_file(vm_file);
		fd = anon_inode_getfd(kserv_gic_v2 ? "kvm-arm-vgic-v2" : "kvm-vgic-v3", &kserv_gic_fops, dev,
				      O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			fput(vm_file);
			kfree(dev);
		}
	}
	if (fd < 0) {
		/* No device after all: a later KVM_CREATE_DEVICE may try again. */
		mutex_lock(&vm->lock);
		vm->gic_created = false;
		mutex_unlock(&vm->lock);
		return fd;
	}
	cd.fd = fd;
	if (copy_to_user(argp, &cd, sizeof(cd)))
		return -EFAULT;
	return 0;
}

/* ------------------------------------------------------------------ vCPU registers */

#define PLACE_KCORE 1
#define PLACE_KCORE128 2
#define PLACE_MPIDR 3
#define PLACE_ZERO_SPSR 4
#define PLACE_COUNTER 5

/*
 * KVM_GET/SET_ONE_REG of a protected vCPU's state (KCore's register number `n`): its
 * registers never leave KCore, so the VMM sees the state KCore starts the vCPU in: vCPU 0 at
 * its kernel with x0 = the boot argument, which the VMM sets before the first run (PC and
 * x0; QEMU points PC at its boot stub, which kserv decodes); every other register reads as
 * KCore's reset value, and a write is accepted and has no effect (the VMM's reset writes
 * them all). After the first run nothing changes any more, and nothing of the guest's is
 * shown: stock QEMU reads the registers on every guest-initiated virtio reset (to learn the
 * guest's endianness: SCTLR_EL1.EE reads 0, little-endian) and writes them back, and stops
 * the VM if either is refused. The reply goes to v[0] (v[1]: a 128-bit register's high half).
 */
static void kserv_protected_reg(struct kserv_vcpu *vcpu, unsigned int n, unsigned long v[2], bool set)
{
	struct kserv_vm *vm = vcpu->vm;

	mutex_lock(&vm->lock);
	if (set && vm->verified) {
		/* Accepted, no effect: the vCPU is KCore's. */
	} else if (set) {
		if (vcpu->id == 0 && n == 32)
			vm->boot_pc = v[0];
		else if (vcpu->id == 0 && n == 0)
			vm->boot_x0 = v[0];
	} else {
		v[1] = 0;
		if (vcpu->id == 0 && n == 32)
			v[0] = vm->boot_pc;
		else if (vcpu->id == 0 && n == 0)
			v[0] = vm->boot_x0;
		else if (n == 33)
			v[0] = 0x3c5;		/* PSTATE: EL1h, D, A, I, F masked */
		else if (n == 37)
			v[0] = 0x30d00800;	/* SCTLR_EL1: MMU and caches off, RES1 bits */
		else
			v[0] = 0;
	}
	mutex_unlock(&vm->lock);
}

static long kserv_one_reg(struct kserv_vcpu *vcpu, void __user *argp, bool set)
{
	struct kvm_one_reg reg;
	u64 place, lo, hi;
	unsigned long v[2] = { 0, 0 };
	unsigned long size;
	long r = KCORE_E_SUCCESS;

	if (copy_from_user(&reg, argp, sizeof(reg)))
		return -EFAULT;
	place = kserv_core_reg_place(reg.id);
	if (!place)
		return -ENOENT;
	size = 1UL << ((reg.id >> 52) & 0xf);
	lo = place & 0xffff;
	hi = (place >> 16) & 0xffff;
	if (set && copy_from_user(v, (void __user *)(unsigned long)reg.addr, size))
		return -EFAULT;
	if (vcpu->vm->protected && (place >> 56 == PLACE_KCORE || place >> 56 == PLACE_KCORE128)) {
		kserv_protected_reg(vcpu, lo, v, set);
		goto reply;
	}
	switch (place >> 56) {
	case PLACE_KCORE:
		if (set)
			r = kcore_call4(KCORE_SET_VCPU_REG, vcpu->vm->vmid, vcpu->id, lo, v[0], NULL);
		else
			r = kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, lo, 0, &v[0]);
		break;
	case PLACE_KCORE128:
		if (set) {
			r = kcore_call4(KCORE_SET_VCPU_REG, vcpu->vm->vmid, vcpu->id, lo, v[0], NULL);
			if (r == KCORE_E_SUCCESS)
				r = kcore_call4(KCORE_SET_VCPU_REG, vcpu->vm->vmid, vcpu->id, hi, v[1], NULL);
		} else {
			r = kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, lo, 0, &v[0]);
			if (r == KCORE_E_SUCCESS)
				r = kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, hi, 0, &v[1]);
		}
		break;
	case PLACE_MPIDR:
		/* KCore gives vCPU n MPIDR_EL1 = RES1 bit 31 | Aff0 n. */
		if (set && v[0] != ((1UL << 31) | vcpu->id))
			return -EINVAL;
		v[0] = (1UL << 31) | vcpu->id;
		break;
	case PLACE_ZERO_SPSR:
		if (set && v[0])
			return -EINVAL;
		v[0] = 0;
		break;
	case PLACE_COUNTER:
		/* Guests run with CNTVOFF_EL2 = 0, as the host does: the guest's virtual count is
		 * this CPU's. KCore keeps no per-VM offset, so a VMM cannot move it. */
		if (set)
			return -EINVAL;
		v[0] = read_sysreg(cntvct_el0);
		break;
	}
	if (r != KCORE_E_SUCCESS)
		return kserv_core_errno(r);
reply:
	if (!set && copy_to_user((void __user *)(unsigned long)reg.addr, v, size))
		return -EFAULT;
	return 0;
}

/*
 * KVM_GET_REG_LIST: every id GET/SET_ONE_REG accept. A list too small for them gets E2BIG with
 * the count needed in n (a VMM asks with n = 0 first).
 */
static long kserv_reg_list(void __user *argp)
{
	struct kvm_reg_list __user *user = argp;
	u64 n, want = kserv_core_reg_list_len(), i;

	if (get_user(n, &user->n))
		return -EFAULT;
	if (put_user(want, &user->n))
		return -EFAULT;
	if (n < want)
		return -E2BIG;
	for (i = 0; i < want; i++)
		if (put_user(kserv_core_reg_list_at(i), &user->reg[i]))
			return -EFAULT;
	return 0;
}

/* ------------------------------------------------------------------ running */

/*
 * A guest WFI: sleep until an interrupt is pending for the vCPU (never, without a virtual
 * GIC), its timer's deadline (a counter value; ~0 for none), or a signal. Returns whether it
 * slept (rather than finding the interrupt while polling).
 */
static unsigned int halt_poll_us = 50;
module_param(halt_poll_us, uint, 0644);
MODULE_PARM_DESC(halt_poll_us, "how long a vCPU in WFI polls for an interrupt before it sleeps (microseconds)");

static bool kserv_wait(struct kserv_vcpu *vcpu, u64 deadline)
{
	struct kserv_vm *vm = vcpu->vm;
	u64 now = read_sysreg(cntvct_el0), freq = read_sysreg(cntfrq_el0);
	u64 poll_end = now + mul_u64_u64_div_u64(READ_ONCE(halt_poll_us), freq, USEC_PER_SEC);

	/*
	 * Poll a little first, as KVM does: an interrupt that comes within microseconds (an
	 * IPI answered at once, a device completing) then costs no sleep and wake-up.
	 */
	while (now < poll_end && now < deadline) {
		if (kserv_irq_pending(vcpu) || signal_pending(current))
			return false;
		if (need_resched())
			break;		/* someone else wants the CPU: sleep now */
		cpu_relax();
		now = read_sysreg(cntvct_el0);
	}

	if (deadline == ~0ULL) {
		wait_event_interruptible(vm->wq, kserv_irq_pending(vcpu));
		return true;
	}
	if (deadline <= now)
		return false;
	wait_event_interruptible_hrtimeout(vm->wq, kserv_irq_pending(vcpu),
					   ns_to_ktime(mul_u64_u64_div_u64(deadline - now, NSEC_PER_SEC, freq)));
	return true;
}

static bool trace_exits;
module_param(trace_exits, bool, 0644);
MODULE_PARM_DESC(trace_exits, "keep each vCPU's last exits; print them when KVM_RUN ends on a signal");

static void kserv_trace_dump(struct kserv_vcpu *vcpu)
{
	unsigned long pc = 0, ctl = 0, cval = 0, pstate = 0;
	unsigned int i;

	kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, 32, 0, &pc);
	kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, 33, 0, &pstate);
	kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, 57, 0, &ctl);
	kcore_call4(KCORE_GET_VCPU_REG, vcpu->vm->vmid, vcpu->id, 58, 0, &cval);
	pr_info("kserv: vm %lu vcpu %u: pc %lx pstate %lx cntv_ctl %lx cval %lx now %llx pending %d\n",
		vcpu->vm->vmid, vcpu->id, pc, pstate, ctl, cval, read_sysreg(cntvct_el0),
		kserv_irq_pending(vcpu));
	for (i = 0; i < ARRAY_SIZE(vcpu->trace); i++) {
		unsigned long *t = vcpu->trace[(vcpu->trace_pos + i) % ARRAY_SIZE(vcpu->trace)];

		pr_info("kserv:   exit %lx %lx %lx %lx\n", t[0], t[1], t[2], t[3]);
	}
	if (!vcpu->vm->vgic)
		return;
	/* The list registers (what the guest finished goes back to the model, as in a sync)
	 * and every interrupt of the model that is not idle. */
	{
		struct arm_smccc_1_2_regs args = { .a0 = KCORE_VCPU_IRQ_STATE, .a1 = vcpu->vm->vmid,
						   .a2 = vcpu->id };
		struct arm_smccc_1_2_regs res;
		unsigned long lrs[4];

		arm_smccc_1_2_hvc(&args, &res);
		lrs[0] = res.a1;
		lrs[1] = res.a2;
		lrs[2] = res.a3;
		lrs[3] = res.a4;
		pr_info("kserv:   lrs %lx %lx %lx %lx (status %ld)\n", lrs[0], lrs[1], lrs[2], lrs[3],
			(long)res.a0);
		spin_lock(&vcpu->vm->irq_lock);
		for (i = 0; (long)res.a0 == KCORE_E_SUCCESS && i < KSERV_HOST_LRS; i++)
			if (lrs[i] && !(lrs[i] >> 62))
				kserv_core_vgic_done(vcpu->vm->vgic, vcpu->id, lrs[i] & 0xffffffff);
		for (i = 0; i < vcpu->vm->nr_irqs; i++) {
			u64 d = kserv_core_vgic_irq_debug(vcpu->vm->vgic, vcpu->id, i);

			if (d != ~0ULL && (d & 0x1e))
				pr_info("kserv:   irq %u: %llx\n", i, d);
		}
		spin_unlock(&vcpu->vm->irq_lock);
	}
}

static long kserv_vcpu_run_loop(struct kserv_vcpu *vcpu)
{
	struct kserv_vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;
	unsigned long x[4];
	u64 inject[KSERV_HOST_LRS], lrs[KSERV_HOST_LRS];
	u64 value = 0;
	long r;

	mutex_lock(&vm->lock);
	if (vm->vgic && (vm->gicd == KSERV_GIC_ADDR_UNDEF || vm->gicr == KSERV_GIC_ADDR_UNDEF)) {
		/* As KVM: a GIC whose frames were never placed cannot run. */
		mutex_unlock(&vm->lock);
		return -ENXIO;
	}
	if (!vm->verified && vm->protected) {
		/* Its kernel, signed, becomes the VM's; a refusal is final (the pages it took are
		 * the VM's: nothing here may read them again), for every vCPU. */
		r = vm->boot_error ? vm->boot_error : kserv_protected_boot(vm);
		if (r) {
			vm->boot_error = r;
			mutex_unlock(&vm->lock);
			return r;
		}
		vm->verified = true;
	}
	if (!vm->verified) {
		/* The first run ends the VM's set-up: KCore fixes its layout. */
		r = kcore_call(KCORE_VERIFY_VM, vm->vmid, 0, 0, NULL);
		if (r != KCORE_E_SUCCESS) {
			mutex_unlock(&vm->lock);
			return kserv_core_errno(r);
		}
		vm->verified = true;
	}
	mutex_unlock(&vm->lock);
	if (vcpu->mmio_read) {
		/* The VMM answered the MMIO read in run->mmio.data (little-endian). */
		memcpy(&value, run->mmio.data, sizeof(value));
		vcpu->mmio_read = false;
	}
	for (;;) {
		unsigned long opts;
		int frame;
		u64 off;

		/* kvm_run.immediate_exit is byte 1 of the UAPI layout (newer kernels rename the
		 * field for their own code, so it is read by offset). */
		if (READ_ONCE(((u8 *)run)[1]) || signal_pending(current)) {
			if (trace_exits)
				kserv_trace_dump(vcpu);
			run->exit_reason = KVM_EXIT_INTR;
			return -EINTR;
		}
		/*
		 * in_guest: kserv_kick interrupts this thread's CPU (the guest leaves on any
		 * physical interrupt) only from here to the exit. A kick that lands before the
		 * guest is entered is taken by the host first and the guest runs on without it
		 * until its next exit (its WFI, or the host's next tick). Masking interrupts over
		 * this stretch would close that gap, but with a KCore slow to enter the guest (the
		 * debug build under emulation) the host's tick was then always due on entry and
		 * the guest never ran; left for later.
		 */
		WRITE_ONCE(vm->in_guest[vcpu->id], true);
		smp_mb();	/* before the fill reads the model: see kserv_kick */
		opts = kserv_fill_lrs(vcpu, inject);
		r = kcore_run(vm->vmid, vcpu->id, value, opts, inject, x, lrs);
		WRITE_ONCE(vm->in_guest[vcpu->id], false);
		if (r != KCORE_E_SUCCESS) {
			/* Not run, nothing injected (KCore takes all or none). */
			kserv_unfill_lrs(vcpu, inject);
		} else {
			kserv_lrs_reported(vcpu, lrs);
		}
		value = 0;
		if (r == KCORE_E_NO_MEMORY) {
			/* KCore needs table pages first (on a GICv2: those mapping its virtual CPU
			 * interface into the VM, at the VM's first run): donate one, go round. */
			mutex_lock(&vm->lock);
			r = kserv_donate(vm);
			mutex_unlock(&vm->lock);
			if (r)
				return r;
			continue;
		}
		if (r == KCORE_E_BAD_STATE) {
			/* Off (waits for the guest's CPU_ON) or running elsewhere: wait. */
			schedule_timeout_interruptible(msecs_to_jiffies(10));
			continue;
		}
		if (r != KCORE_E_SUCCESS)
			return kserv_core_errno(r);
		if (trace_exits) {
			vcpu->nexits[min(x[0], 9UL)]++;
			memcpy(vcpu->trace[vcpu->trace_pos], x, sizeof(vcpu->trace[0]));
			vcpu->trace_pos = (vcpu->trace_pos + 1) % ARRAY_SIZE(vcpu->trace);
		}
		switch (x[0]) {
		case 1: /* MMIO: x1 IPA, x2 size_log2 << 1 | write, x3 the value written */
			if (kserv_gic_frame(vm, x[1], &frame, &off)) {
				/* The GIC is emulated here; a refused access reads as zero. */
				u64 v = x[3];

				spin_lock(&vm->irq_lock);
				if (vm->gic_v2 ? kserv_core_vgic_v2_mmio(vm->vgic, vcpu->id, off, 1U << (x[2] >> 1),
									 x[2] & 1, &v)
					       : kserv_core_vgic_mmio(vm->vgic, frame, off, 1U << (x[2] >> 1),
								      x[2] & 1, &v))
					v = 0;
				spin_unlock(&vm->irq_lock);
				value = x[2] & 1 ? 0 : v;
				if (x[2] & 1)
					kserv_kick(vm);	/* an enable or pending bit, or a GICv2 SGI */
				break;
			}
			/* A write a VMM asked to hear of through an eventfd: signalled, no exit. */
			if ((x[2] & 1) && kserv_ioeventfd_signal(vm, x[1], 1U << (x[2] >> 1), x[3]))
				break;
			run->exit_reason = KVM_EXIT_MMIO;
			run->mmio.phys_addr = x[1];
			run->mmio.len = 1U << (x[2] >> 1);
			run->mmio.is_write = x[2] & 1;
			memset(run->mmio.data, 0, sizeof(run->mmio.data));
			if (run->mmio.is_write)
				memcpy(run->mmio.data, &x[3], run->mmio.len);
			else
				vcpu->mmio_read = true;
			return 0;
		case 2: /* a page fault on RAM: back it and go on */
			r = kserv_back_page(vcpu, x[1]);
			if (r)
				return r;
			break;
		case 3: /* WFI/WFE: x1 the guest timer's deadline */
			/* The exit's report already gave back what the guest finished with (a
			 * level interrupt it deactivated may be due again): wait only if nothing
			 * is pending for it now. */
			if (kserv_irq_pending(vcpu))
				vcpu->nwaits[0]++;
			else
				vcpu->nwaits[kserv_wait(vcpu, x[1]) ? 2 : 1]++;
			break;
		case 8: /* an SGI: x1 the ICC_SGI1R_EL1 value */
			if (vm->vgic) {
				u64 targets;

				spin_lock(&vm->irq_lock);
				targets = kserv_core_vgic_sgi(vm->vgic, vcpu->id, x[1]);
				spin_unlock(&vm->irq_lock);
				if (targets)
					kserv_kick(vm);
			}
			break;
		case 5: /* the guest powered off */
			run->exit_reason = KVM_EXIT_SYSTEM_EVENT;
			run->system_event.type = KVM_SYSTEM_EVENT_SHUTDOWN;
			run->system_event.ndata = 0;
			return 0;
		case 9: /* a system register the host emulates: none yet, reads as zero */
			break;
		default: /* a host interrupt, vCPUs starting or stopping: go round again */
			cond_resched();
			break;
		}
	}
}

/* KVM_RUN, with the thread known as the vCPU's while it runs (for kserv_kick). */
static long kserv_vcpu_run(struct kserv_vcpu *vcpu)
{
	struct kserv_vm *vm = vcpu->vm;
	long r;

	spin_lock(&vm->irq_lock);
	if (vm->running[vcpu->id]) {
		/* As KVM: one thread runs a vCPU at a time. */
		spin_unlock(&vm->irq_lock);
		return -EBUSY;
	}
	vm->running[vcpu->id] = current;
	spin_unlock(&vm->irq_lock);
	r = kserv_vcpu_run_loop(vcpu);
	spin_lock(&vm->irq_lock);
	vm->running[vcpu->id] = NULL;
	spin_unlock(&vm->irq_lock);
	return r;
}

static int kserv_vcpu_release(struct inode *inode, struct file *f)
{
	struct kserv_vcpu *vcpu = f->private_data;

	if (trace_exits)
		pr_info("kserv: vm %lu vcpu %u exits: mmio %lu fault %lu wfi %lu irq %lu off %lu on %lu cpu-off %lu sgi %lu sysreg %lu; wfi refilled %lu polled %lu slept %lu\n",
			vcpu->vm->vmid, vcpu->id, vcpu->nexits[1], vcpu->nexits[2], vcpu->nexits[3],
			vcpu->nexits[4], vcpu->nexits[5], vcpu->nexits[6], vcpu->nexits[7],
			vcpu->nexits[8], vcpu->nexits[9], vcpu->nwaits[0], vcpu->nwaits[1], vcpu->nwaits[2]);
	fput(vcpu->vm_file);
	__free_page(vcpu->run_page);
	kfree(vcpu);
	return 0;
}

/* KVM_ARM_VCPU_INIT: the generic target; POWER_OFF (KCore starts every vCPU but 0 off) and
 * PSCI 0.2 (KCore's PSCI is 1.1) are what a guest gets anyway; no other feature is offered. */
static long kserv_vcpu_init(struct kserv_vcpu *vcpu, void __user *argp)
{
	struct kvm_vcpu_init init;
	unsigned int i;

	if (copy_from_user(&init, argp, sizeof(init)))
		return -EFAULT;
	if (init.target != KVM_ARM_TARGET_GENERIC_V8)
		return -EINVAL;
	if (init.features[0] & ~((1U << KVM_ARM_VCPU_POWER_OFF) | (1U << KVM_ARM_VCPU_PSCI_0_2)))
		return -EINVAL;
	for (i = 1; i < ARRAY_SIZE(init.features); i++)
		if (init.features[i])
			return -EINVAL;
	return 0;
}

static long kserv_vcpu_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct kserv_vcpu *vcpu = f->private_data;

	switch (cmd) {
	case KVM_RUN:
		return arg ? -EINVAL : kserv_vcpu_run(vcpu);
	case KVM_ARM_VCPU_INIT:
		return kserv_vcpu_init(vcpu, (void __user *)arg);
	case KVM_SET_ONE_REG:
		return kserv_one_reg(vcpu, (void __user *)arg, true);
	case KVM_GET_ONE_REG:
		return kserv_one_reg(vcpu, (void __user *)arg, false);
	case KVM_GET_REG_LIST:
		return kserv_reg_list((void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int kserv_vcpu_mmap(struct file *f, struct vm_area_struct *vma)
{
	struct kserv_vcpu *vcpu = f->private_data;

	if (vma->vm_pgoff || vma->vm_end - vma->vm_start != PAGE_SIZE)
		return -EINVAL;
	return vm_insert_page(vma, vma->vm_start, vcpu->run_page);
}

static const struct file_operations kserv_vcpu_fops = {
	.owner = THIS_MODULE,
	.release = kserv_vcpu_release,
	.unlocked_ioctl = kserv_vcpu_ioctl,
	.mmap = kserv_vcpu_mmap,
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
	vcpu->run_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!vcpu->run_page) {
		kfree(vcpu);
		return -ENOMEM;
	}
	vcpu->run = page_address(vcpu->run_page);
	mutex_lock(&vm->lock);
	if (vm->vgic) {
		/* As KVM: the GIC was sized for the vCPUs that existed at CTRL_INIT. */
		mutex_unlock(&vm->lock);
		__free_page(vcpu->run_page);
		kfree(vcpu);
		return -EBUSY;
	}
	/* Its context page comes from the VM's pool: top it up when KCore asks for more. */
	r = kcore_call(KCORE_REGISTER_VCPU, vm->vmid, id, 0, NULL);
	if (r == KCORE_E_NO_MEMORY) {
		r = kserv_donate(vm);
		if (!r)
			r = kcore_call(KCORE_REGISTER_VCPU, vm->vmid, id, 0, NULL);
		else
			r = KCORE_E_NO_MEMORY;
	}
	if (r != KCORE_E_SUCCESS) {
		mutex_unlock(&vm->lock);
		__free_page(vcpu->run_page);
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
		__free_page(vcpu->run_page);
		kfree(vcpu);
	}
	return fd;
}

/* KVM_CHECK_EXTENSION (system and VM fds): what this module really does. */
static long kserv_check_extension(unsigned long cap)
{
	switch (cap) {
	case KVM_CAP_USER_MEMORY:
	case KVM_CAP_DESTROY_MEMORY_REGION_WORKS:
	case KVM_CAP_JOIN_MEMORY_REGIONS_WORKS:
	case KVM_CAP_INTERNAL_ERROR_DATA:
	case KVM_CAP_IOEVENTFD:
	case KVM_CAP_IOEVENTFD_ANY_LENGTH:
	case KVM_CAP_DEVICE_CTRL:
	case KVM_CAP_IRQCHIP:
	case KVM_CAP_IRQFD:
	case KVM_CAP_ONE_REG:
	case KVM_CAP_ARM_PSCI_0_2:
	case KVM_CAP_IMMEDIATE_EXIT:
		return 1;
	case KVM_CAP_NR_VCPUS:
	case KVM_CAP_MAX_VCPUS:
		return KSERV_MAX_VCPUS;
	case KVM_CAP_NR_MEMSLOTS:
		return KSERV_MAX_SLOTS;
	default:
		return 0;
	}
}

static long kserv_vm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case KVM_CREATE_VCPU:
		return kserv_create_vcpu(f, arg);
	case KVM_SET_USER_MEMORY_REGION:
		return kserv_set_memory(f->private_data, (void __user *)arg);
	case KVM_CREATE_DEVICE:
		return kserv_create_device(f, (void __user *)arg);
	case KVM_IRQ_LINE:
		return kserv_irq_line(f->private_data, (void __user *)arg);
	case KVM_IOEVENTFD:
		return kserv_ioeventfd(f->private_data, (void __user *)arg);
	case KVM_IRQFD:
		return kserv_irqfd(f->private_data, (void __user *)arg);
	case KVM_ARM_PREFERRED_TARGET: {
		struct kvm_vcpu_init init = { .target = KVM_ARM_TARGET_GENERIC_V8 };

		return copy_to_user((void __user *)arg, &init, sizeof(init)) ? -EFAULT : 0;
	}
	case KVM_CHECK_EXTENSION:
		return kserv_check_extension(arg);
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

/*
 * KVM_CREATE_VM's type bit for a protected VM (upstream's KVM_VM_TYPE_ARM_PROTECTED). Stock
 * QEMU never asks for it: with kserv.protected_vms=1 every VM is protected (SeKVM's model).
 */
#define KSERV_VM_TYPE_ARM_PROTECTED (1UL << 31)
static bool protected_vms;
module_param(protected_vms, bool, 0644);
MODULE_PARM_DESC(protected_vms, "every new VM is protected (its memory and registers KCore's, its kernel signed), as if the VMM asked for KVM_VM_TYPE_ARM_PROTECTED");

unsigned int kserv_root_order;

static long kserv_create_vm(unsigned long type)
{
	struct kserv_vm *vm;
	struct page *root;
	unsigned long vmid, n = 1UL << kserv_root_order;
	long r;
	int i, fd;

	/* Type 0: the default IPA size (IPA-size requests come later); bit 31 a protected VM. */
	if (type & ~KSERV_VM_TYPE_ARM_PROTECTED)
		return -EINVAL;
	vm = kzalloc(sizeof(*vm), GFP_KERNEL);
	/* The root's pages, contiguous and aligned to their number (a buddy block is). */
	root = alloc_pages(GFP_KERNEL | __GFP_ZERO, kserv_root_order);
	if (!vm || !root) {
		kfree(vm);
		if (root)
			__free_pages(root, kserv_root_order);
		return -ENOMEM;
	}
	/* Each page comes back to the kernel on its own (vm->pages). */
	split_page(root, kserv_root_order);
	mutex_init(&vm->lock);
	spin_lock_init(&vm->irq_lock);
	INIT_LIST_HEAD(&vm->ioeventfds);
	INIT_LIST_HEAD(&vm->irqfds);
	vm->gicd = KSERV_GIC_ADDR_UNDEF;
	vm->gicr = KSERV_GIC_ADDR_UNDEF;
	init_waitqueue_head(&vm->wq);
	vm->protected = (type & KSERV_VM_TYPE_ARM_PROTECTED) || READ_ONCE(protected_vms);
	r = kcore_call(KCORE_REGISTER_VM, page_to_pfn(root),
		       vm->protected ? KCORE_VM_PROTECTED : KCORE_VM_NON_PROTECTED, 0, &vmid);
	if (r != KCORE_E_SUCCESS) {
		for (i = 0; i < n; i++)
			__free_page(root + i);
		kfree(vm);
		return kserv_core_errno(r);
	}
	vm->vmid = vmid;
	for (i = 0; i < n; i++)
		vm->pages[vm->npages++] = root + i;
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
	case KVM_GET_VCPU_MMAP_SIZE:
		return arg ? -EINVAL : PAGE_SIZE;
	case KVM_CHECK_EXTENSION:
		return kserv_check_extension(arg);
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
