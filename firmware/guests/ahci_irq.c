/*
 * ahci_irq: completion interrupts through MSI (AHCI 1.3.1 10.7, PCI MSI).
 *
 * The guest programs the HBA's MSI capability (address FEE00000h, data =
 * vector), enables its local APIC, loads an IDT and halts (`sti; hlt`)
 * until the handler has run. The handler reads IS and PxIS, clears PxIS then
 * IS, and EOIs. Per command: the number of interrupts and the PxIS bits the
 * handler saw (DHRS for DMA and non-data commands, PSS for PIO data-in,
 * SDBS for NCQ, TFES for an error). No interrupt when PxIE masks the event
 * or GHC.IE is clear; the MSI data register selects the vector.
 *
 * Disks: port 0 (the test pattern, tag 0xD0); optional port 1 (any).
 */
#include "ahci.h"
#include "ahci_test.h"
#include "ahci_irq.h"
#include "guest.h"

#define VEC 0x40
#define VEC2 0x51
#define VEC_INTX 0x62
#define TAG0 0xD0

static uint8_t buf[64 * 1024] __attribute__((aligned(4096)));

static volatile uint32_t n_irq;      /* interrupts taken */
static volatile uint32_t seen_is;    /* OR of IS seen by the handler */
static volatile uint32_t seen_pxis;  /* OR of PxIS of the ports in IS */
static volatile uint32_t last_vector;

static void handler(uint8_t vector)
{
    uint32_t is = ahci_read(AHCI_IS);
    for (unsigned n = 0; n < AHCI_MAX_PORTS; n++) {
        if (!(is & (1u << n)))
            continue;
        struct ahci_port *p = ahci_port(n);
        uint32_t pxis = ahci_port_read(p, PX_IS);
        seen_pxis |= pxis;
        ahci_port_write(p, PX_IS, pxis);
    }
    ahci_write(AHCI_IS, is);
    seen_is |= is;
    last_vector = vector;
    n_irq++;
    ahci_lapic_eoi();
}

static void reset_counts(void)
{
    n_irq = 0;
    seen_is = 0;
    seen_pxis = 0;
    last_vector = 0;
}

/* Wait until the slots are done and the handler has seen the event the command
 * ends with (bounded), then give further interrupts a moment to land; interrupts
 * are off on return. Neither "done" nor "an interrupt came" alone ends the wait:
 * QEMU completes NCQ from its I/O thread, after an earlier DHRS interrupt. */
static void wait_done(struct ahci_port *p, uint32_t ci_mask, uint32_t sact_mask,
                      uint32_t expect_bit)
{
    for (unsigned spins = 0; spins < 100000; spins++) {
        int done = !(ahci_port_read(p, PX_CI) & ci_mask) &&
                   !(ahci_port_read(p, PX_SACT) & sact_mask);
        if (seen_pxis & PXIS_FATAL)
            break; /* an error leaves the slot set in PxCI: the port halts */
        if (done && (seen_pxis & expect_bit))
            break;
        if (done) {
            sti();
            ahci_delay(100);
            cli();
        } else {
            ahci_irq_wait();
        }
    }
    sti();
    ahci_delay(2000); /* any further interrupts for this command */
    cli();
}

static void run(struct ahci_port *p, const char *what, const struct ata_tf *tf, void *data,
                uint32_t len, uint32_t expect_bit, int exactly_one)
{
    char name[96];
    struct ahci_sg sg = {(uintptr_t)data, len};
    ahci_cmd_build(p, 0, tf, 0, &sg, len ? 1 : 0, 0);
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_write(AHCI_IS, 0xFFFFFFFF);
    reset_counts();
    ahci_issue(p, 1);
    wait_done(p, 1, 0, expect_bit);
    snprintf(name, sizeof(name), "%s: %s", what,
             exactly_one ? "exactly one interrupt" : "interrupted");
    check(exactly_one ? n_irq == 1 : n_irq >= 1, name, "%u interrupts", n_irq);
    snprintf(name, sizeof(name), "%s: handler saw IS.IPS[%u] and the PxIS event", what, p->num);
    check((seen_is & (1u << p->num)) && (seen_pxis & expect_bit), name,
          "IS 0x%08x PxIS 0x%08x", seen_is, seen_pxis);
    snprintf(name, sizeof(name), "%s: PxIS and IS clear after the handler", what);
    check(ahci_port_read(p, PX_IS) == 0 && ahci_read(AHCI_IS) == 0, name,
          "PxIS 0x%08x IS 0x%08x", ahci_port_read(p, PX_IS), ahci_read(AHCI_IS));
}

