/*
 * ahci_errors: error reporting and recovery (AHCI 1.3.1 section 6).
 *
 * - A READ past the end of the disk: PxTFD ERR with IDNF (ATA8-ACS), PxIS.TFES,
 *   the port halted (PxCI kept, a later command not processed), recovery per
 *   AHCI 6.2.2 (clear ST, wait CR, clear SERR/IS, set ST) and the port works.
 * - WRITE and READ VERIFY past the end, a command straddling the end, an
 *   unknown opcode (ABRT), a PRDT outside RAM or above 4 GiB (PxIS.HBFS), a
 *   PRDT shorter than the transfer (PxIS.OFS), a command issued while ST is
 *   clear (not processed), COMRESET through PxSCTL.DET.
 * - With `abuse=1` (not in oracle runs: QEMU 7.2 aborts or hangs on some of
 *   these): READ DMA with PRDTL 0, ST cleared with commands pending,
 *   COMRESET and GHC.HR with commands issued.
 *
 * Disk 0: the test pattern, tag 0xD0 (tests/support/disks.py); nothing is
 * written to it (tests/guests checks the image is unchanged).
 */
#include "ahci.h"
#include "ahci_test.h"
#include "guest.h"

#define TAG0 0xD0

static uint8_t buf[64 * 1024] __attribute__((aligned(4096)));
static uint16_t id[256];
static struct ahci_port *p;
static uint64_t sectors;

static int port_works(const char *name)
{
    memset(buf, 0, 4096);
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, 100, 8, buf);
    return check(rc == AHCI_OK && ahci_pattern_check(buf, 100, 8, TAG0) < 0, name,
                 "%s, PxIS 0x%08x PxTFD 0x%08x", ahci_strerror(rc), p->last_is, p->last_tfd);
}

static void recover(const char *what)
{
    char name[96];
    int rc = ahci_port_recover(p);
    snprintf(name, sizeof(name), "recovery after %s", what);
    check(rc == AHCI_OK, name, "%s", ahci_strerror(rc));
    snprintf(name, sizeof(name), "port works after %s", what);
    port_works(name);
}

static int issue_read(unsigned slot, uint64_t lba, uint32_t n, uint64_t addr)
{
    struct ahci_sg sg = {addr, n * 512u};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, lba, n);
    return ahci_cmd_build(p, slot, &tf, 0, &sg, 1, 0);
}

static void read_past_end(void)
{
    memset(buf, 0xEE, 4096);
    issue_read(0, sectors, 1, (uintptr_t)buf);
    int rc = ahci_cmd_run(p, 0);
    uint32_t is = ahci_port_read(p, PX_IS), tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE && (is & PXIS_TFES), "READ DMA EXT past the end: PxIS.TFES",
          "%s, PxIS 0x%08x", ahci_strerror(rc), is);
    check_ok(PXTFD_STS(tfd) & ATA_SR_ERR, "READ DMA EXT past the end: PxTFD.STS.ERR");
    check_eq(PXTFD_ERR(tfd), ATA_ER_IDNF, "READ DMA EXT past the end: PxTFD.ERR = IDNF (10h)");
    check_ok(!(PXTFD_STS(tfd) & (ATA_SR_BSY | ATA_SR_DRQ)), "READ DMA EXT past the end: not busy");
    check_eq(p->fis->rfis[0], FIS_TYPE_REG_D2H, "error reported in a D2H Register FIS");
    check_eq(ahci_prdbc(p, 0), 0, "no data transferred (PRDBC 0)");
    check_ok(buf[0] == 0xEE && buf[511] == 0xEE, "no data written to memory");
    check_eq(ahci_port_read(p, PX_CI) & 1, 1, "PxCI keeps the failed command's slot");
    check_ok(ahci_port_read(p, PX_CMD) & PXCMD_CR, "PxCMD.CR still set (port halted, not stopped)");

    /* The port is halted: a new command is not processed until recovery. */
    memset(buf + 4096, 0xEE, 512);
    issue_read(1, 0, 1, (uintptr_t)buf + 4096);
    ahci_issue(p, 1u << 1);
    ahci_delay(20000);
    check((ahci_port_read(p, PX_CI) & 2) && ahci_prdbc(p, 1) == 0 && buf[4096] == 0xEE,
          "halted port does not process a new command", "PxCI 0x%08x, PRDBC %u",
          ahci_port_read(p, PX_CI), ahci_prdbc(p, 1));

    /* AHCI 6.2.2.1, step by step. */
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) & ~PXCMD_ST);
    unsigned long n = ahci_hba.loops;
    while ((ahci_port_read(p, PX_CMD) & PXCMD_CR) && n--)
        cpu_relax();
    check_eq(ahci_port_read(p, PX_CMD) & PXCMD_CR, 0, "clearing ST: PxCMD.CR clears");
    check_eq(ahci_port_read(p, PX_CI), 0, "clearing ST: PxCI cleared");
    ahci_port_write(p, PX_SERR, 0xFFFFFFFF);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    check_eq(ahci_port_read(p, PX_IS), 0, "PxIS.TFES cleared");
    check_eq(PXTFD_STS(ahci_port_read(p, PX_TFD)) & (ATA_SR_BSY | ATA_SR_DRQ), 0,
             "device neither BSY nor DRQ: no reset needed");
    int rc2 = ahci_port_start(p);
    check(rc2 == AHCI_OK, "ST set again", "%s", ahci_strerror(rc2));
    port_works("port works after recovery");
}

