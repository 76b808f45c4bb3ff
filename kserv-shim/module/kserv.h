/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* kserv: what the module's C files share, and what kserv-core (Rust) provides them. */
#ifndef KSERV_H
#define KSERV_H

#include <linux/types.h>

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
int kserv_core_vgic_spi(void *g, u32 intid, bool level);
u64 kserv_core_vgic_sgi(void *g, u32 from, u64 value);
u64 kserv_core_vgic_take(void *g, u32 vcpu);
void kserv_core_vgic_done(void *g, u32 vcpu, u32 intid);
bool kserv_core_vgic_pending(void *g, u32 vcpu);

/* kserv_vm.c: /dev/kvm. */
int kserv_dev_register(void);
void kserv_dev_unregister(void);

#endif
