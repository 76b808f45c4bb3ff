/*
 * smmu-bench: the host-side half of scripts/bench-smmu.sh. A static aarch64 Linux program
 * with no C library (raw system calls), so that the cross gcc alone builds it:
 *
 *   smmu-bench mmio PHYS N R   R rounds of N 32-bit reads of the register at physical
 *                              address PHYS (through a /dev/mem mapping, O_SYNC: device
 *                              memory), each round bracketed by CNTVCT_EL0 reads; prints
 *                              "mmio PHYS DELTA" per round
 *   smmu-bench loop N R        the same loop reading an ordinary variable instead: the
 *                              loop's own instructions, "loop 0 DELTA" per round
 *   smmu-bench read DEV BS P   P passes over the whole of block device DEV in BS-byte
 *                              O_DIRECT reads (one request each), each pass bracketed by
 *                              CNTVCT_EL0 reads and by reads of a perf counter of
 *                              instructions retired (CPU 0, every exception level); prints
 *                              "read REQUESTS DELTA INSTRUCTIONS" per pass ("-" for the
 *                              last if the kernel has no such counter)
 *
 * Under qemu-system-aarch64 -cpu max -icount shift=0,sleep=off the virtual counter advances
 * one tick per guest instruction (all CPUs' instructions), so DELTA is an instruction count
 * while some CPU is busy. When every CPU waits (WFI), as for a disk request, QEMU moves the
 * virtual clock on to the next timer deadline at once: DELTA then includes that skipped
 * time, which depends on when the host finished the I/O. QEMU's INST_RETIRED event (0x08,
 * only with -icount) is its raw instruction count, with no skipped time and, the count being
 * global, the instructions of every CPU: that is the INSTRUCTIONS figure. Numbers are
 * printed in decimal.
 */
typedef unsigned long u64;
typedef long i64;

#define SYS_openat 56
#define SYS_close 57
#define SYS_pread64 67
#define SYS_write 64
#define SYS_exit_group 94
#define SYS_mmap 222
#define SYS_read 63
#define SYS_perf_event_open 241
#define AT_FDCWD (-100)
#define O_RDONLY 0
#define O_RDWR 2
#define O_SYNC 04010000
#define O_DIRECT 0200000
#define PROT_READ 1
#define MAP_SHARED 1

static i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f)
{
    register i64 x8 __asm__("x8") = n;
    register i64 x0 __asm__("x0") = a;
    register i64 x1 __asm__("x1") = b;
    register i64 x2 __asm__("x2") = c;
    register i64 x3 __asm__("x3") = d;
    register i64 x4 __asm__("x4") = e;
    register i64 x5 __asm__("x5") = f;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}

static u64 now(void)
{
    u64 t;
    __asm__ volatile("isb; mrs %0, cntvct_el0; isb" : "=r"(t) : : "memory");
    return t;
}

