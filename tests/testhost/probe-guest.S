// The CPU a guest sees (signed, loaded at IPA 0x80000000, entered at EL1 with the MMU off).
// It installs its own vectors: a synchronous exception with EC 0x00 (Undefined Instruction,
// what KCore injects for a hidden feature) is counted and the faulting instruction skipped;
// any other exception is reported to the host (BAD, below) and skipped too. Then:
//  (a) it reads the 56 ID registers HCR_EL2.TID3 traps and reports each value;
//  (b) it touches each hidden feature once and reports how many of those UNDEFed (and which);
//  (c) it uses the debug registers KCore emulates and reports what they read back;
//  (d) it writes the three SGI registers (VCPU_RUN exit 8 for each);
//  (e) it writes and reads the EL1 physical timer the host emulates (exit 9);
//  (f) it does set/way cache maintenance, which KCore ignores;
// and powers off. Everything is reported with 64-bit stores to fake MMIO addresses:
.equ ID_BASE,  0x09010000       // ID register (CRm, op2) at + 8 * ((CRm - 1) * 8 + op2)
.equ RES_BASE, 0x09020000       // result k at + 8 * k (the list below)
.equ BAD,      0x09030000       // an unexpected exception: ESR at + 0, ELR at + 8
// Results (RES_BASE + 8 * k), as tests/testhost/src/probe.rs reads them:
.equ R_ID_UNDEFS,   0           // UNDEFs while reading the ID registers (0)
.equ R_ATTEMPTS,    1           // hidden-feature probes attempted
.equ R_UNDEFS,      2           // UNDEFs they caused
.equ R_WHICH,       3           // bit n: probe n UNDEFed
.equ R_DBGBCR0,     4           // DBGBCR0_EL1 after writing 0x1e7 (0)
.equ R_DBGBVR0,     5           // DBGBVR0_EL1 after writing an address (0)
.equ R_DBGWCR0,     6           // DBGWCR0_EL1 after writing 0x1ff7 (0)
.equ R_DBGWVR0,     7           // DBGWVR0_EL1 after writing an address (0)
.equ R_OSLSR,       8           // OSLSR_EL1 after OSLAR_EL1 = 0 (8)
.equ R_MDSCR,       9           // MDSCR_EL1 after writing MDE | KDE | TDCC (TDCC)
.equ R_CNTP_CTL,    10          // CNTP_CTL_EL0 as the host answered the read
.equ R_CNTP_TVAL,   11          // CNTP_TVAL_EL0 as the host answered the read
.equ R_LATE_UNDEFS, 12          // UNDEFs during (c) to (f) (0)
.equ R_DONE,        13          // 0x600d: reached the end

.equ SGI1R_VALUE,  0x0055003b0d771234  // Aff3 0x55, Aff2 0x3b, INTID 13, Aff1 0x77, targets
.equ SGI0R_VALUE,  0x0000000005000003  // INTID 5 to CPUs 0 and 1 of cluster 0
.equ ASGI1R_VALUE, 0x0000000102001001  // Aff2 1, INTID 2, Aff1 0x10, target 1
.equ CVAL_VALUE,   0x0123456789abcdef

// Register use: x19 BAD, x20 RES_BASE, x21 ID_BASE, x23 which probes UNDEFed, x24 probes
// attempted, x25 handler scratch, x26 "the last instruction UNDEFed", x27 UNDEF count.

