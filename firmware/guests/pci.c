/*
 * pci: enumerate bus 0 and check the configuration-space behaviour a driver
 * relies on: identification registers are read-only, BAR sizing works and
 * restores, unimplemented BARs stay zero, the command register's decode bits
 * are writable, the capability list is well formed and byte/word/dword
 * accesses agree. The AHCI function is found by class code.
 *
 * Only values that the board copies from q35 are printed: no firmware-chosen
 * I/O addresses, interrupt lines or command register values.
 */
#include "guest.h"

#define MAX_FUNCS 64

#define AHCI_CLASS 0x01
#define AHCI_SUBCLASS 0x06
#define AHCI_PROGIF 0x01
#define AHCI_BAR_ABAR 5
#define AHCI_BAR_IDP 4

#define AHCI_GHC 0x04
#define AHCI_GHC_AE (1u << 31)

static pci_bdf_t funcs[MAX_FUNCS];
static unsigned n_funcs;

static void collect(pci_bdf_t bdf, void *ctx)
{
    (void)ctx;
    if (n_funcs < MAX_FUNCS)
        funcs[n_funcs++] = bdf;
}

static void print_function(pci_bdf_t bdf)
{
    uint32_t id = pci_read32(bdf, PCI_VENDOR_ID);
    uint32_t class_rev = pci_read32(bdf, PCI_REVISION_ID);
    printf("%02x:%02x.%x %04x:%04x class %02x/%02x/%02x hdr %02x\n", PCI_BDF_ARGS(bdf),
           id & 0xFFFF, id >> 16, class_rev >> 24, (class_rev >> 16) & 0xFF,
           (class_rev >> 8) & 0xFF, pci_read8(bdf, PCI_HEADER_TYPE));
}

/* Write the complement of a read-only register; it must not change. */
static void check_read_only(pci_bdf_t bdf, uint8_t off, int width, const char *what)
{
    char name[80];
    uint32_t before, after;

    snprintf(name, sizeof(name), "%02x:%02x.%x %s read-only", PCI_BDF_ARGS(bdf), what);
    if (width == 1) {
        before = pci_read8(bdf, off);
        pci_write8(bdf, off, (uint8_t)~before);
        after = pci_read8(bdf, off);
    } else if (width == 2) {
        before = pci_read16(bdf, off);
        pci_write16(bdf, off, (uint16_t)~before);
        after = pci_read16(bdf, off);
    } else {
        before = pci_read32(bdf, off);
        pci_write32(bdf, off, ~before);
        after = pci_read32(bdf, off);
    }
    check_eq(after, before, name);
}

/* Every dword of config space reads the same as its words and bytes. */
static void check_access_widths(pci_bdf_t bdf)
{
    char name[80];
    int bad_off = -1;
    uint32_t d = 0, w = 0, b = 0;

    for (unsigned off = 0; off < 256 && bad_off < 0; off += 4) {
        d = pci_read32(bdf, (uint8_t)off);
        w = pci_read16(bdf, (uint8_t)off) | ((uint32_t)pci_read16(bdf, (uint8_t)(off + 2)) << 16);
        b = 0;
        for (unsigned i = 0; i < 4; i++)
            b |= (uint32_t)pci_read8(bdf, (uint8_t)(off + i)) << (8 * i);
        if (d != w || d != b)
            bad_off = (int)off;
    }
    snprintf(name, sizeof(name), "%02x:%02x.%x byte/word/dword reads agree", PCI_BDF_ARGS(bdf));
    check(bad_off < 0, name, "at 0x%02x: dword 0x%08x, words 0x%08x, bytes 0x%08x", bad_off, d,
          w, b);
}

