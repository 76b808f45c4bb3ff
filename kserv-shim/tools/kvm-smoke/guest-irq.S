// kvm-smoke's interrupt guest, at 0x40000000 with the MMU off. It programs the virtual GIC
// (distributor at 0x08000000, vCPU 0's redistributor at 0x080a0000: emulated in the host
// kernel by the kserv module), with SPI 40 edge-triggered if x0 is non-zero at entry (else
// level, the reset value), says 'R' (the VMM then raises SPI 40's line, or signals an irqfd),
// takes the interrupt through its vector, says 'G', acknowledges the device (a write of the
// INTID to 0x09001000: the VMM lowers the line, or an ioeventfd hears it), completes it, and
// powers off.
.text
.global _start
_start:
    mov     x1, #0x09000000
    mov     x6, #0x08000000
    ldr     x7, =0x080a0000
    adr     x9, vectors
    msr     vbar_el1, x9
    mov     w9, #0x12
    str     w9, [x6]                // GICD_CTLR: ARE | EnableGrp1
    str     wzr, [x7, #0x14]        // GICR_WAKER: awake
    mov     w9, #-1
    str     w9, [x6, #0x84]         // GICD_IGROUPR1: SPIs 32-63 in group 1
    cbz     x0, 4f
    mov     w9, #(2 << 16)
    str     w9, [x6, #0xc08]        // GICD_ICFGR2: SPI 40 (field 8, bits 17:16) edge
4:  mov     w9, #(1 << 8)
    str     w9, [x6, #0x104]        // GICD_ISENABLER1: SPI 40
    mov     x9, #0xff
    msr     S3_0_C4_C6_0, x9        // ICC_PMR_EL1: every priority
    mov     x9, #1
    msr     S3_0_C12_C12_7, x9      // ICC_IGRPEN1_EL1: group 1 on
    isb
    mov     x26, #0
    mov     w2, #'R'
    strb    w2, [x1]
    msr     daifclr, #2
1:  cbnz    x26, 2f
    wfi
    b       1b
2:  msr     daifset, #2
    mov     w2, #'\n'
    strb    w2, [x1]
    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .
.ltorg

// EL1 vectors: only IRQ from the current EL with SP_ELx (offset 0x280) is expected.
.balign 0x800
vectors:
    .fill   0x280, 1, 0
    mrs     x27, S3_0_C12_C12_0     // ICC_IAR1_EL1
    cmp     x27, #40
    b.ne    3f
    mov     w2, #'G'
    strb    w2, [x1]
    ldr     x9, =0x09001000
    str     w27, [x9]               // acknowledge: the VMM lowers the line
    mov     x26, #1
3:  msr     S3_0_C12_C12_1, x27     // ICC_EOIR1_EL1: priority drop and deactivation
    eret
.ltorg