static void per_command(struct ahci_port *p)
{
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 10, 8);
    memset(buf, 0, 4096);
    run(p, "READ DMA EXT", &tf, buf, 4096, PXIS_DHRS, 1);
    check_ok(ahci_pattern_check(buf, 10, 8, TAG0) < 0, "READ DMA EXT data");
    ahci_pattern_fill(buf, 2000, 8, 0x21);
    tf = ahci_tf(ATA_CMD_WRITE_DMA_EXT, 2000, 8);
    run(p, "WRITE DMA EXT", &tf, buf, 4096, PXIS_DHRS, 1);
    tf = ahci_tf(ATA_CMD_FLUSH_CACHE_EXT, 0, 0);
    run(p, "FLUSH CACHE EXT", &tf, 0, 0, PXIS_DHRS, 1);
    tf = ahci_tf(ATA_CMD_IDENTIFY, 0, 0);
    tf.device = 0;
    run(p, "IDENTIFY DEVICE (PIO data-in)", &tf, buf, 512, PXIS_PSS, 0);
    tf = ahci_tf(ATA_CMD_READ_SECTORS, 20, 4);
    run(p, "READ SECTORS 4 (PIO data-in)", &tf, buf, 2048, PXIS_PSS, 0);
    ahci_pattern_fill(buf, 2100, 4, 0x22);
    tf = ahci_tf(ATA_CMD_WRITE_SECTORS, 2100, 4);
    run(p, "WRITE SECTORS 4 (PIO data-out)", &tf, buf, 2048, PXIS_DHRS, 0);
    tf = ahci_tf(0xFF, 0, 0);
    run(p, "unknown opcode (error)", &tf, 0, 0, PXIS_TFES, 0);
    int rc = ahci_port_recover(p);
    check(rc == AHCI_OK, "recovery after the error", "%s", ahci_strerror(rc));

    /* 8 NCQ reads: one or more SDB interrupts. */
    for (unsigned t = 0; t < 8; t++) {
        struct ahci_sg sg = {(uintptr_t)buf + t * 4096u, 4096};
        ahci_ncq_build(p, t, ATA_CMD_READ_FPDMA, 100u + 8u * t, 8, &sg, 1);
    }
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    /* Under QEMU the message of the error before may still be on its way (its I/O
     * thread completes asynchronously): let it land before counting. */
    sti();
    ahci_delay(2000);
    cli();
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    reset_counts();
    ahci_ncq_issue(p, 0xFF);
    wait_done(p, 0xFF, 0xFF, PXIS_SDBS);
    check(n_irq >= 1 && n_irq <= 8, "8 NCQ reads: 1 to 8 interrupts", "%u interrupts", n_irq);
    check_ok(seen_pxis & PXIS_SDBS, "8 NCQ reads: handler saw PxIS.SDBS");
    check_ok(ahci_pattern_check(buf, 100, 64, TAG0) < 0, "8 NCQ reads: data");
}

static void no_interrupt_cases(struct ahci_port *p)
{
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 30, 1);
    struct ahci_sg sg = {(uintptr_t)buf, 512};
    uint32_t bit = 1u << p->num;

    /* PxIE masks the event: no interrupt, IS.IPS stays clear. */
    ahci_port_write(p, PX_IE, 0);
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    reset_counts();
    sti();
    int rc = ahci_cmd_run(p, 0);
    ahci_delay(5000);
    cli();
    check(rc == AHCI_OK && n_irq == 0, "PxIE 0: command completes without an interrupt",
          "%s, %u interrupts", ahci_strerror(rc), n_irq);
    check((ahci_port_read(p, PX_IS) & PXIS_DHRS) && !(ahci_read(AHCI_IS) & bit),
          "PxIE 0: PxIS.DHRS set, IS.IPS clear", "PxIS 0x%08x IS 0x%08x",
          ahci_port_read(p, PX_IS), ahci_read(AHCI_IS));
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_port_write(p, PX_IE, 0x7DC0007F);

    /* GHC.IE clear: no interrupt, but IS.IPS records the pending port. */
    ahci_write(AHCI_GHC, AHCI_GHC_AE);
    ahci_cmd_build(p, 0, &tf, 0, &sg, 1, 0);
    reset_counts();
    sti();
    rc = ahci_cmd_run(p, 0);
    ahci_delay(5000);
    cli();
    check(rc == AHCI_OK && n_irq == 0, "GHC.IE 0: command completes without an interrupt",
          "%s, %u interrupts", ahci_strerror(rc), n_irq);
    check((ahci_port_read(p, PX_IS) & PXIS_DHRS) && (ahci_read(AHCI_IS) & bit),
          "GHC.IE 0: PxIS.DHRS and IS.IPS set", "PxIS 0x%08x IS 0x%08x",
          ahci_port_read(p, PX_IS), ahci_read(AHCI_IS));
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_write(AHCI_IS, 0xFFFFFFFF);
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
    sti();
    ahci_delay(5000);
    cli();
    check_eq(n_irq, 0, "GHC.IE 1 again after clearing: no stale interrupt");
}