static void other_range_errors(void)
{
    /* Straddling the end: 28-bit READ DMA of the last sector and one more. */
    struct ahci_sg sg = {(uintptr_t)buf, 1024};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA, sectors - 1, 2);
    int rc = ahci_exec(p, &tf, &sg, 1);
    uint32_t tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE && PXTFD_ERR(tfd) == ATA_ER_IDNF,
          "READ DMA across the end: TFES, IDNF", "%s, PxTFD 0x%08x", ahci_strerror(rc), tfd);
    recover("READ DMA across the end");

    ahci_pattern_fill(buf, sectors, 4, 0x66);
    sg.len = 2048;
    tf = ahci_tf(ATA_CMD_WRITE_DMA_EXT, sectors, 4);
    rc = ahci_exec(p, &tf, &sg, 1);
    tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE && PXTFD_ERR(tfd) == ATA_ER_IDNF,
          "WRITE DMA EXT past the end: TFES, IDNF", "%s, PxTFD 0x%08x", ahci_strerror(rc), tfd);
    recover("WRITE DMA EXT past the end");

    tf = ahci_tf(ATA_CMD_READ_VERIFY_EXT, sectors - 4, 8);
    rc = ahci_exec(p, &tf, 0, 0);
    tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE && PXTFD_ERR(tfd) == ATA_ER_IDNF,
          "READ VERIFY SECTORS EXT across the end: TFES, IDNF", "%s, PxTFD 0x%08x",
          ahci_strerror(rc), tfd);
    recover("READ VERIFY past the end");

    tf = ahci_tf(0xFF, 0, 0);
    rc = ahci_exec(p, &tf, 0, 0);
    tfd = ahci_port_read(p, PX_TFD);
    check(rc == AHCI_ETASKFILE, "unknown opcode FFh: PxIS.TFES", "%s", ahci_strerror(rc));
    check_eq(PXTFD_ERR(tfd), ATA_ER_ABRT, "unknown opcode FFh: PxTFD.ERR = ABRT (04h)");
    check_eq(PXTFD_STS(tfd) & (ATA_SR_ERR | ATA_SR_DRDY | ATA_SR_BSY | ATA_SR_DRQ),
             ATA_SR_ERR | ATA_SR_DRDY, "unknown opcode FFh: PxTFD.STS = DRDY|ERR");
    recover("an unknown opcode");
}

