/*
 * ahci_rw: reads and writes through every data path: DMA and PIO, 28- and
 * 48-bit commands (READ/WRITE DMA, DMA EXT, SECTOR(S), SECTOR(S) EXT,
 * MULTIPLE and MULTIPLE EXT after SET MULTIPLE MODE), READ VERIFY, lengths
 * from 1 to 65536 sectors (256 through a 28-bit count of 0, 65536 through
 * an EXT count of 0), fragmented PRDTs with many odd-sized pieces,
 * word-aligned buffers, PRDBC after each command.
 *
 * Disk 0 (port 0) holds the test pattern with tag 0xD0 (tests/support/
 * disks.py: qword i of sector L = tag << 56 | L << 8 | i); reads are checked
 * against it, writes put other tags on the sectors listed in WRITES below
 * (tests/guests checks them in the image afterwards). LBAs 0-69999 and
 * 190000 up are only read; 70000-189999 are written.
 *
 * Disk 1 (port 1, optional): a large sparse disk (more than 2^28 sectors)
 * with the pattern (tag 0xB1) on LBAs 0FFFFE00h-100001FFh; the guest reads
 * and writes on both sides of the 28-bit limit.
 */
#include "ahci.h"
#include "ahci_test.h"
#include "guest.h"

#define TAG0 0xD0
#define TAG1 0xB1
#define BIG_PATTERN_START 0x0FFFFE00ull

static uint8_t small_area[512 * 1024] __attribute__((aligned(4096)));
static uint8_t frag_area[256 * 1024] __attribute__((aligned(4096)));
static uint16_t id[256];

static struct ahci_port *p0;
static char name[128];
#define NAME(...) (snprintf(name, sizeof(name), __VA_ARGS__), name)

static const char *cmd_name(uint8_t c)
{
    switch (c) {
    case ATA_CMD_READ_DMA:
        return "READ DMA";
    case ATA_CMD_READ_DMA_EXT:
        return "READ DMA EXT";
    case ATA_CMD_READ_SECTORS:
        return "READ SECTORS";
    case ATA_CMD_READ_SECTORS_EXT:
        return "READ SECTORS EXT";
    case ATA_CMD_READ_MULTIPLE:
        return "READ MULTIPLE";
    case ATA_CMD_READ_MULTIPLE_EXT:
        return "READ MULTIPLE EXT";
    case ATA_CMD_WRITE_DMA:
        return "WRITE DMA";
    case ATA_CMD_WRITE_DMA_EXT:
        return "WRITE DMA EXT";
    case ATA_CMD_WRITE_SECTORS:
        return "WRITE SECTORS";
    case ATA_CMD_WRITE_SECTORS_EXT:
        return "WRITE SECTORS EXT";
    case ATA_CMD_WRITE_MULTIPLE:
        return "WRITE MULTIPLE";
    case ATA_CMD_WRITE_MULTIPLE_EXT:
        return "WRITE MULTIPLE EXT";
    case ATA_CMD_READ_VERIFY:
        return "READ VERIFY SECTORS";
    case ATA_CMD_READ_VERIFY_EXT:
        return "READ VERIFY SECTORS EXT";
    default:
        return "command";
    }
}

/* Read n sectors at lba with cmd into buf; they must hold `tag`'s pattern. */
static void check_read(struct ahci_port *p, uint8_t cmd, uint64_t lba, uint32_t n, uint8_t *buf,
                       uint8_t tag)
{
    memset(buf, 0xA5, n * 512u);
    int rc = ahci_rw(p, cmd, lba, n, buf);
    uint32_t prdbc = ahci_prdbc(p, 0);
    long bad = ahci_pattern_check(buf, lba, n, tag);
    check(rc == AHCI_OK && prdbc == n * 512u && bad < 0,
          NAME("port %u %s %u sector(s) at %llu: PRDBC and data", p->num, cmd_name(cmd), n,
               (unsigned long long)lba),
          "%s, PRDBC %u, first bad qword %ld", ahci_strerror(rc), prdbc, bad);
}

/* Write n sectors with `tag`'s pattern, then read them back with READ DMA
 * EXT and compare. */
