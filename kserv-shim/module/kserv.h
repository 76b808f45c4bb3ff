/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* kserv: what the module's C files share, and what kserv-core (Rust) provides them. */
#ifndef KSERV_H
#define KSERV_H

#include <linux/kvm.h>
#include <linux/list.h>
#include <linux/mm_types.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>

/* Table pages given to a new VM's pool: its root's levels and vCPU context pages. */
#define KSERV_INITIAL_POOL 8
#define KSERV_MAX_VCPUS 8
#define KSERV_MAX_PAGES 256
#define KSERV_MAX_SLOTS 8
/* Guest physical addresses end here: KVM's default 40-bit IPA space (KVM_CREATE_VM type 0;
 * KVM_CAP_ARM_VM_IPA_SIZE is not offered, so a VMM asks for no other). */
#define KSERV_IPA_LIMIT (1ULL << 40)
/* List registers KCore lets the host fill (INJECT_IRQ); it keeps the last for the timer. */
#define KSERV_HOST_LRS 3

struct kserv_slot {
	u64 gpa, size, uaddr;
	struct page **pages;		/* pinned VMM pages, by page index; NULL until touched */
};

struct kserv_vm {
	struct mutex lock;
	unsigned long vmid;
	unsigned int vcpus;		/* bitmap of registered vCPUs */
	bool verified;			/* set up ended (first KVM_RUN): the layout is fixed */
	bool protected;			/* a protected VM: its memory and registers are KCore's */
	u64 boot_pc, boot_x0;		/* protected: vCPU 0's PC and x0 as the VMM set them */
	long boot_error;		/* protected: why its kernel was refused (final) */
	unsigned int npages;
	struct page *pages[KSERV_MAX_PAGES];	/* donated to KCore: freed after DESTROY_VM */
	struct kserv_slot slots[KSERV_MAX_SLOTS];
	/* The virtual GIC (kserv-core's model; NULL until KVM_DEV_ARM_VGIC_CTRL_INIT). */
	spinlock_t irq_lock;		/* guards vgic's state */
	void *vgic;
	bool gic_created;
	bool gic_v2;			/* the device is a GICv2 (KVM_DEV_TYPE_ARM_VGIC_V2) */
	u64 gicd, gicr;			/* distributor; redistributors (v3) or CPU interface (v2) */
	u32 nr_irqs, gic_vcpus;
	wait_queue_head_t wq;		/* vCPUs waiting for an interrupt */
	struct task_struct *running[KSERV_MAX_VCPUS];	/* in KVM_RUN, under irq_lock */
	bool in_guest[KSERV_MAX_VCPUS];	/* from filling its list registers to the exit: kick it */
	/* Eventfds (kserv_events.c), under `lock`. */
	struct list_head ioeventfds, irqfds;
	unsigned int nr_ioeventfds;
};

struct kserv_vcpu {
	struct kserv_vm *vm;
	struct file *vm_file;		/* keeps the VM alive while its vCPU fd is open */
	unsigned int id;
	struct page *run_page;		/* struct kvm_run, mapped by the VMM */
	struct kvm_run *run;
	bool mmio_read;			/* the last exit was an MMIO read the VMM answers */
	u64 lrs[KSERV_HOST_LRS];	/* the list registers as the last exit reported them */
	/* The last exits (kserv.trace_exits=1): printed when KVM_RUN ends on a signal. */
	unsigned long trace[16][4];
	unsigned int trace_pos;
	unsigned long nexits[10];	/* exits by KCore's exit code (9: 9 and above) */
	unsigned long nwaits[3];	/* WFI: refilled at once, polled, slept */
};

/* kserv-core (kserv-shim/core): the ABI version it was built for; KCore status -> -errno. */
u32 kserv_core_abi_version(void);
int kserv_core_errno(long code);
/* A KVM register id's place: 0 none; kind in 63:56, KCore's numbers in 31:16 and 15:0. */
u64 kserv_core_reg_place(u64 id);
u64 kserv_core_reg_list_len(void);
u64 kserv_core_reg_list_at(u64 i);

/* kserv-core's virtual GICv3 (kserv-shim/core/src/ffi.rs); `g` is its zeroed allocation. */
size_t kserv_core_vgic_size(void);
int kserv_core_vgic_init(void *g, u32 vcpus, u32 nr_irqs);
int kserv_core_vgic_mmio(void *g, int redist, u64 offset, u32 size, bool write, u64 *value);
/* ... and its GICv2 distributor: the same state, accesses made by vCPU `vcpu`. */
int kserv_core_vgic_init_v2(void *g, u32 vcpus, u32 nr_irqs);
int kserv_core_vgic_v2_mmio(void *g, u32 vcpu, u64 offset, u32 size, bool write, u64 *value);
int kserv_core_vgic_spi(void *g, u32 intid, bool level);
u64 kserv_core_vgic_sgi(void *g, u32 from, u64 value);
u64 kserv_core_vgic_take(void *g, u32 vcpu);
void kserv_core_vgic_done(void *g, u32 vcpu, u32 intid);
void kserv_core_vgic_untake(void *g, u32 vcpu, u32 intid);
bool kserv_core_vgic_pending(void *g, u32 vcpu);
u64 kserv_core_vgic_irq_debug(void *g, u32 vcpu, u32 intid);

/* kserv-core's boot of a protected VM (kserv-shim/core/src/boot.rs); pages are 4096 bytes. */
u64 kserv_core_trailer_search_pages(const void *first);
u64 kserv_core_trailer_at(const void *page, u64 index, u64 load_ipa);
bool kserv_core_boot_stub(const void *page, u64 offset, u64 *entry, u64 *x0);

/* Pages of a VM's stage-2 root (KCORE_VERSION x3): 1, or 2^n on a small-PA CPU. */
extern unsigned int kserv_root_order;
/* KCore runs on a GICv2 (KCORE_VERSION x2 bit 5): VMs get a GICv2 device, not a GICv3. */
extern bool kserv_gic_v2;

/* kserv_vm.c: /dev/kvm. */
int kserv_dev_register(void);
void kserv_dev_unregister(void);
void kserv_kick(struct kserv_vm *vm);

/* kserv_events.c: KVM_IOEVENTFD and KVM_IRQFD. */
long kserv_ioeventfd(struct kserv_vm *vm, void __user *argp);
long kserv_irqfd(struct kserv_vm *vm, void __user *argp);
bool kserv_ioeventfd_signal(struct kserv_vm *vm, u64 addr, u32 len, u64 value);
void kserv_events_release(struct kserv_vm *vm);

#endif