static u64 slen(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

static void puts_(const char *s) { sys6(SYS_write, 1, (i64)s, (i64)slen(s), 0, 0, 0); }

static void putu(u64 v)
{
    char b[24];
    int i = 23;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts_(&b[i]);
}

static void die(const char *what, i64 err)
{
    puts_("smmu-bench: ");
    puts_(what);
    puts_(" failed, errno ");
    putu((u64)-err);
    puts_("\n");
    sys6(SYS_exit_group, 1, 0, 0, 0, 0, 0);
}

/* Decimal or 0x-prefixed hexadecimal. */
static u64 num(const char *s)
{
    u64 v = 0, base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (; *s; s++) {
        u64 d;
        if (*s >= '0' && *s <= '9')
            d = (u64)(*s - '0');
        else if (*s >= 'a' && *s <= 'f')
            d = (u64)(*s - 'a' + 10);
        else if (*s >= 'A' && *s <= 'F')
            d = (u64)(*s - 'A' + 10);
        else
            break;
        v = v * base + d;
    }
    return v;
}

static int eq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static volatile unsigned int plain;
static unsigned char buf[65536] __attribute__((aligned(4096)));

/* N reads of *reg, between two counter reads. */
static u64 reads(const volatile unsigned int *reg, u64 n)
{
    u64 t0 = now();
    for (u64 i = 0; i < n; i++)
        (void)*reg;
    return now() - t0;
}

static void line(const char *tag, u64 a, u64 delta)
{
    puts_(tag);
    puts_(" ");
    putu(a);
    puts_(" ");
    putu(delta);
    puts_("\n");
}

/* struct perf_event_attr as of PERF_ATTR_SIZE_VER0 (64 bytes): a counting event of
 * PERF_TYPE_HARDWARE / PERF_COUNT_HW_INSTRUCTIONS, enabled at once, nothing excluded (with
 * exclude_hv clear the arm PMU driver counts EL2 too, also when the kernel is at EL1). */
struct perf_attr {
    unsigned int type, size;
    u64 config, sample_period, sample_type, read_format, flags;
    unsigned int wakeup_events, bp_type;
    u64 bp_addr;
};

static i64 insn_counter(void)
{
    struct perf_attr a;
    unsigned char *z = (unsigned char *)&a;
    for (u64 i = 0; i < sizeof a; i++)
        z[i] = 0;
    a.type = 0;   /* PERF_TYPE_HARDWARE */
    a.size = 64;
    a.config = 1; /* PERF_COUNT_HW_INSTRUCTIONS */
    return sys6(SYS_perf_event_open, (i64)&a, -1, 0, -1, 0, 0);
}

static u64 insns(i64 fd)
{
    u64 v = 0;
    if (fd >= 0 && sys6(SYS_read, fd, (i64)&v, 8, 0, 0, 0) != 8)
        v = 0;
    return v;
}

static int run(int argc, char **argv)
{
    if (argc == 5 && eq(argv[1], "mmio")) {
        u64 phys = num(argv[2]), n = num(argv[3]), r = num(argv[4]);
        i64 fd = sys6(SYS_openat, AT_FDCWD, (i64)"/dev/mem", O_RDWR | O_SYNC, 0, 0, 0);
        if (fd < 0)
            die("open /dev/mem", fd);
        i64 p = sys6(SYS_mmap, 0, 4096, PROT_READ, MAP_SHARED, fd, (i64)(phys & ~0xfffUL));
        if (p < 0 && p > -4096)
            die("mmap /dev/mem", p);
        const volatile unsigned int *reg = (const volatile unsigned int *)(p + (i64)(phys & 0xfff));
        for (u64 i = 0; i < r; i++)
            line("mmio", phys, reads(reg, n));
        return 0;
    }
    if (argc == 4 && eq(argv[1], "loop")) {
        u64 n = num(argv[2]), r = num(argv[3]);
        for (u64 i = 0; i < r; i++)
            line("loop", 0, reads(&plain, n));
        return 0;
    }
    if (argc == 5 && eq(argv[1], "read")) {
        u64 bs = num(argv[3]), passes = num(argv[4]);
        if (bs == 0 || bs > sizeof buf || bs % 512)
            die("block size check", -22);
        i64 fd = sys6(SYS_openat, AT_FDCWD, (i64)argv[2], O_RDONLY | O_DIRECT, 0, 0, 0);
        if (fd < 0)
            die("open device", fd);
        i64 pfd = insn_counter();
        for (u64 p = 0; p < passes; p++) {
            u64 reqs = 0, off = 0;
            u64 i0 = insns(pfd);
            u64 t0 = now();
            for (;;) {
                i64 got = sys6(SYS_pread64, fd, (i64)buf, (i64)bs, (i64)off, 0, 0);
                if (got < 0)
                    die("pread", got);
                if (got == 0)
                    break;
                reqs++;
                off += (u64)got;
            }
            u64 t1 = now();
            u64 i1 = insns(pfd);
            puts_("read ");
            putu(reqs);
            puts_(" ");
            putu(t1 - t0);
            puts_(" ");
            if (pfd >= 0)
                putu(i1 - i0);
            else
                puts_("-");
            puts_("\n");
        }
        sys6(SYS_close, fd, 0, 0, 0, 0, 0);
        return 0;
    }
    puts_("usage: smmu-bench mmio PHYS N ROUNDS | loop N ROUNDS | read DEV BS PASSES\n");
    return 2;
}

/* The entry point: argc at [sp], argv after it. */
__attribute__((used)) void start_c(u64 *sp)
{
    sys6(SYS_exit_group, run((int)sp[0], (char **)(sp + 1)), 0, 0, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n mov x0, sp\n bl start_c\n");
