/*
 * bench_bios: the bench workload (lib/workload.h) through a polling driver in
 * the manner of a BIOS's AHCI code: one command at a time through slot 0 (NCQ:
 * tags 0..qd-1), everything rebuilt from scratch per command, and completion
 * told by PxIS and the received FIS rather than by PxCI alone.
 *
 * The command list, received-FIS area, one command table per slot and the
 * data buffers are one static structure in .bss (next to the stack and the
 * rest of .bss). Per command it:
 *   - memsets the command header and the whole command table (with its PRDT),
 *   - writes the Register H2D FIS byte by byte (NCQ: count in FEATURES, tag
 *     in COUNT) and one PRD per 4 KiB page of the buffer,
 *   - writes PxCI (NCQ: PxSACT with every tag of the batch, then PxCI),
 *   - polls PxIS until DHRS (NCQ: SDBS, until PxSACT is clear), writing the
 *     bits it saw back to clear them, then checks PxCI and reads status and
 *     error from the D2H FIS in the received-FIS area.
 * bs is at most 128 KiB.
 */
#include "ahci.h"
#include "guest.h"
#include "workload.h"

#define MAX_BS (128u << 10)
#define PAGE 4096u
#define MAX_PRDS (MAX_BS / PAGE)

struct table {
    uint8_t cfis[64];
    uint8_t acmd[16];
    uint8_t reserved[48];
    struct ahci_prd prdt[MAX_PRDS];
};

struct driver {
    struct ahci_cmd_header list[AHCI_MAX_SLOTS]; /* 1 KiB, 1 KiB aligned */
    struct ahci_rx_fis fis;                      /* 256 bytes */
    struct table tables[AHCI_MAX_SLOTS];
    uint8_t buffers[AHCI_MAX_SLOTS][MAX_BS];
};

static struct driver drv __attribute__((aligned(4096)));
static struct ahci_port *port;
static unsigned errors;

static void build(unsigned slot, const struct workload *w, uint64_t lba)
{
    struct ahci_cmd_header *h = &drv.list[slot];
    struct table *t = &drv.tables[slot];
    unsigned prds = (w->bs + PAGE - 1) / PAGE;
    memset(h, 0, sizeof(*h));
    memset(t, 0, sizeof(*t));
    uint8_t *fis = t->cfis;
    fis[0] = FIS_TYPE_REG_H2D;
    fis[1] = FIS_H2D_C;
    fis[2] = workload_command(w);
    fis[4] = (uint8_t)lba;
    fis[5] = (uint8_t)(lba >> 8);
    fis[6] = (uint8_t)(lba >> 16);
    fis[7] = ATA_DEV_LBA;
    fis[8] = (uint8_t)(lba >> 24);
    fis[9] = (uint8_t)(lba >> 32);
    fis[10] = (uint8_t)(lba >> 40);
    if (w->queued) {
        fis[3] = (uint8_t)w->spb;
        fis[11] = (uint8_t)(w->spb >> 8);
        fis[12] = (uint8_t)(slot << 3);
    } else {
        fis[12] = (uint8_t)w->spb;
        fis[13] = (uint8_t)(w->spb >> 8);
    }
    uint8_t *buf = drv.buffers[slot];
    for (unsigned i = 0; i < prds; i++) {
        uint32_t left = w->bs - i * PAGE;
        t->prdt[i].dba = (uint32_t)(uintptr_t)(buf + i * PAGE);
        t->prdt[i].dbc = (left < PAGE ? left : PAGE) - 1;
    }
    h->flags = AHCI_CMDH_CFL(5) | (w->op == WL_WRITE || w->op == WL_NCQ_WRITE ? AHCI_CMDH_W : 0);
    h->prdtl = (uint16_t)prds;
    h->ctba = (uint32_t)(uintptr_t)t;
}

/* Poll PxIS until `bit` (or an error) shows, clearing what it saw; then until
 * `busy` is clear in PxCI (and `sact` in PxSACT). 0, or -1 on error/timeout. */
static int wait_event(uint32_t bit, uint32_t busy, uint32_t sact)
{
    uint32_t seen = 0;
    for (unsigned long loops = ahci_hba.loops; loops; loops--) {
        uint32_t is = ahci_port_read(port, PX_IS);
        if (is) {
            ahci_port_write(port, PX_IS, is);
            seen |= is;
        }
        if (seen & PXIS_ERRORS)
            return -1;
        if ((seen & bit) && !(ahci_port_read(port, PX_CI) & busy) &&
            (!sact || !(ahci_port_read(port, PX_SACT) & sact))) {
            if (sact) /* NCQ: PxIS.TFES would have told an error */
                return 0;
            return drv.fis.rfis[2] & (ATA_SR_ERR | ATA_SR_DF) ? -1 : 0;
        }
    }
    return -1;
}

static void failed(uint64_t lba)
{
    errors++;
    if (errors <= 10)
        printf("bench error: lba %llu: status 0x%02x error 0x%02x (PxIS 0x%08x)\n",
               (unsigned long long)lba, drv.fis.rfis[2], drv.fis.rfis[3],
               ahci_port_read(port, PX_IS));
    ahci_port_recover(port);
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    struct workload w;
    if (workload_parse_unflushed(&w, MAX_BS) != 0)
        return 2;
    port = workload_open(&w);
    if (!port || workload_rebase(port, drv.list, &drv.fis) != AHCI_OK)
        return 2;

    unsigned long done = 0;
    uint64_t start = rdtsc();
    while (done < w.count && errors < 10) {
        if (w.queued) {
            unsigned n = w.count - done < w.qd ? (unsigned)(w.count - done) : w.qd;
            uint32_t mask = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
            uint64_t first = 0;
            for (unsigned tag = 0; tag < n; tag++) {
                uint64_t lba = workload_next_lba(&w);
                first = tag ? first : lba;
                build(tag, &w, lba);
            }
            ahci_port_write(port, PX_SACT, mask);
            ahci_port_write(port, PX_CI, mask);
            if (wait_event(PXIS_SDBS, mask, mask) != 0)
                failed(first);
            done += n;
        } else {
            uint64_t lba = workload_next_lba(&w);
            build(0, &w, lba);
            ahci_port_write(port, PX_CI, 1);
            if (wait_event(PXIS_DHRS, 1, 0) != 0)
                failed(lba);
            done++;
        }
    }
    uint64_t tsc = rdtsc() - start;
    return workload_report(&w, "bench_bios", done, errors, tsc);
}
