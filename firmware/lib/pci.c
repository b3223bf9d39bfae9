#include "pci.h"

#include "io.h"

static void pci_select(pci_bdf_t bdf, uint8_t off)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | (bdf << 8) | (off & 0xFCu));
}

uint8_t pci_read8(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inb(PCI_CONFIG_DATA + (off & 3));
}

uint16_t pci_read16(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inw(PCI_CONFIG_DATA + (off & 2));
}

uint32_t pci_read32(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inl(PCI_CONFIG_DATA);
}

void pci_write8(pci_bdf_t bdf, uint8_t off, uint8_t value)
{
    pci_select(bdf, off);
    outb(PCI_CONFIG_DATA + (off & 3), value);
}

void pci_write16(pci_bdf_t bdf, uint8_t off, uint16_t value)
{
    pci_select(bdf, off);
    outw(PCI_CONFIG_DATA + (off & 2), value);
}

void pci_write32(pci_bdf_t bdf, uint8_t off, uint32_t value)
{
    pci_select(bdf, off);
    outl(PCI_CONFIG_DATA, value);
}

int pci_present(pci_bdf_t bdf)
{
    return pci_read16(bdf, PCI_VENDOR_ID) != 0xFFFF;
}

void pci_scan_bus(uint8_t bus, pci_visit_fn visit, void *ctx)
{
    for (unsigned dev = 0; dev < 32; dev++) {
        pci_bdf_t f0 = PCI_BDF(bus, dev, 0);
        if (!pci_present(f0))
            continue;
        unsigned nfn = (pci_read8(f0, PCI_HEADER_TYPE) & PCI_HEADER_MULTIFUNCTION) ? 8 : 1;
        for (unsigned fn = 0; fn < nfn; fn++) {
            pci_bdf_t bdf = PCI_BDF(bus, dev, fn);
            if (fn == 0 || pci_present(bdf))
                visit(bdf, ctx);
        }
    }
}

struct enum_ctx {
    pci_visit_fn visit;
    void *ctx;
    unsigned depth;
};

static void enumerate_visit(pci_bdf_t bdf, void *arg)
{
    struct enum_ctx *e = arg;
    e->visit(bdf, e->ctx);
    if ((pci_read8(bdf, PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MASK) != 1 || e->depth >= 8)
        return;
    uint8_t secondary = pci_read8(bdf, PCI_SECONDARY_BUS);
    if (secondary == 0 || secondary <= PCI_BUS(bdf))
        return; /* not configured, or would loop */
    e->depth++;
    pci_scan_bus(secondary, enumerate_visit, e);
    e->depth--;
}

void pci_enumerate(pci_visit_fn visit, void *ctx)
{
    struct enum_ctx e = {visit, ctx, 0};
    pci_scan_bus(0, enumerate_visit, &e);
}

struct find_class_ctx {
    uint32_t class_code; /* class << 16 | subclass << 8 | progif */
    int found;
    pci_bdf_t bdf;
};

static void find_class_visit(pci_bdf_t bdf, void *arg)
{
    struct find_class_ctx *f = arg;
    if (!f->found && (pci_read32(bdf, PCI_REVISION_ID) >> 8) == f->class_code) {
        f->found = 1;
        f->bdf = bdf;
    }
}

int pci_find_class(uint8_t class_code, uint8_t subclass, uint8_t progif, pci_bdf_t *bdf)
{
    struct find_class_ctx f = {
        ((uint32_t)class_code << 16) | ((uint32_t)subclass << 8) | progif, 0, 0};
    pci_enumerate(find_class_visit, &f);
    if (!f.found)
        return -1;
    *bdf = f.bdf;
    return 0;
}

uint8_t pci_find_cap(pci_bdf_t bdf, uint8_t cap_id)
{
    if (!(pci_read16(bdf, PCI_STATUS) & PCI_STATUS_CAP_LIST))
        return 0;
    uint8_t ptr = pci_read8(bdf, PCI_CAP_PTR) & 0xFC;
    /* At most 48 capabilities fit in 0x40-0xFF: bounds a looping list. */
    for (int i = 0; i < 48 && ptr >= 0x40; i++) {
        if (pci_read8(bdf, ptr) == cap_id)
            return ptr;
        ptr = pci_read8(bdf, ptr + 1) & 0xFC;
    }
    return 0;
}

static uint8_t bar_offset(int n)
{
    return (uint8_t)(PCI_BAR0 + 4 * n);
}

uint32_t pci_bar_read(pci_bdf_t bdf, int n)
{
    return pci_read32(bdf, bar_offset(n));
}

int pci_bar_is_io(pci_bdf_t bdf, int n)
{
    return (pci_bar_read(bdf, n) & PCI_BAR_IO) != 0;
}

int pci_bar_is_64(pci_bdf_t bdf, int n)
{
    uint32_t bar = pci_bar_read(bdf, n);
    return n < 5 && !(bar & PCI_BAR_IO) &&
           (bar & PCI_BAR_MEM_TYPE_MASK) == PCI_BAR_MEM_TYPE_64;
}

uint64_t pci_bar_addr(pci_bdf_t bdf, int n)
{
    uint32_t bar = pci_bar_read(bdf, n);
    if (bar & PCI_BAR_IO)
        return bar & ~3u;
    uint64_t addr = bar & ~0xFu;
    if (pci_bar_is_64(bdf, n))
        addr |= (uint64_t)pci_bar_read(bdf, n + 1) << 32;
    return addr;
}

/* Probe `count` consecutive BAR dwords with decoding off; masks to out[]. */
static void bar_probe(pci_bdf_t bdf, int n, int count, uint32_t *out)
{
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
    for (int i = 0; i < count; i++) {
        uint8_t off = bar_offset(n + i);
        uint32_t orig = pci_read32(bdf, off);
        pci_write32(bdf, off, 0xFFFFFFFFu);
        out[i] = pci_read32(bdf, off);
        pci_write32(bdf, off, orig);
    }
    pci_write16(bdf, PCI_COMMAND, cmd);
}

uint32_t pci_bar_probe(pci_bdf_t bdf, int n)
{
    uint32_t mask;
    bar_probe(bdf, n, 1, &mask);
    return mask;
}

uint64_t pci_bar_size(pci_bdf_t bdf, int n)
{
    uint32_t mask[2] = {0, 0xFFFFFFFFu};
    int is64 = pci_bar_is_64(bdf, n);
    bar_probe(bdf, n, is64 ? 2 : 1, mask);
    if (mask[0] == 0 && (!is64 || mask[1] == 0))
        return 0;
    if (mask[0] & PCI_BAR_IO) {
        uint32_t m = mask[0] & ~3u;
        if (!(m >> 16))
            m |= 0xFFFF0000u; /* 16-bit I/O decoders */
        return (uint32_t)(~m + 1);
    }
    uint64_t m = ((uint64_t)mask[1] << 32) | (mask[0] & ~0xFu);
    return ~m + 1;
}
