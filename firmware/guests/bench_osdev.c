/*
 * bench_osdev: the bench workload (lib/workload.h) through a polling driver
 * written the way hobby-OS AHCI drivers commonly are (the shape of the OSDev
 * wiki's example), so that the benchmark measures a driver it was not tuned for.
 *
 * Its own command list, received-FIS area, command tables and data buffers
 * are static arrays in .bss, next to each other (and, through the library's
 * .bss, not far from the stack). Per command it:
 *   - clears PxIS, finds a free slot from PxSACT | PxCI,
 *   - fills the command header through bit fields,
 *   - memsets the command table and writes the Register H2D FIS field by
 *     field (bit fields for PM port and C), one PRD per 8 KiB of the buffer,
 *   - waits for PxTFD.BSY/DRQ to clear, writes PxCI (NCQ: PxSACT, then PxCI,
 *     one tag per write, as Linux issues),
 *   - polls PxCI (NCQ: PxSACT) and PxIS.TFES until the command is done.
 * bs is at most 128 KiB; NCQ runs `qd` commands per batch.
 */
#include "ahci.h"
#include "guest.h"
#include "workload.h"

#define MAX_BS (128u << 10)
#define PRD_BYTES 8192u
#define MAX_PRDS (MAX_BS / PRD_BYTES)
#define SLOTS 32
#define HBA_PxIS_TFES (1u << 30)
#define ATA_DEV_BUSY 0x80
#define ATA_DEV_DRQ 0x08

typedef struct {
    uint8_t fis_type;
    uint8_t pmport : 4;
    uint8_t rsv0 : 3;
    uint8_t c : 1;
    uint8_t command;
    uint8_t featurel;
    uint8_t lba0;
    uint8_t lba1;
    uint8_t lba2;
    uint8_t device;
    uint8_t lba3;
    uint8_t lba4;
    uint8_t lba5;
    uint8_t featureh;
    uint8_t countl;
    uint8_t counth;
    uint8_t icc;
    uint8_t control;
    uint8_t rsv1[4];
} fis_reg_h2d;

typedef struct {
    uint8_t cfl : 5;
    uint8_t a : 1;
    uint8_t w : 1;
    uint8_t p : 1;
    uint8_t r : 1;
    uint8_t b : 1;
    uint8_t c : 1;
    uint8_t rsv0 : 1;
    uint8_t pmp : 4;
    uint16_t prdtl;
    volatile uint32_t prdbc;
    uint32_t ctba;
    uint32_t ctbau;
    uint32_t rsv1[4];
} hba_cmd_header;

typedef struct {
    uint32_t dba;
    uint32_t dbau;
    uint32_t rsv0;
    uint32_t dbc : 22;
    uint32_t rsv1 : 9;
    uint32_t i : 1;
} hba_prdt_entry;

typedef struct {
    uint8_t cfis[64];
    uint8_t acmd[16];
    uint8_t rsv[48];
    hba_prdt_entry prdt_entry[MAX_PRDS];
} hba_cmd_tbl;

static hba_cmd_header cmd_list[SLOTS] __attribute__((aligned(1024)));
static uint8_t rx_fis[256] __attribute__((aligned(256)));
static hba_cmd_tbl cmd_tables[SLOTS] __attribute__((aligned(128)));
static uint8_t buffers[SLOTS][MAX_BS] __attribute__((aligned(4096)));

static struct ahci_port *port;
static unsigned errors;

static uint32_t reg_read(uint32_t off)
{
    return ahci_port_read(port, off);
}

static void reg_write(uint32_t off, uint32_t value)
{
    ahci_port_write(port, off, value);
}

static int find_cmdslot(void)
{
    uint32_t slots = reg_read(PX_SACT) | reg_read(PX_CI);
    for (int i = 0; i < SLOTS; i++) {
        if ((slots & 1) == 0)
            return i;
        slots >>= 1;
    }
    return -1;
}

