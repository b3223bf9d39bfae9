#include "ahci.h"

#include "io.h"
#include "multiboot.h"
#include "string.h"

struct ahci_hba ahci_hba;

/* The library's own DMA structures (AHCI 4.2): command lists 1 KiB aligned,
 * received-FIS areas 256-byte aligned, command tables 128-byte aligned. */
static struct ahci_cmd_header clb_mem[AHCI_MAX_PORTS][AHCI_MAX_SLOTS]
    __attribute__((aligned(1024)));
static struct ahci_rx_fis fis_mem[AHCI_MAX_PORTS] __attribute__((aligned(256)));
static struct ahci_port ports[AHCI_MAX_PORTS];

_Static_assert(sizeof(struct ahci_cmd_table) == 4096, "command table size");
_Static_assert(sizeof(struct ahci_rx_fis) == 256, "received FIS area size");
_Static_assert(sizeof(struct ahci_cmd_header) == 32, "command header size");

extern char __image_end[]; /* link.ld */

const char *ahci_strerror(int rc)
{
    switch (rc) {
    case AHCI_OK:
        return "ok";
    case AHCI_ENODEV:
        return "no device";
    case AHCI_ETIMEOUT:
        return "timeout";
    case AHCI_ETASKFILE:
        return "task file error";
    case AHCI_EHOSTBUS:
        return "host bus error";
    case AHCI_EIFACE:
        return "interface error";
    case AHCI_EINVAL:
        return "invalid argument";
    case AHCI_EERR:
        return "status ERR";
    case AHCI_ENOMEM:
        return "RAM does not cover the DMA area";
    default:
        return "unknown error";
    }
}

uint32_t ahci_read(uint32_t off)
{
    return mmio_read32(ahci_hba.abar + off);
}

void ahci_write(uint32_t off, uint32_t value)
{
    mmio_write32(ahci_hba.abar + off, value);
}

uint32_t ahci_port_read(const struct ahci_port *p, uint32_t off)
{
    return mmio_read32(p->regs + off);
}

void ahci_port_write(const struct ahci_port *p, uint32_t off, uint32_t value)
{
    mmio_write32(p->regs + off, value);
}

void ahci_delay(unsigned long n)
{
    while (n--) {
        (void)ahci_read(AHCI_VS);
        cpu_relax();
    }
}

/* ---- ATA command properties ---- */

enum ata_proto ata_cmd_proto(uint8_t command)
{
    switch (command) {
    case ATA_CMD_READ_DMA:
    case ATA_CMD_READ_DMA_EXT:
    case ATA_CMD_READ_LOG_DMA_EXT:
        return ATA_PROTO_DMA_IN;
    case ATA_CMD_WRITE_DMA:
    case ATA_CMD_WRITE_DMA_EXT:
    case ATA_CMD_DSM:
        return ATA_PROTO_DMA_OUT;
    case ATA_CMD_READ_SECTORS:
    case ATA_CMD_READ_SECTORS_EXT:
    case ATA_CMD_READ_MULTIPLE:
    case ATA_CMD_READ_MULTIPLE_EXT:
    case ATA_CMD_READ_LOG_EXT:
    case ATA_CMD_IDENTIFY:
        return ATA_PROTO_PIO_IN;
    case ATA_CMD_WRITE_SECTORS:
    case ATA_CMD_WRITE_SECTORS_EXT:
    case ATA_CMD_WRITE_MULTIPLE:
    case ATA_CMD_WRITE_MULTIPLE_EXT:
        return ATA_PROTO_PIO_OUT;
    case ATA_CMD_READ_FPDMA:
    case ATA_CMD_WRITE_FPDMA:
        return ATA_PROTO_NCQ;
    case ATA_CMD_READ_VERIFY:
    case ATA_CMD_READ_VERIFY_EXT:
    case ATA_CMD_SET_MULTIPLE:
    case ATA_CMD_FLUSH_CACHE:
    case ATA_CMD_FLUSH_CACHE_EXT:
    case ATA_CMD_SET_FEATURES:
    case ATA_CMD_READ_NATIVE_MAX:
    case ATA_CMD_READ_NATIVE_MAX_EXT:
    case ATA_CMD_EXEC_DIAG:
        return ATA_PROTO_NONDATA;
    default:
        return ATA_PROTO_UNKNOWN;
    }
}