static void check_write(struct ahci_port *p, uint8_t cmd, uint64_t lba, uint32_t n, uint8_t *buf,
                        uint8_t tag)
{
    ahci_pattern_fill(buf, lba, n, tag);
    int rc = ahci_rw(p, cmd, lba, n, buf);
    uint32_t prdbc = ahci_prdbc(p, 0);
    check(rc == AHCI_OK && prdbc == n * 512u,
          NAME("port %u %s %u sector(s) at %llu: PRDBC", p->num, cmd_name(cmd), n,
               (unsigned long long)lba),
          "%s, PRDBC %u", ahci_strerror(rc), prdbc);
    memset(buf, 0, n * 512u);
    rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, n, buf);
    long bad = ahci_pattern_check(buf, lba, n, tag);
    check(rc == AHCI_OK && bad < 0,
          NAME("port %u %s %u sector(s) at %llu: read back", p->num, cmd_name(cmd), n,
               (unsigned long long)lba),
          "%s, first bad qword %ld", ahci_strerror(rc), bad);
}

static void check_verify(struct ahci_port *p, uint8_t cmd, uint64_t lba, uint32_t n)
{
    /* A PRDT is given but READ VERIFY transfers no data. */
    memset(small_area, 0xEE, 512);
    struct ahci_sg sg = {(uintptr_t)small_area, 512};
    struct ata_tf tf = ahci_tf(cmd, lba, n);
    int rc = ahci_exec(p, &tf, &sg, 1);
    check(rc == AHCI_OK && ahci_prdbc(p, 0) == 0 && small_area[0] == 0xEE && small_area[511] == 0xEE,
          NAME("port %u %s %u sector(s) at %llu: no data, PRDBC 0", p->num, cmd_name(cmd), n,
               (unsigned long long)lba),
          "%s, PRDBC %u", ahci_strerror(rc), ahci_prdbc(p, 0));
}

/* Scatter-gather: `count` pieces whose sizes (even, 2 .. 128 bytes but the
 * last) add up to `total`, at word-aligned (not dword-aligned) addresses
 * spread over frag_area. */
static unsigned make_pieces(struct ahci_sg *sg, unsigned count, uint32_t total)
{
    uint32_t sum = 0;
    for (unsigned i = 0; i + 1 < count; i++) {
        sg[i].addr = (uintptr_t)frag_area + i * 512u + 2u + (i % 3u) * 2u;
        sg[i].len = 2u + ((i * 37u) % 64u) * 2u;
        sum += sg[i].len;
    }
    sg[count - 1].addr = (uintptr_t)frag_area + count * 512u + 6u;
    sg[count - 1].len = total - sum;
    return count;
}

static void gather(const struct ahci_sg *sg, unsigned n, uint8_t *out)
{
    for (unsigned i = 0; i < n; i++) {
        memcpy(out, (const void *)(uintptr_t)sg[i].addr, sg[i].len);
        out += sg[i].len;
    }
}

static void scatter(const struct ahci_sg *sg, unsigned n, const uint8_t *in)
{
    for (unsigned i = 0; i < n; i++) {
        memcpy((void *)(uintptr_t)sg[i].addr, in, sg[i].len);
        in += sg[i].len;
    }
}

static void check_fragmented_read(struct ahci_port *p, uint8_t cmd, uint64_t lba, uint32_t n,
                                  struct ahci_sg *sg, unsigned nsg, const char *how)
{
    memset(frag_area, 0xA5, sizeof(frag_area));
    struct ata_tf tf = ahci_tf(cmd, lba, n);
    int rc = ahci_exec(p, &tf, sg, nsg);
    uint32_t prdbc = ahci_prdbc(p, 0);
    gather(sg, nsg, small_area);
    long bad = ahci_pattern_check(small_area, lba, n, TAG0);
    check(rc == AHCI_OK && prdbc == n * 512u && bad < 0,
          NAME("%s %u sector(s) at %llu into %s", cmd_name(cmd), n, (unsigned long long)lba, how),
          "%s, PRDBC %u, first bad qword %ld", ahci_strerror(rc), prdbc, bad);
}