static void host_bus_errors(void)
{
    issue_read(0, 0, 1, 0xF0000000u);
    int rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_EHOSTBUS && (p->last_is & PXIS_HBFS),
          "PRD at F0000000h (no RAM): PxIS.HBFS", "%s, PxIS 0x%08x", ahci_strerror(rc),
          p->last_is);
    check_ok(ahci_port_read(p, PX_CI) & 1, "host bus error: PxCI keeps the slot");
    recover("a host bus error (F0000000h)");

    issue_read(0, 0, 1, 0x100000000ull + (uintptr_t)buf);
    rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_EHOSTBUS && (p->last_is & PXIS_HBFS),
          "PRD above 4 GiB (DBAU 1, no RAM): PxIS.HBFS", "%s, PxIS 0x%08x", ahci_strerror(rc),
          p->last_is);
    recover("a host bus error (DBAU)");

    /* 4 sectors into a 1 KiB PRDT. */
    memset(buf, 0xEE, 4096);
    struct ahci_sg sg = {(uintptr_t)buf, 1024};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 0, 4);
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    rc = ahci_cmd_run(p, 0);
    check((p->last_is & PXIS_OFS) && rc != AHCI_OK && rc != AHCI_ETIMEOUT,
          "PRDT shorter than the transfer: PxIS.OFS", "%s, PxIS 0x%08x", ahci_strerror(rc),
          p->last_is);
    check_ok(buf[1024] == 0xEE && buf[4095] == 0xEE, "nothing written beyond the PRDT");
    recover("an overflow");
}

static void issue_with_st_clear(void)
{
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) & ~PXCMD_ST);
    unsigned long n = ahci_hba.loops;
    while ((ahci_port_read(p, PX_CMD) & PXCMD_CR) && n--)
        cpu_relax();
    memset(buf, 0xEE, 512);
    issue_read(0, 0, 1, (uintptr_t)buf);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_issue(p, 1);
    ahci_delay(20000);
    check(buf[0] == 0xEE && ahci_prdbc(p, 0) == 0 && ahci_port_read(p, PX_IS) == 0,
          "command issued while ST is clear is not processed", "PRDBC %u, PxIS 0x%08x",
          ahci_prdbc(p, 0), ahci_port_read(p, PX_IS));
    /* Software must not do that (AHCI 3.3.14); make the slot harmless in
     * case the HBA kept the bit, start again and let it drain. */
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_VERIFY_EXT, 0, 1);
    ahci_cmd_build(p, 0, &tf, 0, 0, 0, 0);
    int rc = ahci_port_start(p);
    ahci_wait(p, 1, 0, ahci_hba.loops);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    check(rc == AHCI_OK, "ST set again", "%s", ahci_strerror(rc));
    port_works("port works after ST is set again");
}

static void comreset(void)
{
    /* COMRESET with the port stopped (ST clear, FRE kept set). */
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) & ~PXCMD_ST);
    unsigned long n = ahci_hba.loops;
    while ((ahci_port_read(p, PX_CMD) & PXCMD_CR) && n--)
        cpu_relax();
    memset((void *)p->fis->rfis, 0, sizeof(p->fis->rfis));
    ahci_port_write(p, PX_SERR, 0xFFFFFFFF);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_port_write(p, PX_SCTL, SCTL_DET_COMRESET);
    ahci_delay(2000);
    uint32_t ssts = ahci_port_read(p, PX_SSTS), tfd = ahci_port_read(p, PX_TFD);
    check(SSTS_DET(ssts) != SSTS_DET_PRESENT, "during COMRESET: PxSSTS.DET is not 3",
          "PxSSTS 0x%08x", ssts);
    check_eq(PXTFD_STS(tfd), 0x7F, "during COMRESET: PxTFD.STS = 7Fh");
    ahci_port_write(p, PX_SCTL, 0);
    int rc = ahci_port_wait_ready(p, ahci_hba.loops);
    check(rc == AHCI_OK, "after COMRESET: link up, device ready", "%s", ahci_strerror(rc));
    check_eq(ahci_port_read(p, PX_SSTS), 0x113, "after COMRESET: PxSSTS");
    check_eq(ahci_port_read(p, PX_SIG), SATA_SIG_ATA, "after COMRESET: PxSIG");
    check(p->fis->rfis[0] == FIS_TYPE_REG_D2H && p->fis->rfis[12] == 1 && p->fis->rfis[4] == 1,
          "after COMRESET: signature D2H FIS posted (FRE set)", "type 0x%02x count %u lba %u",
          p->fis->rfis[0], p->fis->rfis[12], p->fis->rfis[4]);
    uint32_t serr = ahci_port_read(p, PX_SERR);
    check(serr & SERR_DIAG_X, "after COMRESET: PxSERR.DIAG.X (COMINIT received)",
          "PxSERR 0x%08x", serr);
    check(ahci_port_read(p, PX_IS) & PXIS_PCS, "after COMRESET: PxIS.PCS mirrors DIAG.X",
          "PxIS 0x%08x", ahci_port_read(p, PX_IS));
    ahci_port_write(p, PX_SERR, 0xFFFFFFFF);
    check_eq(ahci_port_read(p, PX_IS) & PXIS_PCS, 0, "clearing PxSERR.DIAG.X clears PxIS.PCS");
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    rc = ahci_port_start(p);
    check(rc == AHCI_OK, "ST set after COMRESET", "%s", ahci_strerror(rc));
    port_works("port works after COMRESET");
}