int ata_cmd_is_lba48(uint8_t command)
{
    switch (command) {
    case ATA_CMD_DSM:
    case ATA_CMD_READ_SECTORS_EXT:
    case ATA_CMD_READ_DMA_EXT:
    case ATA_CMD_READ_NATIVE_MAX_EXT:
    case ATA_CMD_READ_MULTIPLE_EXT:
    case ATA_CMD_READ_LOG_EXT:
    case ATA_CMD_WRITE_SECTORS_EXT:
    case ATA_CMD_WRITE_DMA_EXT:
    case ATA_CMD_WRITE_MULTIPLE_EXT:
    case ATA_CMD_READ_VERIFY_EXT:
    case ATA_CMD_READ_LOG_DMA_EXT:
    case ATA_CMD_READ_FPDMA:
    case ATA_CMD_WRITE_FPDMA:
    case ATA_CMD_FLUSH_CACHE_EXT:
        return 1;
    default:
        return 0;
    }
}

int ata_cmd_is_write(uint8_t command)
{
    enum ata_proto proto = ata_cmd_proto(command);
    return proto == ATA_PROTO_DMA_OUT || proto == ATA_PROTO_PIO_OUT ||
           command == ATA_CMD_WRITE_FPDMA;
}

/* ---- HBA ---- */

static int outside_high_area(uintptr_t start, size_t len)
{
    return start + len <= AHCI_HIGH_BASE || start >= AHCI_HIGH_END;
}

/* The fixed DMA area must be RAM that nothing else uses. */
static int high_area_usable(void)
{
    if ((uintptr_t)__image_end > AHCI_HIGH_BASE)
        return 0;
    if (mb_magic == MB_BOOTLOADER_MAGIC && mb_info) {
        if (!(mb_info->flags & MB_INFO_MEMORY) ||
            (1024u + mb_info->mem_upper) < (AHCI_HIGH_END >> 10))
            return 0;
        const char *cmdline = mb_cmdline();
        if (!outside_high_area((uintptr_t)mb_info, sizeof(*mb_info)) ||
            !outside_high_area((uintptr_t)cmdline, strlen(cmdline) + 1))
            return 0;
    }
    return 1;
}

int ahci_find(void)
{
    pci_bdf_t bdf;
    if (!high_area_usable())
        return AHCI_ENOMEM;
    if (pci_find_class(0x01, 0x06, 0x01, &bdf) != 0)
        return AHCI_ENODEV;
    ahci_hba.bdf = bdf;
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
    ahci_hba.abar = (uintptr_t)pci_bar_addr(bdf, 5);
    if (!ahci_hba.abar)
        return AHCI_ENODEV;
    ahci_hba.cap = ahci_read(AHCI_CAP);
    ahci_hba.pi = ahci_read(AHCI_PI);
    ahci_hba.nslots = AHCI_CAP_NCS(ahci_hba.cap);
    if (!ahci_hba.loops)
        ahci_hba.loops = AHCI_LOOPS_DEFAULT;
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++) {
        struct ahci_port *p = &ports[n];
        p->num = n;
        p->regs = ahci_hba.abar + AHCI_PORT_REGS(n);
        p->clb = clb_mem[n];
        p->fis = &fis_mem[n];
        p->tables = (struct ahci_cmd_table *)(uintptr_t)(AHCI_TABLES_BASE +
                                                         n * AHCI_MAX_SLOTS * 4096u);
    }
    return AHCI_OK;
}

int ahci_hba_reset(void)
{
    ahci_write(AHCI_GHC, AHCI_GHC_AE);
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_HR);
    unsigned long n = ahci_hba.loops;
    while (ahci_read(AHCI_GHC) & AHCI_GHC_HR) {
        if (!n--)
            return AHCI_ETIMEOUT;
        cpu_relax();
    }
    ahci_write(AHCI_GHC, AHCI_GHC_AE);
    ahci_hba.cap = ahci_read(AHCI_CAP);
    ahci_hba.pi = ahci_read(AHCI_PI);
    ahci_hba.nslots = AHCI_CAP_NCS(ahci_hba.cap);
    return AHCI_OK;
}

int ahci_init(void)
{
    int rc = ahci_find();
    if (rc != AHCI_OK)
        return rc;
    return ahci_hba_reset();
}

