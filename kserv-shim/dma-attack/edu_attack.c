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
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/iommu.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
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
static unsigned long smmu_base = 0x09050000;
module_param(smmu_base, ulong, 0);
MODULE_PARM_DESC(smmu_base, "physical address of the SMMUv3's registers");

/* Eight-byte tags that fill pages, each unlike anything else in memory. */
static const char TAG_PREFILL[8] = "EDUprefl";	/* what the buffer holds before a raw read */
static const char TAG_MARK[8] = "EDUmark.";	/* a readback page before the buffer lands */
static const char TAG_WRITE[8] = "EDUwrote";	/* the raw write's payload */

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

static void step_read(struct edu *e, const char *step, u64 pa)
{
	struct page *got = NULL;
	enum raw r = raw_read(e, pa, &got);
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
