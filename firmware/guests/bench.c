/*
 * bench: a polling disk benchmark for ahci-emu and QEMU q35 alike.
 *
 * The workload comes from the command line (-append / --append), key=value:
 *   op=read       READ DMA EXT, one command at a time (queue depth 1)  [default]
 *   op=write      WRITE DMA EXT, each followed by FLUSH CACHE EXT
 *                 (flush=N: one flush after every N writes, flush=0: none)
 *   op=ncq        READ FPDMA QUEUED, `qd` commands in flight per batch
 *   op=ncqwrite   WRITE FPDMA QUEUED, the same way
 *   bs=BYTES      bytes per command, a multiple of 512, at most 1 MiB (default 4096)
 *   qd=N          NCQ queue depth, 1..32 (default 32; op=read/write: 1)
 *   count=N       commands to run (default 1000; 0 just boots and sets up)
 *   lba=N         first sector of the region (default 0)
 *   sectors=N     sectors in the region (default: up to the end of the disk)
 *   pattern=rand  block-aligned random offsets in the region (xorshift32) [default]
 *   pattern=seq   consecutive blocks from the start of the region, wrapping
 *   seed=N        PRNG seed (default 1; 0 is taken as 1)
 *   port=N        AHCI port of the disk (default 0)
 *
 * No interrupts: every command is polled. Commands are built once per slot
 * through the library (ahci_cmd_build) and then only the LBA and PRDBC are
 * changed before each issue, so the guest's own work per command is small
 * and the same on every machine. Per command the guest does one PxCI write
 * and, when the command is already done, one PxCI and one PxIS read.
 *
 * Output, one line (plus one line per failed command, at most 10):
 *   bench op=read bs=4096 qd=1 pattern=rand count=1000 done=1000 errors=0
 * Exit 0 when every command succeeded, 1 if any failed, 2 for bad arguments
 * or no usable disk.
 */
#include "ahci.h"
#include "guest.h"

#define MAX_BS (1u << 20)
#define MAX_ERRORS 10
#define FLUSH_SLOT 31 /* op=write: the FLUSH CACHE EXT lives here (writes use slot 0) */

enum op { OP_READ, OP_WRITE, OP_NCQ_READ, OP_NCQ_WRITE };

static const char *const op_names[] = {"read", "write", "ncq", "ncqwrite"};

static uint16_t id[256];
static struct ahci_port *port;
static uint32_t rng_state;

