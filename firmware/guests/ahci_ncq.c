/*
 * ahci_ncq: native command queuing (AHCI 1.3.1 5.6.4, SATA FPDMA QUEUED).
 *
 * - 32 tags in flight, issued with one PxSACT write and one PxCI write:
 *   reads and writes mixed, different lengths, distinct LBA ranges;
 *   completion through Set Device Bits FISes (PxSACT bits clear, PxIS.SDBS),
 *   data verified (reads against the pattern, writes read back).
 * - Two batches of 16, the second issued while the first may be running.
 * - An NCQ error (a tag reading past the end): PxIS.TFES, the tag kept in
 *   PxSACT, recovery (AHCI 6.2.2.2: clear ST, which clears PxSACT/PxCI),
 *   then READ LOG EXT of the NCQ Command Error log (page 10h) naming the
 *   tag, and NCQ working again.
 *
 * Disk 0: the test pattern, tag 0xD0. Writes: tag t odd writes 8+t sectors
 * at LBA 10000 + 100 * t with pattern tag 0x40 + t (checked in the image by
 * tests/guests).
 */
#include "ahci.h"
#include "guest.h"

#define TAG0 0xD0
#define SLOT_BYTES (64u * 1024u)

static uint8_t logbuf[512] __attribute__((aligned(16)));
static uint16_t id[256];
static struct ahci_port *p;
static uint64_t sectors;

static uint8_t *tag_buf(unsigned t)
{
    return ahci_data_area + t * SLOT_BYTES;
}

static uint64_t tag_lba(unsigned t)
{
    return (t & 1) ? 10000u + 100u * t : 1000u + 100u * t;
}

static uint32_t tag_count(unsigned t)
{
    return 8u + t;
}

static void build_tag(unsigned t, int mixed)
{
    int write = mixed && (t & 1);
    uint32_t n = tag_count(t);
    struct ahci_sg sg = {(uintptr_t)tag_buf(t), n * 512u};
    if (write)
        ahci_pattern_fill(tag_buf(t), tag_lba(t), n, (uint8_t)(0x40 + t));
    else
        memset(tag_buf(t), 0xA5, n * 512u);
    ahci_ncq_build(p, t, write ? ATA_CMD_WRITE_FPDMA : ATA_CMD_READ_FPDMA,
                   write ? tag_lba(t) : 1000u + 100u * t, n, &sg, 1);
}

/* Reads of tags in `mask` hold the pattern; -1 if all do, else a bad tag. */
static int bad_read_tag(uint32_t mask, int mixed)
{
    for (unsigned t = 0; t < 32; t++) {
        if (!(mask & (1u << t)) || (mixed && (t & 1)))
            continue;
        if (ahci_pattern_check(tag_buf(t), 1000u + 100u * t, tag_count(t), TAG0) >= 0)
            return (int)t;
    }
    return -1;
}

static void all_32_mixed(void)
{
    for (unsigned t = 0; t < 32; t++)
        build_tag(t, 1);
    memset((void *)p->fis, 0, sizeof(*p->fis));
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_ncq_issue(p, 0xFFFFFFFF);
    int rc = ahci_wait(p, 0xFFFFFFFF, 0xFFFFFFFF, ahci_hba.loops);
    check(rc == AHCI_OK, "32 NCQ commands (16 reads, 16 writes) complete", "%s, PxSACT 0x%08x",
          ahci_strerror(rc), ahci_port_read(p, PX_SACT));
    check_eq(ahci_port_read(p, PX_SACT), 0, "PxSACT all clear");
    check_eq(ahci_port_read(p, PX_CI), 0, "PxCI all clear");
    check_ok(p->last_is & PXIS_SDBS, "PxIS.SDBS: Set Device Bits FIS with I bit");
    check_eq(p->fis->sdbfis[0], FIS_TYPE_SDB, "SDB FIS posted in the received-FIS area");
    check_eq(p->fis->dsfis[0], FIS_TYPE_DMA_SETUP, "DMA Setup FIS posted for NCQ data");
    check_eq(PXTFD_STS(p->last_tfd) & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR), 0,
             "PxTFD: no BSY, DRQ, ERR");
    int bad = bad_read_tag(0xFFFFFFFF, 1);
    check(bad < 0, "the 16 READ FPDMA QUEUED buffers hold the pattern", "tag %d", bad);
    bad = -1;
    for (unsigned t = 1; t < 32 && bad < 0; t += 2) {
        memset(tag_buf(t), 0, tag_count(t) * 512u);
        int r = ahci_rw(p, ATA_CMD_READ_DMA_EXT, tag_lba(t), tag_count(t), tag_buf(t));
        if (r != AHCI_OK ||
            ahci_pattern_check(tag_buf(t), tag_lba(t), tag_count(t), (uint8_t)(0x40 + t)) >= 0)
            bad = (int)t;
    }
    check(bad < 0, "the 16 WRITE FPDMA QUEUED ranges read back", "tag %d", bad);
}

static void two_batches(void)
{
    for (unsigned t = 0; t < 32; t++)
        build_tag(t, 0);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_ncq_issue(p, 0x0000FFFF);
    ahci_ncq_issue(p, 0xFFFF0000);
    int rc = ahci_wait(p, 0xFFFFFFFF, 0xFFFFFFFF, ahci_hba.loops);
    check(rc == AHCI_OK, "two batches of 16 NCQ reads complete", "%s, PxSACT 0x%08x",
          ahci_strerror(rc), ahci_port_read(p, PX_SACT));
    int bad = bad_read_tag(0xFFFFFFFF, 0);
    check(bad < 0, "the 32 READ FPDMA QUEUED buffers hold the pattern", "tag %d", bad);

    /* One tag at a time, in descending order, slot == tag. */
    bad = -1;
    for (int t = 31; t >= 0 && bad < 0; t -= 5) {
        build_tag((unsigned)t, 0);
        ahci_ncq_issue(p, 1u << t);
        rc = ahci_wait(p, 1u << t, 1u << t, ahci_hba.loops);
        if (rc != AHCI_OK || bad_read_tag(1u << t, 0) >= 0)
            bad = t;
    }
    check(bad < 0, "single NCQ reads on tags 31, 26, ..., 1", "tag %d", bad);
}

static void ncq_error(void)
{
    const unsigned t = 7;
    struct ahci_sg sg = {(uintptr_t)tag_buf(t), 8 * 512};
    ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, sectors - 4, 8, &sg, 1);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_ncq_issue(p, 1u << t);
    int rc = ahci_wait(p, 1u << t, 1u << t, ahci_hba.loops);
    uint32_t tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE, "NCQ read past the end: PxIS.TFES", "%s, PxIS 0x%08x",
          ahci_strerror(rc), p->last_is);
    check_eq(ahci_port_read(p, PX_SACT), 1u << t, "failed tag 7 stays set in PxSACT");
    check_ok(PXTFD_STS(tfd) & ATA_SR_ERR, "NCQ error: PxTFD.STS.ERR");
    check_eq(PXTFD_ERR(tfd), ATA_ER_IDNF, "NCQ error: PxTFD.ERR = IDNF");

    /* AHCI 6.2.2.2: clear ST (PxSACT and PxCI clear), clear errors, set ST,
     * then read the NCQ Command Error log. */
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) & ~PXCMD_ST);
    unsigned long n = ahci_hba.loops;
    while ((ahci_port_read(p, PX_CMD) & PXCMD_CR) && n--)
        cpu_relax();
    check_eq(ahci_port_read(p, PX_SACT) | ahci_port_read(p, PX_CI), 0,
             "clearing ST clears PxSACT and PxCI");
    ahci_port_write(p, PX_SERR, 0xFFFFFFFF);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    rc = ahci_port_start(p);
    check(rc == AHCI_OK, "ST set again", "%s", ahci_strerror(rc));

    memset(logbuf, 0xEE, sizeof(logbuf));
    rc = ahci_read_ncq_error_log(p, logbuf);
    check(rc == AHCI_OK && ahci_prdbc(p, 0) == 512, "READ LOG EXT page 10h (NCQ Command Error)",
          "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
    check((logbuf[0] & 0x9F) == t, "NCQ error log: NQ clear, tag 7", "byte 0 0x%02x", logbuf[0]);
    check((logbuf[2] & ATA_SR_ERR) && logbuf[3] == ATA_ER_IDNF,
          "NCQ error log: status ERR, error IDNF", "status 0x%02x error 0x%02x", logbuf[2],
          logbuf[3]);
    uint8_t sum = 0;
    for (unsigned i = 0; i < 512; i++)
        sum = (uint8_t)(sum + logbuf[i]);
    check(rc == AHCI_OK && sum == 0, "NCQ error log: checksum", "%s, byte sum 0x%02x",
          ahci_strerror(rc), sum);
    if (rc != AHCI_OK)
        ahci_port_recover(p);

    for (unsigned k = 0; k < 4; k++)
        build_tag(k, 0);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_ncq_issue(p, 0xF);
    rc = ahci_wait(p, 0xF, 0xF, ahci_hba.loops);
    int bad = rc == AHCI_OK ? bad_read_tag(0xF, 0) : -1;
    check(rc == AHCI_OK && bad < 0, "NCQ works again after the error log", "%s, tag %d",
          ahci_strerror(rc), bad);
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    int rc = ahci_init();
    if (!check(rc == AHCI_OK, "AHCI HBA found and reset", "%s", ahci_strerror(rc)))
        test_done();
    check_ok(ahci_hba.cap & AHCI_CAP_SNCQ, "CAP.SNCQ");
    uint32_t ready = ahci_start_ports();
    p = ahci_port(0);
    if (!check_ok(ready & 1, "disk on port 0 ready"))
        test_done();
    rc = ahci_identify(p, id);
    sectors = ata_id_sectors(id);
    printf("port 0 capacity: %llu sectors\n", (unsigned long long)sectors);
    if (!check(rc == AHCI_OK && sectors >= 16384 && (id[76] & (1u << 8)) && (id[75] & 0x1F) == 31,
               "IDENTIFY: NCQ with queue depth 32, at least 16384 sectors", "%s",
               ahci_strerror(rc)))
        test_done();
    all_32_mixed();
    two_batches();
    ncq_error();
    test_done();
}
