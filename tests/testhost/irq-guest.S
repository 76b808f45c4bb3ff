// A four-vCPU guest for the test host's interrupt routing. Reports go to the host through
// 64-bit MMIO stores at 0x09001000 + 8 * k.
//   Phase 1, IPIs: vCPU 0 starts vCPUs 1-3 (PSCI CPU_ON) and sends each SGI 1 through
//   ICC_SGI1R_EL1; vCPU n answers with SGI 1 + n to vCPU 0 and turns itself off. vCPU 0
//   waits until it has taken SGIs 2, 3 and 4.
//   Phase 2, more interrupts than list registers: vCPU 0 asks for a burst (report 1) and
//   takes SPIs 40-47 as the host feeds them in, edge and level; it reports the bitmap of
//   what it took (report 2) and powers off.
// The IRQ handler: x25 collects SGIs 0..15 as bits, x26 holds the last SGI, x24 collects
// SPIs 32..63 as bits (INTID - 32).
// The GIC: GICv3 system registers if ID_AA64PFR0_EL1.GIC says so; otherwise a GICv2, whose
// CPU interface is MMIO at 0x08010000 (x23 = its base, 0 on a GICv3; KCore maps the virtual
// CPU interface there) and whose SGIs are GICD_SGIR writes (MMIO exits to the host).
.section .text
.global _start
_start:
    ldr     x21, =0x09001000
    bl      gic_on
    mov     x24, #0
    mov     x25, #0
    mov     x26, #0
    // Start vCPUs 1..3 at `secondary`.
    mov     x19, #1
1:  ldr     x0, =0xC4000003         // PSCI CPU_ON
    mov     x1, x19
    adr     x2, secondary
    mov     x3, x19
    hvc     #0
    cbnz    x0, fail
    add     x19, x19, #1
    cmp     x19, #4
    b.ne    1b
    // SGI 1 to each.
    mov     x19, #1
2:  mov     x1, #1
    mov     x2, #1
    lsl     x2, x2, x19
    bl      sgi
    add     x19, x19, #1
    cmp     x19, #4
    b.ne    2b
    // Wait for SGIs 2, 3 and 4.
    msr     daifclr, #2
3:  and     x1, x25, #0x1c
    cmp     x1, #0x1c
    b.eq    4f
    wfi
    b       3b
4:  msr     daifset, #2
    str     x25, [x21]              // report 0: the SGIs taken
    // Phase 2: the burst.
    mov     x1, #1
    str     x1, [x21, #8]           // report 1: ready
    msr     daifclr, #2
5:  mov     x1, #0xff00             // SPIs 40..47 (bits 8..15 of x24 = INTID - 32)
    and     x2, x24, x1
    cmp     x2, x1
    b.eq    6f
    wfi
    b       5b
6:  msr     daifset, #2
    str     x24, [x21, #16]         // report 2: the SPI bitmap
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .

secondary:
    ldr     x21, =0x09001000
    mov     x20, x0                 // our index
    bl      gic_on
    mov     x26, #0
    msr     daifclr, #2
7:  cmp     x26, #1
    b.eq    8f
    wfi
    b       7b
8:  msr     daifset, #2
    add     x1, x20, #1             // SGI 1 + n to vCPU 0
    mov     x2, #1
    bl      sgi
    add     x2, x21, x20, lsl #3
    str     x20, [x2, #24]          // reports 4..6 (vCPU n at 3 + n): got SGI 1
    ldr     x0, =0x84000002         // PSCI CPU_OFF
    hvc     #0
    b       fail

// Our vectors, priority mask open, group 1 on (GICv2: group 0, which it signals as IRQ).
gic_on:
    adr     x1, vectors
    msr     vbar_el1, x1
    mrs     x1, id_aa64pfr0_el1
    ubfx    x1, x1, #24, #4
    mov     x23, #0
    cbz     x1, 1f
    mov     x1, #0xff
    msr     S3_0_C4_C6_0, x1        // ICC_PMR_EL1
    mov     x1, #1
    msr     S3_0_C12_C12_7, x1      // ICC_IGRPEN1_EL1
    isb
    ret
1:  mov     x23, #0x08010000
    mov     w1, #0xff
    str     w1, [x23, #0x4]         // GICC_PMR
    mov     w1, #1
    str     w1, [x23]               // GICC_CTLR.EnableGrp0
    isb
    ret

// sgi(x1 = INTID, x2 = target vCPUs as bits): GICv3 ICC_SGI1R_EL1 = INTID << 24 | TargetList
// (Aff0 bits), Aff1-3 = 0; GICv2 GICD_SGIR = CPUTargetList << 16 | INTID (filter 0: the list).
sgi:
    cbnz    x23, 1f
    orr     x3, x2, x1, lsl #24
    msr     S3_0_C12_C11_5, x3
    isb
    ret
1:  orr     x3, x1, x2, lsl #16
    ldr     x4, =0x08000f00
    str     w3, [x4]
    ret

fail:
    mov     x1, #0xbad
    str     x1, [x21, #56]          // report 7: failure
    ldr     x0, =0x84000008
    hvc     #0
    b       .
.ltorg

// EL1 vectors: only IRQ from the current EL with SP_ELx (offset 0x280) is expected.
.balign 0x800
vectors:
    .fill   0x280, 1, 0
    cbnz    x23, 12f
    mrs     x22, S3_0_C12_C12_0     // ICC_IAR1_EL1
    b       13f
12: ldr     w22, [x23, #0xc]        // GICC_IAR (an SGI's source CPU in bits 12:10)
13: and     x27, x22, #0x3ff
    cmp     x27, #16
    b.hs    10f
    mov     x26, x27                // an SGI
    mov     x29, #1
    lsl     x29, x29, x27
    orr     x25, x25, x29
    b       11f
10: cmp     x27, #64
    b.hs    11f
    sub     x28, x27, #32
    mov     x29, #1
    lsl     x29, x29, x28
    orr     x24, x24, x29           // an SPI 32..63
11: cbnz    x23, 14f
    msr     S3_0_C12_C12_1, x22     // ICC_EOIR1_EL1: drop priority and deactivate
    eret
14: str     w22, [x23, #0x10]       // GICC_EOIR: the same, with the value GICC_IAR gave
    eret
