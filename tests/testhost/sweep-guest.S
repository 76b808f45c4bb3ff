// Register sweep (signed, loaded at IPA 0x80000000, entered at EL1 with the MMU off).
// A: host -> guest. Around every VCPU_RUN the test host holds its secrets in x3, x7, x9..x30,
//    SP, q0..q31 (with SVE, Z0..Z31 and P0..P15), FPCR, FPSR and the EL1 registers below. The
//    guest reports what it finds in each at entry; the host checks none of it is the host's.
// B: guest -> host. The guest puts its own secrets in the EL1 registers (reporting what each
//    reads back), FPCR, FPSR, q0..q31, SP and x0..x29, then exits with an MMIO store; the host
//    checks that none of that reached its own registers.
// C: after the host resumes it, the guest checks its values survived the exit and reports.
// Everything is reported with 64-bit stores to fake MMIO addresses (an exit each).
.equ A_BASE,    0x09020000      // A: SP, then the EL1 registers, FPCR, FPSR, q0..q31
.equ B_BASE,    0x09030000      // B: the EL1 registers as they read back, FPCR, FPSR
.equ SWEEP_OUT, 0x8000          // B: the exit with every register full of guest secrets
                                //    (x30 holds this address: CMP can check it)
.equ C_BASE,    0x09050000      // C: x0..x30 mismatches, SP mismatch, q mismatches, then
                                //    the EL1 registers, FPCR, FPSR as they read now
// x0..x30 at entry go to IPA 8 * n: stored through SP, which must be 0 (nothing of the
// host's), before any register changes.

.equ GTAG, 0x4775457300000000   // "GuEs": the high half of every guest secret
.equ GX,   GTAG | 0x58000000    // x<n> = GX + n
.equ GQ,   GTAG | 0x51000000    // q<n> = GQ + 2n (low half), GQ + 2n + 1 (high half)
.equ GSP,  GTAG | 0x53500000
.equ GS,   GTAG | 0x470000a5    // EL1 register k = GS | k << 8, unless said otherwise
.equ G_FPCR, 0x01400000         // FZ, RMode = 01
.equ G_FPSR, 0x00000015         // IXC, UFC, IOC

// The EL1 registers of the sweep, in the order tests/testhost/src/probe.rs knows them.
.macro each_el1 m
    \m tpidr_el0, 0
    \m tpidr_el1, 1
    \m tpidrro_el0, 2
    \m contextidr_el1, 3
    \m afsr0_el1, 4
    \m afsr1_el1, 5
    \m far_el1, 6
    \m par_el1, 7
    \m mair_el1, 8
    \m amair_el1, 9
    \m cntkctl_el1, 10
    \m cntv_cval_el0, 11
    \m sp_el0, 12
    \m esr_el1, 13
    \m mdscr_el1, 14
    \m ttbr0_el1, 15
    \m ttbr1_el1, 16
    \m tcr_el1, 17
    \m csselr_el1, 18
    \m cntv_ctl_el0, 19
    \m cpacr_el1, 20
    \m elr_el1, 21
    \m spsr_el1, 22
    \m vbar_el1, 23
.endm

.macro report_a reg, k          // A_BASE + 8 * (1 + k)
    mrs     x0, \reg
    str     x0, [x20, #(8 * (1 + \k))]
.endm

.macro report_c reg, k          // C_BASE + 8 * (3 + k)
    mrs     x0, \reg
    str     x0, [x20, #(8 * (3 + \k))]
.endm

// Put the guest secret in EL1 register k and report what reads back (B_BASE + 8 * k).
.macro secret reg, k
    .if \k == 14
    ldr     x0, =0xa001             // MDSCR_EL1: MDE | KDE | SS (KCore keeps only SS)
    .elseif \k == 18
    mov     x0, #1                  // CSSELR_EL1: level 1 instruction cache
    .elseif \k == 19
    mov     x0, #2                  // CNTV_CTL_EL0: IMASK, timer off
    .elseif \k == 20
    ldr     x0, =(1 << 28) | (3 << 20) // CPACR_EL1: TTA, FPEN (FP/SIMD stays usable)
    .elseif \k == 23
    ldr     x0, =(GS | (\k << 8)) & ~0x7ff // VBAR_EL1: 2 KiB aligned
    .else
    ldr     x0, =GS | (\k << 8)
    .endif
    msr     \reg, x0
    isb
    mrs     x1, \reg
    str     x1, [x21, #(8 * \k)]
.endm

.section .text
.global _start
_start:
    // A: the general registers first, untouched, through SP.
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
    str     x\n, [sp, #(8 * \n)]
    .endr
    ldr     x20, =A_BASE
    mov     x0, sp
    str     x0, [x20]
    each_el1 report_a
    // FP/SIMD on for EL1, then FPCR, FPSR and q0..q31.
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    mrs     x0, fpcr
    str     x0, [x20, #(8 * 25)]
    mrs     x0, fpsr
    str     x0, [x20, #(8 * 26)]
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    fmov    x0, d\n
    str     x0, [x20, #(8 * (27 + 2 * \n))]
    mov     x0, v\n\().d[1]
    str     x0, [x20, #(8 * (28 + 2 * \n))]
    .endr

    // B: the guest's secrets everywhere.
    ldr     x21, =B_BASE
    each_el1 secret
    ldr     x0, =G_FPCR
    msr     fpcr, x0
    mrs     x1, fpcr
    str     x1, [x21, #(8 * 24)]
    ldr     x0, =G_FPSR
    msr     fpsr, x0
    mrs     x1, fpsr
    str     x1, [x21, #(8 * 25)]
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    ldr     x0, =GQ + 2 * \n
    ldr     x1, =GQ + 2 * \n + 1
    fmov    d\n, x0
    mov     v\n\().d[1], x1
    .endr
    ldr     x0, =GSP
    mov     sp, x0
    ldr     x30, =SWEEP_OUT
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29
    ldr     x\n, =GX + \n
    .endr
    str     xzr, [x30]              // exit to the host with all of it live

    // C: everything still the guest's? x0 = bit n set if x<n> changed (bit 0: x0 or x30).
    cmp     x30, #SWEEP_OUT
    ldr     x30, =GX
    ccmp    x0, x30, #0, eq
    cset    x0, ne
    .irp n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29
    ldr     x30, =GX + \n
    cmp     x\n, x30
    cset    x30, ne
    orr     x0, x0, x30, lsl #\n
    .endr
    ldr     x20, =C_BASE
    str     x0, [x20]
    mov     x1, sp
    ldr     x2, =GSP
    cmp     x1, x2
    cset    x3, ne
    str     x3, [x20, #8]
    mov     x3, #0                  // bit n set if q<n> changed
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    fmov    x0, d\n
    ldr     x1, =GQ + 2 * \n
    cmp     x0, x1
    cset    x2, ne
    mov     x0, v\n\().d[1]
    ldr     x1, =GQ + 2 * \n + 1
    cmp     x0, x1
    cset    x4, ne
    orr     x2, x2, x4
    orr     x3, x3, x2, lsl #\n
    .endr
    str     x3, [x20, #16]
    each_el1 report_c
    mrs     x0, fpcr
    str     x0, [x20, #(8 * 27)]
    mrs     x0, fpsr
    str     x0, [x20, #(8 * 28)]
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
1:  b       1b
.balign 8
.ltorg
