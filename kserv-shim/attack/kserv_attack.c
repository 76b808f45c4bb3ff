// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kserv_attack: the project's own malicious host module, for tests only. It is what a
 * compromised host kernel can do: it runs at EL1 with every kernel privilege, next to the
 * kserv shim, and goes after a protected VM's memory and registers every way it can:
 *
 *  - reads the VM's RAM through the kernel's linear map, finding the pages through the
 *    VMM's own mapping (get_user_pages_remote), and scans all of the host's RAM for known
 *    secrets;
 *  - maps any physical page into a user process without the checks /dev/mem makes (its mmap
 *    takes the file offset as the physical address), so a user process can try the VM's
 *    pages directly;
 *  - calls every KCore hypercall with the VM's pages: donates them, registers a VM on them,
 *    maps them into an image of its own VM, lends them, asks KCore for the VM's registers,
 *    changes its boot image and layout after verification, injects interrupts it did not
 *    ask for.
 *
 * /dev/kserv_attack: write one command per write(2), read the report.
 *   pattern NAME HEX   a secret to look for, each byte given plus one (mod 256), so neither
 *                      the test nor this module ever holds the secret itself (the scan would
 *                      find its own copy)
 *   target PID HVA LEN the VM's RAM as the VMM (process PID) maps it
 *   locate OFFSET      the physical address of the target's page at OFFSET (nothing read)
 *   scan               search every page of the host's RAM ("System RAM") for each pattern
 *   attack             every attack above on the target, one "ATTACK ..." line each
 *   attack-reads       only the reads (for an ordinary VM, the control)
 *   reset              forget the report
 * Every line of the report is "KEY value ...". Nothing here is used outside the tests.
 */
#include <linux/arm-smccc.h>
#include <linux/fs.h>
#include <linux/ioport.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

#include "kcore_abi.h"

#define MAX_PATTERNS 8
#define MAX_PATTERN_LEN 64
#define REPORT_SIZE (64 * 1024)
/* The VMIDs KCore hands out (it reuses them): enough for every VM a test runs. */
#define MAX_VMID 32
/* Register numbers of GET/SET_VCPU_REG (docs/ABI.md): x22 and the PC. */
#define REG_X22 22
#define REG_PC 32
/* Table pages given to the module's own VM, as kserv gives a VM's pool. */
#define OWN_POOL 4

struct pattern {
	char name[24];
	u8 shifted[MAX_PATTERN_LEN];	/* each byte of the secret plus one */
	size_t len;
	u64 hits;
};

static DEFINE_MUTEX(attack_lock);
static struct pattern patterns[MAX_PATTERNS];
static int npatterns;
static pid_t target_pid;
static unsigned long target_hva, target_len;
static char *report;
static size_t report_len;

static __printf(1, 2) void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_len += vscnprintf(report + report_len, REPORT_SIZE - report_len, fmt, ap);
	va_end(ap);
}

/* Does the secret start at p (n bytes readable)? Compared shifted, byte by byte. */
static bool matches_at(const struct pattern *pat, const u8 *p, size_t n)
{
	size_t i;

	if (n < pat->len)
		return false;
	for (i = 0; i < pat->len; i++)
		if ((u8)(p[i] + 1) != pat->shifted[i])
			return false;
	return true;
}

/* Count every pattern's occurrences in buf[0..n) that end after buf[skip] (the first skip
 * bytes are the previous page's tail, whose own matches were counted with that page). */
static void search(const u8 *buf, size_t n, size_t skip, u64 *hits)
{
	int k;

	for (k = 0; k < npatterns; k++) {
		const struct pattern *pat = &patterns[k];
		u8 first = pat->shifted[0] - 1;
		const u8 *p = buf, *end = buf + n;

		while (p < end && (p = memchr(p, first, end - p))) {
			if ((size_t)(p - buf) + pat->len > skip && matches_at(pat, p, end - p))
				hits[k]++;
			p++;
		}
	}
}

