// Bare-metal smoke test: an EL1 "test host" that KCore boots in place of Linux.
// It checks KCore's host interface without a kernel in the way and reports through
// semihosting: exit status 0 = pass, otherwise the number of the failed check.
//
//  1. HVC KCORE_VERSION answers 0 with ABI 0.6 and the host-stage2 feature bit
//  2. an unknown HVC answers SMCCC NOT_SUPPORTED (-1)
//  3. HVC vendor-hyp Call UID answers KCore's UID
//  4. the host's own RAM is readable and writable
//  5. a read of KCore's image reads KCore's zero page (this host runs at EL1, like a kernel,
//     which an abort would kill), and a write there is refused with a synchronous external
//     abort (EC 0x25, FSC 0x10, WnR, FAR)
//  6. ... and the host keeps running: a second read of its own RAM still works
//  7. a write to KCore's page-table pool (top of RAM) is refused the same way
//  8. SMC PSCI_VERSION is forwarded to firmware (PSCI 1.1 on QEMU)
//  9. device memory (GICD_PIDR2) is mapped on demand

.equ KCORE_VERSION,  0xC6000000
.equ UNKNOWN_CALL,   0xC600FFFF
.equ CALL_UID,       0x8600FF01
.equ UID_WORD0,      0x787e0a1f
.equ PSCI_VERSION,   0x84000000
.equ KCORE_IMAGE,    0x40200000
.equ GICD_PIDR2,     0x0800FFE8

.section .text.head, "ax"
.global _start
_start:
    b       main
    .long   0
    .quad   0
    .quad   _end - _start          // image_size
    .quad   0xa
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

main:
    mov     x20, x0                 // dtb
    adr     x1, vectors
    msr     vbar_el1, x1
    isb
    adr     x1, stack_top
    mov     sp, x1

    mov     x28, #1                 // check 1
    ldr     x0, =KCORE_VERSION
    hvc     #0
    cbnz    x0, fail
    cmp     x1, #6                 // major 0, minor 6
    b.ne    fail
    tst     x2, #1
    b.eq    fail

    mov     x28, #2
    ldr     x0, =UNKNOWN_CALL
    hvc     #0
    cmn     x0, #1
    b.ne    fail

    mov     x28, #3
    ldr     x0, =CALL_UID
    hvc     #0
    ldr     x1, =UID_WORD0
    cmp     x0, x1
    b.ne    fail

    mov     x28, #4
    adr     x1, scratch
    ldr     x2, =0x1234abcd
    str     x2, [x1]
    ldr     x3, [x1]
    cmp     x2, x3
    b.ne    fail

    mov     x28, #5
    mov     x25, #0                 // abort count
    ldr     x1, =KCORE_IMAGE
    mov     x2, #1
    ldr     x2, [x1]                // zeros, not KCore's first instruction
    cbnz    x2, fail
    cbnz    x25, fail
    str     x2, [x1]                // must abort; the handler skips it
    cmp     x25, #1
    b.ne    fail
    lsr     x3, x26, #26            // EC
    cmp     x3, #0x25
    b.ne    fail
    and     x3, x26, #0x3f          // FSC
    cmp     x3, #0x10
    b.ne    fail
    ubfx    x3, x26, #6, #1         // WnR
    cmp     x3, #1
    b.ne    fail
    cmp     x27, x1                 // FAR
    b.ne    fail

    mov     x28, #6
    adr     x1, scratch
    ldr     x3, [x1]
    ldr     x2, =0x1234abcd
    cmp     x2, x3
    b.ne    fail

    mov     x28, #7
    // The top page of the RAM KCore found: read /memory reg from the DTB is overkill here;
    // QEMU virt with -m 1G puts RAM at 0x40000000..0x80000000 and KCore's pool ends there.
    ldr     x1, =0x7ffff000
    str     x2, [x1]
    cmp     x25, #2
    b.ne    fail
    ubfx    x3, x26, #6, #1         // WnR
    cmp     x3, #1
    b.ne    fail

    mov     x28, #8
    ldr     x0, =PSCI_VERSION
    smc     #0
    ldr     x1, =0x10001
    cmp     x0, x1
    b.ne    fail

    mov     x28, #9
    ldr     x1, =GICD_PIDR2
    ldr     w2, [x1]
    ubfx    x2, x2, #4, #4          // ArchRev
    cmp     x2, #3
    b.lt    fail

    mov     x0, #0
    b       exit

fail:
    mov     x0, x28
exit:
    // Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit and the status.
    adr     x1, exit_block
    str     x0, [x1, #8]
    mov     x0, #0x18
    hlt     #0xf000
1:  wfe
    b       1b

// EL1 vectors: a synchronous exception from EL1h (slot 0x200) is counted and skipped.
.balign 0x800
vectors:
    .fill   0x200, 1, 0
    mrs     x26, esr_el1
    mrs     x27, far_el1
    add     x25, x25, #1
    mrs     x24, elr_el1
    add     x24, x24, #4
    msr     elr_el1, x24
    eret

.balign 16
exit_block:
    .quad   0x20026, 0
scratch:
    .quad   0
.balign 16
    .fill   4096, 1, 0
stack_top:
.ltorg
_end:
