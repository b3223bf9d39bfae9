/*
 * ahci_multi: three disks of different sizes on ports 0, 1 and 2. Each is
 * identified (capacity, distinct serial numbers), read, written and read
 * back; data stays on its own port. Commands run on all three ports at
 * once (non-queued and NCQ); an error on one port leaves the others running.
 *
 * Disk on port N holds the test pattern with tag 0xA0 + N. The guest writes
 * 8 sectors at LBA 1000 on port N with tag 0x30 + N (checked in the images
 * by tests/guests).
 *
 * Arguments: sectorsN=COUNT, the capacity of the disk on port N.
 */
#include "ahci.h"
#include "guest.h"

#define NPORTS 3
#define WRITE_LBA 1000

static uint16_t id[NPORTS][256];
static char serial[NPORTS][24];
static struct ahci_port *ports[NPORTS];
static uint64_t sectors[NPORTS];

static uint8_t *area(unsigned port, unsigned k)
{
    return ahci_data_area + port * (4u << 20) + k * (64u * 1024u);
}

static void identify_all(void)
{
    char name[80];
    for (unsigned n = 0; n < NPORTS; n++) {
        int rc = ahci_identify(ports[n], id[n]);
        sectors[n] = ata_id_sectors(id[n]);
        ata_id_string(id[n], 10, 10, serial[n]);
        printf("port %u capacity: %llu sectors\n", n, (unsigned long long)sectors[n]);
        snprintf(name, sizeof(name), "port %u IDENTIFY", n);
        check(rc == AHCI_OK, name, "%s", ahci_strerror(rc));
        snprintf(name, sizeof(name), "sectors%u", n);
        uint64_t want = arg_u64(name, 0);
        snprintf(name, sizeof(name), "port %u capacity matches its disk", n);
        check(sectors[n] == want, name, "%llu, expected %llu", (unsigned long long)sectors[n],
              (unsigned long long)want);
    }
    check_ok(strcmp(serial[0], serial[1]) && strcmp(serial[0], serial[2]) &&
                 strcmp(serial[1], serial[2]),
             "serial numbers differ between the disks");
}

static void read_each(void)
{
    char name[80];
    for (unsigned n = 0; n < NPORTS; n++) {
        uint64_t lbas[3] = {0, sectors[n] / 2, sectors[n] - 8};
        for (unsigned k = 0; k < 3; k++) {
            memset(area(n, 0), 0, 4096);
            int rc = ahci_rw(ports[n], ATA_CMD_READ_DMA_EXT, lbas[k], 8, area(n, 0));
            long bad = ahci_pattern_check(area(n, 0), lbas[k], 8, (uint8_t)(0xA0 + n));
            snprintf(name, sizeof(name), "port %u reads its own disk at LBA %llu", n,
                     (unsigned long long)lbas[k]);
            check(rc == AHCI_OK && bad < 0, name, "%s, first bad qword %ld", ahci_strerror(rc),
                  bad);
        }
    }
}

static void write_each(void)
{
    char name[80];
    for (unsigned n = 0; n < NPORTS; n++) {
        ahci_pattern_fill(area(n, 1), WRITE_LBA, 8, (uint8_t)(0x30 + n));
        int rc = ahci_rw(ports[n], ATA_CMD_WRITE_DMA_EXT, WRITE_LBA, 8, area(n, 1));
        snprintf(name, sizeof(name), "port %u WRITE DMA EXT 8 sectors at %u", n, WRITE_LBA);
        check(rc == AHCI_OK, name, "%s", ahci_strerror(rc));
    }
    for (unsigned n = 0; n < NPORTS; n++) {
        memset(area(n, 2), 0, 4096);
        int rc = ahci_rw(ports[n], ATA_CMD_READ_DMA_EXT, WRITE_LBA, 8, area(n, 2));
        long bad = ahci_pattern_check(area(n, 2), WRITE_LBA, 8, (uint8_t)(0x30 + n));
        snprintf(name, sizeof(name), "port %u reads back its own write", n);
        check(rc == AHCI_OK && bad < 0, name, "%s, first bad qword %ld", ahci_strerror(rc), bad);
        memset(area(n, 2), 0, 4096);
        rc = ahci_rw(ports[n], ATA_CMD_READ_DMA_EXT, WRITE_LBA + 8, 8, area(n, 2));
        bad = ahci_pattern_check(area(n, 2), WRITE_LBA + 8, 8, (uint8_t)(0xA0 + n));
        snprintf(name, sizeof(name), "port %u sectors after the write unchanged", n);
        check(rc == AHCI_OK && bad < 0, name, "%s, first bad qword %ld", ahci_strerror(rc), bad);
    }
}