static void check_fragmented_write(struct ahci_port *p, uint8_t cmd, uint64_t lba, uint32_t n,
                                   struct ahci_sg *sg, unsigned nsg, const char *how, uint8_t tag)
{
    memset(frag_area, 0, sizeof(frag_area));
    ahci_pattern_fill(small_area, lba, n, tag);
    scatter(sg, nsg, small_area);
    struct ata_tf tf = ahci_tf(cmd, lba, n);
    int rc = ahci_exec(p, &tf, sg, nsg);
    uint32_t prdbc = ahci_prdbc(p, 0);
    check(rc == AHCI_OK && prdbc == n * 512u,
          NAME("%s %u sector(s) at %llu from %s", cmd_name(cmd), n, (unsigned long long)lba, how),
          "%s, PRDBC %u", ahci_strerror(rc), prdbc);
    memset(small_area, 0, n * 512u);
    rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, n, small_area);
    long bad = ahci_pattern_check(small_area, lba, n, tag);
    check(rc == AHCI_OK && bad < 0,
          NAME("%s %u sector(s) at %llu from %s: read back", cmd_name(cmd), n,
               (unsigned long long)lba, how),
          "%s, first bad qword %ld", ahci_strerror(rc), bad);
}

static void reads(struct ahci_port *p)
{
    uint8_t *big = ahci_data_area;
    check_read(p, ATA_CMD_READ_DMA, 0, 1, small_area, TAG0);
    check_read(p, ATA_CMD_READ_DMA, 300, 256, big, TAG0);
    check_read(p, ATA_CMD_READ_DMA, 0x10005, 7, small_area, TAG0);
    check_read(p, ATA_CMD_READ_DMA_EXT, 1, 1, small_area, TAG0);
    check_read(p, ATA_CMD_READ_DMA_EXT, 65000, 300, big, TAG0);
    check_read(p, ATA_CMD_READ_DMA_EXT, 4096, 65536, big, TAG0);
    check_read(p, ATA_CMD_READ_DMA_EXT, 190000, 65535 - 59000, big, TAG0);
    check_read(p, ATA_CMD_READ_SECTORS, 5, 1, small_area, TAG0);
    check_read(p, ATA_CMD_READ_SECTORS, 600, 256, big, TAG0);
    check_read(p, ATA_CMD_READ_SECTORS_EXT, 66000, 300, big, TAG0);

    uint8_t mult = (uint8_t)(id[47] & 0xFF);
    struct ata_tf tf = ahci_tf(ATA_CMD_SET_MULTIPLE, 0, mult);
    int rc = ahci_exec(p, &tf, 0, 0);
    check(rc == AHCI_OK, "SET MULTIPLE MODE to the word 47 maximum", "%s", ahci_strerror(rc));
    rc = ahci_identify(p, id);
    check((id[59] & 0x1FF) == (0x100u | mult), "IDENTIFY word 59: multiple setting valid",
          "%s, word 59 0x%04x", ahci_strerror(rc), id[59]);
    check_read(p, ATA_CMD_READ_MULTIPLE, 900, 40, small_area, TAG0);
    check_read(p, ATA_CMD_READ_MULTIPLE_EXT, 67000, 33, small_area, TAG0);

    check_verify(p, ATA_CMD_READ_VERIFY, 1000, 256);
    check_verify(p, ATA_CMD_READ_VERIFY_EXT, 60000, 1000);

    /* Scatter-gather and alignment. */
    struct ahci_sg sg[AHCI_MAX_PRDS];
    sg[0].addr = (uintptr_t)frag_area + 2;
    sg[0].len = 2;
    sg[1].addr = (uintptr_t)frag_area + 0x1002;
    sg[1].len = 254;
    sg[2].addr = (uintptr_t)frag_area + 0x2006;
    sg[2].len = 256;
    check_fragmented_read(p, ATA_CMD_READ_DMA_EXT, 1234, 1, sg, 3, "3 PRDs of 2+254+256 bytes");
    unsigned n = make_pieces(sg, 200, 64 * 512);
    check_fragmented_read(p, ATA_CMD_READ_DMA_EXT, 5000, 64, sg, n, "200 odd-sized PRDs");
    check_fragmented_read(p, ATA_CMD_READ_DMA, 5100, 64, sg, n, "200 odd-sized PRDs (28-bit)");
    static const uint32_t pio_sizes[] = {2, 510, 512, 1000, 24};
    uintptr_t a = (uintptr_t)frag_area + 10;
    for (unsigned i = 0; i < 5; i++) {
        sg[i].addr = a;
        sg[i].len = pio_sizes[i];
        a += pio_sizes[i] + 0x102;
    }
    check_fragmented_read(p, ATA_CMD_READ_SECTORS, 5200, 4, sg, 5, "5 PRDs across DRQ blocks");
    check_fragmented_read(p, ATA_CMD_READ_MULTIPLE, 5300, 4, sg, 5,
                          "5 PRDs across DRQ blocks (MULTIPLE)");
    check_read(p, ATA_CMD_READ_DMA_EXT, 6000, 17, big + 2, TAG0);
    check_read(p, ATA_CMD_READ_SECTORS_EXT, 6100, 3, small_area + 6, TAG0);

    /* A PRDT longer than the transfer: PRDBC counts what was moved. */
    memset(small_area, 0xEE, 16384);
    sg[0].addr = (uintptr_t)small_area;
    sg[0].len = 8192;
    sg[1].addr = (uintptr_t)small_area + 8192;
    sg[1].len = 8192;
    tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 7000, 3);
    rc = ahci_exec(p, &tf, sg, 2);
    check(rc == AHCI_OK && ahci_prdbc(p, 0) == 1536 &&
              ahci_pattern_check(small_area, 7000, 3, TAG0) < 0 && small_area[1536] == 0xEE &&
              small_area[16383] == 0xEE,
          "READ DMA EXT 3 sectors with a 16 KiB PRDT: PRDBC 1536, rest untouched",
          "%s, PRDBC %u", ahci_strerror(rc), ahci_prdbc(p, 0));

    /* The PRD interrupt bit: PxIS.DPS when that PRD's data has moved. */
    sg[0].len = 1024;
    tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 7100, 2);
    ahci_cmd_build(p, 0, &tf, 0, sg, 1, AHCI_PRD_I);
    rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_OK && (p->last_is & PXIS_DPS), "PRD with its I bit: PxIS.DPS",
          "%s, PxIS 0x%08x", ahci_strerror(rc), p->last_is);

    /* 28-bit commands ignore the FIS's expanded fields (count 15:8, LBA
     * 47:24): the PRDT here would take 257 sectors. */
    memset(big, 0xEE, 257 * 512);
    sg[0].addr = (uintptr_t)big;
    sg[0].len = 257 * 512;
    tf = ahci_tf(ATA_CMD_READ_DMA, 7200, 1);
    ahci_cmd_build(p, 0, &tf, 0, sg, 1, 0);
    p->tables[0].cfis[13] = 0x01;
    rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_OK && ahci_prdbc(p, 0) == 512 && ahci_pattern_check(big, 7200, 1, TAG0) < 0 &&
              big[512] == 0xEE && big[257 * 512 - 1] == 0xEE,
          "28-bit READ DMA ignores the FIS's count 15:8 (1 sector, PRDBC 512)", "%s, PRDBC %u",
          ahci_strerror(rc), ahci_prdbc(p, 0));
    memset(small_area, 0xEE, 1024);
    sg[0].addr = (uintptr_t)small_area;
    sg[0].len = 512;
    tf = ahci_tf(ATA_CMD_READ_DMA, 7300, 1);
    ahci_cmd_build(p, 0, &tf, 0, sg, 1, 0);
    p->tables[0].cfis[8] = 0x01;
    p->tables[0].cfis[9] = 0x02;
    p->tables[0].cfis[10] = 0x03;
    rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_OK && ahci_pattern_check(small_area, 7300, 1, TAG0) < 0,
          "28-bit READ DMA ignores the FIS's LBA 47:24 bytes", "%s, PRDBC %u", ahci_strerror(rc),
          ahci_prdbc(p, 0));
}

