/*
 * faults: a driver meets an injected fault (ahci-emu --fault) and recovers.
 *
 * Disk 0 holds the test pattern, tag 0xD0 (tests/support/disks.py), or
 * zeros with tag=0. The command line picks the scenario; every scenario ends
 * by reading LBA good..good+7 (default 0) and checking what it holds, so
 * "the port works".
 *
 *   test=media op=read|write lba=L count=N bad=B err=E sts=S
 *       READ (or WRITE, of tag 0xD1) DMA EXT of L..L+N-1 meets a media error:
 *       PxIS.TFES, PxTFD status S (default DRDY|ERR, 41h) and error register E
 *       (default UNC, 40h), and the D2H Register FIS's LBA is B, the first bad
 *       sector (ATA8-ACS); then the recovery of AHCI 6.2.2.1.
 *   test=ncq lba=L bad=B
 *       Four READ FPDMA QUEUED of 8 sectors (tags 0-3, from L); one meets bad
 *       sector B. The NCQ recovery of AHCI 6.2.2.2: stop and restart the port,
 *       READ LOG EXT of log 10h names the failed tag (NQ=0), its status, UNC
 *       and B; the tags still outstanding are issued again and read right.
 *   test=stall how=comreset|hba
 *       A READ DMA EXT never completes: the wait times out with PxCI still
 *       set and PxTFD.BSY; recovery by COMRESET (ahci_port_recover: CAP.SCLO
 *       is 0) or by GHC.HR and a new port set-up.
 *   test=unplug
 *       The link drops under a READ DMA EXT: PxIS.PRCS, PxSERR.DIAG.N and
 *       PxSSTS.DET 0; the guest waits for the device to come back: DET 3,
 *       PxSERR.DIAG.X, PxIS.PCS and the ATA signature in PxSIG; it clears
 *       them, sets the port up again, IDENTIFYs and reads.
 *   test=latency
 *       Four READ FPDMA QUEUED issued one PxCI write each; all complete
 *       (whatever completion the emulator holds back) with the right data.
 */
#include "ahci.h"
#include "ahci_test.h"
#include "guest.h"

#define TAG0 0xD0
#define TAG_WRITE 0xD1
#define NCQ_TAGS 4
#define NCQ_SECTORS 8
#define STALL_LOOPS 20000ul

static uint8_t buf[NCQ_TAGS * NCQ_SECTORS * 512] __attribute__((aligned(4096)));
static uint8_t log_page[512] __attribute__((aligned(512)));
static uint16_t id[256];
static struct ahci_port *p;

static unsigned tag0 = TAG0;

/* 1 if buf holds what disk 0 has on lba..lba+n-1 (the pattern, or zeros with tag=0) */
static int holds_disk(const void *data, uint64_t lba, uint32_t n)
{
    if (!tag0)
        return ahci_zero_check(data, n * 512) < 0;
    return ahci_pattern_check(data, lba, n, (uint8_t)tag0) < 0;
}

static uint64_t d2h_lba(void)
{
    volatile uint8_t *f = p->fis->rfis;
    return (uint64_t)f[4] | (uint64_t)f[5] << 8 | (uint64_t)f[6] << 16 | (uint64_t)f[8] << 24 |
           (uint64_t)f[9] << 32 | (uint64_t)f[10] << 40;
}

static void port_works(const char *what)
{
    uint64_t good = arg_u64("good", 0);
    char name[96];
    memset(buf, 0, 8 * 512);
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, good, 8, buf);
    snprintf(name, sizeof(name), "port works after %s", what);
    check(rc == AHCI_OK && holds_disk(buf, good, 8), name,
          "%s, PxIS 0x%08x PxTFD 0x%08x", ahci_strerror(rc), p->last_is, p->last_tfd);
}

static void recovered(int rc, const char *what)
{
    char name[96];
    snprintf(name, sizeof(name), "recovery after %s", what);
    check(rc == AHCI_OK, name, "%s", ahci_strerror(rc));
    port_works(what);
}

