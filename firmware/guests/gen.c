/*
 * gen: generation markers. Writes sectors that say which LBA and which
 * "generation" they belong to, reads them back and reports what it found,
 * trims ranges. Host tests use it to see, through the guest, what a disk
 * holds after snapshots, merges, resets, TRIM or a crash.
 *
 * A marker sector for LBA L and generation G (1..65535), little-endian:
 *   bytes 0-7      "GENMARK1"
 *   bytes 8-15     L
 *   bytes 16-19    G
 *   bytes 20-23    0
 *   qword i, 3-63  G << 48 | (L & 0xFFFFFFFFFF) << 8 | i
 * A sector reads as generation G when it is exactly the marker for its own
 * LBA and G, as generation 0 when it is all zeros, and as "unrecognised"
 * otherwise. (The host side is emu/testing/gen.py.)
 *
 * Command line: ops=OP[,OP...] with OP = NAME:LBA:COUNT[:GEN][*REPEAT][@PORT]
 * (numbers decimal or 0x hex), run in order. Or a single op as keys:
 * op=NAME lba=L count=C gen=G (expect=G is the same) repeat=N port=P.
 *   write:L:C:G   write markers of generation G on L..L+C-1, then FLUSH CACHE EXT
 *   check:L:C:G   read L..L+C-1: one TAP check that every sector is
 *                 generation G (G=0: all zeros), and the summary lines
 *   read:L:C      read and print the summary lines only
 *   trim:L:C      DATA SET MANAGEMENT, TRIM of L..L+C-1
 *   flush         FLUSH CACHE EXT
 *   loop:L:C:G    write generation G at L, flush, print a "flushed" line, then
 *                 G+1 at L+C, ...; REPEAT times (default: to the end of the disk);
 *                 past the end of the disk it wraps around to L
 * *REPEAT applies the op to REPEAT consecutive ranges: range i starts at
 * L + i*C and has generation G + i (G stays 0 when it is 0). @PORT picks the
 * AHCI port (default 0, or port=P).
 *
 * Ports: those the ops name are set up (waiting for a link as long as the library
 * does), and every other port that shows a device right after the HBA reset.
 *
 * Output, besides the TAP lines ("ok N - port P write lba A..B generation G",
 * "ok N - port P lba A..B generation G", ...):
 *   gen: port P capacity N sectors                   for every disk found
 *   gen: port P lba A..B generation G                what was read, one line per
 *   gen: port P lba A..B unrecognised                run of equal sectors
 *   gen: flushed port P lba A..B generation G        loop: G is on the disk
 * Exit code: the number of failed checks (test_done).
 */
#include "ahci.h"
#include "guest.h"

#define MAGIC 0x314B52414D4E4547ull /* "GENMARK1" */
#define MAX_GEN 0xFFFFu
#define CHUNK 2048u /* sectors per command: 1 MiB */
#define MAX_OPS 32
#define DSM_BLOCKS 8 /* 512-byte TRIM range lists: 64 entries each */
#define DSM_MAX_RANGE 0xFFFFu
#define UNRECOGNISED (-1L)

enum op_kind { OP_WRITE, OP_CHECK, OP_READ, OP_TRIM, OP_FLUSH, OP_LOOP };

struct op {
    enum op_kind kind;
    uint64_t lba;
    uint32_t count;
    uint32_t gen;
    uint32_t repeat; /* 0: the op's default (1; loop: to the end of the disk) */
    unsigned port;
};

static const char *const op_names[] = {"write", "check", "read", "trim", "flush", "loop"};

static struct op ops[MAX_OPS];
static unsigned nops;
static struct ahci_port *ports[AHCI_MAX_PORTS];
static uint64_t capacity[AHCI_MAX_PORTS];
static uint16_t id[256];
static uint64_t dsm[DSM_BLOCKS * 64] __attribute__((aligned(512)));
static char name[128];

/* ---- markers ---- */

static uint64_t filler(uint32_t gen, uint64_t lba, unsigned i)
{
    return ((uint64_t)gen << 48) | ((lba & 0xFFFFFFFFFFull) << 8) | i;
}

static void marker_fill(uint64_t *q, uint64_t lba, uint32_t gen)
{
    q[0] = MAGIC;
    q[1] = lba;
    q[2] = gen;
    for (unsigned i = 3; i < 64; i++)
        q[i] = filler(gen, lba, i);
}

/* The generation sector `q` at `lba` holds: 1..65535, 0 (zeros) or UNRECOGNISED. */
static long classify(const uint64_t *q, uint64_t lba)
{
    if (q[0] == MAGIC) {
        uint64_t gen = q[2];
        if (q[1] != lba || gen == 0 || gen > MAX_GEN)
            return UNRECOGNISED;
        for (unsigned i = 3; i < 64; i++)
            if (q[i] != filler((uint32_t)gen, lba, i))
                return UNRECOGNISED;
        return (long)gen;
    }
    for (unsigned i = 0; i < 64; i++)
        if (q[i])
            return UNRECOGNISED;
    return 0;
}

