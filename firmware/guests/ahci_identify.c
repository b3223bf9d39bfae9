/*
 * ahci_identify: IDENTIFY DEVICE on every port with a disk. Checks the PIO
 * data-in protocol as AHCI sees it (PIO Setup FIS in the received-FIS area,
 * PRDBC, PxIS, PxTFD) and the IDENTIFY data (ATA8-ACS 7.16): integrity
 * word, 28- and 48-bit capacity, LBA/DMA/48-bit/NCQ/write cache/FLUSH/TRIM
 * feature words, UDMA modes, logical sector size.
 *
 * Model, serial number and firmware revision differ by design between
 * machines; each is printed alone on a line ("port N model: ...").
 *
 * Arguments: sectorsN=COUNT, the expected capacity of the disk on port N
 * (e.g. sectors0=32768 sectors1=272629760); ports without the argument
 * only print their capacity.
 */
#include "ahci.h"
#include "guest.h"

static uint16_t id[256] __attribute__((aligned(16)));
static uint16_t id2[256] __attribute__((aligned(16)));

static int printable(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7E)
            return 0;
    return 1;
}

static void identify_port(struct ahci_port *p)
{
    char name[96];
    char text[48];
    unsigned n = p->num;
#define NAME(...) (snprintf(name, sizeof(name), __VA_ARGS__), name)

    printf("port %u: device present\n", n);
    check_eq(ahci_port_read(p, PX_SIG), SATA_SIG_ATA, NAME("port %u PxSIG: ATA device", n));

    memset(id, 0, sizeof(id));
    struct ahci_sg sg = {(uintptr_t)id, 512};
    struct ata_tf tf = ahci_tf(ATA_CMD_IDENTIFY, 0, 0);
    tf.device = 0;
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    memset((void *)p->fis, 0, sizeof(*p->fis));
    int rc = ahci_cmd_run(p, 0);
    check(rc == AHCI_OK, NAME("port %u IDENTIFY DEVICE completes", n), "%s, PxIS 0x%08x PxTFD 0x%08x",
          ahci_strerror(rc), p->last_is, p->last_tfd);
    check_eq(ahci_prdbc(p, 0), 512, NAME("port %u PRDBC = 512", n));
    uint32_t is = p->last_is;
    check_ok(is & PXIS_PSS, NAME("port %u PxIS.PSS: PIO Setup FIS received", n));
    check(!(is & PXIS_DHRS), NAME("port %u PxIS.DHRS clear: PIO data-in ends without a D2H FIS", n),
          "PxIS 0x%08x", is);
    const volatile uint8_t *ps = p->fis->psfis;
    check_eq(ps[0], FIS_TYPE_PIO_SETUP, NAME("port %u PIO Setup FIS type 5Fh", n));
    check(ps[1] & 0x20, NAME("port %u PIO Setup FIS D bit: device to host", n), "byte 1 0x%02x",
          ps[1]);
    check(ps[1] & 0x40, NAME("port %u PIO Setup FIS I bit", n), "byte 1 0x%02x", ps[1]);
    check((ps[2] & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR)) == ATA_SR_DRQ,
          NAME("port %u PIO Setup FIS status: DRQ", n), "status 0x%02x", ps[2]);
    check((ps[15] & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR)) == 0,
          NAME("port %u PIO Setup FIS E_Status: BSY, DRQ, ERR clear", n), "E_Status 0x%02x",
          ps[15]);
    check_eq(ps[16] | (ps[17] << 8), 512, NAME("port %u PIO Setup FIS transfer count 512", n));
    uint32_t tfd = p->last_tfd;
    check_eq(PXTFD_STS(tfd) & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR | ATA_SR_DRDY), ATA_SR_DRDY,
             NAME("port %u PxTFD after IDENTIFY: DRDY, no BSY/DRQ/ERR", n));

    /* Integrity word 255: signature A5h, all 512 bytes sum to 0. */
    uint8_t sum = 0;
    for (unsigned i = 0; i < 512; i++)
        sum = (uint8_t)(sum + ((const uint8_t *)id)[i]);
    check((id[255] & 0xFF) == 0xA5 && sum == 0,
          NAME("port %u IDENTIFY word 255: signature A5h and checksum", n),
          "word 255 0x%04x, byte sum 0x%02x", id[255], sum);

    ata_id_string(id, 27, 20, text);
    printf("port %u model: %s\n", n, text);
    check_ok(printable(text), NAME("port %u model is printable ASCII", n));
    ata_id_string(id, 10, 10, text);
    printf("port %u serial: %s\n", n, text);
    check_ok(printable(text), NAME("port %u serial number is printable ASCII", n));
    ata_id_string(id, 23, 4, text);
    printf("port %u firmware: %s\n", n, text);
    check_ok(printable(text), NAME("port %u firmware revision is printable ASCII", n));

    check_eq(id[0] & 0x8000, 0, NAME("port %u word 0 bit 15: ATA device", n));
    check_ok(id[49] & (1u << 9), NAME("port %u word 49: LBA supported", n));
    check_ok(id[49] & (1u << 8), NAME("port %u word 49: DMA supported", n));
    check_ok((id[83] & (1u << 10)) && (id[86] & (1u << 10)),
             NAME("port %u words 83/86: 48-bit address feature set supported and enabled", n));

    uint64_t lba48 = (uint64_t)id[100] | ((uint64_t)id[101] << 16) | ((uint64_t)id[102] << 32) |
                     ((uint64_t)id[103] << 48);
    uint32_t lba28 = id[60] | ((uint32_t)id[61] << 16);
    printf("port %u capacity: %llu sectors\n", n, (unsigned long long)lba48);
    snprintf(name, sizeof(name), "sectors%u", n);
    if (arg_has(name)) {
        uint64_t want = arg_u64(name, 0);
        uint32_t want28 = want > 0x0FFFFFFF ? 0x0FFFFFFF : (uint32_t)want;
        check_eq(lba48, want, NAME("port %u words 100-103: 48-bit capacity", n));
        check_eq(lba28, want28, NAME("port %u words 60-61: 28-bit capacity (at most 0FFFFFFFh)", n));
    }
    check_ok(id[76] & (1u << 8), NAME("port %u word 76: NCQ supported", n));
    check_eq(id[75] & 0x1F, 31, NAME("port %u word 75: queue depth 32", n));
    check_ok(id[76] & (1u << 1), NAME("port %u word 76: SATA Gen1 signalling speed", n));
    check_ok((id[84] & (1u << 5)) && (id[87] & (1u << 5)),
             NAME("port %u words 84/87: General Purpose Logging (required with NCQ)", n));
    check_ok(id[82] & (1u << 5), NAME("port %u word 82: volatile write cache supported", n));
    check_ok((id[83] & (1u << 12)) && (id[86] & (1u << 12)),
             NAME("port %u words 83/86: FLUSH CACHE", n));
    check_ok((id[83] & (1u << 13)) && (id[86] & (1u << 13)),
             NAME("port %u words 83/86: FLUSH CACHE EXT", n));
    check_ok(id[169] & 1u, NAME("port %u word 169: DATA SET MANAGEMENT TRIM supported", n));
    check_eq(id[47] >> 8, 0x80, NAME("port %u word 47: 80h", n));
    check_ok((id[47] & 0xFF) != 0, NAME("port %u word 47: READ/WRITE MULTIPLE block size", n));
    check_ok(id[53] & (1u << 2), NAME("port %u word 53: word 88 valid", n));
    check_eq(id[88] & 0x3F, 0x3F, NAME("port %u word 88: UDMA modes 0-5 supported", n));
    uint16_t sel = (uint16_t)((id[88] >> 8) & 0x7F);
    check_ok((sel & (sel - 1)) == 0, NAME("port %u word 88: at most one UDMA mode selected", n));
    int w106_valid = (id[106] & 0xC000) == 0x4000;
    uint32_t lss = 512;
    if (w106_valid && (id[106] & (1u << 12)))
        lss = 2 * (id[117] | ((uint32_t)id[118] << 16));
    check_eq(lss, 512, NAME("port %u words 106/117-118: logical sector size 512", n));

    /* The same data through a PRDT of two 256-byte pieces. */
    memset(id2, 0, sizeof(id2));
    struct ahci_sg two[2] = {{(uintptr_t)id2, 256}, {(uintptr_t)id2 + 256, 256}};
    ahci_cmd_build(p, 1, &tf, 0, two, 2, 0);
    rc = ahci_cmd_run(p, 1);
    check(rc == AHCI_OK && ahci_prdbc(p, 1) == 512 && memcmp(id, id2, 512) == 0,
          NAME("port %u IDENTIFY through two PRDs: same data", n), "%s, PRDBC %u",
          ahci_strerror(rc), ahci_prdbc(p, 1));
#undef NAME
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    int rc = ahci_init();
    if (!check(rc == AHCI_OK, "AHCI HBA found and reset", "%s", ahci_strerror(rc)))
        test_done();
    uint32_t ready = ahci_start_ports();
    printf("ports with a disk: 0x%02x\n", ready);
    check_ok(ready != 0, "at least one disk");
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++)
        if (ready & (1u << n))
            identify_port(ahci_port(n));
    test_done();
}
