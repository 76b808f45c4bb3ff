// Benchmark guest (signed, loaded at IPA 0x80000000). Each measurement reads the virtual
// counter around N operations and reports the tick delta with a 64-bit MMIO write to
// 0x09001000 + 8 * k (k = measurement number). Under -icount shift=0 the counter's ticks
// convert to instructions (1 ns per instruction).
.equ N, 256
.section .text
.global _start
_start:
    mov     x20, #0x09000000
    add     x21, x20, #0x1000       // result registers
    // 0: empty loop (baseline).
    mov     x9, #N
    isb
    mrs     x10, cntvct_el0
1:  subs    x9, x9, #1
    b.ne    1b
    isb
    mrs     x11, cntvct_el0
    sub     x11, x11, x10
    str     x11, [x21, #0]
    // 1: PSCI_VERSION, answered in KCore.
    mov     x9, #N
    isb
    mrs     x10, cntvct_el0
2:  ldr     x0, =0x84000000
    hvc     #0
    subs    x9, x9, #1
    b.ne    2b
    isb
    mrs     x11, cntvct_el0
    sub     x11, x11, x10
    str     x11, [x21, #8]
    // 2: MMIO write, served by the host.
    mov     x9, #N
    isb
    mrs     x10, cntvct_el0
3:  strb    w9, [x20]
    subs    x9, x9, #1
    b.ne    3b
    isb
    mrs     x11, cntvct_el0
    sub     x11, x11, x10
    str     x11, [x21, #16]
    // 3: first touch of a RAM page: stage-2 fault, the host backs it, the access retries.
    mov     x9, #N
    mov     x5, #0x80100000
    isb
    mrs     x10, cntvct_el0
4:  str     x9, [x5]
    add     x5, x5, #4096
    subs    x9, x9, #1
    b.ne    4b
    isb
    mrs     x11, cntvct_el0
    sub     x11, x11, x10
    str     x11, [x21, #24]
    ldr     x0, =0x84000008         // SYSTEM_OFF
    hvc     #0
5:  b       5b
.balign 8
.ltorg
