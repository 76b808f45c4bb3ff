// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kserv: eventfds between a VMM's device threads and the VM (the KVM API's KVM_IOEVENTFD and
 * KVM_IRQFD).
 *
 * An ioeventfd names a guest-physical MMIO range (and optionally the value written): a guest
 * write that matches signals the eventfd in KVM_RUN and the guest goes on without an exit to
 * the VMM (virtio queue notifications). An irqfd ties an eventfd to an SPI: each signal raises
 * and lowers the line (an edge, as KVM does without a resample fd), from a work item, since
 * the eventfd's wake-up can run where the GIC's lock cannot be taken.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/kvm.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "kserv.h"

/* At most this many ioeventfds per VM (KVM's I/O bus has a similar bound). */
#define KSERV_MAX_IOEVENTFDS 256

struct kserv_ioeventfd {
	struct list_head link;
	u64 addr;
	u32 len;			/* 0: any access length */
	bool datamatch;
	u64 data;
	struct eventfd_ctx *ctx;
};

struct kserv_irqfd {
	struct list_head link;
	struct kserv_vm *vm;
	struct eventfd_ctx *ctx;
	u32 intid;
	wait_queue_entry_t wait;
	poll_table pt;
	struct work_struct inject;
};

static void kserv_eventfd_signal(struct eventfd_ctx *ctx)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

/* ------------------------------------------------------------------ KVM_IOEVENTFD */

static bool kserv_ioeventfd_same(const struct kserv_ioeventfd *e, const struct kvm_ioeventfd *a)
{
	bool datamatch = a->flags & KVM_IOEVENTFD_FLAG_DATAMATCH;

	return e->addr == a->addr && e->len == a->len && e->datamatch == datamatch &&
	       (!datamatch || e->data == a->datamatch);
}

long kserv_ioeventfd(struct kserv_vm *vm, void __user *argp)
{
	struct kvm_ioeventfd a;
	struct kserv_ioeventfd *e, *n;
	struct eventfd_ctx *ctx;
	long r = 0;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	/* arm64 has no port I/O; virtio-ccw is s390's. */
	if (a.flags & ~(KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_DEASSIGN))
		return -EINVAL;
	/* As KVM: the lengths of a single access, or 0 (any length, and then no value). */
	if (a.len != 0 && a.len != 1 && a.len != 2 && a.len != 4 && a.len != 8)
		return -EINVAL;
	if (a.len == 0 && (a.flags & KVM_IOEVENTFD_FLAG_DATAMATCH))
		return -EINVAL;
	if (a.addr + a.len < a.addr)
		return -EINVAL;
	ctx = eventfd_ctx_fdget(a.fd);
	if (IS_ERR(ctx))
		return PTR_ERR(ctx);
	mutex_lock(&vm->lock);
	if (a.flags & KVM_IOEVENTFD_FLAG_DEASSIGN) {
		r = -ENOENT;
		list_for_each_entry_safe(e, n, &vm->ioeventfds, link) {
			if (e->ctx != ctx || !kserv_ioeventfd_same(e, &a))
				continue;
			list_del(&e->link);
			vm->nr_ioeventfds--;
			eventfd_ctx_put(e->ctx);
			kfree(e);
			r = 0;
			break;
		}
		goto out;
	}
	list_for_each_entry(e, &vm->ioeventfds, link) {
		if (kserv_ioeventfd_same(e, &a)) {
			r = -EEXIST;
			goto out;
		}
	}
	if (vm->nr_ioeventfds >= KSERV_MAX_IOEVENTFDS) {
		r = -ENOSPC;
		goto out;
	}
	e = kzalloc(sizeof(*e), GFP_KERNEL);
	if (!e) {
		r = -ENOMEM;
		goto out;
	}
	e->addr = a.addr;
	e->len = a.len;
	e->datamatch = a.flags & KVM_IOEVENTFD_FLAG_DATAMATCH;
	e->data = a.datamatch;
	e->ctx = ctx;
	ctx = NULL;			/* the entry keeps the reference */
	list_add_tail(&e->link, &vm->ioeventfds);
	vm->nr_ioeventfds++;
out:
	mutex_unlock(&vm->lock);
	if (ctx)
		eventfd_ctx_put(ctx);
	return r;
}

/* A guest write of `len` bytes of `value` at `addr`: signal a matching eventfd, if any. */
bool kserv_ioeventfd_signal(struct kserv_vm *vm, u64 addr, u32 len, u64 value)
{
	struct kserv_ioeventfd *e;
	bool hit = false;

	if (len < 8)
		value &= (1ULL << (8 * len)) - 1;
	mutex_lock(&vm->lock);
	list_for_each_entry(e, &vm->ioeventfds, link) {
		if (e->addr != addr || (e->len && e->len != len) || (e->datamatch && e->data != value))
			continue;
		kserv_eventfd_signal(e->ctx);
		hit = true;
		break;
	}
	mutex_unlock(&vm->lock);
	return hit;
}

/* ------------------------------------------------------------------ KVM_IRQFD */

