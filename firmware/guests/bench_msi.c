/*
 * bench_msi: the bench workload (lib/workload.h) through an interrupt-driven
 * driver: MSI to the local APIC, and the CPU halted (`sti; hlt`) until the
 * interrupt handler has seen the command complete.
 *
 * Its command list, received-FIS area, tables and buffers are static arrays
 * in .bss. Per command, with interrupts disabled, it memsets the command
 * table, fills a Register H2D FIS field by field in a taskfile structure on
 * the stack and copies it into the table, one PRD per buffer, and issues it
 * (NCQ: PxSACT then PxCI per tag, as Linux's libahci does). It then sleeps
 * until the handler, which reads IS and PxIS, clears them, and reads PxCI
 * (and PxSACT) to mark finished commands, has seen every issued one finish.
 * PxIE enables DHRS, SDBS and the error interrupts. bs is at most 128 KiB.
 */
#include "ahci.h"
#include "ahci_irq.h"
#include "guest.h"
#include "workload.h"

#define MAX_BS (128u << 10)
#define VECTOR 0x50
#define PXIE_USED (PXIS_DHRS | PXIS_SDBS | PXIS_ERRORS)

struct h2d_fis {
    uint8_t type;
    uint8_t flags;
    uint8_t command;
    uint8_t feature_lo;
    uint8_t lba_lo[3];
    uint8_t device;
    uint8_t lba_hi[3];
    uint8_t feature_hi;
    uint8_t count_lo;
    uint8_t count_hi;
    uint8_t icc;
    uint8_t control;
    uint8_t aux[4];
};

struct table {
    struct h2d_fis cfis;
    uint8_t pad[44];
    uint8_t acmd[16];
    uint8_t reserved[48];
    struct ahci_prd prdt[1];
} __attribute__((aligned(128))); /* CTBA: 128-byte aligned */

static struct ahci_cmd_header cmd_list[AHCI_MAX_SLOTS] __attribute__((aligned(1024)));
static struct ahci_rx_fis rx_fis __attribute__((aligned(256)));
static struct table tables[AHCI_MAX_SLOTS];
static uint8_t buffers[AHCI_MAX_SLOTS][MAX_BS] __attribute__((aligned(4096)));

static struct ahci_port *port;
static volatile uint32_t outstanding; /* issued, not yet seen finished */
static volatile uint32_t error_is;    /* PxIS error bits the handler saw */
static unsigned errors;

static void handler(uint8_t vector)
{
    (void)vector;
    uint32_t is = ahci_read(AHCI_IS);
    if (is & (1u << port->num)) {
        uint32_t pxis = ahci_port_read(port, PX_IS);
        ahci_port_write(port, PX_IS, pxis);
        error_is |= pxis & PXIS_ERRORS;
        outstanding &= ahci_port_read(port, PX_CI) | ahci_port_read(port, PX_SACT);
    }
    ahci_write(AHCI_IS, is);
    ahci_lapic_eoi();
}

static void build(unsigned slot, const struct workload *w, uint64_t lba)
{
    struct h2d_fis fis;
    memset(&fis, 0, sizeof(fis));
    fis.type = FIS_TYPE_REG_H2D;
    fis.flags = FIS_H2D_C;
    fis.command = workload_command(w);
    fis.lba_lo[0] = (uint8_t)lba;
    fis.lba_lo[1] = (uint8_t)(lba >> 8);
    fis.lba_lo[2] = (uint8_t)(lba >> 16);
    fis.lba_hi[0] = (uint8_t)(lba >> 24);
    fis.lba_hi[1] = (uint8_t)(lba >> 32);
    fis.lba_hi[2] = (uint8_t)(lba >> 40);
    fis.device = ATA_DEV_LBA;
    if (w->queued) {
        fis.feature_lo = (uint8_t)w->spb;
        fis.feature_hi = (uint8_t)(w->spb >> 8);
        fis.count_lo = (uint8_t)(slot << 3);
    } else {
        fis.count_lo = (uint8_t)w->spb;
        fis.count_hi = (uint8_t)(w->spb >> 8);
    }
    struct table *t = &tables[slot];
    memset(t, 0, sizeof(*t));
    memcpy(&t->cfis, &fis, sizeof(fis));
    t->prdt[0].dba = (uint32_t)(uintptr_t)buffers[slot];
    t->prdt[0].dbc = w->bs - 1;
    struct ahci_cmd_header *h = &cmd_list[slot];
    h->flags = AHCI_CMDH_CFL(5) | (w->op == WL_WRITE || w->op == WL_NCQ_WRITE ? AHCI_CMDH_W : 0);
    h->prdtl = 1;
    h->prdbc = 0;
    h->ctba = (uint32_t)(uintptr_t)t;
    h->ctbau = 0;
}

/* Sleep until the handler has seen the issued commands finish (or an error);
 * 0 if they all succeeded. Interrupts are off before and after. */
static int sleep_until_done(void)
{
    for (unsigned long loops = ahci_hba.loops; loops; loops--) {
        if (error_is)
            return -1;
        if (!outstanding)
            return 0;
        ahci_irq_wait();
    }
    return -1;
}

static void failed(uint64_t lba)
{
    errors++;
    if (errors <= 10)
        printf("bench error: lba %llu: PxIS errors 0x%08x PxTFD 0x%08x\n", (unsigned long long)lba,
               error_is, ahci_port_read(port, PX_TFD));
    ahci_port_recover(port);
    error_is = 0;
    outstanding = 0;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    struct workload w;
    if (workload_parse_unflushed(&w, MAX_BS) != 0)
        return 2;
    port = workload_open(&w);
    if (!port || workload_rebase(port, cmd_list, &rx_fis) != AHCI_OK)
        return 2;
    ahci_irq_init();
    ahci_irq_set_handler(VECTOR, handler);
    if (ahci_msi_enable(VECTOR) != 0) {
        printf("bench: the HBA has no MSI capability\n");
        return 2;
    }
    ahci_port_write(port, PX_IS, 0xFFFFFFFFu);
    ahci_write(AHCI_IS, 0xFFFFFFFFu);
    ahci_port_write(port, PX_IE, PXIE_USED);
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);

    unsigned long done = 0;
    uint64_t start = rdtsc();
    while (done < w.count && errors < 10) {
        unsigned n = w.queued && w.count - done >= w.qd ? w.qd
                     : w.queued                       ? (unsigned)(w.count - done)
                                                      : 1;
        uint64_t first = 0;
        for (unsigned tag = 0; tag < n; tag++) {
            uint64_t lba = workload_next_lba(&w);
            first = tag ? first : lba;
            build(tag, &w, lba);
            outstanding |= 1u << tag;
            if (w.queued)
                ahci_port_write(port, PX_SACT, 1u << tag);
            ahci_port_write(port, PX_CI, 1u << tag);
        }
        if (sleep_until_done() != 0)
            failed(first);
        done += n;
    }
    uint64_t tsc = rdtsc() - start;
    ahci_write(AHCI_GHC, AHCI_GHC_AE);
    return workload_report(&w, "bench_msi", done, errors, tsc);
}
