/*
 * ahci_flush_trim: FLUSH CACHE, FLUSH CACHE EXT and DATA SET MANAGEMENT
 * with TRIM (ATA8-ACS / ACS-2 7.10).
 *
 * IDENTIFY: TRIM supported (word 169 bit 0), deterministic read after TRIM
 * (word 69 bit 14) reading zeros (word 69 bit 5). Writes then flushes; TRIMs
 * several ranges (one list entry of length 0, ranges in a second 512-byte
 * block of the list) and reads them back as zeros, leaving the sectors
 * between them alone; a TRIM past the end is aborted.
 *
 * Disk 0: the test pattern, tag 0xD0. Final contents (checked by
 * tests/guests): LBAs 2000-2099 tag 0x51; 3100-3149 tag 0x52; zeros on
 * 3000-3099, 3150-3199, 5000-5007, 7000-7015; everything else unchanged.
 */
#include "ahci.h"
#include "ahci_test.h"
#include "guest.h"

#define TAG0 0xD0

static uint8_t buf[256 * 1024] __attribute__((aligned(4096)));
static uint64_t dsm[128] __attribute__((aligned(16))); /* two 512-byte blocks */
static uint16_t id[256];
static struct ahci_port *p;
static uint64_t sectors;

static uint64_t range(uint64_t lba, uint16_t count)
{
    return lba | ((uint64_t)count << 48);
}

static int trim(unsigned blocks)
{
    struct ahci_sg sg = {(uintptr_t)dsm, blocks * 512u};
    struct ata_tf tf = ahci_tf(ATA_CMD_DSM, 0, blocks);
    tf.features = 0x0001; /* TRIM */
    return ahci_exec(p, &tf, &sg, 1);
}

static int flush(uint8_t command)
{
    struct ata_tf tf = ahci_tf(command, 0, 0);
    return ahci_exec(p, &tf, 0, 0);
}

static int is_zero(uint64_t lba, uint32_t n)
{
    memset(buf, 0xEE, n * 512u);
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, n, buf);
    return rc == AHCI_OK && ahci_zero_check(buf, n * 512u) < 0;
}

static int holds(uint64_t lba, uint32_t n, uint8_t tag)
{
    memset(buf, 0, n * 512u);
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, n, buf);
    return rc == AHCI_OK && ahci_pattern_check(buf, lba, n, tag) < 0;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    p = ahci_test_start(NULL);
    int rc = ahci_test_identify(p, id, &sectors);
    if (!check(rc == AHCI_OK && sectors >= 8192, "IDENTIFY, at least 8192 sectors", "%s",
               ahci_strerror(rc)))
        test_done();
    check_ok((id[83] & (1u << 12)) && (id[83] & (1u << 13)),
             "word 83: FLUSH CACHE and FLUSH CACHE EXT supported");
    check_ok(id[169] & 1u, "word 169 bit 0: TRIM supported");
    check_ok(id[69] & (1u << 14), "word 69 bit 14: deterministic read after TRIM");
    check_ok(id[69] & (1u << 5), "word 69 bit 5: read zeros after TRIM");

    rc = flush(ATA_CMD_FLUSH_CACHE);
    check(rc == AHCI_OK, "FLUSH CACHE", "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
    rc = flush(ATA_CMD_FLUSH_CACHE_EXT);
    check(rc == AHCI_OK, "FLUSH CACHE EXT", "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);

    ahci_pattern_fill(buf, 2000, 100, 0x51);
    rc = ahci_rw(p, ATA_CMD_WRITE_DMA_EXT, 2000, 100, buf);
    check(rc == AHCI_OK, "WRITE DMA EXT 100 sectors at 2000 (tag 51h)", "%s", ahci_strerror(rc));
    rc = flush(ATA_CMD_FLUSH_CACHE_EXT);
    check(rc == AHCI_OK, "FLUSH CACHE EXT after the write", "%s", ahci_strerror(rc));
    check_ok(holds(2000, 100, 0x51), "written sectors read back");

    ahci_pattern_fill(buf, 3000, 200, 0x52);
    rc = ahci_rw(p, ATA_CMD_WRITE_DMA_EXT, 3000, 200, buf);
    check(rc == AHCI_OK, "WRITE DMA EXT 200 sectors at 3000 (tag 52h)", "%s", ahci_strerror(rc));

    /* Block 0: 3000+100, 3150+50, 6000+0 (ignored), 5000+8; block 1: 7000+16. */
    memset(dsm, 0, sizeof(dsm));
    dsm[0] = range(3000, 100);
    dsm[1] = range(3150, 50);
    dsm[2] = range(6000, 0);
    dsm[3] = range(5000, 8);
    dsm[64] = range(7000, 16);
    rc = trim(2);
    check(rc == AHCI_OK, "DATA SET MANAGEMENT (TRIM), 2-block range list", "%s, PxTFD 0x%08x",
          ahci_strerror(rc), p->last_tfd);
    check_eq(ahci_prdbc(p, 0), 1024, "TRIM: PRDBC 1024 (the range list)");
    int zeros = is_zero(3000, 100) && is_zero(3150, 50) && is_zero(5000, 8) && is_zero(7000, 16);
    check_ok(zeros, "trimmed ranges read zeros");
    check_ok(holds(3100, 50, 0x52), "sectors between trimmed ranges keep their data");
    check_ok(holds(6000, 1, TAG0), "a range entry of length 0 trims nothing");
    check_ok(holds(2999, 1, TAG0) && holds(3200, 1, TAG0) && holds(4999, 1, TAG0) &&
                 holds(5008, 1, TAG0) && holds(6999, 1, TAG0) && holds(7016, 1, TAG0),
             "sectors next to the trimmed ranges unchanged");
    memset(buf + 8192, 0, 512);
    ahci_rw(p, ATA_CMD_READ_DMA_EXT, 3000, 1, buf);
    ahci_rw(p, ATA_CMD_READ_DMA_EXT, 3000, 1, buf + 8192);
    check_ok(memcmp(buf, buf + 8192, 512) == 0, "two reads of a trimmed sector agree");

    memset(dsm, 0, sizeof(dsm));
    dsm[0] = range(sectors - 4, 8);
    rc = trim(1);
    uint32_t tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE && (PXTFD_ERR(tfd) & ATA_ER_ABRT),
          "TRIM range past the end: command aborted", "%s, PxTFD 0x%08x", ahci_strerror(rc), tfd);
    ahci_port_recover(p);
    check_ok(holds(sectors - 4, 4, TAG0), "last sectors unchanged by the aborted TRIM");

    rc = flush(ATA_CMD_FLUSH_CACHE_EXT);
    check(rc == AHCI_OK, "FLUSH CACHE EXT at the end", "%s", ahci_strerror(rc));
    test_done();
}
