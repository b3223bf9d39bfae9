/* The benchmark guests' workload (see workload.h). */
#include "workload.h"

#include "ahci.h"
#include "multiboot.h"
#include "printf.h"
#include "string.h"

static const char *const op_names[] = {"read", "write", "ncq", "ncqwrite"};

int workload_parse(struct workload *w, uint32_t max_bs)
{
    const char *op = arg_get("op", "read");
    const char *pattern = arg_get("pattern", "rand");
    long bs = arg_int("bs", 4096);
    long count = arg_int("count", 1000);
    long port = arg_int("port", 0);
    long qd = 1, flush = 0;
    int found = -1;
    for (unsigned i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
        if (strcmp(op, op_names[i]) == 0)
            found = (int)i;
    memset(w, 0, sizeof(*w));
    if (found >= 0) {
        w->op = (enum workload_op)found;
        w->queued = w->op == WL_NCQ_READ || w->op == WL_NCQ_WRITE;
        qd = w->queued ? arg_int("qd", 32) : 1;
        flush = w->op == WL_WRITE ? arg_int("flush", 1) : 0;
    }
    w->random = strcmp(pattern, "rand") == 0;
    if (found < 0 || bs < 512 || bs % 512 || bs > (long)max_bs || qd < 1 || qd > 32 ||
        count < 0 || flush < 0 || port < 0 || port >= AHCI_MAX_PORTS ||
        (!w->random && strcmp(pattern, "seq") != 0)) {
        printf("bench: bad arguments: %s\n", mb_cmdline_args());
        return -1;
    }
    w->bs = (uint32_t)bs;
    w->spb = w->bs / 512u;
    w->qd = (unsigned)qd;
    w->count = (unsigned long)count;
    w->flush_every = (unsigned long)flush;
    w->port = (unsigned)port;
    w->first = arg_u64("lba", 0);
    w->rng = (uint32_t)arg_u64("seed", 1);
    if (!w->rng)
        w->rng = 1;
    return 0;
}

int workload_parse_unflushed(struct workload *w, uint32_t max_bs)
{
    if (workload_parse(w, max_bs) != 0)
        return -1;
    if (w->op == WL_WRITE && w->flush_every) {
        printf("bench: bad arguments: this driver writes without FLUSH (flush=0)\n");
        return -1;
    }
    return 0;
}

int workload_region(struct workload *w, uint64_t capacity)
{
    w->sectors = arg_u64("sectors", w->first < capacity ? capacity - w->first : 0);
    if (w->first >= capacity || w->sectors > capacity - w->first || w->sectors < w->spb) {
        printf("bench: region lba=%llu sectors=%llu outside the disk (%llu sectors)\n",
               (unsigned long long)w->first, (unsigned long long)w->sectors,
               (unsigned long long)capacity);
        return -1;
    }
    uint64_t blocks = w->sectors / w->spb;
    w->blocks = blocks > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)blocks;
    return 0;
}

struct ahci_port *workload_open(struct workload *w)
{
    static uint16_t id[256];
    int rc = ahci_init();
    if (rc != AHCI_OK) {
        printf("bench: no AHCI controller: %s\n", ahci_strerror(rc));
        return 0;
    }
    uint32_t ready = ahci_start_ports(); /* stops and resets what firmware left running */
    struct ahci_port *p = ahci_port(w->port);
    if (!p || !(ready & (1u << w->port))) {
        printf("bench: no disk on port %u\n", w->port);
        return 0;
    }
    rc = ahci_identify(p, id);
    if (rc != AHCI_OK) {
        printf("bench: IDENTIFY failed: %s\n", ahci_strerror(rc));
        return 0;
    }
    return workload_region(w, ata_id_sectors(id)) == 0 ? p : 0;
}

int workload_rebase(struct ahci_port *p, void *clb, void *fis)
{
    int rc = ahci_port_stop(p);
    if (rc != AHCI_OK)
        return rc;
    ahci_port_write(p, PX_CLB, (uint32_t)(uintptr_t)clb);
    ahci_port_write(p, PX_CLBU, 0);
    ahci_port_write(p, PX_FB, (uint32_t)(uintptr_t)fis);
    ahci_port_write(p, PX_FBU, 0);
    ahci_port_write(p, PX_CMD, ahci_port_read(p, PX_CMD) | PXCMD_FRE);
    ahci_port_write(p, PX_SERR, 0xFFFFFFFFu);
    ahci_port_write(p, PX_IS, 0xFFFFFFFFu);
    return ahci_port_start(p);
}

uint64_t workload_next_lba(struct workload *w)
{
    uint32_t block;
    if (w->random) {
        uint32_t x = w->rng; /* xorshift32 */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        w->rng = x;
        block = x % w->blocks;
    } else {
        block = w->next_block;
        w->next_block = w->next_block + 1 >= w->blocks ? 0 : w->next_block + 1;
    }
    return w->first + (uint64_t)block * w->spb;
}

uint8_t workload_command(const struct workload *w)
{
    static const uint8_t commands[] = {ATA_CMD_READ_DMA_EXT, ATA_CMD_WRITE_DMA_EXT,
                                       ATA_CMD_READ_FPDMA, ATA_CMD_WRITE_FPDMA};
    return commands[w->op];
}

int workload_report(const struct workload *w, const char *guest, unsigned long done,
                    unsigned errors, uint64_t tsc)
{
    printf("bench guest=%s op=%s bs=%lu qd=%u pattern=%s count=%lu done=%lu errors=%u tsc=%llu\n",
           guest, op_names[w->op], (unsigned long)w->bs, w->qd, w->random ? "rand" : "seq",
           w->count, done, errors, (unsigned long long)tsc);
    return errors || done != w->count ? 1 : 0;
}
