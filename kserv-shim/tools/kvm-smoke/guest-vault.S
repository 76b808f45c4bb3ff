// kvm-smoke's vault guest, for the attacks of a malicious host (tests/vm-attack.sh): an
// arm64 Image in form at 0x40200000 (as guest-protected.S), run with the MMU off and every
// interrupt masked. It makes two secrets that appear nowhere in its image (each is computed
// from its bitwise complement), fills 16 pages at 0x40300000 with the RAM secret and
// x22..x28 with the register secret, says "VAULT planted" on the PL011, and then waits: it
// reads a doorbell register at 0x0a000000 (MMIO its VMM answers: 0 while the host attacks,
// 1 when done), and after each read checks that both secrets are still whole. At the end it
// says "VAULT intact" (or "VAULT broken") and powers off with PSCI SYSTEM_OFF.
.equ UART, 0x09000000
.equ DOORBELL, 0x0a000000
.equ SECRET_PAGE, 0x40300000
.equ SECRET_WORDS, 16 * 512
.equ NOT_RAM_SECRET, 0x7f3a91c4d2e85b06 ^ 0xffffffffffffffff    // "RAM secret" complemented
.equ NOT_REG_SECRET, 0x5ce1a7093bf4d862 ^ 0xffffffffffffffff    // "register secret" complemented
.include "image-header.inc"
.text
.global _start
_start:
    image_header
start:
    ldr     x20, =UART
    ldr     x21, =NOT_RAM_SECRET
    mvn     x21, x21                // the RAM secret, in no page the host holds
    ldr     x22, =NOT_REG_SECRET
    mvn     x22, x22                // the register secret
    mov     x23, x22
    mov     x24, x22
    mov     x25, x22
    mov     x26, x22
    mov     x27, x22
    mov     x28, x22
    ldr     x9, =SECRET_PAGE
    ldr     x12, =SECRET_WORDS
1:  str     x21, [x9], #8
    subs    x12, x12, #1
    b.ne    1b
    adr     x10, planted
    bl      puts
    ldr     x19, =DOORBELL
wait:
    ldr     w9, [x19]               // an exit to the VMM: 0 = keep waiting, 1 = done
    bl      check
    cbnz    x13, broken
    cbz     w9, wait
    adr     x10, intact
    bl      puts
    b       off
broken:
    adr     x10, lost
    bl      puts
off:
    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .

// x13 = 0 if the RAM secret fills the pages and x22..x28 all hold the register secret.
check:
    mov     x13, #0
    ldr     x10, =SECRET_PAGE
    ldr     x12, =SECRET_WORDS
2:  ldr     x11, [x10], #8
    eor     x11, x11, x21
    orr     x13, x13, x11
    subs    x12, x12, #1
    b.ne    2b
    eor     x11, x23, x22
    orr     x13, x13, x11
    eor     x11, x24, x22
    orr     x13, x13, x11
    eor     x11, x25, x22
    orr     x13, x13, x11
    eor     x11, x26, x22
    orr     x13, x13, x11
    eor     x11, x27, x22
    orr     x13, x13, x11
    eor     x11, x28, x22
    orr     x13, x13, x11
    ldr     x11, =NOT_REG_SECRET
    mvn     x11, x11
    eor     x11, x11, x22
    orr     x13, x13, x11
    ret

// Write the NUL-terminated string at x10 to the UART.
puts:
    ldrb    w11, [x10], #1
    cbz     w11, 3f
    strb    w11, [x20]
    b       puts
3:  ret

planted: .asciz "VAULT planted\n"
intact:  .asciz "VAULT intact\n"
lost:    .asciz "VAULT broken\n"
.ltorg