/* Cases QEMU 7.2 does not survive: run with abuse=1 only. */
static void abuse(void)
{
    printf("# abuse cases\n");
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA, 0, 1);
    ahci_cmd_build(p, 0, &tf, 0, 0, 0, 0);
    int rc = ahci_cmd_run(p, 0);
    check(rc != AHCI_ETIMEOUT && (p->last_is & PXIS_OFS),
          "READ DMA with PRDTL 0: PxIS.OFS (no room for the data)", "%s, PxIS 0x%08x",
          ahci_strerror(rc), p->last_is);
    recover("READ DMA with PRDTL 0");

    /* Clear ST with long commands issued. */
    for (unsigned s = 0; s < 8; s++)
        issue_read(s, 0, 4096, (uintptr_t)ahci_data_area + s * (2u << 20));
    ahci_issue(p, 0xFF);
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) & ~PXCMD_ST);
    unsigned long n = ahci_hba.loops;
    while ((ahci_port_read(p, PX_CMD) & PXCMD_CR) && n--)
        cpu_relax();
    check_eq(ahci_port_read(p, PX_CMD) & PXCMD_CR, 0, "ST cleared under 8 commands: CR clears");
    check_eq(ahci_port_read(p, PX_CI), 0, "ST cleared under 8 commands: PxCI cleared");
    recover("clearing ST under commands");

    /* COMRESET with commands issued (and ST still set). */
    for (unsigned s = 0; s < 8; s++)
        issue_read(s, 0, 4096, (uintptr_t)ahci_data_area + s * (2u << 20));
    ahci_issue(p, 0xFF);
    ahci_port_write(p, PX_SCTL, SCTL_DET_COMRESET);
    ahci_delay(2000);
    ahci_port_write(p, PX_SCTL, 0);
    rc = ahci_port_wait_ready(p, ahci_hba.loops);
    check(rc == AHCI_OK, "COMRESET under commands: device ready again", "%s", ahci_strerror(rc));
    recover("COMRESET under commands");

    /* GHC.HR with NCQ commands issued. */
    for (unsigned t = 0; t < 32; t++) {
        struct ahci_sg sg = {(uintptr_t)ahci_data_area + t * (1u << 20), 1u << 20};
        ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, t * 2048u, 2048, &sg, 1);
    }
    ahci_ncq_issue(p, 0xFFFFFFFF);
    rc = ahci_hba_reset();
    check(rc == AHCI_OK, "GHC.HR under 32 NCQ commands completes", "%s", ahci_strerror(rc));
    check_eq(ahci_port_read(p, PX_SACT) | ahci_port_read(p, PX_CI), 0,
             "after HR: PxSACT and PxCI clear");
    rc = ahci_port_setup(p);
    check(rc == AHCI_OK, "port set up again after HR", "%s", ahci_strerror(rc));
    port_works("port works after HR under commands");
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    p = ahci_test_start(NULL);
    int rc = ahci_test_identify(p, id, &sectors);
    if (!check(rc == AHCI_OK && sectors >= 1024, "IDENTIFY", "%s", ahci_strerror(rc)))
        test_done();
    port_works("port works");
    read_past_end();
    other_range_errors();
    host_bus_errors();
    issue_with_st_clear();
    comreset();
    if (arg_int("abuse", 0))
        abuse();
    test_done();
}