struct ahci_port *ahci_port(unsigned n)
{
    if (n >= AHCI_MAX_PORTS || !ahci_hba.abar || !(ahci_hba.pi & (1u << n)))
        return 0;
    return &ports[n];
}

uint32_t ahci_start_ports(void)
{
    uint32_t ready = 0;
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++) {
        struct ahci_port *p = ahci_port(n);
        if (p && ahci_port_setup(p) == AHCI_OK)
            ready |= 1u << n;
    }
    return ready;
}

/* ---- Ports ---- */

/* Wait until (reg & mask) == want; AHCI_ETIMEOUT after `loops` polls. */
static int port_wait(const struct ahci_port *p, uint32_t off, uint32_t mask, uint32_t want,
                     unsigned long loops)
{
    for (;;) {
        if ((ahci_port_read(p, off) & mask) == want)
            return AHCI_OK;
        if (!loops--)
            return AHCI_ETIMEOUT;
        cpu_relax();
    }
}

int ahci_port_stop(struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, PX_CMD);
    if (cmd & (PXCMD_ST | PXCMD_CR)) {
        ahci_port_write(p, PX_CMD, cmd & ~PXCMD_ST);
        if (port_wait(p, PX_CMD, PXCMD_CR, 0, ahci_hba.loops) != AHCI_OK)
            return AHCI_ETIMEOUT;
        cmd = ahci_port_read(p, PX_CMD);
    }
    if (cmd & (PXCMD_FRE | PXCMD_FR)) {
        ahci_port_write(p, PX_CMD, cmd & ~PXCMD_FRE);
        if (port_wait(p, PX_CMD, PXCMD_FR, 0, ahci_hba.loops) != AHCI_OK)
            return AHCI_ETIMEOUT;
    }
    return AHCI_OK;
}

int ahci_port_has_device(const struct ahci_port *p)
{
    return SSTS_DET(ahci_port_read(p, PX_SSTS)) == SSTS_DET_PRESENT;
}

/* PxSSTS.DET == 3 within `loops` polls; gives up after AHCI_LOOPS_NOLINK
 * polls while DET stays 0 (nothing attached), so empty ports cost little. */
static int wait_link(const struct ahci_port *p, unsigned long loops)
{
    for (unsigned long n = 0;; n++) {
        uint32_t det = SSTS_DET(ahci_port_read(p, PX_SSTS));
        if (det == SSTS_DET_PRESENT)
            return AHCI_OK;
        if (n >= loops || (det == 0 && n >= AHCI_LOOPS_NOLINK))
            return AHCI_ENODEV;
        cpu_relax();
    }
}

int ahci_port_wait_ready(struct ahci_port *p, unsigned long loops)
{
    if (wait_link(p, loops) != AHCI_OK)
        return AHCI_ENODEV;
    if (port_wait(p, PX_TFD, ATA_SR_BSY | ATA_SR_DRQ, 0, loops) != AHCI_OK)
        return AHCI_ETIMEOUT;
    return AHCI_OK;
}

int ahci_port_start(struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, PX_CMD);
    if (!(cmd & PXCMD_FRE))
        return AHCI_EINVAL;
    int rc = ahci_port_wait_ready(p, ahci_hba.loops);
    if (rc != AHCI_OK)
        return rc;
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) | PXCMD_ST);
    return AHCI_OK;
}

int ahci_port_setup(struct ahci_port *p)
{
    int rc = ahci_port_stop(p);
    if (rc != AHCI_OK)
        return rc;
    memset(p->clb, 0, sizeof(clb_mem[0]));
    memset((void *)p->fis, 0, sizeof(*p->fis));
    uint64_t clb = (uintptr_t)p->clb;
    uint64_t fb = (uintptr_t)p->fis;
    ahci_port_write(p, PX_CLB, (uint32_t)clb);
    ahci_port_write(p, PX_CLBU, (uint32_t)(clb >> 32));
    ahci_port_write(p, PX_FB, (uint32_t)fb);
    ahci_port_write(p, PX_FBU, (uint32_t)(fb >> 32));
    for (unsigned s = 0; s < AHCI_MAX_SLOTS; s++) {
        uint64_t ctba = (uintptr_t)&p->tables[s];
        p->clb[s].ctba = (uint32_t)ctba;
        p->clb[s].ctbau = (uint32_t)(ctba >> 32);
    }
    ahci_port_write(p, PX_SERR, 0xFFFFFFFFu);
    /* No link, no device: leave the port stopped with FRE clear. */
    if (wait_link(p, ahci_hba.loops) != AHCI_OK)
        return AHCI_ENODEV;
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) | PXCMD_FRE);
    rc = ahci_port_wait_ready(p, ahci_hba.loops);
    if (rc != AHCI_OK)
        return rc;
    ahci_port_write(p, PX_SERR, 0xFFFFFFFFu);
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    return ahci_port_start(p);
}