/* ---- parsing the command line ---- */

static int parse_num(const char **s, uint64_t *out)
{
    const char *p = *s;
    unsigned base = 10;
    uint64_t v = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    const char *start = p;
    for (;; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else if (base == 16 && *p >= 'A' && *p <= 'F')
            d = (unsigned)(*p - 'A' + 10);
        else
            break;
        v = (base == 16 ? v << 4 : v * 10) + d;
    }
    if (p == start)
        return -1;
    *s = p;
    *out = v;
    return 0;
}

static int kind_of(const char *s, size_t n, enum op_kind *kind)
{
    for (unsigned k = 0; k < sizeof(op_names) / sizeof(op_names[0]); k++) {
        if (strlen(op_names[k]) == n && strncmp(op_names[k], s, n) == 0) {
            *kind = (enum op_kind)k;
            return 0;
        }
    }
    return -1;
}

/* How many of LBA, COUNT, GEN an op takes. */
static unsigned fields_of(enum op_kind kind)
{
    switch (kind) {
    case OP_FLUSH:
        return 0;
    case OP_READ:
    case OP_TRIM:
        return 2;
    default:
        return 3;
    }
}

static int valid(const struct op *op)
{
    if (op->kind == OP_FLUSH)
        return op->port < AHCI_MAX_PORTS;
    if (op->count == 0 || op->port >= AHCI_MAX_PORTS || op->gen > MAX_GEN)
        return 0;
    if ((op->kind == OP_WRITE || op->kind == OP_LOOP) && op->gen == 0)
        return 0; /* generation 0 is "zeros": write nothing of the kind */
    uint64_t last = (uint64_t)op->gen + (op->repeat ? op->repeat - 1 : 0);
    return op->gen == 0 || last <= MAX_GEN;
}

/* One OP of ops=: NAME:LBA:COUNT[:GEN][*REPEAT][@PORT], up to ',' or the end. */
static int parse_op(const char *s, size_t len, struct op *op)
{
    const char *end = s + len, *p = s;
    while (p < end && *p != ':' && *p != '*' && *p != '@')
        p++;
    memset(op, 0, sizeof(*op));
    if (kind_of(s, (size_t)(p - s), &op->kind) != 0)
        return -1;
    uint64_t v[3] = {0, 0, 0};
    unsigned want = fields_of(op->kind);
    for (unsigned i = 0; i < want; i++) {
        if (p >= end || *p != ':') {
            if (i == 2 && op->kind == OP_CHECK)
                break; /* check:L:C means zeros */
            return -1;
        }
        p++;
        if (parse_num(&p, &v[i]) != 0 || p > end)
            return -1;
    }
    op->lba = v[0];
    if (v[1] > 0xFFFFFFFFull || v[2] > 0xFFFFFFFFull)
        return -1;
    op->count = (uint32_t)v[1];
    op->gen = (uint32_t)v[2];
    uint64_t n;
    if (p < end && *p == '*') {
        p++;
        if (parse_num(&p, &n) != 0 || n == 0 || n > 0xFFFFFFFFull)
            return -1;
        op->repeat = (uint32_t)n;
    }
    op->port = (unsigned)arg_int("port", 0);
    if (p < end && *p == '@') {
        p++;
        if (parse_num(&p, &n) != 0 || n >= AHCI_MAX_PORTS)
            return -1;
        op->port = (unsigned)n;
    }
    return p == end && valid(op) ? 0 : -1;
}

/* ops from the command line; -1 (and a failed check) if they cannot be read. */
static int parse_ops(void)
{
    const char *list = arg_get("ops", 0);
    if (list) {
        while (*list) {
            const char *comma = strchr(list, ',');
            size_t len = comma ? (size_t)(comma - list) : strlen(list);
            if (nops == MAX_OPS || parse_op(list, len, &ops[nops]) != 0) {
                check(0, "ops= parsed", "cannot use op %u ('%.*s')", nops + 1, (int)len, list);
                return -1;
            }
            nops++;
            list += len;
            if (*list == ',')
                list++;
        }
        return 0;
    }
    const char *single = arg_get("op", 0);
    if (!single) {
        check(0, "ops= or op= given", "nothing to do");
        return -1;
    }
    struct op *op = &ops[0];
    memset(op, 0, sizeof(*op));
    if (kind_of(single, strlen(single), &op->kind) != 0) {
        check(0, "op= parsed", "unknown op '%s'", single);
        return -1;
    }
    op->lba = arg_u64("lba", 0);
    op->count = (uint32_t)arg_u64("count", 1);
    op->gen = (uint32_t)arg_u64("gen", arg_u64("expect", 0));
    op->repeat = (uint32_t)arg_u64("repeat", 0);
    op->port = (unsigned)arg_int("port", 0);
    if (!valid(op)) {
        check(0, "op= parsed", "bad count, generation or port for '%s'", single);
        return -1;
    }
    nops = 1;
    return 0;
}