static void media(void)
{
    int write = !strcmp(arg_get("op", "read"), "write");
    uint64_t lba = arg_u64("lba", 96);
    uint32_t n = (uint32_t)arg_int("count", 16);
    uint64_t bad = arg_u64("bad", lba);
    unsigned err = (unsigned)arg_int("err", ATA_ER_UNC);
    unsigned sts = (unsigned)arg_int("sts", ATA_SR_DRDY | ATA_SR_ERR);
    if (write)
        ahci_pattern_fill(buf, lba, n, TAG_WRITE);
    int rc = ahci_rw(p, write ? ATA_CMD_WRITE_DMA_EXT : ATA_CMD_READ_DMA_EXT, lba, n, buf);
    uint32_t tfd = p->last_tfd;
    check(rc == AHCI_ETASKFILE && (p->last_is & PXIS_TFES), "media error: PxIS.TFES",
          "%s, PxIS 0x%08x", ahci_strerror(rc), p->last_is);
    check_eq(PXTFD_STS(tfd), sts, "media error: PxTFD.STS");
    check_eq(PXTFD_ERR(tfd), err, "media error: PxTFD.ERR");
    check_eq(p->fis->rfis[0], FIS_TYPE_REG_D2H, "media error: a D2H Register FIS");
    check_eq(d2h_lba(), bad, "media error: the D2H FIS names the first bad sector");
    check_eq(p->fis->rfis[3], err, "media error: the D2H FIS error register");
    recovered(ahci_port_recover(p), "a media error");
}

static void ncq(void)
{
    uint64_t lba = arg_u64("lba", 0);
    uint64_t bad = arg_u64("bad", lba);
    unsigned bad_tag = (unsigned)((bad - lba) / NCQ_SECTORS);
    uint32_t all = (1u << NCQ_TAGS) - 1;
    for (unsigned t = 0; t < NCQ_TAGS; t++) {
        struct ahci_sg sg = {(uintptr_t)buf + t * NCQ_SECTORS * 512, NCQ_SECTORS * 512};
        ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, lba + t * NCQ_SECTORS, NCQ_SECTORS, &sg, 1);
    }
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    ahci_ncq_issue(p, all);
    int rc = ahci_wait(p, 0, all, ahci_hba.loops);
    check(rc == AHCI_ETASKFILE, "NCQ error: PxIS.TFES", "%s, PxIS 0x%08x", ahci_strerror(rc),
          p->last_is);
    check_eq(PXTFD_ERR(p->last_tfd), ATA_ER_UNC, "NCQ error: PxTFD.ERR is UNC");
    uint32_t outstanding = ahci_port_read(p, PX_SACT);
    check_ok(outstanding & (1u << bad_tag), "NCQ error: the failed tag is still in PxSACT");

    rc = ahci_port_recover(p); /* AHCI 6.2.2.2: ST cycled, SERR and IS cleared */
    check(rc == AHCI_OK, "NCQ error: port restarted", "%s", ahci_strerror(rc));
    memset(log_page, 0xEE, sizeof(log_page));
    rc = ahci_read_ncq_error_log(p, log_page);
    check(rc == AHCI_OK, "READ LOG EXT 10h", "%s", ahci_strerror(rc));
    check_eq(log_page[0], bad_tag, "log 10h: NQ 0 and the failed tag");
    check_eq(log_page[2] & (ATA_SR_ERR | ATA_SR_BSY), ATA_SR_ERR, "log 10h: status ERR");
    check_eq(log_page[3], ATA_ER_UNC, "log 10h: error UNC");
    uint64_t logged = (uint64_t)log_page[4] | (uint64_t)log_page[5] << 8 |
                      (uint64_t)log_page[6] << 16 | (uint64_t)log_page[8] << 24 |
                      (uint64_t)log_page[9] << 32 | (uint64_t)log_page[10] << 40;
    check_eq(logged, bad, "log 10h: the LBA of the first bad sector");
    uint8_t sum = 0;
    for (unsigned i = 0; i < 512; i++)
        sum += log_page[i];
    check_eq(sum, 0, "log 10h: checksum");

    uint32_t again = outstanding & all & ~(1u << bad_tag);
    for (unsigned t = 0; t < NCQ_TAGS; t++) {
        if (!(again & (1u << t)))
            continue;
        struct ahci_sg sg = {(uintptr_t)buf + t * NCQ_SECTORS * 512, NCQ_SECTORS * 512};
        ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, lba + t * NCQ_SECTORS, NCQ_SECTORS, &sg, 1);
    }
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    if (again)
        ahci_ncq_issue(p, again);
    rc = again ? ahci_wait(p, 0, again, ahci_hba.loops) : AHCI_OK;
    check(rc == AHCI_OK, "NCQ error: the other outstanding tags issued again", "%s",
          ahci_strerror(rc));
    int good = 1;
    for (unsigned t = 0; t < NCQ_TAGS; t++)
        if (t != bad_tag)
            good &= holds_disk(buf + t * NCQ_SECTORS * 512, lba + t * NCQ_SECTORS, NCQ_SECTORS);
    check_ok(good, "NCQ error: every good tag read the right data");
    port_works("an NCQ error");
}