static void check_host_bridge(pci_bdf_t hb)
{
    char name[80];

    check_eq(pci_read32(hb, PCI_VENDOR_ID), 0x29c08086, "host bridge 00:00.0 is 8086:29c0");
    check_eq(pci_read32(hb, PCI_REVISION_ID) >> 8, 0x060000, "host bridge class 06/00/00");
    check_eq(pci_read8(hb, PCI_HEADER_TYPE), 0x00,
             "host bridge header type 00 (single function)");

    /* Functions 1-7 of a single-function device do not answer. */
    unsigned answering = 0;
    for (unsigned fn = 1; fn < 8; fn++)
        answering += pci_read32(PCI_BDF(PCI_BUS(hb), PCI_DEV(hb), fn), PCI_VENDOR_ID) !=
                     0xFFFFFFFF;
    check(answering == 0, "host bridge functions 1-7 read all ones", "%u answer", answering);

    for (int n = 0; n < 6; n++) {
        uint8_t off = (uint8_t)(PCI_BAR0 + 4 * n);
        uint32_t before = pci_read32(hb, off);
        pci_write32(hb, off, 0xFFFFFFFF);
        uint32_t probed = pci_read32(hb, off);
        pci_write32(hb, off, before);
        snprintf(name, sizeof(name), "host bridge BAR%d unimplemented", n);
        check(before == 0 && probed == 0 && pci_read32(hb, off) == 0, name,
              "read 0x%08x, after writing ones 0x%08x", before, probed);
    }
    check_eq(pci_read8(hb, PCI_INTERRUPT_PIN), 0, "host bridge interrupt pin 0 (none)");
}

