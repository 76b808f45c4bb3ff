// kvm-smoke's first guest, at 0x40000000 with the MMU off: "HI" to the UART at 0x09000000,
// a read of its flag register written back, 'I' stored to RAM at 0x40100000 (a second page,
// faulted in) and read back, '\n', then PSCI SYSTEM_OFF.
.text
.global _start
_start:
    mov     x1, #0x09000000
    mov     w2, #'H'
    strb    w2, [x1]
    mov     w2, #'I'
    strb    w2, [x1]
    ldr     w3, [x1, #0x18]
    strb    w3, [x1]
    mov     x4, #0x40100000
    str     x2, [x4]
    ldr     x5, [x4]
    strb    w5, [x1]
    mov     w2, #'\n'
    strb    w2, [x1]
    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .
.ltorg
