// kvm-smoke's MMIO-guard guest: an arm64 Linux Image in form for 0x40200000 (like
// guest-protected.S), run with the MMU off as a protected VM. It speaks pKVM's guest ABI:
// asks KVM_FEATURES (0x86000000) which services there are, enrols the PL011's page with
// MMIO_GUARD (0xC6000007, "map one granule as emulated MMIO"), keeps writing to the PL011,
// stores to a device page it never enrolled (0x0a000000): KCore refuses the access with a
// synchronous external abort, which its vector reports with the fault address and syndrome
// and steps over; then it tries to enrol a RAM page (INVALID_PARAMETER, -3) and powers off.
// Under KCore, as a protected VM:
//   "MMIO-GUARD features 0x9d enrol 0 SEA at 0xa000000 esr 0x96000050 ram -3\n"
// As an ordinary VM (no pKVM services: the calls are NOT_SUPPORTED, -1, and the store goes
// to the VMM like any MMIO):
//   "MMIO-GUARD features 0x1 enrol -1 ram -1\n"
.equ UART, 0x09000000
.equ STRAY, 0x0a000000              // device space, never enrolled
.equ RAM_PAGE, 0x40300000
.equ KVM_FEATURES, 0x86000000
.equ MMIO_GUARD, 0xc6000007
.include "image-header.inc"
.text
.global _start
_start:
    image_header
start:
    ldr     x20, =UART
    adr     x10, hello              // before any enrolment: forwarded as always
    bl      puts
    adr     x9, vectors
    msr     vbar_el1, x9
    isb
    ldr     x0, =KVM_FEATURES       // (a 32-bit SMCCC id: x0's upper half zero)
    hvc     #0
    mov     x21, x0
    adr     x10, features
    bl      puts
    mov     x0, x21
    bl      puthex
    ldr     x0, =MMIO_GUARD
    ldr     x1, =UART
    mov     x2, #0
    mov     x3, #0
    hvc     #0
    mov     x21, x0
    adr     x10, enrol
    bl      puts
    mov     x0, x21
    bl      putint
    // A device page this guest did not enrol: with the guard in use KCore refuses it (the
    // vector below reports it); without, the VMM sees an MMIO write.
    ldr     x9, =STRAY
    mov     w11, #0x55
    str     w11, [x9]
    ldr     x0, =MMIO_GUARD
    ldr     x1, =RAM_PAGE
    mov     x2, #0
    mov     x3, #0
    hvc     #0
    mov     x21, x0
    adr     x10, ram
    bl      puts
    mov     x0, x21
    bl      putint
    adr     x10, newline
    bl      puts
off:
    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .

// Write the NUL-terminated string at x10 to the UART (clobbers x10, x11).
puts:
    ldrb    w11, [x10], #1
    cbz     w11, 2f
    strb    w11, [x20]
    b       puts
2:  ret

// Write x0 in hexadecimal, "0x" and no leading zeros (clobbers x0-x2, x11, x12).
puthex:
    mov     w11, #'0'
    strb    w11, [x20]
    mov     w11, #'x'
    strb    w11, [x20]
    mov     x1, #60                 // shift of the current nibble
    mov     x2, #0                  // a digit was written
3:  lsr     x12, x0, x1
    and     x12, x12, #0xf
    orr     x2, x2, x12
    cmp     x1, #0
    ccmp    x2, #0, #0, ne          // (the last nibble is always written)
    b.eq    4f
    cmp     x12, #10
    add     x11, x12, #'0'
    add     x12, x12, #('a' - 10)
    csel    x11, x11, x12, lo
    strb    w11, [x20]
4:  subs    x1, x1, #4
    b.ge    3b
    ret

// Write x0, a small signed number (-9..9), in decimal (clobbers x0, x11).
putint:
    tbz     x0, #63, 5f
    mov     w11, #'-'
    strb    w11, [x20]
    neg     x0, x0
5:  add     x11, x0, #'0'
    strb    w11, [x20]
    ret

// EL1's vectors: only a synchronous exception from EL1 with SP_EL1 (offset 0x200) is
// expected, the refused store's external abort. Anything else says so and powers off.
.balign 2048
vectors:
    .rept   4
    b       unexpected
    .balign 128
    .endr
    b       abort                   // 0x200: current EL, SPx, synchronous
    .balign 128
    .rept   11
    b       unexpected
    .balign 128
    .endr

abort:
    mov     x22, x30
    adr     x10, sea
    bl      puts
    mrs     x0, far_el1
    bl      puthex
    adr     x10, esr
    bl      puts
    mrs     x0, esr_el1
    bl      puthex
    mrs     x9, elr_el1             // step over the refused store
    add     x9, x9, #4
    msr     elr_el1, x9
    mov     x30, x22
    eret

unexpected:
    adr     x10, other
    bl      puts
    b       off

hello:    .asciz "MMIO-GUARD "
features: .asciz "features "
enrol:    .asciz " enrol "
sea:      .asciz " SEA at "
esr:      .asciz " esr "
ram:      .asciz " ram "
newline:  .asciz "\n"
other:    .asciz " unexpected exception\n"
.ltorg
