// KCore entry points and EL2 exception vectors.
//
// Register use at entry (arm64 Linux boot protocol, Documentation/arch/arm64/booting.rst):
// x0 = physical address of the device tree, MMU off, at EL2, interrupts masked.

.equ STACK_SIZE, 0x10000
.equ MAX_CPUS, 16
.equ FRAME_SIZE, 272            // struct TrapFrame: x0..x30, elr, spsr, pad

// ---------------------------------------------------------------- arm64 Image header
// The same bytes are also a PE/COFF image (UEFI spec 2.10 section 2.1.1: UEFI images use the
// PE32+ format), as the arm64 Linux Image with its EFI stub is: code0 begins with "MZ", the
// DOS header's signature, and the Image header's res5 at 0x3c is the DOS header's e_lfanew,
// the offset of the PE header. Started as an Image (MMU off, x0 = device tree), code0 is a
// harmless compare and code1 branches to primary_entry; started by UEFI firmware as an EFI
// application, execution begins at efi_pe_entry (AddressOfEntryPoint).
.section .text.head, "ax"
.global _start
_start:
    .long   0xfa405a4d          // code0: "MZ" + ccmp x18, #0, #0xd, pl (changes only flags)
    b       primary_entry       // code1
    .quad   0                   // text_offset: loaded at a 2 MiB aligned base
    .quad   __image_size        // image_size: must be non-zero (covers BSS and stacks)
    .quad   0xa                 // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0                   // res2
    .quad   0                   // res3
    .quad   0                   // res4
    .ascii  "ARM\x64"           // magic
    .long   pe_header - _start  // res5: e_lfanew, where the PE header is

// PE32+ headers (Microsoft PE/COFF specification): one section, text to stacks, read, write
// and execute (KCore's own EL2 map sets the permissions it runs with); no base relocations,
// since KCore relocates itself; the firmware chooses the address (ImageBase 0).
pe_header:
    .ascii  "PE\0\0"
    .short  0xaa64              // Machine: IMAGE_FILE_MACHINE_ARM64
    .short  1                   // NumberOfSections
    .long   0                   // TimeDateStamp
    .long   0                   // PointerToSymbolTable
    .long   0                   // NumberOfSymbols
    .short  pe_sections - pe_optional   // SizeOfOptionalHeader
    .short  0x206               // Characteristics: EXECUTABLE_IMAGE, LINE_NUMS_ and DEBUG_STRIPPED
pe_optional:
    .short  0x20b               // Magic: PE32+
    .byte   0, 0                // linker version
    .long   __pe_raw_size       // SizeOfCode
    .long   0                   // SizeOfInitializedData
    .long   0                   // SizeOfUninitializedData
    .long   __pe_entry_rva      // AddressOfEntryPoint
    .long   __pe_headers_size   // BaseOfCode
    .quad   0                   // ImageBase
    .long   0x1000              // SectionAlignment
    .long   0x1000              // FileAlignment
    .short  0, 0                // operating system version
    .short  0, 0                // image version
    .short  0, 0                // subsystem version
    .long   0                   // Win32VersionValue
    .long   __image_size        // SizeOfImage: with BSS and stacks, which the loader zeroes
    .long   __pe_headers_size   // SizeOfHeaders
    .long   0                   // CheckSum
    .short  10                  // Subsystem: IMAGE_SUBSYSTEM_EFI_APPLICATION
    .short  0                   // DllCharacteristics
    .quad   0, 0, 0, 0          // stack and heap reserve and commit
    .long   0                   // LoaderFlags
    .long   6                   // NumberOfRvaAndSizes
    .quad   0, 0, 0, 0, 0, 0    // data directories (export .. base relocation): none
pe_sections:
    .ascii  ".text\0\0\0"
    .long   __pe_virt_size      // VirtualSize
    .long   __pe_headers_size   // VirtualAddress
    .long   __pe_raw_size       // SizeOfRawData
    .long   __pe_headers_size   // PointerToRawData: the file is the image, byte for byte
    .long   0, 0                // relocations, line numbers
    .short  0, 0
    .long   0xe0000060          // CNT_CODE | CNT_INITIALIZED_DATA | MEM_EXECUTE | MEM_READ | MEM_WRITE