static void other_vector(struct ahci_port *p)
{
    ahci_msi_enable(VEC2);
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 40, 1);
    run(p, "MSI data 51h", &tf, buf, 512, PXIS_DHRS, 1);
    check_eq(last_vector, VEC2, "MSI data selects the vector (51h)");
    ahci_msi_enable(VEC);
}

/* INTx through the I/O APIC (level-triggered): one interrupt per command, and
 * none left pending once the handler cleared PxIS and IS before its EOI. */
static void intx(struct ahci_port *p)
{
    ahci_intx_enable(VEC_INTX);
    uint32_t entry = ahci_ioapic_read(IOAPIC_REDTBL(AHCI_INTX_GSI));
    check_eq(entry & 0x1FFFF, VEC_INTX | IOAPIC_LEVEL | IOAPIC_ACTIVE_LOW,
             "I/O APIC GSI 16 entry reads back");
    check_eq(ahci_ioapic_read(1) & 0xFF, 0x20, "I/O APIC version 20h");
    struct ata_tf tf = ahci_tf(ATA_CMD_READ_DMA_EXT, 50, 1);
    run(p, "INTx READ DMA EXT", &tf, buf, 512, PXIS_DHRS, 1);
    check_eq(last_vector, VEC_INTX, "INTx arrives on the I/O APIC entry's vector");
    tf = ahci_tf(ATA_CMD_FLUSH_CACHE_EXT, 0, 0);
    run(p, "INTx FLUSH CACHE EXT", &tf, 0, 0, PXIS_DHRS, 1);
    check_eq(ahci_ioapic_read(IOAPIC_REDTBL(AHCI_INTX_GSI)) & (1u << 14), 0,
             "I/O APIC remote IRR clear after EOI");
    ahci_intx_disable();
    ahci_msi_enable(VEC);
}

static void second_port(struct ahci_port *p)
{
    ahci_port_write(p, PX_IE, 0x7DC0007F);
    struct ata_tf tf = ahci_tf(ATA_CMD_FLUSH_CACHE, 0, 0);
    run(p, "port 1 FLUSH CACHE", &tf, 0, 0, PXIS_DHRS, 1);
    check_eq(seen_is, 1u << p->num, "port 1 interrupt: IS has only bit 1");
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    uint32_t ready;
    struct ahci_port *p = ahci_test_start(&ready);

    ahci_irq_init();
    ahci_irq_set_handler(VEC, handler);
    ahci_irq_set_handler(VEC2, handler);
    ahci_irq_set_handler(VEC_INTX, handler);
    uint8_t cap = pci_find_cap(ahci_hba.bdf, PCI_CAP_ID_MSI);
    check_ok(cap != 0, "MSI capability present");
    int rc = ahci_msi_enable(VEC);
    uint16_t ctl = pci_read16(ahci_hba.bdf, (uint8_t)(cap + 2));
    check(rc == 0 && (ctl & 1), "MSI enabled (message control bit 0)", "control 0x%04x", ctl);
    check_ok(ctl & (1u << 7), "MSI 64-bit address capable");
    check_eq(pci_read32(ahci_hba.bdf, (uint8_t)(cap + 4)), MSI_ADDRESS_BASE,
             "MSI address reads back");
    check_eq(pci_read16(ahci_hba.bdf, (uint8_t)(cap + 12)), VEC, "MSI data reads back");

    ahci_port_write(p, PX_IE, 0x7DC0007F);
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
    per_command(p);
    no_interrupt_cases(p);
    other_vector(p);
    intx(p);
    if (ready & 2)
        second_port(ahci_port(1));
    check_eq(ahci_irq_unexpected, 0, "no unexpected interrupts");
    ahci_write(AHCI_GHC, AHCI_GHC_AE);
    ahci_msi_disable();
    test_done();
}