struct scan {
	u8 *buf;		/* the tail of the previous page, then the page */
	size_t tail;		/* bytes of the previous page kept in front */
	unsigned long next_pfn;
	u64 pages, unreadable, zero;
	u64 hits[MAX_PATTERNS];
};

/* One page, read as the kernel reads any memory of its own: through the linear map. */
static void scan_page(struct scan *s, unsigned long pfn)
{
	u8 *page = s->buf + MAX_PATTERN_LEN;
	size_t keep;

	if (pfn != s->next_pfn)
		s->tail = 0;
	s->next_pfn = pfn + 1;
	s->pages++;
	if (copy_from_kernel_nofault(page, pfn_to_kaddr(pfn), PAGE_SIZE)) {
		s->unreadable++;
		s->tail = 0;
		return;
	}
	if (!memchr_inv(page, 0, PAGE_SIZE))
		s->zero++;
	/* Occurrences that straddle the page boundary start in the kept tail. */
	search(page - s->tail, PAGE_SIZE + s->tail, s->tail, s->hits);
	keep = MAX_PATTERN_LEN - 1;
	memcpy(s->buf + MAX_PATTERN_LEN - keep, page + PAGE_SIZE - keep, keep);
	s->tail = keep;
}

static int scan_range(struct resource *res, void *arg)
{
	unsigned long pfn;

	for (pfn = PHYS_PFN(res->start); pfn <= PHYS_PFN(res->end); pfn++) {
		if (!pfn_valid(pfn))
			continue;
		scan_page(arg, pfn);
		cond_resched();
	}
	return 0;
}

/* Every page of the host's RAM, as the kernel sees it (KCore's own memory is not in it). */
static void scan_ram(void)
{
	struct scan *s = kzalloc(sizeof(*s), GFP_KERNEL);
	int k;

	if (!s || !(s->buf = kzalloc(MAX_PATTERN_LEN + PAGE_SIZE, GFP_KERNEL))) {
		kfree(s);
		say("SCAN error no memory\n");
		return;
	}
	walk_iomem_res_desc(IORES_DESC_NONE, IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY, 0, -1, s, scan_range);
	say("SCAN pages %llu unreadable %llu zero %llu\n", s->pages, s->unreadable, s->zero);
	for (k = 0; k < npatterns; k++)
		say("SCAN found %s %llu\n", patterns[k].name, s->hits[k]);
	kfree(s->buf);
	kfree(s);
}

static long hvc(u32 fn, u64 a1, u64 a2, u64 a3, u64 a4, u64 *x1)
{
	struct arm_smccc_res res;

	arm_smccc_1_1_hvc(fn, a1, a2, a3, a4, &res);
	if (x1)
		*x1 = res.a1;
	return (long)res.a0;
}

/* One refused-or-not attempt: "ATTACK hvc NAME -> RESULT". */
static long attempt(const char *name, u32 fn, u64 a1, u64 a2, u64 a3, u64 a4)
{
	u64 x1 = 0;
	long r = hvc(fn, a1, a2, a3, a4, &x1);

	say("ATTACK hvc %s -> %ld\n", name, r);
	return r;
}

/* The VM's pages as its VMM maps them, pinned for the duration (they are already pinned by
 * kserv; this is the host kernel finding them). Returns how many. */
static long target_pages(struct page ***pagesp)
{
	struct task_struct *task;
	struct mm_struct *mm;
	struct page **pages;
	long n = target_len >> PAGE_SHIFT, got;

	if (!n || n > (1L << 20))
		return -EINVAL;
	task = get_pid_task(find_get_pid(target_pid), PIDTYPE_PID);
	if (!task)
		return -ESRCH;
	mm = get_task_mm(task);
	put_task_struct(task);
	if (!mm)
		return -ESRCH;
	pages = kvcalloc(n, sizeof(*pages), GFP_KERNEL);
	if (!pages) {
		mmput(mm);
		return -ENOMEM;
	}
	mmap_read_lock(mm);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	got = get_user_pages_remote(mm, target_hva, n, 0, pages, NULL);
#else
	got = get_user_pages_remote(mm, target_hva, n, 0, pages, NULL, NULL);
#endif
	mmap_read_unlock(mm);
	mmput(mm);
	if (got <= 0) {
		kvfree(pages);
		return got ? got : -EFAULT;
	}
	*pagesp = pages;
	return got;
}