int ahci_port_comreset(struct ahci_port *p)
{
    if (ahci_port_read(p, PX_CMD) & (PXCMD_ST | PXCMD_CR))
        return AHCI_EINVAL;
    uint32_t sctl = ahci_port_read(p, PX_SCTL) & ~SCTL_DET_MASK;
    ahci_port_write(p, PX_SCTL, sctl | SCTL_DET_COMRESET);
    ahci_delay(2000); /* DET=1 for at least 1 ms (AHCI 10.4.2) */
    ahci_port_write(p, PX_SCTL, sctl);
    int rc = ahci_port_wait_ready(p, ahci_hba.loops);
    ahci_port_write(p, PX_SERR, 0xFFFFFFFFu);
    return rc;
}

int ahci_port_recover(struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, PX_CMD);
    ahci_port_write(p, PX_CMD, cmd & ~PXCMD_ST);
    if (port_wait(p, PX_CMD, PXCMD_CR, 0, ahci_hba.loops) != AHCI_OK)
        return AHCI_ETIMEOUT;
    ahci_port_write(p, PX_SERR, 0xFFFFFFFFu);
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    if (ahci_port_read(p, PX_TFD) & (ATA_SR_BSY | ATA_SR_DRQ)) {
        int done = 0;
        if (ahci_hba.cap & AHCI_CAP_SCLO) {
            ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) | PXCMD_CLO);
            done = port_wait(p, PX_CMD, PXCMD_CLO, 0, ahci_hba.loops) == AHCI_OK &&
                   !(ahci_port_read(p, PX_TFD) & (ATA_SR_BSY | ATA_SR_DRQ));
        }
        if (!done) {
            int rc = ahci_port_comreset(p);
            if (rc != AHCI_OK)
                return rc;
        }
        ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    }
    if (!(ahci_port_read(p, PX_CMD) & PXCMD_FRE))
        ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) | PXCMD_FRE);
    return ahci_port_start(p);
}

/* ---- Commands ---- */

struct ata_tf ahci_tf(uint8_t command, uint64_t lba, uint32_t count)
{
    struct ata_tf tf;
    memset(&tf, 0, sizeof(tf));
    tf.command = command;
    tf.lba = lba;
    tf.count = (uint16_t)count; /* 65536 (or 256 for 28-bit) becomes 0 */
    tf.device = ATA_DEV_LBA;
    return tf;
}

void ahci_fis_h2d(uint8_t *cfis, const struct ata_tf *tf)
{
    int ext = ata_cmd_is_lba48(tf->command);
    memset(cfis, 0, 20);
    cfis[0] = FIS_TYPE_REG_H2D;
    cfis[1] = FIS_H2D_C;
    cfis[2] = tf->command;
    cfis[3] = (uint8_t)tf->features;
    cfis[4] = (uint8_t)tf->lba;
    cfis[5] = (uint8_t)(tf->lba >> 8);
    cfis[6] = (uint8_t)(tf->lba >> 16);
    cfis[7] = tf->device;
    cfis[12] = (uint8_t)tf->count;
    cfis[14] = tf->icc;
    cfis[15] = tf->control;
    cfis[16] = (uint8_t)tf->aux;
    cfis[17] = (uint8_t)(tf->aux >> 8);
    if (ext) {
        cfis[8] = (uint8_t)(tf->lba >> 24);
        cfis[9] = (uint8_t)(tf->lba >> 32);
        cfis[10] = (uint8_t)(tf->lba >> 40);
        cfis[11] = (uint8_t)(tf->features >> 8);
        cfis[13] = (uint8_t)(tf->count >> 8);
    } else {
        cfis[7] = (uint8_t)((tf->device & 0xF0) | ((tf->lba >> 24) & 0x0F));
    }
}

