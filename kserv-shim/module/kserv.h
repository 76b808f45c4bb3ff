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

/* kserv_vm.c: /dev/kvm. */
int kserv_dev_register(void);
void kserv_dev_unregister(void);

#endif
