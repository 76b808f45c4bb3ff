// Test host entry: arm64 Image header, stack, BSS, EL1 vectors that count and skip
// synchronous exceptions taken at EL1 (the external aborts KCore injects).
.section .text.head, "ax"
.global _start
_start:
    b       1f
    .long   0
    .quad   0
    .quad   __image_size
    .quad   0xa
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0
1:  adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
3:  adrp    x1, el1_vectors
    add     x1, x1, :lo12:el1_vectors
    msr     vbar_el1, x1
    isb
    bl      testhost_main
4:  wfe
    b       4b

.balign 0x800
el1_vectors:
    .fill   0x200, 1, 0
    // Current EL with SP_ELx, synchronous: count it, keep ESR and FAR, skip the instruction.
    sub     sp, sp, #16
    stp     x9, x10, [sp]
    adrp    x9, TESTHOST_FAULTS
    add     x9, x9, :lo12:TESTHOST_FAULTS
    ldr     x10, [x9]
    add     x10, x10, #1
    str     x10, [x9]
    mrs     x10, esr_el1
    str     x10, [x9, #8]
    mrs     x10, far_el1
    str     x10, [x9, #16]
    mrs     x10, elr_el1
    add     x10, x10, #4
    msr     elr_el1, x10
    ldp     x9, x10, [sp]
    add     sp, sp, #16
    eret