/* Build the command for `slot` from scratch: header, table, FIS, PRDs. */
static void build(int slot, const struct workload *w, uint64_t lba, uint8_t *buf)
{
    hba_cmd_header *cmdheader = &cmd_list[slot];
    cmdheader->cfl = sizeof(fis_reg_h2d) / sizeof(uint32_t);
    cmdheader->w = w->op == WL_WRITE || w->op == WL_NCQ_WRITE;
    cmdheader->prdtl = (uint16_t)((w->bs - 1) / PRD_BYTES + 1);
    cmdheader->prdbc = 0;
    cmdheader->ctba = (uint32_t)(uintptr_t)&cmd_tables[slot];
    cmdheader->ctbau = 0;

    hba_cmd_tbl *cmdtbl = &cmd_tables[slot];
    memset(cmdtbl, 0, sizeof(hba_cmd_tbl) - (MAX_PRDS - cmdheader->prdtl) * sizeof(hba_prdt_entry));
    uint32_t left = w->bs;
    int i;
    for (i = 0; i < cmdheader->prdtl - 1; i++) {
        cmdtbl->prdt_entry[i].dba = (uint32_t)(uintptr_t)buf;
        cmdtbl->prdt_entry[i].dbc = PRD_BYTES - 1;
        buf += PRD_BYTES;
        left -= PRD_BYTES;
    }
    cmdtbl->prdt_entry[i].dba = (uint32_t)(uintptr_t)buf;
    cmdtbl->prdt_entry[i].dbc = left - 1;

    fis_reg_h2d *cmdfis = (fis_reg_h2d *)(&cmdtbl->cfis);
    cmdfis->fis_type = FIS_TYPE_REG_H2D;
    cmdfis->c = 1;
    cmdfis->command = workload_command(w);
    cmdfis->lba0 = (uint8_t)lba;
    cmdfis->lba1 = (uint8_t)(lba >> 8);
    cmdfis->lba2 = (uint8_t)(lba >> 16);
    cmdfis->device = 1 << 6; /* LBA mode */
    cmdfis->lba3 = (uint8_t)(lba >> 24);
    cmdfis->lba4 = (uint8_t)(lba >> 32);
    cmdfis->lba5 = (uint8_t)(lba >> 40);
    if (w->queued) {
        cmdfis->featurel = (uint8_t)w->spb;
        cmdfis->featureh = (uint8_t)(w->spb >> 8);
        cmdfis->countl = (uint8_t)(slot << 3);
    } else {
        cmdfis->countl = (uint8_t)w->spb;
        cmdfis->counth = (uint8_t)(w->spb >> 8);
    }
}

static void report(const char *what, uint64_t lba)
{
    errors++;
    if (errors <= 10)
        printf("bench error: lba %llu: %s (PxIS 0x%08x PxTFD 0x%08x)\n",
               (unsigned long long)lba, what, reg_read(PX_IS), reg_read(PX_TFD));
}

/* One non-queued command, start to finish; 0 if it succeeded. */
static int run_one(const struct workload *w, uint64_t lba)
{
    reg_write(PX_IS, (uint32_t)-1);
    int slot = find_cmdslot();
    if (slot < 0)
        return -1;
    build(slot, w, lba, buffers[slot]);
    unsigned long spin = 0;
    while ((reg_read(PX_TFD) & (ATA_DEV_BUSY | ATA_DEV_DRQ)) && spin < 1000000)
        spin++;
    if (spin == 1000000)
        return -1;
    reg_write(PX_CI, 1u << slot);
    for (unsigned long loops = ahci_hba.loops; loops; loops--) {
        if ((reg_read(PX_CI) & (1u << slot)) == 0)
            return reg_read(PX_IS) & HBA_PxIS_TFES ? -1 : 0;
        if (reg_read(PX_IS) & HBA_PxIS_TFES)
            return -1;
    }
    return -1;
}

/* `n` queued commands, one tag each, issued one by one; 0 if all succeeded. */
static int run_queued(const struct workload *w, unsigned n, uint64_t *lbas)
{
    reg_write(PX_IS, (uint32_t)-1);
    uint32_t issued = 0;
    for (unsigned tag = 0; tag < n; tag++) {
        lbas[tag] = workload_next_lba((struct workload *)w);
        build((int)tag, w, lbas[tag], buffers[tag]);
        reg_write(PX_SACT, 1u << tag);
        reg_write(PX_CI, 1u << tag);
        issued |= 1u << tag;
    }
    for (unsigned long loops = ahci_hba.loops; loops; loops--) {
        if ((reg_read(PX_SACT) & issued) == 0)
            return reg_read(PX_IS) & HBA_PxIS_TFES ? -1 : 0;
        if (reg_read(PX_IS) & HBA_PxIS_TFES)
            return -1;
    }
    return -1;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    struct workload w;
    if (workload_parse_unflushed(&w, MAX_BS) != 0)
        return 2;
    port = workload_open(&w);
    if (!port || workload_rebase(port, cmd_list, rx_fis) != AHCI_OK)
        return 2;

    unsigned long done = 0;
    uint64_t lbas[SLOTS];
    uint64_t start = rdtsc();
    while (done < w.count && errors < 10) {
        if (w.queued) {
            unsigned n = w.count - done < w.qd ? (unsigned)(w.count - done) : w.qd;
            if (run_queued(&w, n, lbas) != 0) {
                report("NCQ batch failed", lbas[0]);
                ahci_port_recover(port);
            }
            done += n;
        } else {
            uint64_t lba = workload_next_lba(&w);
            if (run_one(&w, lba) != 0) {
                report("command failed", lba);
                ahci_port_recover(port);
            }
            done++;
        }
    }
    uint64_t tsc = rdtsc() - start;
    return workload_report(&w, "bench_osdev", done, errors, tsc);
}
