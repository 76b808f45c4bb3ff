// kvm-smoke's interrupt guest for a GICv2 machine, at 0x40000000 with the MMU off. Its GIC
// is a GICv2 (GIC architecture v2): the distributor at 0x08000000 (emulated in the host
// kernel by the kserv module) and the CPU interface at 0x08010000 (KCore's virtual CPU
// interface, GICV, mapped there: its accesses never leave the guest). It enables the
// distributor and its CPU interface, sends itself SGI 3 through GICD_SGIR and takes it (says
// 'S'), routes SPI 40 to itself (GICD_ITARGETSR), edge-triggered if x0 is non-zero at entry,
// says 'R' (the VMM then raises SPI 40's line), takes the interrupt, says 'G', acknowledges
// the device (a write of the INTID to 0x09001000: the VMM lowers the line), completes it
// (GICC_EOIR) and powers off.
.text
.global _start
_start:
    mov     x1, #0x09000000
    mov     x6, #0x08000000         // GICD
    ldr     x7, =0x08010000         // GICC
    adr     x9, vectors
    msr     vbar_el1, x9
    mov     w9, #1
    str     w9, [x6]                // GICD_CTLR: Enable
    mov     w9, #1
    strb    w9, [x6, #0x828]        // GICD_ITARGETSR10, byte 0: SPI 40 to CPU 0
    cbz     x0, 4f
    mov     w9, #(2 << 16)
    str     w9, [x6, #0xc08]        // GICD_ICFGR2: SPI 40 (field 8, bits 17:16) edge
4:  mov     w9, #(1 << 8)
    str     w9, [x6, #0x104]        // GICD_ISENABLER1: SPI 40
    mov     w9, #(1 << 3)
    str     w9, [x6, #0x100]        // GICD_ISENABLER0: SGI 3
    mov     w9, #0xff
    str     w9, [x7, #0x4]          // GICC_PMR: every priority
    mov     w9, #1
    str     w9, [x7]                // GICC_CTLR: EnableGrp0 (group 0 signalled as IRQ)
    isb
    mov     x25, #0
    mov     x26, #0
    msr     daifclr, #2
    ldr     w9, =((2 << 24) | 3)
    str     w9, [x6, #0xf00]        // GICD_SGIR: SGI 3, TargetListFilter 0b10 (this CPU)
5:  cbnz    x25, 6f
    wfi
    b       5b
6:  mov     w2, #'R'
    strb    w2, [x1]
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
    ldr     w27, [x7, #0xc]         // GICC_IAR (source CPU in 12:10, INTID in 9:0)
    and     w28, w27, #0x3ff
    cmp     w28, #3
    b.ne    7f
    mov     w2, #'S'
    strb    w2, [x1]
    mov     x25, #1
    b       3f
7:  cmp     w28, #40
    b.ne    3f
    mov     w2, #'G'
    strb    w2, [x1]
    ldr     x9, =0x09001000
    str     w28, [x9]               // acknowledge: the VMM lowers the line
    mov     x26, #1
3:  str     w27, [x7, #0x10]        // GICC_EOIR: priority drop and deactivation
    eret
.ltorg