static void writes(struct ahci_port *p)
{
    uint8_t *big = ahci_data_area;
    /* These LBAs, counts and tags are mirrored in tests/guests. */
    check_write(p, ATA_CMD_WRITE_DMA, 70000, 1, small_area, 0x11);
    check_write(p, ATA_CMD_WRITE_DMA, 70100, 256, big, 0x12);
    check_write(p, ATA_CMD_WRITE_DMA_EXT, 70400, 300, big, 0x13);
    check_write(p, ATA_CMD_WRITE_SECTORS, 70800, 1, small_area, 0x14);
    check_write(p, ATA_CMD_WRITE_SECTORS, 70900, 256, big, 0x15);
    check_write(p, ATA_CMD_WRITE_SECTORS_EXT, 71200, 300, big, 0x16);
    check_write(p, ATA_CMD_WRITE_MULTIPLE, 71600, 40, small_area, 0x17);
    check_write(p, ATA_CMD_WRITE_MULTIPLE_EXT, 71700, 33, small_area, 0x18);

    struct ahci_sg sg[AHCI_MAX_PRDS];
    sg[0].addr = (uintptr_t)frag_area + 0x3002;
    sg[0].len = 2;
    sg[1].addr = (uintptr_t)frag_area + 0x1006;
    sg[1].len = 254;
    sg[2].addr = (uintptr_t)frag_area + 0x2002;
    sg[2].len = 256;
    check_fragmented_write(p, ATA_CMD_WRITE_DMA_EXT, 71800, 1, sg, 3,
                           "3 PRDs of 2+254+256 bytes", 0x19);
    unsigned n = make_pieces(sg, 200, 64 * 512);
    check_fragmented_write(p, ATA_CMD_WRITE_DMA_EXT, 71900, 64, sg, n, "200 odd-sized PRDs",
                           0x1A);
    check_write(p, ATA_CMD_WRITE_DMA_EXT, 72000, 17, big + 6, 0x1B);
    static const uint32_t pio_sizes[] = {2, 510, 512, 1000, 24};
    uintptr_t a = (uintptr_t)frag_area + 10;
    for (unsigned i = 0; i < 5; i++) {
        sg[i].addr = a;
        sg[i].len = pio_sizes[i];
        a += pio_sizes[i] + 0x102;
    }
    check_fragmented_write(p, ATA_CMD_WRITE_SECTORS, 72100, 4, sg, 5,
                           "5 PRDs across DRQ blocks", 0x1C);
    check_write(p, ATA_CMD_WRITE_DMA_EXT, 120000, 65536, big, 0x1D);
}