/* ---- what was read: runs of equal sectors ---- */

static struct {
    unsigned port;
    uint64_t start, len;
    long value;
} run;

static void run_flush(void)
{
    if (run.len == 0)
        return;
    unsigned long long a = run.start, b = run.start + run.len - 1;
    if (run.value == UNRECOGNISED)
        printf("gen: port %u lba %llu..%llu unrecognised\n", run.port, a, b);
    else
        printf("gen: port %u lba %llu..%llu generation %ld\n", run.port, a, b, run.value);
    run.len = 0;
}

static void run_add(unsigned port, uint64_t lba, long value)
{
    if (run.len && (run.port != port || run.value != value || run.start + run.len != lba))
        run_flush();
    if (!run.len) {
        run.port = port;
        run.start = lba;
        run.value = value;
    }
    run.len++;
}

/* ---- the ops ---- */

static int flush(struct ahci_port *p)
{
    struct ata_tf tf = ahci_tf(ATA_CMD_FLUSH_CACHE_EXT, 0, 0);
    return ahci_exec(p, &tf, 0, 0);
}

/* Write generation `gen` on lba..lba+count-1 and flush; an AHCI_* code. */
static int write_gen(struct ahci_port *p, uint64_t lba, uint32_t count, uint32_t gen)
{
    for (uint32_t done = 0; done < count;) {
        uint32_t n = count - done < CHUNK ? count - done : CHUNK;
        uint64_t *q = (uint64_t *)ahci_data_area;
        for (uint32_t s = 0; s < n; s++)
            marker_fill(q + 64 * s, lba + done + s, gen);
        int rc = ahci_rw(p, ATA_CMD_WRITE_DMA_EXT, lba + done, n, ahci_data_area);
        if (rc != AHCI_OK)
            return rc;
        done += n;
    }
    return flush(p);
}

/* Read lba..lba+count-1, print the summary lines; *bad = sectors that are not
 * generation `expect`, *first = the first of them, *first_value = what it holds. */
static int read_gen(struct ahci_port *p, uint64_t lba, uint32_t count, long expect, uint32_t *bad,
                    uint64_t *first, long *first_value)
{
    *bad = 0;
    for (uint32_t done = 0; done < count;) {
        uint32_t n = count - done < CHUNK ? count - done : CHUNK;
        memset(ahci_data_area, 0xA5, n * 512u); /* stale data must not pass for zeros */
        int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba + done, n, ahci_data_area);
        if (rc != AHCI_OK) {
            run_flush();
            return rc;
        }
        const uint64_t *q = (const uint64_t *)ahci_data_area;
        for (uint32_t s = 0; s < n; s++) {
            uint64_t at = lba + done + s;
            long value = classify(q + 64 * s, at);
            run_add(p->num, at, value);
            if (value != expect && (*bad)++ == 0) {
                *first = at;
                *first_value = value;
            }
        }
        done += n;
    }
    run_flush();
    return AHCI_OK;
}

static int trim(struct ahci_port *p, uint64_t lba, uint32_t count)
{
    memset(dsm, 0, sizeof(dsm));
    unsigned entries = 0;
    for (uint32_t done = 0; done < count; entries++) {
        uint32_t n = count - done < DSM_MAX_RANGE ? count - done : DSM_MAX_RANGE;
        if (entries == DSM_BLOCKS * 64)
            return AHCI_EINVAL;
        dsm[entries] = (lba + done) | ((uint64_t)n << 48);
        done += n;
    }
    unsigned blocks = (entries + 63) / 64;
    struct ahci_sg sg = {(uintptr_t)dsm, blocks * 512u};
    struct ata_tf tf = ahci_tf(ATA_CMD_DSM, 0, blocks);
    tf.features = 0x0001; /* TRIM */
    return ahci_exec(p, &tf, &sg, 1);
}

static const char *what(long value, char *buf, size_t size)
{
    if (value == UNRECOGNISED)
        return "unrecognised data";
    snprintf(buf, size, "generation %ld", value);
    return buf;
}