.macro report k, reg
    str     \reg, [x20, #(8 * \k)]
.endm

// One hidden-feature probe: the instruction must UNDEF (EC 0x00), nothing else.
.macro probe insn:vararg
    mov     x26, #0
    \insn
    lsl     x26, x26, x24
    orr     x23, x23, x26
    add     x24, x24, #1
.endm

.macro idreg crm, op2
    mrs     x0, S3_0_C0_C\crm\()_\op2
    str     x0, [x21, #(8 * ((\crm - 1) * 8 + \op2))]
.endm

.section .text
.global _start
_start:
    ldr     x19, =BAD
    ldr     x20, =RES_BASE
    ldr     x21, =ID_BASE
    mov     x23, #0
    mov     x24, #0
    mov     x27, #0
    adr     x1, vectors
    msr     vbar_el1, x1
    // FP/SIMD, SVE and SME all enabled at EL1 (CPACR_EL1.FPEN, ZEN, SMEN): what is hidden
    // must trap to KCore (CPTR_EL2), not to the guest's own EL1 with EC 0x07/0x19/0x1d.
    ldr     x1, =(3 << 20) | (3 << 16) | (3 << 24)
    msr     cpacr_el1, x1
    isb

    // (a) The ID registers: op0 3, op1 0, CRn 0, CRm 1..7, op2 0..7.
    .irp crm, 1, 2, 3, 4, 5, 6, 7
    .irp op2, 0, 1, 2, 3, 4, 5, 6, 7
    idreg   \crm, \op2
    .endr
    .endr
    report  R_ID_UNDEFS, x27
    mov     x27, #0

    // (b) Each hidden feature once. Probe n sets bit n of x23 if it UNDEFed.
    mov     x1, #0x5a
    mov     x2, #0xa5
    probe   .inst 0x04bf5020        // 0: RDVL x0, #1 (SVE)
    probe   mrs x0, S3_0_C1_C2_0    // 1: ZCR_EL1 (SVE)
    probe   msr S3_0_C1_C2_0, x1    // 2: ZCR_EL1 write
    probe   .inst 0xd503477f        // 3: SMSTART (SME)
    probe   mrs x0, S3_3_C4_C2_2    // 4: SVCR (SME)
    probe   mrs x0, S3_0_C1_C2_6    // 5: SMCR_EL1 (SME)
    probe   mrs x0, S3_3_C13_C0_5   // 6: TPIDR2_EL0 (SME)
    probe   mrs x0, S3_0_C1_C2_4    // 7: SMPRI_EL1 (SME)
    probe   .inst 0x9ac23020        // 8: PACGA x0, x1, x2 (pointer authentication)
    probe   mrs x0, S3_0_C2_C1_0    // 9: APIAKeyLo_EL1
    probe   msr S3_0_C2_C1_0, x1    // 10: APIAKeyLo_EL1 write
    probe   mrs x0, S3_3_C9_C12_0   // 11: PMCR_EL0 (PMU)
    probe   mrs x0, S3_3_C9_C13_0   // 12: PMCCNTR_EL0 (PMU)
    probe   mrs x0, S3_0_C10_C4_3   // 13: LORC_EL1 (LORegions)
    probe   mrs x0, S3_0_C5_C3_0    // 14: ERRIDR_EL1 (RAS error records)
    probe   mrs x0, S3_3_C13_C2_0   // 15: AMCR_EL0 (activity monitors)
    probe   mrs x0, S3_0_C1_C0_6    // 16: GCR_EL1 (MTE)
    probe   mrs x0, S2_1_C0_C1_0    // 17: TRCPRGCTLR (trace)
    probe   mrs x0, S3_0_C9_C9_0    // 18: PMSCR_EL1 (SPE)
    probe   mrs x0, S3_0_C1_C0_1    // 19: ACTLR_EL1
    probe   mrs x0, S3_0_C15_C0_0   // 20: an IMPLEMENTATION DEFINED register
    probe   msr S3_0_C0_C4_0, x1    // 21: ID_AA64PFR0_EL1 write (read-only)
    report  R_ATTEMPTS, x24
    report  R_UNDEFS, x27
    report  R_WHICH, x23
    mov     x27, #0

    // (c) Debug registers: emulated (read as zero, writes ignored; OSLSR and MDSCR apart).
    mov     x1, #0x1e7
    msr     dbgbcr0_el1, x1
    mrs     x2, dbgbcr0_el1
    report  R_DBGBCR0, x2
    ldr     x1, =0x80001000
    msr     dbgbvr0_el1, x1
    mrs     x2, dbgbvr0_el1
    report  R_DBGBVR0, x2
    mov     x1, #0x1ff7
    msr     dbgwcr0_el1, x1
    mrs     x2, dbgwcr0_el1
    report  R_DBGWCR0, x2
    ldr     x1, =0x80001000
    msr     dbgwvr0_el1, x1
    mrs     x2, dbgwvr0_el1
    report  R_DBGWVR0, x2
    msr     oslar_el1, xzr
    mrs     x2, oslsr_el1
    report  R_OSLSR, x2
    mov     x1, #((1 << 15) | (1 << 13) | (1 << 12))
    msr     mdscr_el1, x1
    mrs     x2, mdscr_el1
    report  R_MDSCR, x2
    msr     mdscr_el1, xzr

    // (d) SGIs: one exit each, with the value written and which register.
    ldr     x1, =SGI1R_VALUE
    msr     S3_0_C12_C11_5, x1      // ICC_SGI1R_EL1
    ldr     x5, =SGI0R_VALUE
    msr     S3_0_C12_C11_7, x5      // ICC_SGI0R_EL1
    ldr     x17, =ASGI1R_VALUE
    msr     S3_0_C12_C11_6, x17     // ICC_ASGI1R_EL1

    // (e) The EL1 physical timer, emulated by the host: writes carry the value, reads take
    //     the host's answer.
    mov     x1, #1
    msr     cntp_ctl_el0, x1        // ENABLE
    mrs     x2, cntp_ctl_el0
    report  R_CNTP_CTL, x2
    ldr     x1, =CVAL_VALUE
    msr     cntp_cval_el0, x1
    mrs     x13, cntp_tval_el0
    report  R_CNTP_TVAL, x13

    // (f) Set/way cache maintenance: ignored, no exception.
    mov     x1, #0
    dc      cisw, x1
    dc      csw, x1
    mov     x1, #2                  // level 2
    dc      isw, x1
    report  R_LATE_UNDEFS, x27

    mov     x1, #0x600d
    report  R_DONE, x1
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
1:  b       1b

// An exception other than an Undefined Instruction: tell the host, skip the instruction.
bad_sync:
    mrs     x25, esr_el1
    str     x25, [x19]
    mrs     x25, elr_el1
    str     x25, [x19, #8]
    add     x25, x25, #4
    msr     elr_el1, x25
    eret

// Any other vector (nothing else is expected: interrupts stay masked).
bad_vector:
    mrs     x25, esr_el1
    str     x25, [x19, #16]
    ldr     x0, =0x84000008
    hvc     #0
    b       bad_vector

.balign 8
.ltorg

.balign 0x800
vectors:
    .rept 4                         // current EL with SP_EL0
    b       bad_vector
    .balign 0x80
    .endr
    // Current EL with SP_ELx, synchronous.
    mrs     x25, esr_el1
    lsr     x25, x25, #26
    cbnz    x25, bad_sync
    add     x27, x27, #1
    mov     x26, #1
    mrs     x25, elr_el1
    add     x25, x25, #4
    msr     elr_el1, x25
    eret
    .balign 0x80
    .rept 11                        // the rest
    b       bad_vector
    .balign 0x80
    .endr
