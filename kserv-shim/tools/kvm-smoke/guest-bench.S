// kvm-smoke's benchmark guest, for scripts/bench-vm.sh: loaded at 0x40200000 by a VMM's
// loader (QEMU: -device loader,file=...,addr=0x40200000,cpu-num=0), MMU off, 2 vCPUs on the
// virt machine's GICv3 (distributor 0x08000000, redistributors from 0x080a0000). vCPU 0 starts
// vCPU 1 with PSCI CPU_ON, then times, with the virtual counter (one tick per instruction
// under qemu-system-aarch64 -icount shift=0 on -cpu max), 1024 rounds each of:
//   hvc        an unknown SMCCC function (0x4b000000; answered NOT_SUPPORTED)
//   mmio-gic   a GICD_IIDR read (the in-kernel virtual GIC answers)
//   mmio-vmm   a read of QEMU's first virtio-mmio transport (0x0a000008: the VMM answers)
//   ipi        an SGI to vCPU 1, whose handler counts it; vCPU 0 waits for the count
// and prints "BENCH <name> <hex total ticks>" on the PL011 for each, then powers off.
.equ ROUNDS, 1024
.equ UART, 0x09000000
.equ GICD, 0x08000000
.equ GICR1, 0x080c0000            // vCPU 1's redistributor (RD_base; SGI_base at +0x10000)
.equ FLAGS, 0x40300000            // +0 vCPU 1 ready, +8 SGIs vCPU 1 took
.text
.global _start
_start:
    ldr     x20, =UART
    ldr     x21, =GICD
    ldr     x22, =FLAGS
    mov     w9, #0x12
    str     w9, [x21]               // GICD_CTLR: ARE | EnableGrp1
    ldr     w0, =0xc4000003         // PSCI CPU_ON: MPIDR 1 at `secondary`
    mov     x1, #1
    adr     x2, secondary
    mov     x3, #0
    hvc     #0
1:  yield
    ldr     x9, [x22]
    cbz     x9, 1b                  // until vCPU 1 has its GIC set up

    adr     x25, name_hvc
    bl      start_timing
2:  ldr     w0, =0x4b000000
    hvc     #0
    subs    x24, x24, #1
    b.ne    2b
    bl      stop_timing

    adr     x25, name_gic
    bl      start_timing
3:  ldr     w9, [x21, #8]           // GICD_IIDR
    subs    x24, x24, #1
    b.ne    3b
    bl      stop_timing

    adr     x25, name_vmm
    ldr     x26, =0x0a000008
    bl      start_timing
4:  ldr     w9, [x26]
    subs    x24, x24, #1
    b.ne    4b
    bl      stop_timing

    adr     x25, name_ipi
    ldr     x26, =(1 << 24) | (1 << 1)  // ICC_SGI1R_EL1: SGI 1 to Aff0 1
    bl      start_timing
5:  ldr     x27, [x22, #8]
    msr     S3_0_C12_C11_5, x26     // ICC_SGI1R_EL1
    isb
6:  yield
    ldr     x9, [x22, #8]
    cmp     x9, x27
    b.eq    6b
    subs    x24, x24, #1
    b.ne    5b
    bl      stop_timing

    ldr     w0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
    b       .

// x23 <- the counter; x24 <- ROUNDS.
start_timing:
    isb
    mrs     x23, cntvct_el0
    isb
    mov     x24, #ROUNDS
    ret

// Print "BENCH <name at x25> <counter - x23 in hex>\n".
stop_timing:
    isb
    mrs     x9, cntvct_el0
    isb
    sub     x23, x9, x23
    mov     x28, x30
    adr     x10, prefix
    bl      puts
    mov     x10, x25
    bl      puts
    mov     w11, #' '
    strb    w11, [x20]
    mov     x12, #60
7:  lsr     x11, x23, x12
    and     x11, x11, #0xf
    cmp     x11, #10
    add     x13, x11, #'0'
    add     x14, x11, #('a' - 10)
    csel    x11, x13, x14, lo
    strb    w11, [x20]
    subs    x12, x12, #4
    b.pl    7b
    mov     w11, #'\n'
    strb    w11, [x20]
    mov     x30, x28
    ret

// Write the NUL-terminated string at x10.
puts:
    ldrb    w11, [x10], #1
    cbz     w11, 8f
    strb    w11, [x20]
    b       puts
8:  ret

// vCPU 1: its redistributor awake, SGI 1 enabled in group 1, interrupts on; then it waits.
secondary:
    adr     x9, vectors
    msr     vbar_el1, x9
    ldr     x22, =FLAGS
    ldr     x7, =GICR1
    str     wzr, [x7, #0x14]        // GICR_WAKER: awake
    add     x8, x7, #0x10000
    mov     w9, #-1
    str     w9, [x8, #0x80]         // GICR_IGROUPR0: group 1
    mov     w9, #(1 << 1)
    str     w9, [x8, #0x100]        // GICR_ISENABLER0: SGI 1
    mov     x9, #0xff
    msr     S3_0_C4_C6_0, x9        // ICC_PMR_EL1: every priority
    mov     x9, #1
    msr     S3_0_C12_C12_7, x9      // ICC_IGRPEN1_EL1: group 1 on
    isb
    mov     x9, #1
    str     x9, [x22]               // ready
    msr     daifclr, #2
9:  wfi
    b       9b

prefix:   .asciz "BENCH "
name_hvc: .asciz "hvc"
name_gic: .asciz "mmio-gic"
name_vmm: .asciz "mmio-vmm"
name_ipi: .asciz "ipi"
.ltorg

// EL1 vectors (vCPU 1): IRQ from the current EL with SP_ELx (offset 0x280): count and EOI.
.balign 0x800
vectors:
    .fill   0x280, 1, 0
    mrs     x10, S3_0_C12_C12_0     // ICC_IAR1_EL1
    ldr     x11, [x22, #8]
    add     x11, x11, #1
    str     x11, [x22, #8]
    msr     S3_0_C12_C12_1, x10     // ICC_EOIR1_EL1
    eret
