/*
 * pcidump: a tool guest, not a test. Prints the 256-byte configuration space
 * of every PCI function (bus 0 and behind bridges) as hex bytes, then for
 * every AHCI function (class 01/06/01) the dwords of its ABAR (BAR5) from
 * offset 0 up to `abar_len` (default 0x180: the global registers, the
 * vendor-specific area and port 0's registers).
 *
 * Its output shows the machine as the firmware left it (under QEMU, after
 * SeaBIOS), so it is a reference dump, not a transcript to compare.
 *
 * Arguments: abar_len=N (bytes, multiple of 16; 0 = no ABAR dump).
 */
#include "guest.h"

static void dump_config(pci_bdf_t bdf, void *ctx)
{
    (void)ctx;
    printf("config %02x:%02x.%x %04x:%04x\n", PCI_BDF_ARGS(bdf), pci_read16(bdf, PCI_VENDOR_ID),
           pci_read16(bdf, PCI_DEVICE_ID));
    for (unsigned row = 0; row < 256; row += 16) {
        printf("  %02x:", row);
        for (unsigned i = 0; i < 16; i++)
            printf(" %02x", pci_read8(bdf, (uint8_t)(row + i)));
        printf("\n");
    }
}

static void dump_abar(pci_bdf_t bdf, void *ctx)
{
    uint32_t len = *(const uint32_t *)ctx;
    if ((pci_read32(bdf, PCI_REVISION_ID) >> 8) != 0x010601)
        return;
    uint32_t abar = (uint32_t)pci_bar_addr(bdf, 5);
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    printf("abar %02x:%02x.%x 0x%08x\n", PCI_BDF_ARGS(bdf), abar);
    if (!abar || !(cmd & PCI_COMMAND_MEMORY)) {
        printf("  (not decoded: BAR5 0x%08x, command 0x%04x)\n", abar, cmd);
        return;
    }
    for (uint32_t row = 0; row < len; row += 16) {
        printf("  %03x:", row);
        for (uint32_t i = 0; i < 16; i += 4)
            printf(" %08x", mmio_read32(abar + row + i));
        printf("\n");
    }
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    uint32_t abar_len = (uint32_t)arg_int("abar_len", 0x180) & ~15u;
    if (abar_len > 0x1000)
        abar_len = 0x1000;

    pci_enumerate(dump_config, 0);
    if (abar_len)
        pci_enumerate(dump_abar, &abar_len);
    printf("end\n");
    return 0;
}
