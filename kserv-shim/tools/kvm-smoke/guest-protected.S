// kvm-smoke's protected guest: an arm64 Linux Image in form (the header a VMM's kernel loader
// recognises: QEMU's virt machine puts it 2 MiB into RAM, at 0x40200000), run with the MMU
// off. It checks that x0 points at a device tree (the boot argument KCore gives vCPU 0 from
// what the VMM set up), plants a secret (a 64-bit pattern over the page at 0x40300000, RAM the
// host gives it and then cannot read), says so on the PL011 at 0x09000000, reads the secret
// back, and powers off with PSCI SYSTEM_OFF:
//   "PROTECTED dtb ok planted kept\n"
.equ UART, 0x09000000
.equ SECRET_PAGE, 0x40300000
.equ SECRET, 0x53454b564d215345     // "SE!MVKES": a pattern the host looks for
.include "image-header.inc"
.text
.global _start
_start:
    image_header
start:
    mov     x19, x0
    ldr     x20, =UART
    adr     x10, hello
    bl      puts
    // A flattened device tree starts with 0xd00dfeed, big-endian.
    ldr     w9, [x19]
    ldr     w11, =0xedfe0dd0
    adr     x10, dtb_ok
    adr     x12, dtb_bad
    cmp     w9, w11
    csel    x10, x10, x12, eq
    bl      puts
    ldr     x9, =SECRET_PAGE
    ldr     x21, =SECRET            // (kept in x21: puts uses x10-x12)
    mov     x12, #512
1:  str     x21, [x9], #8
    subs    x12, x12, #1
    b.ne    1b
    adr     x10, planted
    bl      puts
    ldr     x9, =SECRET_PAGE
    ldr     x13, [x9, #2048]
    adr     x10, kept
    adr     x12, lost
    cmp     x13, x21
    csel    x10, x10, x12, eq
    bl      puts
    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .

// Write the NUL-terminated string at x10 to the UART.
puts:
    ldrb    w11, [x10], #1
    cbz     w11, 2f
    strb    w11, [x20]
    b       puts
2:  ret

hello:   .asciz "PROTECTED "
dtb_ok:  .asciz "dtb ok "
dtb_bad: .asciz "dtb missing "
planted: .asciz "planted "
kept:    .asciz "kept\n"
lost:    .asciz "lost\n"
.ltorg
