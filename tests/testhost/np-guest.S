// A guest for a non-protected VM: its memory is lent by the test host, which keeps access
// to it, sets its registers and reads them back. It reports values with 64-bit stores to
// 0x09001000 + 8 * k (MMIO exits), then powers off.
.section .text
.global _start
_start:
    ldr     x21, =0x09001000
    str     x0, [x21]               // 0: x0 as the host set it
    mov     x5, #0x80100000         // a page the host lent, holding its value
    ldr     x6, [x5]
    str     x6, [x21, #8]           // 1: the host's value
    ldr     x7, =0x6e6f6e2d70726f74
    str     x7, [x5, #8]            // the host reads this while the guest runs
    mov     x9, #0x5555             // the host reads this register at the next exit
    wfi
    ldr     x6, [x5, #16]
    str     x6, [x21, #16]          // 2: what the host wrote during the WFI exit
    mov     x10, #0x80200000        // RAM not backed yet: the host lends a page on the fault
    ldr     x11, =0xabcdef
    str     x11, [x10]
    ldr     x12, [x10]
    str     x12, [x21, #24]         // 3: the value read back
    mov     x13, #0x90000000        // above 1 GiB but outside the VM's RAM regions: MMIO
    str     x11, [x13]
    ldr     x12, [x10]              // the host took that page back: faults again
    str     x12, [x21, #32]         // 4: what the new page holds
    ldr     x0, =0x86000000         // KVM features: no pKVM memory calls for this kind
    hvc     #0
    str     x0, [x21, #40]          // 5
    ldr     x0, =0xC6000003         // MEM_SHARE: not for a non-protected VM
    mov     x1, #0x80100000
    hvc     #0
    str     x0, [x21, #48]          // 6
    ldr     x0, =0x84000008         // PSCI SYSTEM_OFF
    hvc     #0
1:  b       1b
.ltorg
