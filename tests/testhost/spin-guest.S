// A guest that never exits on its own: it spins on the virtual counter for two seconds of
// counter time (CNTFRQ_EL0 * 2 ticks), then says 'S' through the emulated UART and powers
// off. Only the host's timer can take the CPU back while it spins.
.section .text
.global _start
_start:
    mrs     x1, cntfrq_el0
    lsl     x1, x1, #1
    isb
    mrs     x2, cntvct_el0
    add     x2, x2, x1
1:  isb
    mrs     x3, cntvct_el0
    cmp     x3, x2
    b.lo    1b
    mov     x20, #0x09000000
    mov     w1, #'S'
    strb    w1, [x20]
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
2:  b       2b
.ltorg