int ahci_sg_from_buf(void *buf, uint32_t len, struct ahci_sg *sg, unsigned max)
{
    uintptr_t addr = (uintptr_t)buf;
    unsigned n = 0;
    if ((addr & 1) || (len & 1))
        return AHCI_EINVAL;
    while (len) {
        if (n >= max)
            return AHCI_EINVAL;
        uint32_t piece = len < AHCI_PRD_MAX_BYTES ? len : AHCI_PRD_MAX_BYTES;
        sg[n].addr = addr;
        sg[n].len = piece;
        n++;
        addr += piece;
        len -= piece;
    }
    return (int)n;
}

int ahci_cmd_build(struct ahci_port *p, unsigned slot, const struct ata_tf *tf,
                   uint16_t hdr_flags, const struct ahci_sg *sg, unsigned nsg, uint32_t prd_flags)
{
    if (slot >= AHCI_MAX_SLOTS || nsg > AHCI_MAX_PRDS)
        return AHCI_EINVAL;
    struct ahci_cmd_table *t = &p->tables[slot];
    memset(t, 0, 128);
    ahci_fis_h2d(t->cfis, tf);
    for (unsigned i = 0; i < nsg; i++) {
        if (sg[i].len == 0 || sg[i].len > AHCI_PRD_MAX_BYTES)
            return AHCI_EINVAL;
        t->prdt[i].dba = (uint32_t)sg[i].addr;
        t->prdt[i].dbau = (uint32_t)(sg[i].addr >> 32);
        t->prdt[i].reserved = 0;
        t->prdt[i].dbc = ((sg[i].len - 1) & 0x3FFFFF) | prd_flags;
    }
    struct ahci_cmd_header *h = &p->clb[slot];
    uint16_t flags = (uint16_t)(AHCI_CMDH_CFL(5) | hdr_flags);
    if (ata_cmd_is_write(tf->command))
        flags |= AHCI_CMDH_W;
    uint64_t ctba = (uintptr_t)t;
    h->flags = flags;
    h->prdtl = (uint16_t)nsg;
    h->prdbc = 0;
    h->ctba = (uint32_t)ctba;
    h->ctbau = (uint32_t)(ctba >> 32);
    barrier();
    return AHCI_OK;
}

void ahci_issue(struct ahci_port *p, uint32_t mask)
{
    ahci_port_write(p, PX_CI, mask);
}

int ahci_wait(struct ahci_port *p, uint32_t ci_mask, uint32_t sact_mask, unsigned long loops)
{
    int rc = AHCI_ETIMEOUT;
    for (;;) {
        uint32_t is = ahci_port_read(p, PX_IS);
        if (is & PXIS_ERRORS) {
            if (is & PXIS_TFES)
                rc = AHCI_ETASKFILE;
            else if (is & (PXIS_HBFS | PXIS_HBDS))
                rc = AHCI_EHOSTBUS;
            else
                rc = AHCI_EIFACE;
            break;
        }
        if (!(ahci_port_read(p, PX_CI) & ci_mask) &&
            (!sact_mask || !(ahci_port_read(p, PX_SACT) & sact_mask))) {
            rc = AHCI_OK;
            break;
        }
        if (!loops--)
            break;
        cpu_relax();
    }
    p->last_is = ahci_port_read(p, PX_IS);
    p->last_tfd = ahci_port_read(p, PX_TFD);
    if (rc == AHCI_OK && (p->last_tfd & ATA_SR_ERR))
        rc = AHCI_EERR;
    return rc;
}

int ahci_cmd_run(struct ahci_port *p, unsigned slot)
{
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    ahci_issue(p, 1u << slot);
    return ahci_wait(p, 1u << slot, 0, ahci_hba.loops);
}

int ahci_exec(struct ahci_port *p, const struct ata_tf *tf, const struct ahci_sg *sg,
              unsigned nsg)
{
    int rc = ahci_cmd_build(p, 0, tf, 0, sg, nsg, 0);
    if (rc != AHCI_OK)
        return rc;
    return ahci_cmd_run(p, 0);
}