/* An edge on the SPI: the line up and down again, as KVM's irqfd does. */
static void kserv_irqfd_inject(struct work_struct *work)
{
	struct kserv_irqfd *irqfd = container_of(work, struct kserv_irqfd, inject);
	struct kserv_vm *vm = irqfd->vm;
	int target = -1;

	spin_lock(&vm->irq_lock);
	if (vm->vgic && irqfd->intid < vm->nr_irqs) {
		target = kserv_core_vgic_spi(vm->vgic, irqfd->intid, true);
		kserv_core_vgic_spi(vm->vgic, irqfd->intid, false);
	}
	spin_unlock(&vm->irq_lock);
	if (target >= 0)
		kserv_kick(vm);
}

/* The eventfd's wake-up (its wait queue's lock held, interrupts possibly off). */
static int kserv_irqfd_wake(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct kserv_irqfd *irqfd = container_of(wait, struct kserv_irqfd, wait);
	__poll_t flags = key_to_poll(key);
	u64 count;

	if (flags & EPOLLIN) {
		/* Consume the count, so the next write wakes us again. */
		eventfd_ctx_do_read(irqfd->ctx, &count);
		schedule_work(&irqfd->inject);
	}
	/* EPOLLHUP (the VMM closed the eventfd): the context lives on while we hold it; the
	 * irqfd ends at KVM_IRQFD_FLAG_DEASSIGN or with the VM. */
	return 0;
}

static void kserv_irqfd_queue(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct kserv_irqfd *irqfd = container_of(pt, struct kserv_irqfd, pt);

	add_wait_queue(wqh, &irqfd->wait);
}

static void kserv_irqfd_free(struct kserv_irqfd *irqfd)
{
	u64 count;

	eventfd_ctx_remove_wait_queue(irqfd->ctx, &irqfd->wait, &count);
	cancel_work_sync(&irqfd->inject);
	eventfd_ctx_put(irqfd->ctx);
	kfree(irqfd);
}

long kserv_irqfd(struct kserv_vm *vm, void __user *argp)
{
	struct kvm_irqfd a;
	struct kserv_irqfd *irqfd, *n;
	struct eventfd_ctx *ctx;
	struct file *file;
	__poll_t events;
	long r = 0;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	/* No resample fds: level-triggered device lines use KVM_IRQ_LINE. */
	if (a.flags & ~KVM_IRQFD_FLAG_DEASSIGN)
		return -EINVAL;
	/* Without a routing table, GSI n is SPI n (INTID 32 + n), as in KVM on arm64. */
	if (a.gsi >= 1024 - 32)
		return -EINVAL;
	if (a.flags & KVM_IRQFD_FLAG_DEASSIGN) {
		ctx = eventfd_ctx_fdget(a.fd);
		if (IS_ERR(ctx))
			return PTR_ERR(ctx);
		r = -ENOENT;
		mutex_lock(&vm->lock);
		list_for_each_entry_safe(irqfd, n, &vm->irqfds, link) {
			if (irqfd->ctx != ctx || irqfd->intid != a.gsi + 32)
				continue;
			list_del(&irqfd->link);
			r = 0;
			break;
		}
		mutex_unlock(&vm->lock);
		eventfd_ctx_put(ctx);
		if (!r)
			kserv_irqfd_free(irqfd);
		return r;
	}
	file = fget(a.fd);
	if (!file)
		return -EBADF;
	ctx = eventfd_ctx_fileget(file);
	if (IS_ERR(ctx)) {
		fput(file);
		return PTR_ERR(ctx);
	}
	irqfd = kzalloc(sizeof(*irqfd), GFP_KERNEL);
	if (!irqfd) {
		eventfd_ctx_put(ctx);
		fput(file);
		return -ENOMEM;
	}
	irqfd->vm = vm;
	irqfd->ctx = ctx;
	irqfd->intid = a.gsi + 32;
	INIT_WORK(&irqfd->inject, kserv_irqfd_inject);
	init_waitqueue_func_entry(&irqfd->wait, kserv_irqfd_wake);
	init_poll_funcptr(&irqfd->pt, kserv_irqfd_queue);
	mutex_lock(&vm->lock);
	list_for_each_entry(n, &vm->irqfds, link) {
		if (n->ctx == ctx) {
			/* As KVM: one eventfd drives one irqfd. */
			mutex_unlock(&vm->lock);
			eventfd_ctx_put(ctx);
			kfree(irqfd);
			fput(file);
			return -EBUSY;
		}
	}
	list_add_tail(&irqfd->link, &vm->irqfds);
	/* Hook the eventfd's wait queue; a count already there is an edge now. */
	events = vfs_poll(file, &irqfd->pt);
	mutex_unlock(&vm->lock);
	if (events & EPOLLIN)
		schedule_work(&irqfd->inject);
	fput(file);
	return 0;
}

/* The VM is going: unhook every eventfd and wait out queued injections. */
void kserv_events_release(struct kserv_vm *vm)
{
	struct kserv_ioeventfd *e, *en;
	struct kserv_irqfd *irqfd, *in;

	list_for_each_entry_safe(e, en, &vm->ioeventfds, link) {
		list_del(&e->link);
		eventfd_ctx_put(e->ctx);
		kfree(e);
	}
	vm->nr_ioeventfds = 0;
	list_for_each_entry_safe(irqfd, in, &vm->irqfds, link) {
		list_del(&irqfd->link);
		kserv_irqfd_free(irqfd);
	}
}