static uint32_t xorshift32(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static int parse_op(const char *name)
{
    for (unsigned i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
        if (strcmp(name, op_names[i]) == 0)
            return (int)i;
    return -1;
}

/* LBA fields of a Register H2D FIS (48-bit layout). */
static inline void set_lba(volatile uint8_t *cfis, uint64_t lba)
{
    cfis[4] = (uint8_t)lba;
    cfis[5] = (uint8_t)(lba >> 8);
    cfis[6] = (uint8_t)(lba >> 16);
    cfis[8] = (uint8_t)(lba >> 24);
    cfis[9] = (uint8_t)(lba >> 32);
    cfis[10] = (uint8_t)(lba >> 40);
}

/* Wait until the slots in `ci` are clear in PxCI (and `sact` in PxSACT),
 * checking PxIS for errors; AHCI_OK or an AHCI_E* code. */
static int wait_done(uint32_t ci, uint32_t sact)
{
    unsigned long loops = ahci_hba.loops;
    for (;;) {
        if (!(ahci_port_read(port, PX_CI) & ci) &&
            (!sact || !(ahci_port_read(port, PX_SACT) & sact)))
            break;
        uint32_t is = ahci_port_read(port, PX_IS);
        if (is & PXIS_ERRORS)
            return (is & PXIS_TFES) ? AHCI_ETASKFILE : AHCI_EHOSTBUS;
        if (!loops--)
            return AHCI_ETIMEOUT;
        cpu_relax();
    }
    uint32_t is = ahci_port_read(port, PX_IS);
    if (is & PXIS_ERRORS)
        return (is & PXIS_TFES) ? AHCI_ETASKFILE : AHCI_EIFACE;
    return AHCI_OK;
}

static unsigned errors;

/* Count a failure, say what it was (the first few), and bring the port back. */
static int failed(int rc, unsigned long i, uint64_t lba)
{
    errors++;
    if (errors <= MAX_ERRORS)
        printf("bench error: command %lu lba %llu: %s (PxIS 0x%08x PxTFD 0x%08x)\n", i,
               (unsigned long long)lba, ahci_strerror(rc), ahci_port_read(port, PX_IS),
               ahci_port_read(port, PX_TFD));
    if (ahci_port_recover(port) != AHCI_OK || errors >= MAX_ERRORS)
        return -1; /* give up */
    ahci_port_write(port, PX_IS, 0xFFFFFFFFu);
    return 0;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    int op = parse_op(arg_get("op", "read"));
    long bs = arg_int("bs", 4096);
    int queued = op == OP_NCQ_READ || op == OP_NCQ_WRITE;
    long qd = queued ? arg_int("qd", 32) : 1;
    long count = arg_int("count", 1000);
    uint64_t first = arg_u64("lba", 0);
    const char *pattern = arg_get("pattern", "rand");
    int random = strcmp(pattern, "rand") == 0;
    long flush_every = op == OP_WRITE ? arg_int("flush", 1) : 0;
    long port_num = arg_int("port", 0);
    rng_state = (uint32_t)arg_u64("seed", 1);
    if (!rng_state)
        rng_state = 1;

    if (op < 0 || bs < 512 || bs % 512 || bs > (long)MAX_BS || qd < 1 || qd > 32 || count < 0 ||
        flush_every < 0 || port_num < 0 || port_num >= AHCI_MAX_PORTS ||
        (!random && strcmp(pattern, "seq") != 0)) {
        printf("bench: bad arguments: %s\n", mb_cmdline_args());
        return 2;
    }
    int rc = ahci_init();
    if (rc != AHCI_OK) {
        printf("bench: no AHCI controller: %s\n", ahci_strerror(rc));
        return 2;
    }
    uint32_t ready = ahci_start_ports(); /* stops and resets what firmware left running */
    port = ahci_port((unsigned)port_num);
    if (!port || !(ready & (1u << port_num))) {
        printf("bench: no disk on port %ld\n", port_num);
        return 2;
    }
    rc = ahci_identify(port, id);
    if (rc != AHCI_OK) {
        printf("bench: IDENTIFY failed: %s\n", ahci_strerror(rc));
        return 2;
    }
    uint64_t capacity = ata_id_sectors(id);
    uint32_t spb = (uint32_t)bs / 512u; /* sectors per command */
    uint64_t sectors = arg_u64("sectors", first < capacity ? capacity - first : 0);
    if (first >= capacity || sectors > capacity - first || sectors < spb) {
        printf("bench: region lba=%llu sectors=%llu outside the disk (%llu sectors)\n",
               (unsigned long long)first, (unsigned long long)sectors,
               (unsigned long long)capacity);
        return 2;
    }
    uint64_t blocks64 = sectors / spb;
    uint32_t blocks = blocks64 > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)blocks64;

    /* Build every slot once; afterwards only the LBA and PRDBC change. */
    uint8_t command = op == OP_READ    ? ATA_CMD_READ_DMA_EXT
                      : op == OP_WRITE ? ATA_CMD_WRITE_DMA_EXT
                      : op == OP_NCQ_READ ? ATA_CMD_READ_FPDMA
                                          : ATA_CMD_WRITE_FPDMA;
    unsigned slots = (unsigned)qd;
    for (unsigned s = 0; s < slots; s++) {
        uint8_t *buf = ahci_data_area + s * (uint32_t)bs;
        if (op == OP_WRITE || op == OP_NCQ_WRITE)
            ahci_pattern_fill(buf, s, spb, 0xBE);
        struct ahci_sg sg = {(uintptr_t)buf, (uint32_t)bs};
        struct ata_tf tf = ahci_tf(command, first, spb);
        rc = queued ? ahci_ncq_build(port, s, command, first, spb, &sg, 1)
                    : ahci_cmd_build(port, s, &tf, 0, &sg, 1, 0);
        if (rc != AHCI_OK) {
            printf("bench: cannot build slot %u: %s\n", s, ahci_strerror(rc));
            return 2;
        }
    }
    if (flush_every) {
        struct ata_tf tf = ahci_tf(ATA_CMD_FLUSH_CACHE_EXT, 0, 0);
        tf.device = 0;
        ahci_cmd_build(port, FLUSH_SLOT, &tf, 0, 0, 0, 0);
    }
    ahci_port_write(port, PX_IS, 0xFFFFFFFFu);

    unsigned long done = 0, total = (unsigned long)count;
    uint32_t next_block = 0;
    uint64_t lbas[32];
    int stop = 0;
    while (done < total && !stop) {
        unsigned n = total - done < slots ? (unsigned)(total - done) : slots;
        for (unsigned s = 0; s < n; s++) {
            uint32_t block;
            if (random) {
                block = xorshift32() % blocks;
            } else {
                block = next_block;
                next_block = next_block + 1 >= blocks ? 0 : next_block + 1;
            }
            lbas[s] = first + (uint64_t)block * spb;
            set_lba(port->tables[s].cfis, lbas[s]);
            port->clb[s].prdbc = 0;
        }
        uint32_t mask = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
        barrier();
        if (queued) {
            ahci_ncq_issue(port, mask);
            rc = wait_done(mask, mask);
        } else {
            ahci_issue(port, mask);
            rc = wait_done(mask, 0);
        }
        if (rc != AHCI_OK) {
            stop = failed(rc, done, lbas[0]) != 0;
            done += n;
            continue;
        }
        done += n;
        if (flush_every && (done % (unsigned long)flush_every == 0 || done == total)) {
            port->clb[FLUSH_SLOT].prdbc = 0;
            barrier();
            ahci_issue(port, 1u << FLUSH_SLOT);
            rc = wait_done(1u << FLUSH_SLOT, 0);
            if (rc != AHCI_OK)
                stop = failed(rc, done - 1, 0) != 0;
        }
    }
    printf("bench op=%s bs=%ld qd=%ld pattern=%s count=%ld done=%lu errors=%u\n", op_names[op], bs,
           qd, random ? "rand" : "seq", count, done, errors);
    return errors || done != total ? 1 : 0;
}
