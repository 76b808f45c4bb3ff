// A tiny guest for the bare-metal test host, loaded (and signed) at IPA 0x80000000, entered
// at EL1 with the MMU off. On any failure it prints "GUEST-FAIL n" and powers off.
.section .text
.global _start
_start:
    mov     x20, #0x09000000        // the UART the test host emulates
    // 1: PSCI_VERSION, answered by KCore itself.
    mov     x28, #1
    ldr     x0, =0x84000000
    hvc     #0
    ldr     x1, =0x10001
    cmp     x0, x1
    b.ne    fail
    // 2: print through MMIO writes (each exits to the host with just the byte).
    adr     x3, hello
    bl      puts
    // 13: FP/SIMD: enable it for EL1; the registers start zeroed (nothing of the host's);
    //     a value in q7 survives an exit to the host, which uses its own FP registers.
    mov     x28, #13
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    fmov    x2, d0
    mov     x3, v0.d[1]
    orr     x2, x2, x3
    fmov    x4, d7
    orr     x2, x2, x4
    cbnz    x2, fail
    ldr     x6, =0x6775657374667021
    fmov    d7, x6
    mov     v7.d[1], x6
    mov     w1, #'.'
    strb    w1, [x20]               // an exit to the host
    fmov    x7, d7
    mov     x8, v7.d[1]
    cmp     x7, x6
    b.ne    fail
    cmp     x8, x6
    b.ne    fail
    // 3: an MMIO read, answered by the host (the UART flag register).
    mov     x28, #3
    ldr     w4, [x20, #0x18]
    cmp     w4, #0x90
    b.ne    fail
    // 4: RAM outside the image: the first touch faults to the host, which backs it.
    mov     x28, #4
    mov     x5, #0x80100000
    ldr     x6, =0x5ec2e7c0ffee
    str     x6, [x5]
    ldr     x7, [x5]
    cmp     x6, x7
    b.ne    fail
    // 5: an unknown hypercall: NOT_SUPPORTED from KCore.
    mov     x28, #5
    ldr     x0, =0xC6001234
    hvc     #0
    cmn     x0, #1
    b.ne    fail
    // 6: pKVM discovery: the KVM vendor-hypervisor UID and the protection granule.
    mov     x28, #6
    ldr     x0, =0x8600ff01
    hvc     #0
    ldr     x1, =0xb66fb428
    cmp     x0, x1
    b.ne    fail
    ldr     x0, =0xC6000002
    mov     x1, #0
    mov     x2, #0
    mov     x3, #0
    hvc     #0
    cmp     x0, #4096
    b.ne    fail
    // 7: share a page never touched (KCore has the host back it first, then the call is
    //    re-issued); put a value there; sharing twice is refused; the host reads it (WFI 1).
    mov     x28, #7
    ldr     x0, =0xC6000003
    mov     x1, #0x80200000
    hvc     #0
    cbnz    x0, fail
    ldr     x6, =0x5a5a5a5a12345678
    mov     x5, #0x80200000
    str     x6, [x5]
    ldr     x0, =0xC6000003
    mov     x1, #0x80200000
    hvc     #0
    cmn     x0, #3
    b.ne    fail
    wfi
    // 8: unshare: the host loses the page (WFI 2). With x2 set (pKVM's ABI wants zero) it
    //    is refused first.
    mov     x28, #8
    ldr     x0, =0xC6000004
    mov     x1, #0x80200000
    mov     x2, #1
    hvc     #0
    cmn     x0, #3
    b.ne    fail
    mov     x2, #0
    ldr     x0, =0xC6000004
    mov     x1, #0x80200000
    hvc     #0
    cbnz    x0, fail
    wfi
    // 9: SeKVM's grant and revoke over the page holding the secret.
    mov     x28, #9
    ldr     x0, =0x81000
    mov     x1, #0x80100000
    mov     x2, #4096
    hvc     #0
    cbnz    x0, fail
    ldr     x0, =0x82000
    mov     x1, #0x80100000
    mov     x2, #4096
    hvc     #0
    cbnz    x0, fail
    // 10: wait for an interrupt once more (WFI 3).
    wfi
    // 11: start vCPU 1 at `secondary` with context 0x77 (PSCI CPU_ON); an entry outside the
    //     verified image and a second start are refused. Then wait for its flag.
    mov     x28, #11
    ldr     x0, =0xC4000003
    mov     x1, #1
    adr     x2, secondary
    mov     x3, #0x77
    hvc     #0
    cbnz    x0, fail
    ldr     x0, =0xC4000003
    mov     x1, #1
    mov     x2, #0x1000
    mov     x3, #0
    hvc     #0
    cmn     x0, #9
    b.ne    fail
    ldr     x0, =0xC4000003
    mov     x1, #1
    adr     x2, secondary
    hvc     #0
    cmn     x0, #4
    b.ne    fail
    mov     x5, #0x80100000
3:  ldr     x6, [x5, #16]
    cmp     x6, #0x77
    b.eq    4f
    wfi
    b       3b
4:
    // 14: the virtual interrupt the host asked for (42) arrives through our own vector,
    //     acknowledged and completed through the (virtual) GIC CPU interface.
    //     The GIC: GICv3 system registers if ID_AA64PFR0_EL1.GIC says so; otherwise a GICv2
    //     CPU interface at 0x08010000 (x25 = its base; 0 for GICv3), which KCore backs with
    //     the virtual CPU interface (GICV).
    mov     x28, #14
    adr     x1, gvectors
    msr     vbar_el1, x1
    mrs     x1, id_aa64pfr0_el1
    ubfx    x1, x1, #24, #4
    mov     x25, #0
    cbz     x1, 9f
    mov     x1, #0xff
    msr     S3_0_C4_C6_0, x1        // ICC_PMR_EL1: every priority
    mov     x1, #1
    msr     S3_0_C12_C12_7, x1      // ICC_IGRPEN1_EL1: group 1 on
    b       10f
9:  mov     x25, #0x08010000
    mov     w1, #0xff
    str     w1, [x25, #0x4]         // GICC_PMR: every priority
    ldr     w1, [x25, #0x4]
    cmp     w1, #0xf8               // GICv2 virtual priorities: 5 bits
    b.ne    fail
    mov     w1, #1
    str     w1, [x25]               // GICC_CTLR.EnableGrp0 (group 0 virtual IRQs)
10: isb
    mov     x26, #0
    msr     daifclr, #2             // unmask IRQs
5:  cmp     x26, #42
    b.eq    6f
    wfi
    b       5b
6:  msr     daifset, #2
    adr     x3, irq
    bl      puts
    // 16: a wait with the timer armed far ahead: the WFI exit tells the host the deadline.
    mov     x28, #16
    ldr     x1, =0x7fff000000000000
    msr     cntv_cval_el0, x1
    mov     x1, #1
    msr     cntv_ctl_el0, x1        // ENABLE, unmasked
    isb
    wfi
    msr     cntv_ctl_el0, xzr
    // 15: the virtual timer: armed ~1000 ticks ahead, its interrupt (27) arrives.
    mov     x28, #15
    mov     x26, #0
    mrs     x1, cntvct_el0
    add     x1, x1, #1000
    msr     cntv_cval_el0, x1
    mov     x1, #1
    msr     cntv_ctl_el0, x1        // ENABLE, unmasked
    isb
    msr     daifclr, #2
7:  cmp     x26, #27
    b.eq    8f
    wfi
    b       7b
8:  msr     daifset, #2
    msr     cntv_ctl_el0, xzr       // timer off
    adr     x3, tick
    bl      puts
    adr     x3, done
    bl      puts
off:
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
1:  b       1b

fail:
    adr     x3, failed
    bl      puts
    add     w1, w28, #'0'
    strb    w1, [x20]
    mov     w1, #'\n'
    strb    w1, [x20]
    b       off

// vCPU 1: started by vCPU 0 with x0 = 0x77; it must see MPIDR Aff0 = 1.
secondary:
    mov     x20, #0x09000000
    mov     x28, #12
    mrs     x1, mpidr_el1
    and     x1, x1, #0xff
    cmp     x1, #1
    b.ne    fail
    mov     x5, #0x80100000
    str     x0, [x5, #16]
    adr     x3, cpu1
    bl      puts
    ldr     x0, =0x84000002         // PSCI CPU_OFF
    hvc     #0
    b       fail                    // CPU_OFF does not return

// puts(x3 = string): one MMIO write per byte.
puts:
    ldrb    w1, [x3], #1
    cbz     w1, 2f
    strb    w1, [x20]
    b       puts
2:  ret

hello:  .asciz "GUEST-OK: running under KCore\n"
irq:    .asciz "GUEST-IRQ-42\n"
tick:   .asciz "GUEST-TIMER-27\n"
done:   .asciz "GUEST-DONE\n"
cpu1:   .asciz "GUEST-CPU1-UP\n"
failed: .asciz "GUEST-FAIL "
.balign 8
.ltorg

// EL1 vectors: only the IRQ slot (current EL, SP_ELx, offset 0x280) is used.
.balign 0x800
gvectors:
    .fill   0x280, 1, 0
    cbnz    x25, 1f
    mrs     x26, S3_0_C12_C12_0     // ICC_IAR1_EL1: which interrupt
    msr     S3_0_C12_C12_1, x26     // ICC_EOIR1_EL1: done with it
    eret
1:  ldr     w26, [x25, #0xc]        // GICC_IAR: which interrupt
    str     w26, [x25, #0x10]       // GICC_EOIR: done with it
    eret