int ahci_rw(struct ahci_port *p, uint8_t command, uint64_t lba, uint32_t nsect, void *buf)
{
    struct ahci_sg sg[16];
    int nsg = 0;
    if (nsect == 0 || nsect > 65536)
        return AHCI_EINVAL;
    if (ata_cmd_proto(command) != ATA_PROTO_NONDATA) {
        nsg = ahci_sg_from_buf(buf, nsect * 512u, sg, 16);
        if (nsg < 0)
            return nsg;
    }
    struct ata_tf tf = ahci_tf(command, lba, nsect);
    return ahci_exec(p, &tf, sg, (unsigned)nsg);
}

uint32_t ahci_prdbc(const struct ahci_port *p, unsigned slot)
{
    return p->clb[slot].prdbc;
}

/* ---- IDENTIFY ---- */

int ahci_identify(struct ahci_port *p, uint16_t *id)
{
    struct ahci_sg sg = {(uintptr_t)id, 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_IDENTIFY, 0, 0);
    tf.device = 0;
    return ahci_exec(p, &tf, &sg, 1);
}

uint64_t ata_id_sectors(const uint16_t *id)
{
    if (id[83] & (1u << 10))
        return (uint64_t)id[100] | ((uint64_t)id[101] << 16) | ((uint64_t)id[102] << 32) |
               ((uint64_t)id[103] << 48);
    return (uint32_t)id[60] | ((uint32_t)id[61] << 16);
}

void ata_id_string(const uint16_t *id, unsigned word, unsigned nwords, char *out)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nwords; i++) {
        out[n++] = (char)(id[word + i] >> 8);
        out[n++] = (char)(id[word + i] & 0xFF);
    }
    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == 0))
        n--;
    out[n] = 0;
}

/* ---- NCQ ---- */

int ahci_ncq_build(struct ahci_port *p, unsigned tag, uint8_t command, uint64_t lba, uint32_t nsect,
                   const struct ahci_sg *sg, unsigned nsg)
{
    if (tag >= AHCI_MAX_SLOTS || nsect == 0 || nsect > 65536)
        return AHCI_EINVAL;
    /* FPDMA QUEUED: sector count in FEATURES, tag in COUNT 7:3. */
    struct ata_tf tf = ahci_tf(command, lba, tag << 3);
    tf.features = (uint16_t)nsect;
    return ahci_cmd_build(p, tag, &tf, 0, sg, nsg, 0);
}

void ahci_ncq_issue(struct ahci_port *p, uint32_t mask)
{
    ahci_port_write(p, PX_SACT, mask);
    ahci_port_write(p, PX_CI, mask);
}

int ahci_read_ncq_error_log(struct ahci_port *p, uint8_t *buf)
{
    struct ahci_sg sg = {(uintptr_t)buf, 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_LOG_EXT, ATA_LOG_NCQ_ERROR, 1);
    return ahci_exec(p, &tf, &sg, 1);
}

/* ---- Test patterns ---- */

uint64_t ahci_pattern_qword(uint8_t tag, uint64_t lba, unsigned i)
{
    return ((uint64_t)tag << 56) | ((lba & 0xFFFFFFFFFFFFull) << 8) | (i & 0xFF);
}

void ahci_pattern_fill(void *buf, uint64_t lba, uint32_t nsect, uint8_t tag)
{
    uint32_t *q = buf;
    for (uint32_t s = 0; s < nsect; s++, lba++) {
        uint32_t hi = ((uint32_t)tag << 24) | (uint32_t)((lba >> 24) & 0xFFFFFF);
        uint32_t lo = (uint32_t)(lba << 8);
        for (unsigned i = 0; i < 64; i++) {
            *q++ = lo | i;
            *q++ = hi;
        }
    }
}

long ahci_pattern_check(const void *buf, uint64_t lba, uint32_t nsect, uint8_t tag)
{
    const uint32_t *q = buf;
    for (uint32_t s = 0; s < nsect; s++, lba++) {
        uint32_t hi = ((uint32_t)tag << 24) | (uint32_t)((lba >> 24) & 0xFFFFFF);
        uint32_t lo = (uint32_t)(lba << 8);
        for (unsigned i = 0; i < 64; i++, q += 2) {
            if (q[0] != (lo | i) || q[1] != hi)
                return (long)(q - (const uint32_t *)buf) / 2;
        }
    }
    return -1;
}

long ahci_zero_check(const void *buf, uint32_t len)
{
    const uint8_t *b = buf;
    for (uint32_t i = 0; i < len; i++)
        if (b[i])
            return (long)i;
    return -1;
}