static void stall(void)
{
    int hba = !strcmp(arg_get("how", "comreset"), "hba");
    struct ahci_sg sg = {(uintptr_t)buf, 8 * 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 0, 8);
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    ahci_issue(p, 1);
    int rc = ahci_wait(p, 1, 0, STALL_LOOPS);
    check(rc == AHCI_ETIMEOUT, "stalled command: the wait times out", "%s", ahci_strerror(rc));
    check_ok(ahci_port_read(p, PX_CI) & 1, "stalled command: PxCI still set");
    check_ok(ahci_port_read(p, PX_TFD) & ATA_SR_BSY, "stalled command: PxTFD.BSY");
    if (hba) {
        rc = ahci_hba_reset();
        if (rc == AHCI_OK)
            rc = ahci_port_setup(p);
        recovered(rc, "a stall, by GHC.HR");
    } else {
        recovered(ahci_port_recover(p), "a stall, by COMRESET");
    }
}

static void unplug(void)
{
    struct ahci_sg sg = {(uintptr_t)buf, 8 * 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 0, 8);
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    ahci_issue(p, 1);
    unsigned long loops = STALL_LOOPS;
    while (!(ahci_port_read(p, PX_IS) & PXIS_PRCS) && loops--)
        cpu_relax();
    uint32_t is = ahci_port_read(p, PX_IS);
    check(is & PXIS_PRCS, "unplug: PxIS.PRCS", "PxIS 0x%08x", is);
    check_ok(ahci_port_read(p, PX_SERR) & SERR_DIAG_N, "unplug: PxSERR.DIAG.N");
    check_eq(SSTS_DET(ahci_port_read(p, PX_SSTS)), 0, "unplug: PxSSTS.DET 0");
    ahci_port_write(p, PX_SERR, SERR_DIAG_N); /* PRCS follows DIAG.N */
    loops = ahci_hba.loops; /* the device comes back in its own time: wait for COMINIT */
    while (SSTS_DET(ahci_port_read(p, PX_SSTS)) != SSTS_DET_PRESENT && loops--)
        cpu_relax();
    int rc = ahci_port_wait_ready(p, ahci_hba.loops);
    check(rc == AHCI_OK, "re-plug: the device is back (PxSSTS.DET 3, not busy)", "%s",
          ahci_strerror(rc));
    check_ok(ahci_port_read(p, PX_SERR) & SERR_DIAG_X, "re-plug: PxSERR.DIAG.X");
    check_ok(ahci_port_read(p, PX_IS) & PXIS_PCS, "re-plug: PxIS.PCS");
    check_eq(ahci_port_read(p, PX_SIG), SATA_SIG_ATA, "re-plug: the ATA signature in PxSIG");
    rc = ahci_port_setup(p); /* stops the port (the lost command with it), clears SERR */
    check(rc == AHCI_OK, "re-plug: port set up again", "%s", ahci_strerror(rc));
    check_ok(!(ahci_port_read(p, PX_IS) & PXIS_PCS), "re-plug: PxIS.PCS cleared with DIAG.X");
    rc = ahci_identify(p, id);
    check(rc == AHCI_OK, "re-plug: IDENTIFY", "%s", ahci_strerror(rc));
    port_works("unplug and re-plug");
}

static void latency(void)
{
    uint32_t all = (1u << NCQ_TAGS) - 1;
    memset(buf, 0, sizeof(buf));
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    for (unsigned t = 0; t < NCQ_TAGS; t++) {
        struct ahci_sg sg = {(uintptr_t)buf + t * NCQ_SECTORS * 512, NCQ_SECTORS * 512};
        ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, t * NCQ_SECTORS, NCQ_SECTORS, &sg, 1);
        ahci_ncq_issue(p, 1u << t);
    }
    int rc = ahci_wait(p, 0, all, ahci_hba.loops);
    check(rc == AHCI_OK, "held completions: every tag completes", "%s", ahci_strerror(rc));
    check_ok(holds_disk(buf, 0, NCQ_TAGS * NCQ_SECTORS), "held completions: the data is right");
    port_works("held completions");
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    tag0 = (unsigned)arg_int("tag", TAG0);
    p = ahci_test_start(NULL);
    const char *test = arg_get("test", "media");
    if (!strcmp(test, "media"))
        media();
    else if (!strcmp(test, "ncq"))
        ncq();
    else if (!strcmp(test, "stall"))
        stall();
    else if (!strcmp(test, "unplug"))
        unplug();
    else if (!strcmp(test, "latency"))
        latency();
    else
        check(0, "known test", "test=%s", test);
    test_done();
}