/* Linear map: read every page of the VM's RAM as kernel memory. */
static void attack_linear_map(struct page **pages, long n)
{
	struct scan *s = kzalloc(sizeof(*s), GFP_KERNEL);
	long i;
	int k;

	if (!s || !(s->buf = kzalloc(MAX_PATTERN_LEN + PAGE_SIZE, GFP_KERNEL))) {
		kfree(s);
		say("ATTACK linear-map error no memory\n");
		return;
	}
	for (i = 0; i < n; i++)
		scan_page(s, page_to_pfn(pages[i]));
	say("ATTACK linear-map pages %llu unreadable %llu zero %llu\n", s->pages, s->unreadable, s->zero);
	for (k = 0; k < npatterns; k++)
		say("ATTACK linear-map found %s %llu\n", patterns[k].name, s->hits[k]);
	kfree(s->buf);
	kfree(s);
}

/* Every hypercall that could hand the VM's page `pfn` (at guest address `gpa`) to someone
 * else, or change the verified VM `vmid`. */
static void attack_hypercalls(unsigned long vmid, unsigned long pfn, u64 gpa, struct page *spare,
			      struct page *spare_sig)
{
	unsigned long own_root = page_to_pfn(spare), own_sig = page_to_pfn(spare_sig), mine = 0, mine_np = 0;
	struct page *pool[OWN_POOL];
	u64 x1;
	int i;

	for (i = 0; i < OWN_POOL; i++)
		pool[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);

	attempt("donate-to-host-pool", KCORE_DONATE_PAGE, 0, pfn, 0, 0);
	attempt("donate-to-its-pool", KCORE_DONATE_PAGE, vmid, pfn, 0, 0);
	attempt("register-vm-on-it", KCORE_REGISTER_VM, pfn, 0, 0, 0);
	attempt("map-image-page-again", KCORE_MAP_IMAGE_PAGE, vmid, 0, 0, pfn);
	attempt("map-host-page-into-image", KCORE_MAP_IMAGE_PAGE, vmid, 0, 0, own_root);
	attempt("set-boot-info-again", KCORE_SET_BOOT_INFO, vmid, 0x40200000, PAGE_SIZE, own_root);
	attempt("verify-again", KCORE_VERIFY_VM, vmid, 0, 0, 0);
	attempt("map-vm-page", KCORE_MAP_VM_PAGE, vmid, 0, pfn, 0);
	attempt("lend-to-it", KCORE_LEND_PAGE, vmid, gpa, pfn, 0);
	attempt("reclaim-from-it", KCORE_RECLAIM_PAGE, vmid, gpa, 0, 0);
	/* Its layout: new RAM where its RAM or its devices are (RAM turned MMIO or back). */
	attempt("add-ram-region", KCORE_ADD_RAM_REGION, vmid, 0x50000000, 0x100000, 0);
	attempt("add-ram-over-mmio", KCORE_ADD_RAM_REGION, vmid, 0x09000000, PAGE_SIZE, 0);
	/* Its registers, through KCore itself (the shim's own path refuses them too). */
	attempt("get-vcpu-reg-x22", KCORE_GET_VCPU_REG, vmid, 0, REG_X22, 0);
	attempt("set-vcpu-reg-pc", KCORE_SET_VCPU_REG, vmid, 0, REG_PC, 0x40200000);
	/* Interrupts it did not ask for: an SPI, an SGI, KCore's own timer INTID, a bad one. */
	attempt("inject-spi-40", KCORE_INJECT_IRQ, vmid, 0, 40, 0xa0);
	attempt("inject-sgi-1", KCORE_INJECT_IRQ, vmid, 0, 1, 0xa0);
	attempt("inject-intid-27", KCORE_INJECT_IRQ, vmid, 0, 27, 0xa0);
	attempt("inject-intid-1020", KCORE_INJECT_IRQ, vmid, 0, 1020, 0xa0);