/* PIO runs in DRQ blocks (SATA 3.x 11.7, 11.8): one PIO Setup FIS per block, and the
 * received-FIS area keeps the last block's, whose transfer count is that block's size.
 * Writes go to sectors writes() wrote, with the same tags. */
static uint16_t pio_setup_count(const struct ahci_port *p)
{
    return (uint16_t)(p->fis->psfis[16] | p->fis->psfis[17] << 8);
}

static void pio_blocks(struct ahci_port *p)
{
    uint8_t *big = ahci_data_area;
    unsigned mult = id[59] & 0xFF; /* the multiple count reads() set */
    int rc = ahci_rw(p, ATA_CMD_READ_SECTORS_EXT, 66000, 256, big);
    check(rc == AHCI_OK && pio_setup_count(p) == 512,
          "READ SECTORS EXT 256 sectors: PIO Setup transfer count 512 (the last DRQ block)",
          "%s, transfer count %u", ahci_strerror(rc), pio_setup_count(p));
    rc = ahci_rw(p, ATA_CMD_READ_MULTIPLE, 900, 20, small_area);
    unsigned last = mult ? ((20 - 1) % mult + 1) * 512 : 0;
    check(rc == AHCI_OK && pio_setup_count(p) == last,
          "READ MULTIPLE 20 sectors: transfer count of the last multiple-count block",
          "%s, transfer count %u, multiple %u", ahci_strerror(rc), pio_setup_count(p), mult);

    ahci_pattern_fill(small_area, 70800, 1, 0x14);
    rc = ahci_rw(p, ATA_CMD_WRITE_SECTORS, 70800, 1, small_area);
    check(rc == AHCI_OK && !(p->last_is & PXIS_PSS) && (p->last_is & PXIS_DHRS),
          "WRITE SECTORS 1 sector: PxIS.PSS clear, DHRS set (one DRQ block)", "%s, PxIS 0x%08x",
          ahci_strerror(rc), p->last_is);
    ahci_pattern_fill(small_area, 70900, 2, 0x15);
    rc = ahci_rw(p, ATA_CMD_WRITE_SECTORS, 70900, 2, small_area);
    check(rc == AHCI_OK && (p->last_is & PXIS_PSS) && (p->fis->psfis[1] & 0x40) &&
              pio_setup_count(p) == 512,
          "WRITE SECTORS 2 sectors: PxIS.PSS, PIO Setup I bit, transfer count 512",
          "%s, PxIS 0x%08x, flags 0x%02x, transfer count %u", ahci_strerror(rc), p->last_is,
          p->fis->psfis[1], pio_setup_count(p));
    ahci_pattern_fill(small_area, 71700, 33, 0x18);
    rc = ahci_rw(p, ATA_CMD_WRITE_MULTIPLE_EXT, 71700, 33, small_area);
    last = mult ? ((33 - 1) % mult + 1) * 512 : 0;
    check(rc == AHCI_OK && (p->last_is & PXIS_PSS) && pio_setup_count(p) == last,
          "WRITE MULTIPLE EXT 33 sectors: PxIS.PSS, transfer count of the last block",
          "%s, PxIS 0x%08x, transfer count %u, multiple %u", ahci_strerror(rc), p->last_is,
          pio_setup_count(p), mult);
}