static void all_at_once(void)
{
    /* One READ DMA EXT per port, issued back to back, then all waited. */
    for (unsigned n = 0; n < NPORTS; n++) {
        struct ahci_sg sg = {(uintptr_t)area(n, 3), 128u * 512u};
        struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 2000, 128);
        memset(area(n, 3), 0, 128u * 512u);
        ahci_cmd_build(ports[n], 3, &tf, 0, &sg, 1, 0);
        ahci_port_write(ports[n], PX_IS, 0xFFFFFFFF);
    }
    for (unsigned n = 0; n < NPORTS; n++)
        ahci_issue(ports[n], 1u << 3);
    int ok = 1;
    for (unsigned n = 0; n < NPORTS; n++) {
        int rc = ahci_wait(ports[n], 1u << 3, 0, ahci_hba.loops);
        ok &= rc == AHCI_OK && ahci_pattern_check(area(n, 3), 2000, 128, (uint8_t)(0xA0 + n)) < 0;
    }
    check_ok(ok, "READ DMA EXT on three ports at once: each its own data");

    /* 8 NCQ reads per port, all issued before any is waited for. */
    for (unsigned n = 0; n < NPORTS; n++) {
        for (unsigned t = 0; t < 8; t++) {
            struct ahci_sg sg = {(uintptr_t)area(n, 4 + t), 16u * 512u};
            memset(area(n, 4 + t), 0, 16u * 512u);
            ahci_ncq_build(ports[n], t, ATA_CMD_READ_FPDMA, 3000u + 16u * t, 16, &sg, 1);
        }
        ahci_port_write(ports[n], PX_IS, 0xFFFFFFFF);
    }
    for (unsigned n = 0; n < NPORTS; n++)
        ahci_ncq_issue(ports[n], 0xFF);
    ok = 1;
    for (unsigned n = 0; n < NPORTS; n++) {
        int rc = ahci_wait(ports[n], 0xFF, 0xFF, ahci_hba.loops);
        ok &= rc == AHCI_OK;
        for (unsigned t = 0; t < 8; t++)
            ok &= ahci_pattern_check(area(n, 4 + t), 3000u + 16u * t, 16, (uint8_t)(0xA0 + n)) <
                  0;
    }
    check_ok(ok, "8 NCQ reads on each of three ports at once: each its own data");
}

static void error_isolated(void)
{
    /* Port 1 fails (past its end); ports 0 and 2 keep working meanwhile. */
    struct ahci_sg sg = {(uintptr_t)area(1, 0), 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, sectors[1], 1);
    int rc = ahci_exec(ports[1], &tf, &sg, 1);
    check(rc == AHCI_ETASKFILE, "port 1 READ past its end: TFES", "%s", ahci_strerror(rc));
    int ok = 1;
    for (unsigned n = 0; n < NPORTS; n += 2) {
        rc = ahci_rw(ports[n], ATA_CMD_READ_DMA_EXT, sectors[1], 1, area(n, 0));
        ok &= rc == AHCI_OK &&
              ahci_pattern_check(area(n, 0), sectors[1], 1, (uint8_t)(0xA0 + n)) < 0 &&
              !(ahci_port_read(ports[n], PX_IS) & PXIS_TFES);
    }
    check_ok(ok, "ports 0 and 2 unaffected (and can read that LBA: they are larger)");
    check_ok(ahci_port_read(ports[1], PX_IS) & PXIS_TFES, "port 1 still reports its error");
    rc = ahci_port_recover(ports[1]);
    check(rc == AHCI_OK, "port 1 recovers", "%s", ahci_strerror(rc));
    rc = ahci_rw(ports[1], ATA_CMD_READ_DMA_EXT, 0, 1, area(1, 0));
    check(rc == AHCI_OK && ahci_pattern_check(area(1, 0), 0, 1, 0xA1) < 0, "port 1 works again",
          "%s", ahci_strerror(rc));
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    int rc = ahci_init();
    if (!check(rc == AHCI_OK, "AHCI HBA found and reset", "%s", ahci_strerror(rc)))
        test_done();
    uint32_t ready = ahci_start_ports();
    printf("ports with a disk: 0x%02x\n", ready);
    if (!check_eq(ready, 0x07, "disks on ports 0, 1 and 2"))
        test_done();
    for (unsigned n = 0; n < NPORTS; n++)
        ports[n] = ahci_port(n);
    identify_all();
    if (!check_ok(sectors[0] > sectors[1] && sectors[2] > sectors[1] && sectors[1] > 3000 + 128,
                  "port 1's disk is the smallest"))
        test_done();
    read_each();
    write_each();
    all_at_once();
    error_isolated();
    test_done();
}