	/* A VM of its own, protected, whose image would be the victim's page. */
	if (hvc(KCORE_REGISTER_VM, own_root, 0, 0, 0, &x1) == 0) {
		mine = x1;
		say("ATTACK own-vm registered %lu\n", mine);
		for (i = 0; i < OWN_POOL; i++)
			if (pool[i])
				hvc(KCORE_DONATE_PAGE, mine, page_to_pfn(pool[i]), 0, 0, NULL);
		attempt("own-vm-signature-from-victim", KCORE_SET_BOOT_INFO, mine, 0x40200000, PAGE_SIZE, pfn);
		hvc(KCORE_SET_BOOT_INFO, mine, 0x40200000, PAGE_SIZE, own_sig, NULL);
		attempt("own-vm-map-victim-page-as-image", KCORE_MAP_IMAGE_PAGE, mine, 0, 0, pfn);
		attempt("own-vm-destroy", KCORE_DESTROY_VM, mine, 0, 0, 0);
	} else {
		say("ATTACK own-vm not registered\n");
	}
	/* A non-protected VM of its own, which the victim's page would be lent to. */
	if (hvc(KCORE_REGISTER_VM, own_root, 1, 0, 0, &x1) == 0) {
		mine_np = x1;
		say("ATTACK own-vm-np registered %lu\n", mine_np);
		hvc(KCORE_ADD_RAM_REGION, mine_np, 0x40000000, 0x100000, 0, NULL);
		attempt("own-vm-np-lend-victim-page", KCORE_LEND_PAGE, mine_np, 0x40000000, pfn, 0);
		attempt("own-vm-np-destroy", KCORE_DESTROY_VM, mine_np, 0, 0, 0);
	} else {
		say("ATTACK own-vm-np not registered\n");
	}
	/* Both VMs are gone: KCore gave their pool pages back. */
	for (i = 0; i < OWN_POOL; i++)
		if (pool[i])
			__free_page(pool[i]);
}

/* `all`: the hypercalls too; otherwise only the reads (the control: an ordinary VM's host
 * may legitimately reclaim its pages or set its registers, and would only break its own VM). */
static void attack(bool all)
{
	struct page **pages = NULL, *spare, *spare_sig;
	unsigned long vmid;
	long n, i;
	int verified = 0;

	n = target_pages(&pages);
	if (n < 0) {
		say("ATTACK error target %ld\n", n);
		return;
	}
	say("ATTACK target pages %ld first-pfn %#lx\n", n, page_to_pfn(pages[0]));
	attack_linear_map(pages, n);
	if (!all)
		goto out;
	/* Up to 8 aligned pages: a stage-2 root for a VM of its own on any CPU (KCORE_VERSION x3). */
	spare = alloc_pages(GFP_KERNEL | __GFP_ZERO, 3);
	spare_sig = alloc_page(GFP_KERNEL | __GFP_ZERO);
	for (vmid = 1; spare && spare_sig && vmid <= MAX_VMID; vmid++) {
		u64 state = 0;

		if (hvc(KCORE_VM_STATE, vmid, 0, 0, 0, &state) || state != 2)
			continue;
		verified++;
		say("ATTACK vm %lu verified\n", vmid);
		/* The page 3 MiB into the target: the vault guest's secret page (0x40300000). */
		i = min(n - 1, 0x300000L >> PAGE_SHIFT);
		attack_hypercalls(vmid, page_to_pfn(pages[i]), 0x40000000 + (i << PAGE_SHIFT), spare, spare_sig);
	}
	say("ATTACK verified-vms %d\n", verified);
	if (spare)
		__free_pages(spare, 3);
	if (spare_sig)
		__free_page(spare_sig);
out:
	for (i = 0; i < n; i++)
		put_page(pages[i]);
	kvfree(pages);
	say("ATTACK done\n");
}