static void big_disk(struct ahci_port *p)
{
    uint64_t sectors = ata_id_sectors(id);
    printf("port %u capacity: %llu sectors\n", p->num, (unsigned long long)sectors);
    if (!check(sectors > 0x10000200ull, "port 1 disk is beyond the 28-bit limit", "%llu sectors",
               (unsigned long long)sectors))
        return;
    check_read(p, ATA_CMD_READ_DMA, 0x0FFFFF00, 16, small_area, TAG1);
    check_read(p, ATA_CMD_READ_SECTORS, 0x0FFFFFF0, 16, small_area, TAG1);
    check_read(p, ATA_CMD_READ_DMA_EXT, 0x0FFFFFF8, 16, small_area, TAG1);
    check_read(p, ATA_CMD_READ_SECTORS_EXT, 0x10000000, 16, small_area, TAG1);
    memset(small_area, 0xEE, 512);
    int rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, sectors - 1, 1, small_area);
    check(rc == AHCI_OK && ahci_zero_check(small_area, 512) < 0,
          "READ DMA EXT of the last sector (never written: zeros)", "%s", ahci_strerror(rc));
    check_write(p, ATA_CMD_WRITE_DMA, 0x0FFFFFF8, 8, small_area, 0x1E);
    check_write(p, ATA_CMD_WRITE_DMA_EXT, 0x10000100, 8, small_area, 0x1F);
    check_read(p, ATA_CMD_READ_DMA_EXT, 0x0FFFFFF0, 8, small_area, TAG1);
    check_read(p, ATA_CMD_READ_DMA_EXT, 0x10000000, 0x100, ahci_data_area, TAG1);
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    uint32_t ready;
    p0 = ahci_test_start(&ready);
    uint64_t sectors;
    int rc = ahci_test_identify(p0, id, &sectors);
    if (!check(rc == AHCI_OK && sectors >= 196608, "port 0 disk has at least 196608 sectors", "%s",
               ahci_strerror(rc)))
        test_done();
    reads(p0);
    writes(p0);
    pio_blocks(p0);
    if (ready & 2) {
        struct ahci_port *p1 = ahci_port(1);
        rc = ahci_identify(p1, id);
        check(rc == AHCI_OK, "port 1 IDENTIFY", "%s", ahci_strerror(rc));
        big_disk(p1);
    }
    test_done();
}