.section .text.boot, "ax"
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    park                // KCore must own EL2
    bl      kcore_relocate      // before anything reads an address out of the image's data
primary_relocated:
    // Zero BSS before any Rust code runs.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mov     x0, #0
    bl      cpu_setup_stack
    adrp    x1, __boot_stack_top        // the boot CPU sets KCore up on its larger boot stack
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    mov     x0, x19
    bl      kcore_primary_main  // does not return
    b       park

// The UEFI entry point (UEFI spec 2.10 section 4.1: x0 = ImageHandle, x1 = SystemTable, the
// firmware's MMU, caches and stack; at EL2 when the firmware runs there). Relocate, then let
// the loader (efi.rs) do its work; it returns only when it failed, with the EFI status for
// the firmware, and otherwise ends in kcore_efi_start.
.global efi_pe_entry
efi_pe_entry:
    stp     x29, x30, [sp, #-32]!
    mov     x29, sp
    stp     x0, x1, [sp, #16]
    bl      kcore_relocate
    ldp     x0, x1, [sp, #16]
    bl      kcore_efi_main
    ldp     x29, x30, [sp], #32
    ret

// kcore_efi_start(x0 = device tree): after ExitBootServices, with KCore's image, the tree, the
// kernel and initrd cleaned to the point of coherency. Turn the EL2 MMU and data cache off
// (this code runs identity mapped, so the next fetch is the same address) and start as the
// arm64 boot protocol starts KCore: MMU off, the device tree's address.
.global kcore_efi_start
kcore_efi_start:
    msr     daifset, #0xf
    mov     x19, x0
    mrs     x1, sctlr_el2
    bic     x1, x1, #1          // M
    bic     x1, x1, #(1 << 2)   // C
    msr     sctlr_el2, x1
    isb
    ic      iallu
    dsb     nsh
    isb
    // With the MMU off, what the firmware may have set that a reset would not have: EL2 code
    // on SP_EL2 (SPSel 1; no stack is used until primary_entry sets one) and the non-VHE EL2
    // regime, E2H = 0 (HCR_EL2 is written whole again before the host runs).
    msr     spsel, #1
    msr     hcr_el2, xzr
    isb
    // On in primary_entry (x19 = device tree, EL2 checked by the loader), past the relocation
    // efi_pe_entry already applied.
    b       primary_relocated

// kcore_relocate: apply the image's dynamic relocations (.rela.dyn of the position-independent
// link, all R_AARCH64_RELATIVE: *(P) = B + A, ELF for the Arm 64-bit Architecture) for the
// address the image runs at, B being the load address minus the link address. Assigning
// B + A (not adding) makes a second pass harmless. An entry of another type parks the CPU:
// the link produced something this loader cannot place. Leaf: uses x1..x7 only.
.equ R_AARCH64_RELATIVE, 1027
kcore_relocate:
    adr     x1, _start
    ldr     x2, =KCORE_LOAD_ADDR    // an absolute linker-script symbol: needs no relocation
    sub     x1, x1, x2
    adrp    x2, __rela_start
    add     x2, x2, :lo12:__rela_start
    adrp    x3, __rela_end
    add     x3, x3, :lo12:__rela_end
1:  cmp     x2, x3
    b.hs    2f
    ldp     x4, x5, [x2], #16       // r_offset, r_info
    ldr     x6, [x2], #8            // r_addend
    cmp     w5, #R_AARCH64_RELATIVE
    b.ne    park
    add     x4, x4, x1
    add     x6, x6, x1
    str     x6, [x4]
    b       1b
2:  ret
.ltorg

// Where firmware starts every other CPU (PSCI CPU_ON / resume), x0 = KCore's CPU index.
.global kcore_secondary_entry
kcore_secondary_entry:
    msr     daifset, #0xf
    cmp     x0, #MAX_CPUS
    b.hs    park
    mov     x19, x0
    bl      cpu_setup_stack
    mov     x0, x19
    bl      kcore_secondary_main // does not return
    b       park

// x0 = CPU index: SP_EL2 = top of its stack, TPIDR_EL2 = index, VBAR_EL2 = vectors.
cpu_setup_stack:
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x0, #1
    mov     x3, #STACK_SIZE
    madd    x1, x2, x3, x1
    mov     sp, x1
    msr     tpidr_el2, x0
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    ret

.global park
park:
    wfe
    b       park

// enter_el1(entry, arg, stack_top): drop to EL1h at `entry` with x0 = arg and every other
// general-purpose register zero, resetting this CPU's EL2 stack. SPSR_EL2 is set by Rust.
.global kcore_enter_el1
kcore_enter_el1:
    mov     sp, x2
    msr     elr_el2, x0
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret

// ---------------------------------------------------------------- vectors
// Each slot saves x0/x1, puts the slot number in x0 and branches to the common path, which
// builds a full TrapFrame on the EL2 stack and calls kcore_trap(slot, frame).
.macro VECTOR slot
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\slot
    b       trap_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    VECTOR 0    // current EL, SP_EL0: sync
    VECTOR 1    //   irq
    VECTOR 2    //   fiq
    VECTOR 3    //   serror
    VECTOR 4    // current EL, SP_ELx: sync
    VECTOR 5    //   irq
    VECTOR 6    //   fiq
    VECTOR 7    //   serror
    VECTOR 8    // lower EL, AArch64: sync
    VECTOR 9    //   irq
    VECTOR 10   //   fiq
    VECTOR 11   //   serror
    VECTOR 12   // lower EL, AArch32: sync
    VECTOR 13   //   irq
    VECTOR 14   //   fiq
    VECTOR 15   //   serror

trap_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x30, x2, [sp, #240]
    str     x3, [sp, #256]
    mov     x1, sp
    bl      kcore_trap
    ldr     x3, [sp, #256]
    ldp     x30, x2, [sp, #240]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret

// ---------------------------------------------------------------- world switch
// kcore_guest_enter(x0 = vCPU context page) -> x0 = exit code. Saves KCore's callee-saved
// registers on this CPU's stack and the stack pointer in KCORE_GUEST_SAVED_SP[cpu], loads the
// guest's x0..x30 from the page and enters it (ELR_EL2, SPSR_EL2 and the EL1 state are set
// by the caller).
.section .text, "ax"
.global kcore_guest_enter
kcore_guest_enter:
    stp     x19, x20, [sp, #-96]!
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    mrs     x1, tpidr_el2
    adrp    x2, KCORE_GUEST_SAVED_SP
    add     x2, x2, :lo12:KCORE_GUEST_SAVED_SP
    mov     x3, sp
    str     x3, [x2, x1, lsl #3]
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0]
    eret

// kcore_guest_exit(x0 = code): abandon the guest-trap path and return `code` from this CPU's
// kcore_guest_enter (the guest's registers were saved by the trap path).
.global kcore_guest_exit
kcore_guest_exit:
    mrs     x1, tpidr_el2
    adrp    x2, KCORE_GUEST_SAVED_SP
    add     x2, x2, :lo12:KCORE_GUEST_SAVED_SP
    ldr     x3, [x2, x1, lsl #3]
    mov     sp, x3
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     x19, x20, [sp], #96
    ret

// ---------------------------------------------------------------- FP/SIMD state
// KCore itself is built soft-float and never touches these registers; only the world switch
// moves them. x0 = 528-byte area: q0..q31, FPSR, FPCR.
.arch_extension fp
.arch_extension simd
.global kcore_fp_save
kcore_fp_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpsr
    mrs     x2, fpcr
    add     x3, x0, #512
    stp     x1, x2, [x3]
    ret

.global kcore_fp_restore
kcore_fp_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x3, x0, #512
    ldp     x1, x2, [x3]
    msr     fpsr, x1
    msr     fpcr, x2
    ret