/* The physical address of the target's page at `offset`, found as the kernel finds any
 * user page; its contents are not touched. */
static void locate(unsigned long offset)
{
	struct page **pages = NULL;
	unsigned long hva = target_hva, len = target_len;
	long n, i;

	if (offset >= len) {
		say("LOCATE error offset\n");
		return;
	}
	target_hva = hva + (offset & PAGE_MASK);
	target_len = PAGE_SIZE;
	n = target_pages(&pages);
	target_hva = hva;
	target_len = len;
	if (n <= 0) {
		say("LOCATE error %ld\n", n);
		return;
	}
	say("LOCATE pa %#llx\n", (u64)page_to_phys(pages[0]));
	for (i = 0; i < n; i++)
		put_page(pages[i]);
	kvfree(pages);
}

static int parse_pattern(char *name, char *hex)
{
	struct pattern *p;
	size_t n = strlen(hex) / 2;

	if (npatterns == MAX_PATTERNS || !n || n > MAX_PATTERN_LEN || strlen(name) >= sizeof(p->name))
		return -EINVAL;
	p = &patterns[npatterns];
	if (hex2bin(p->shifted, hex, n))
		return -EINVAL;
	strscpy(p->name, name, sizeof(p->name));
	p->len = n;
	npatterns++;
	return 0;
}

static ssize_t attack_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	char buf[256], *args, *word[4] = {};
	int n = 0, err = 0;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	args = strim(buf);
	while (n < 4 && (word[n] = strsep(&args, " ")))
		n++;
	mutex_lock(&attack_lock);
	if (n == 3 && !strcmp(word[0], "pattern")) {
		err = parse_pattern(word[1], word[2]);
	} else if (n == 4 && !strcmp(word[0], "target")) {
		err = kstrtoint(word[1], 0, &target_pid) ?: kstrtoul(word[2], 0, &target_hva) ?:
		      kstrtoul(word[3], 0, &target_len);
	} else if (n == 2 && !strcmp(word[0], "locate")) {
		unsigned long offset;

		err = kstrtoul(word[1], 0, &offset);
		if (!err)
			locate(offset);
	} else if (n == 1 && !strcmp(word[0], "scan")) {
		scan_ram();
	} else if (n == 1 && !strcmp(word[0], "attack")) {
		attack(true);
	} else if (n == 1 && !strcmp(word[0], "attack-reads")) {
		attack(false);
	} else if (n == 1 && !strcmp(word[0], "reset")) {
		report_len = 0;
	} else {
		err = -EINVAL;
	}
	mutex_unlock(&attack_lock);
	return err ? err : len;
}

static ssize_t attack_read(struct file *f, char __user *ubuf, size_t len, loff_t *off)
{
	ssize_t r;

	mutex_lock(&attack_lock);
	r = simple_read_from_buffer(ubuf, len, off, report, report_len);
	mutex_unlock(&attack_lock);
	return r;
}

/* /dev/mem without its checks: the offset is the physical address, any page goes. */
static int attack_mmap(struct file *f, struct vm_area_struct *vma)
{
	return remap_pfn_range(vma, vma->vm_start, vma->vm_pgoff, vma->vm_end - vma->vm_start,
			       vma->vm_page_prot);
}

static const struct file_operations attack_fops = {
	.owner = THIS_MODULE,
	.write = attack_write,
	.read = attack_read,
	.mmap = attack_mmap,
	.llseek = default_llseek,
};

static struct miscdevice attack_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kserv_attack",
	.fops = &attack_fops,
	.mode = 0600,
};

static int __init attack_init(void)
{
	report = vzalloc(REPORT_SIZE);
	if (!report)
		return -ENOMEM;
	return misc_register(&attack_dev);
}

static void __exit attack_exit(void)
{
	misc_deregister(&attack_dev);
	vfree(report);
}

module_init(attack_init);
module_exit(attack_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("kserv_attack: a malicious host module for the protected-VM tests");
