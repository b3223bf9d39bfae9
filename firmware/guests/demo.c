/*
 * demo: the default guest. Finds the AHCI HBA, resets it, identifies every
 * disk (model and capacity), then on the first disk writes a sector (the
 * last one), reads it back, shows the start of it as a hexdump and puts the
 * original contents back, so the disk ends as it started.
 *
 * Exit code 0 on success (also with no disk attached), 1 on any failure.
 */
#include "ahci.h"
#include "guest.h"

static uint16_t id[256];
static uint8_t saved[512] __attribute__((aligned(16)));
static uint8_t sector[512] __attribute__((aligned(16)));
static uint8_t readback[512] __attribute__((aligned(16)));

static int write_and_read(struct ahci_port *p, uint64_t lba)
{
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, 1, saved);
    if (!check(rc == AHCI_OK, "read the original sector", "%s", ahci_strerror(rc)))
        return 1;
    int n = snprintf((char *)sector, sizeof(sector), "ahci-emu demo: sector %llu of port %u\n",
                     (unsigned long long)lba, p->num);
    for (unsigned i = (unsigned)n + 1; i < sizeof(sector); i++)
        sector[i] = (uint8_t)i;
    rc = ahci_rw(p, ATA_CMD_WRITE_DMA_EXT, lba, 1, sector);
    if (!check(rc == AHCI_OK, "write the demo sector", "%s", ahci_strerror(rc)))
        return 1;
    memset(readback, 0, sizeof(readback));
    rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, 1, readback);
    int same = rc == AHCI_OK && memcmp(sector, readback, sizeof(sector)) == 0;
    check(same, "read it back: same bytes", "%s", ahci_strerror(rc));
    printf("sector %llu as read back (first 64 bytes):\n", (unsigned long long)lba);
    hexdump(readback, 64);
    rc = ahci_rw(p, ATA_CMD_WRITE_DMA_EXT, lba, 1, saved);
    int restored = rc == AHCI_OK;
    if (restored) {
        rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, 1, readback);
        restored = rc == AHCI_OK && memcmp(saved, readback, sizeof(saved)) == 0;
    }
    check(restored, "original contents restored", "%s", ahci_strerror(rc));
    return same && restored ? 0 : 1;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    printf("ahci-emu demo guest\n");
    int rc = ahci_init();
    if (rc != AHCI_OK) {
        printf("no AHCI controller: %s\n", ahci_strerror(rc));
        return 1;
    }
    uint32_t cap = ahci_hba.cap, vs = ahci_read(AHCI_VS);
    printf("AHCI %x.%x controller at %02x:%02x.%x: %u ports, %u command slots%s%s\n", vs >> 16,
           (vs >> 8) & 0xFF, PCI_BDF_ARGS(ahci_hba.bdf), AHCI_CAP_NP(cap), AHCI_CAP_NCS(cap),
           (cap & AHCI_CAP_SNCQ) ? ", NCQ" : "", (cap & AHCI_CAP_S64A) ? ", 64-bit" : "");
    uint32_t ready = ahci_start_ports();
    struct ahci_port *first = 0;
    int failures = 0;
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++) {
        if (!(ready & (1u << n)))
            continue;
        struct ahci_port *p = ahci_port(n);
        rc = ahci_identify(p, id);
        if (rc != AHCI_OK) {
            printf("port %u: IDENTIFY failed: %s\n", n, ahci_strerror(rc));
            failures++;
            continue;
        }
        char model[48];
        ata_id_string(id, 27, 20, model);
        uint64_t sectors = ata_id_sectors(id);
        printf("port %u model: %s\n", n, model);
        printf("port %u capacity: %llu sectors (%llu MiB)\n", n, (unsigned long long)sectors,
               (unsigned long long)(sectors >> 11));
        if (!first && sectors > 0)
            first = p;
    }
    if (!first) {
        printf("no disks attached\n");
        return failures ? 1 : 0;
    }
    rc = ahci_identify(first, id);
    if (rc != AHCI_OK)
        return 1;
    failures += write_and_read(first, ata_id_sectors(id) - 1);
    printf("demo %s\n", failures ? "FAILED" : "done");
    return failures ? 1 : 0;
}