/* Size BAR n by hand: decoding off, write ones, read, restore. */
static uint32_t size_bar(pci_bdf_t bdf, int n, uint32_t *restored)
{
    uint8_t off = (uint8_t)(PCI_BAR0 + 4 * n);
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    uint32_t orig = pci_read32(bdf, off);

    pci_write16(bdf, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
    pci_write32(bdf, off, 0xFFFFFFFF);
    uint32_t mask = pci_read32(bdf, off);
    pci_write32(bdf, off, orig);
    *restored = pci_read32(bdf, off);
    pci_write16(bdf, PCI_COMMAND, cmd);
    return mask;
}

static void check_ahci_command(pci_bdf_t ahci)
{
    uint16_t cmd = pci_read16(ahci, PCI_COMMAND);
    check(cmd & PCI_COMMAND_MEMORY, "AHCI memory decoding enabled at start", "command 0x%04x",
          cmd);

    pci_write16(ahci, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
    check_eq(pci_read16(ahci, PCI_COMMAND), cmd & ~PCI_COMMAND_MEMORY,
             "command memory-space bit clears (word write), other bits kept");
    pci_write8(ahci, PCI_COMMAND, (uint8_t)(cmd | PCI_COMMAND_MEMORY));
    check_eq(pci_read16(ahci, PCI_COMMAND), cmd | PCI_COMMAND_MEMORY,
             "command memory-space bit sets (byte write), other bits kept");
    pci_write16(ahci, PCI_COMMAND, cmd);
    check_eq(pci_read16(ahci, PCI_COMMAND), cmd, "command register restored");
}

static void check_ahci_bars(pci_bdf_t ahci)
{
    uint32_t restored, mask;
    char name[80];

    uint32_t bar5 = pci_bar_read(ahci, AHCI_BAR_ABAR);
    printf("AHCI BAR5 0x%08x\n", bar5);
    check_eq(bar5, 0xFEBFF000, "BAR5 (ABAR) at 0xfebff000, 32-bit memory");
    mask = size_bar(ahci, AHCI_BAR_ABAR, &restored);
    printf("AHCI BAR5 size mask 0x%08x\n", mask);
    check_eq(mask, 0xFFFFF000, "BAR5 size mask: 4 KiB 32-bit non-prefetchable memory");
    check_eq(restored, bar5, "BAR5 restored after sizing");
    check_eq(pci_bar_size(ahci, AHCI_BAR_ABAR), 0x1000, "pci_bar_size(BAR5) is 4 KiB");
    check_eq(pci_bar_read(ahci, AHCI_BAR_ABAR), bar5, "BAR5 unchanged by pci_bar_size");
    uint32_t ghc = mmio_read32(bar5 + AHCI_GHC);
    check(ghc & AHCI_GHC_AE, "ABAR decodes after sizing: GHC.AE set", "GHC 0x%08x", ghc);

    uint32_t bar4 = pci_bar_read(ahci, AHCI_BAR_IDP);
    check(bar4 & PCI_BAR_IO, "BAR4 is an I/O BAR", "BAR4 0x%08x", bar4);
    mask = size_bar(ahci, AHCI_BAR_IDP, &restored);
    printf("AHCI BAR4 size mask 0x%08x\n", mask);
    check_eq(mask, 0xFFFFFFE1, "BAR4 size mask: 32 bytes of I/O");
    check_eq(restored, bar4, "BAR4 restored after sizing");

    for (int n = 0; n < 4; n++) {
        uint32_t before = pci_bar_read(ahci, n);
        mask = size_bar(ahci, n, &restored);
        snprintf(name, sizeof(name), "AHCI BAR%d unimplemented", n);
        check(before == 0 && mask == 0 && restored == 0, name,
              "read 0x%08x, after writing ones 0x%08x", before, mask);
    }
}

static const char *cap_name(uint8_t id)
{
    switch (id) {
    case PCI_CAP_ID_PM:
        return "power management";
    case PCI_CAP_ID_MSI:
        return "MSI";
    case PCI_CAP_ID_PCIE:
        return "PCI Express";
    case PCI_CAP_ID_MSIX:
        return "MSI-X";
    case PCI_CAP_ID_SATA:
        return "SATA";
    default:
        return "other";
    }
}

/* The PCI power management capability ICH9's AHCI function has (PCI Bus Power
 * Management 1.2, 3.2): PMC read-only, PMCS.PowerState takes D0 and D3hot only. */
static void check_power_management(pci_bdf_t ahci, uint8_t pm)
{
    check(pm != 0, "power management capability (id 0x01) present", "not in the list");
    uint16_t pmc = pm ? pci_read16(ahci, pm + 2) : 0;
    check((pmc & 7) >= 2 && !(pmc & 0x0600), "PMC: PCI PM 1.1 or later, no D1/D2",
          "PMC 0x%04x", pmc);
    if (pm) {
        pci_write16(ahci, pm + 2, (uint16_t)~pmc);
        check_eq(pci_read16(ahci, pm + 2), pmc, "PMC read-only");
    } else {
        check(0, "PMC read-only", "no capability");
    }
    uint16_t pmcs = pm ? pci_read16(ahci, pm + 4) : 0xFFFF;
    check((pmcs & 3) == 0, "PMCS.PowerState: D0 at start", "PMCS 0x%04x", pmcs);
    int d3 = -1, d1 = -1, d0 = -1;
    if (pm) {
        pci_write16(ahci, pm + 4, (pmcs & ~3u) | 3);
        d3 = pci_read16(ahci, pm + 4) & 3;
        pci_write16(ahci, pm + 4, pmcs & ~3u);
        d0 = pci_read16(ahci, pm + 4) & 3;
        pci_write16(ahci, pm + 4, (pmcs & ~3u) | 1);
        d1 = pci_read16(ahci, pm + 4) & 3;
        pci_write16(ahci, pm + 4, pmcs & ~3u);
    }
    check(d3 == 3 && d0 == 0, "PMCS.PowerState: D3hot and back to D0", "read %d then %d", d3,
          d0);
    check(d1 == 0, "PMCS.PowerState: D1 (unsupported) write dropped", "read %d", d1);
    uint32_t ghc = mmio_read32(pci_bar_read(ahci, AHCI_BAR_ABAR) + AHCI_GHC);
    check(ghc & AHCI_GHC_AE, "ABAR decodes again in D0: GHC.AE set", "GHC 0x%08x", ghc);
}

/* ICH9 Port Control and Status (PCS, config 92h): port enables P0E-P5E (bits 5:0) are
 * writable and read back; the port present bits (13:8) are read-only. */
static void check_pcs(pci_bdf_t ahci)
{
    uint16_t pcs = pci_read16(ahci, 0x92);
    printf("AHCI PCS at start 0x%04x\n", pcs);
    pci_write16(ahci, 0x92, (pcs & 0xFFC0) | 0x3F);
    uint16_t enabled = pci_read16(ahci, 0x92);
    check((enabled & 0x3F) == 0x3F, "PCS (92h): port enable bits 5:0 read back", "PCS 0x%04x",
          enabled);
    pci_write16(ahci, 0x92, pcs & 0xFFC0);
    uint16_t disabled = pci_read16(ahci, 0x92);
    check((disabled & 0x3F) == 0, "PCS (92h): port enable bits clear again", "PCS 0x%04x",
          disabled);
    pci_write16(ahci, 0x92, (uint16_t)(pcs ^ 0x3F00));
    check_eq(pci_read16(ahci, 0x92) & 0x3F00, pcs & 0x3F00,
             "PCS (92h): port present bits 13:8 read-only");
    pci_write16(ahci, 0x92, pcs);
    check_eq(pci_read16(ahci, 0x92), pcs, "PCS restored");
}

static void check_ahci_caps(pci_bdf_t ahci)
{
    uint16_t status = pci_read16(ahci, PCI_STATUS);
    check(status & PCI_STATUS_CAP_LIST, "AHCI status: capability list bit", "status 0x%04x",
          status);

    uint8_t ptr = pci_read8(ahci, PCI_CAP_PTR);
    printf("AHCI capability pointer 0x%02x\n", ptr);
    check(ptr >= 0x40 && (ptr & 3) == 0, "capability pointer in 0x40-0xfc, dword aligned",
          "0x%02x", ptr);

    uint8_t msi = 0, sata = 0, pm = 0;
    int steps = 0, well_formed = 1;
    char chain[256];
    unsigned used = 0;
    chain[0] = 0;
    while (ptr && steps < 48) {
        if (ptr < 0x40 || (ptr & 3)) {
            well_formed = 0;
            break;
        }
        uint8_t id = pci_read8(ahci, ptr);
        if (used < sizeof(chain))
            used += snprintf(chain + used, sizeof(chain) - used, "%s0x%02x %s", steps ? " -> " : "",
                             ptr, cap_name(id));
        if (id == PCI_CAP_ID_MSI && !msi)
            msi = ptr;
        if (id == PCI_CAP_ID_SATA && !sata)
            sata = ptr;
        if (id == PCI_CAP_ID_PM && !pm)
            pm = ptr;
        ptr = pci_read8(ahci, ptr + 1);
        steps++;
    }
    /* One line whatever the list holds, so transcripts line up. */
    printf("AHCI capability list: %s\n", chain);
    check(well_formed && ptr == 0, "capability list well formed and terminated",
          "stopped at 0x%02x after %d entries", ptr, steps);
    check_power_management(ahci, pm);

    check(msi != 0, "MSI capability (id 0x05) present", "not in the list");
    if (msi) {
        uint16_t ctl = pci_read16(ahci, msi + 2);
        printf("MSI at 0x%02x: control 0x%04x (%s, %u vector(s) capable, %s)\n", msi, ctl,
               ctl & 0x80 ? "64-bit" : "32-bit", 1u << ((ctl >> 1) & 7),
               ctl & 1 ? "enabled" : "disabled");
        check(pci_find_cap(ahci, PCI_CAP_ID_MSI) == msi, "pci_find_cap finds MSI",
              "returned 0x%02x", pci_find_cap(ahci, PCI_CAP_ID_MSI));
    }

    check(sata != 0, "SATA capability (id 0x12) present", "not in the list");
    if (sata) {
        printf("SATA cap at 0x%02x: revision 0x%04x, BAR location 0x%08x\n", sata,
               pci_read16(ahci, sata + 2), pci_read32(ahci, sata + 4));
        check(pci_find_cap(ahci, PCI_CAP_ID_SATA) == sata, "pci_find_cap finds SATA",
              "returned 0x%02x", pci_find_cap(ahci, PCI_CAP_ID_SATA));
    }
    check_eq(pci_find_cap(ahci, 0xEE), 0, "pci_find_cap of an absent id returns 0");
}

static void check_ahci_interrupt(pci_bdf_t ahci)
{
    uint8_t pin = pci_read8(ahci, PCI_INTERRUPT_PIN);
    uint8_t line = pci_read8(ahci, PCI_INTERRUPT_LINE);
    printf("AHCI interrupt pin %u (INT%c)\n", pin, pin >= 1 && pin <= 4 ? 'A' + pin - 1 : '?');
    check_eq(pin, 1, "AHCI interrupt pin is INTA");

    pci_write8(ahci, PCI_INTERRUPT_LINE, 0x5A);
    check_eq(pci_read32(ahci, PCI_INTERRUPT_LINE) & 0xFFFF, 0x5A | (uint32_t)pin << 8,
             "interrupt line writable by byte, pin kept");
    pci_write16(ahci, PCI_INTERRUPT_LINE, 0x03A5);
    check_eq(pci_read16(ahci, PCI_INTERRUPT_LINE), 0xA5 | (uint32_t)pin << 8,
             "word write: line changes, pin read-only");
    pci_write8(ahci, PCI_INTERRUPT_LINE, line);
    check_eq(pci_read8(ahci, PCI_INTERRUPT_LINE), line, "interrupt line restored");
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;

    pci_scan_bus(0, collect, 0);
    for (unsigned i = 0; i < n_funcs; i++)
        print_function(funcs[i]);

    check(n_funcs > 0 && funcs[0] == PCI_BDF(0, 0, 0), "00:00.0 is the first function on bus 0",
          "%u functions found", n_funcs);
    check_host_bridge(PCI_BDF(0, 0, 0));

    for (unsigned i = 0; i < n_funcs; i++) {
        check_read_only(funcs[i], PCI_VENDOR_ID, 4, "vendor/device");
        check_read_only(funcs[i], PCI_REVISION_ID, 4, "revision/class");
        check_read_only(funcs[i], PCI_HEADER_TYPE, 1, "header type");
    }
    for (unsigned i = 0; i < n_funcs; i++)
        check_access_widths(funcs[i]);

    pci_bdf_t ahci;
    if (!check(pci_find_class(AHCI_CLASS, AHCI_SUBCLASS, AHCI_PROGIF, &ahci) == 0,
               "AHCI function found by class 01/06/01", "no such function"))
        test_done();
    printf("AHCI function at %02x:%02x.%x\n", PCI_BDF_ARGS(ahci));
    check_eq(pci_read32(ahci, PCI_VENDOR_ID), 0x29228086, "AHCI function is 8086:2922");
    check_eq(pci_read8(ahci, PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MASK, 0x00,
             "AHCI header type 0");
    pci_bdf_t f0 = PCI_BDF(PCI_BUS(ahci), PCI_DEV(ahci), 0);
    if (PCI_FN(ahci) != 0)
        check(pci_read8(f0, PCI_HEADER_TYPE) & PCI_HEADER_MULTIFUNCTION,
              "function 0 of the AHCI device has the multifunction bit", "header type 0x%02x",
              pci_read8(f0, PCI_HEADER_TYPE));

    check_ahci_command(ahci);
    check_ahci_bars(ahci);
    check_ahci_caps(ahci);
    check_pcs(ahci);
    check_ahci_interrupt(ahci);

    test_done();
}