/* One range of an op; returns 0 to stop the op (a failure that makes the rest moot). */
static int do_range(const struct op *op, struct ahci_port *p, uint64_t lba, uint32_t gen)
{
    unsigned long long a = lba, b = lba + op->count - 1;
    unsigned port = op->port;
    int rc;
    switch (op->kind) {
    case OP_WRITE:
        rc = write_gen(p, lba, op->count, gen);
        snprintf(name, sizeof(name), "port %u write lba %llu..%llu generation %u", port, a, b,
                 gen);
        return check(rc == AHCI_OK, name, "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
    case OP_LOOP:
        rc = write_gen(p, lba, op->count, gen);
        if (rc != AHCI_OK) {
            snprintf(name, sizeof(name), "port %u loop lba %llu..%llu generation %u", port, a, b,
                     gen);
            return check(0, name, "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
        }
        printf("gen: flushed port %u lba %llu..%llu generation %u\n", port, a, b, gen);
        return 1;
    case OP_CHECK:
    case OP_READ: {
        uint32_t bad;
        uint64_t first = 0;
        long value = 0;
        rc = read_gen(p, lba, op->count, (long)gen, &bad, &first, &value);
        if (op->kind == OP_READ)
            snprintf(name, sizeof(name), "port %u read lba %llu..%llu", port, a, b);
        else
            snprintf(name, sizeof(name), "port %u lba %llu..%llu generation %u", port, a, b, gen);
        if (rc != AHCI_OK)
            return check(0, name, "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
        char buf[32];
        if (op->kind == OP_CHECK)
            check(bad == 0, name, "%u of %u sectors differ; lba %llu holds %s", bad, op->count,
                  (unsigned long long)first, what(value, buf, sizeof(buf)));
        else
            check_ok(1, name);
        return 1;
    }
    case OP_TRIM:
        rc = trim(p, lba, op->count);
        snprintf(name, sizeof(name), "port %u trim lba %llu..%llu", port, a, b);
        return check(rc == AHCI_OK, name, "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
    case OP_FLUSH:
        rc = flush(p);
        snprintf(name, sizeof(name), "port %u flush", port);
        return check(rc == AHCI_OK, name, "%s, PxTFD 0x%08x", ahci_strerror(rc), p->last_tfd);
    }
    return 0;
}

/* After a failed command the port is halted (AHCI 6.2.2): recover it, so the
 * next op runs. */
static int recovered(struct ahci_port *p, int ok)
{
    if (!ok)
        ahci_port_recover(p);
    return ok;
}

static void do_op(const struct op *op)
{
    struct ahci_port *p = ports[op->port];
    if (!p) {
        snprintf(name, sizeof(name), "%s: a disk on port %u", op_names[op->kind], op->port);
        check(0, name, "no disk found there");
        return;
    }
    uint32_t repeat = op->repeat ? op->repeat : 1;
    uint32_t slots = 0xFFFFFFFFu; /* ranges before a loop wraps around */
    if (op->kind == OP_LOOP) {
        uint64_t room = capacity[op->port] > op->lba ? capacity[op->port] - op->lba : 0;
        if (room / op->count < slots)
            slots = (uint32_t)(room / op->count);
        if (slots == 0) {
            snprintf(name, sizeof(name), "port %u loop: room for a range", op->port);
            check(0, name, "lba %llu + %u is past the end", (unsigned long long)op->lba,
                  op->count);
            return;
        }
        if (!op->repeat)
            repeat = slots < MAX_GEN - op->gen + 1 ? slots : MAX_GEN - op->gen + 1;
    }
    for (uint32_t i = 0; i < repeat; i++) {
        uint32_t gen = op->gen ? op->gen + i : 0;
        if (!recovered(p, do_range(op, p, op->lba + (uint64_t)(i % slots) * op->count, gen)))
            return;
    }
    if (op->kind == OP_LOOP) {
        snprintf(name, sizeof(name), "port %u loop: %u generations flushed", op->port, repeat);
        check_ok(1, name);
    }
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    if (parse_ops() != 0)
        test_done();
    int rc = ahci_init();
    if (!check(rc == AHCI_OK, "AHCI HBA found and reset", "%s", ahci_strerror(rc)))
        test_done();
    /* Set up the ports the ops use, and any other with a device already there:
     * waiting for a link on every empty port (ahci_start_ports) costs more than
     * the rest of a short run. */
    uint32_t wanted = 0;
    for (unsigned i = 0; i < nops; i++)
        wanted |= 1u << ops[i].port;
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++) {
        struct ahci_port *p = ahci_port(n);
        if (!p || (!(wanted & (1u << n)) && !ahci_port_has_device(p)))
            continue;
        if (ahci_port_setup(p) != AHCI_OK)
            continue;
        rc = ahci_identify(p, id);
        if (rc != AHCI_OK) {
            printf("gen: port %u IDENTIFY failed: %s\n", n, ahci_strerror(rc));
            continue;
        }
        ports[n] = p;
        capacity[n] = ata_id_sectors(id);
        printf("gen: port %u capacity %llu sectors\n", n, (unsigned long long)capacity[n]);
    }
    for (unsigned i = 0; i < nops; i++)
        do_op(&ops[i]);
    test_done();
}
