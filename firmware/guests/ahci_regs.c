/*
 * ahci_regs: the AHCI register file (AHCI 1.3.1 section 3) after an HBA
 * reset, and how each kind of bit answers writes: read-only (CAP, PI, VS,
 * PxSSTS, PxSIG, PxTFD, PxCMD.CR/FR/CCS), read/write with reserved bits
 * (PxCLB/PxFB alignment, PxIE, PxSCTL), write-one-to-clear (PxIS, PxSERR,
 * IS); GHC.HR resetting the ports; moving BAR5 and back.
 *
 * Checks follow the spec (and the q35 values the board copies), not QEMU.
 *
 * Disks: one on port `disk` (default 0); port `empty` (default 1) has none.
 * Arguments: disk=N empty=N.
 */
#include "ahci.h"
#include "guest.h"

#define NEW_ABAR 0xFEB00000u /* free in q35's PCI hole, below the IOAPIC */

static struct ahci_port *pd; /* the port with a disk */
static struct ahci_port *pe; /* the port without */

static uint32_t preg(struct ahci_port *p, uint32_t off)
{
    return ahci_port_read(p, off);
}

/* Write `value`; the register must read back `expect`. */
static void check_write(struct ahci_port *p, uint32_t off, uint32_t value, uint32_t expect,
                        const char *name)
{
    if (p)
        ahci_port_write(p, off, value);
    else
        ahci_write(off, value);
    check_eq(p ? preg(p, off) : ahci_read(off), expect, name);
}

static void check_globals_after_reset(void)
{
    uint32_t cap = ahci_read(AHCI_CAP);
    check_eq(cap, 0xC0141F05, "CAP is q35's (64-bit, NCQ, Gen1, 32 slots, 6 ports)");
    check_ok((cap & AHCI_CAP_S64A) != 0, "CAP.S64A: 64-bit addressing");
    check_ok((cap & AHCI_CAP_SNCQ) != 0, "CAP.SNCQ: native command queuing");
    check_ok((cap & AHCI_CAP_SAM) != 0, "CAP.SAM: AHCI mode only");
    check_eq(AHCI_CAP_ISS(cap), 1, "CAP.ISS: Gen1 interface speed");
    check_eq(AHCI_CAP_NCS(cap), 32, "CAP.NCS: 32 command slots");
    check_eq(AHCI_CAP_NP(cap), 6, "CAP.NP: 6 ports");
    check_ok(!(cap & (AHCI_CAP_SSS | AHCI_CAP_SCLO | AHCI_CAP_SPM | AHCI_CAP_SMPS)),
             "CAP: no staggered spin-up, CLO, port multiplier, mechanical switch");
    check_eq(ahci_read(AHCI_GHC), AHCI_GHC_AE, "GHC after HR: AE only (CAP.SAM)");
    check_eq(ahci_read(AHCI_IS), 0, "IS after HR");
    uint32_t pi = ahci_read(AHCI_PI);
    check_eq(pi, 0x3F, "PI: ports 0-5 implemented");
    check_ok(pi != 0 && (pi >> AHCI_CAP_NP(cap)) == 0, "PI within CAP.NP");
    check_eq(ahci_read(AHCI_VS), 0x00010000, "VS: AHCI 1.0 (as q35)");
    check_eq(ahci_read(AHCI_CCC_CTL), 0, "CCC_CTL reads 0 (CAP.CCCS clear)");
    check_eq(ahci_read(AHCI_CCC_PORTS), 0, "CCC_PORTS reads 0");
    check_eq(ahci_read(AHCI_EM_LOC), 0, "EM_LOC reads 0 (CAP.EMS clear)");
    check_eq(ahci_read(AHCI_EM_CTL), 0, "EM_CTL reads 0");
    check_eq(ahci_read(AHCI_CAP2), 0, "CAP2 reads 0");
    check_eq(ahci_read(AHCI_BOHC), 0, "BOHC reads 0 (CAP2.BOH clear)");
}

static void check_empty_port(struct ahci_port *p)
{
    check_eq(preg(p, PX_CMD), PXCMD_SUD | PXCMD_POD, "empty port PxCMD: SUD|POD");
    check_eq(preg(p, PX_TFD), 0x7F, "empty port PxTFD: 7Fh");
    check_eq(preg(p, PX_SIG), 0xFFFFFFFF, "empty port PxSIG: FFFFFFFFh");
    check_eq(preg(p, PX_SSTS), 0, "empty port PxSSTS: no device");
    check_eq(preg(p, PX_SCTL), 0, "empty port PxSCTL");
    check_eq(preg(p, PX_SERR), 0, "empty port PxSERR");
    check_eq(preg(p, PX_IS), 0, "empty port PxIS");
    check_eq(preg(p, PX_IE), 0, "empty port PxIE");
    check_eq(preg(p, PX_SACT), 0, "empty port PxSACT");
    check_eq(preg(p, PX_CI), 0, "empty port PxCI");
}

static void check_disk_port(struct ahci_port *p)
{
    /* The link and the device's signature FIS arrive on their own after
     * the reset, with FRE still clear (AHCI 3.3.7 FRE: the first D2H
     * Register FIS after initialization is accepted). */
    unsigned long n = ahci_hba.loops;
    while (SSTS_DET(preg(p, PX_SSTS)) != SSTS_DET_PRESENT && n--)
        cpu_relax();
    n = ahci_hba.loops;
    while ((preg(p, PX_TFD) & ATA_SR_BSY) && n--)
        cpu_relax();
    check_eq(preg(p, PX_SSTS), 0x113, "disk port PxSSTS: DET 3, Gen1, IPM active");
    check_eq(preg(p, PX_SIG), SATA_SIG_ATA, "disk port PxSIG: ATA signature before FRE");
    uint32_t tfd = preg(p, PX_TFD);
    check(!(tfd & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR)),
          "disk port PxTFD.STS: BSY, DRQ, ERR clear before FRE", "PxTFD 0x%08x", tfd);
    check_eq(PXTFD_ERR(tfd), 0x01, "disk port PxTFD.ERR: diagnostic code 01h");
    check_eq(preg(p, PX_CMD), PXCMD_SUD | PXCMD_POD, "disk port PxCMD: SUD|POD");
    check_eq(preg(p, PX_SCTL), 0, "disk port PxSCTL");
    check_eq(preg(p, PX_SERR) & 0xFFFF, 0, "disk port PxSERR.ERR: no errors");
    check_eq(preg(p, PX_IS) & ~(PXIS_PCS | PXIS_PRCS), 0, "disk port PxIS (but PCS/PRCS)");
    check_eq(preg(p, PX_IE), 0, "disk port PxIE");
    check_eq(preg(p, PX_SACT), 0, "disk port PxSACT");
    check_eq(preg(p, PX_CI), 0, "disk port PxCI");
    check_eq(preg(p, PX_CLB) & 0x3FF, 0, "disk port PxCLB reserved bits 9:0");
    check_eq(preg(p, PX_FB) & 0xFF, 0, "disk port PxFB reserved bits 7:0");
}

static void check_read_only(struct ahci_port *p)
{
    uint32_t v;
    v = ahci_read(AHCI_CAP);
    check_write(0, AHCI_CAP, ~v, v, "CAP ignores writes");
    v = ahci_read(AHCI_PI);
    check_write(0, AHCI_PI, 0, v, "PI ignores writes");
    v = ahci_read(AHCI_VS);
    check_write(0, AHCI_VS, 0xFFFFFFFF, v, "VS ignores writes");
    v = preg(p, PX_SSTS);
    check_write(p, PX_SSTS, 0, v, "PxSSTS ignores writes");
    v = preg(p, PX_SIG);
    check_write(p, PX_SIG, 0x12345678, v, "PxSIG ignores writes");
    v = preg(p, PX_TFD);
    check_write(p, PX_TFD, 0xFFFFFFFF, v, "PxTFD ignores writes");
}

static void check_cmd_bits(struct ahci_port *p)
{
    /* The port is stopped (ST, FRE clear) here. */
    uint32_t base = preg(p, PX_CMD);
    ahci_port_write(p, PX_CMD, base | PXCMD_CR | PXCMD_FR | (0x1Fu << 8));
    uint32_t v = preg(p, PX_CMD);
    check(!(v & (PXCMD_CR | PXCMD_FR | (0x1Fu << 8))), "PxCMD.CR/FR/CCS read-only",
          "PxCMD 0x%08x", v);
    ahci_port_write(p, PX_CMD, base & ~(PXCMD_SUD | PXCMD_POD));
    v = preg(p, PX_CMD);
    check((v & (PXCMD_SUD | PXCMD_POD)) == (PXCMD_SUD | PXCMD_POD),
          "PxCMD.SUD/POD read-only 1 (no CAP.SSS, no PxCMD.CPD)", "PxCMD 0x%08x", v);
    ahci_port_write(p, PX_CMD, base | PXCMD_PMA);
    v = preg(p, PX_CMD);
    check(!(v & PXCMD_PMA), "PxCMD.PMA read-only 0 (no CAP.SPM)", "PxCMD 0x%08x", v);
    ahci_port_write(p, PX_CMD, base | PXCMD_ATAPI | PXCMD_DLAE);
    v = preg(p, PX_CMD);
    check((v & (PXCMD_ATAPI | PXCMD_DLAE)) == (PXCMD_ATAPI | PXCMD_DLAE),
          "PxCMD.ATAPI/DLAE read/write", "PxCMD 0x%08x", v);
    ahci_port_write(p, PX_CMD, base | (1u << 28));
    v = preg(p, PX_CMD);
    check(!(v & PXCMD_ICC_MASK), "PxCMD.ICC returns to 0 after a write", "PxCMD 0x%08x", v);
    ahci_port_write(p, PX_CMD, base);
    check_eq(preg(p, PX_CMD), base, "PxCMD restored");
}

static void check_rw_regs(struct ahci_port *p)
{
    check_write(p, PX_CLB, 0xFFFFFFFF, 0xFFFFFC00, "PxCLB: bits 9:0 reserved (1 KiB aligned)");
    check_write(p, PX_CLBU, 0xFFFFFFFF, 0xFFFFFFFF, "PxCLBU read/write (CAP.S64A)");
    check_write(p, PX_FB, 0xFFFFFFFF, 0xFFFFFF00, "PxFB: bits 7:0 reserved (256-byte aligned)");
    check_write(p, PX_FBU, 0xFFFFFFFF, 0xFFFFFFFF, "PxFBU read/write (CAP.S64A)");
    check_write(p, PX_CLB, 0x00012400, 0x00012400, "PxCLB read/write");
    check_write(p, PX_FB, 0x00034500, 0x00034500, "PxFB read/write");
    ahci_port_write(p, PX_CLBU, 0);
    ahci_port_write(p, PX_FBU, 0);
    check_write(p, PX_CLB, 0, 0, "PxCLB cleared");
    check_write(p, PX_FB, 0, 0, "PxFB cleared");
    check_write(p, PX_IE, 0xFFFFFFFF, 0x7DC0007F,
                "PxIE writable bits (no DMPE without CAP.SMPS, no CPDE without PxCMD.CPD)");
    check_write(p, PX_IE, 0, 0, "PxIE cleared");
    check_write(p, PX_SCTL, 0xFFF00310, 0x00000310, "PxSCTL: bits 31:20 reserved");
    check_write(p, PX_SCTL, 0, 0, "PxSCTL cleared");
    check_write(p, PX_SERR, 0xFFFFFFFF, 0, "PxSERR clears on writing ones");
    ahci_port_write(p, PX_SERR, 0xFFFFFFFF);
    check_write(p, PX_IS, 0xFFFFFFFF, 0, "PxIS clears on writing ones");
    check_write(0, AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE, AHCI_GHC_AE | AHCI_GHC_IE,
                "GHC.IE read/write");
    check_write(0, AHCI_GHC, 0, AHCI_GHC_AE, "GHC.AE stays set (CAP.SAM)");
    check_write(0, AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_MRSM | 0x7FFFFFF8, AHCI_GHC_AE,
                "GHC: MRSM and reserved bits read 0");
}

static int flush(struct ahci_port *p)
{
    struct ata_tf tf = ahci_tf(ATA_CMD_FLUSH_CACHE, 0, 0);
    int rc = ahci_cmd_build(p, 0, &tf, 0, 0, 0, 0);
    if (rc != AHCI_OK)
        return rc;
    ahci_issue(p, 1);
    return ahci_wait(p, 1, 0, ahci_hba.loops);
}

static void check_rw1c(struct ahci_port *p)
{
    uint32_t bit = 1u << p->num;
    int rc = ahci_port_setup(p);
    check(rc == AHCI_OK, "port with disk starts (FRE, device ready, ST)", "%s",
          ahci_strerror(rc));
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    rc = flush(p);
    check(rc == AHCI_OK, "FLUSH CACHE completes", "%s", ahci_strerror(rc));
    check_ok(preg(p, PX_IS) & PXIS_DHRS, "PxIS.DHRS set by the D2H Register FIS");
    check_eq(ahci_read(AHCI_IS) & bit, 0, "IS.IPS clear while PxIE masks the event");
    uint32_t before = preg(p, PX_IS);
    ahci_port_write(p, PX_IS, 0);
    check_eq(preg(p, PX_IS), before, "PxIS unchanged by writing zeros");
    ahci_port_write(p, PX_IS, PXIS_DHRS);
    check_eq(preg(p, PX_IS) & PXIS_DHRS, 0, "PxIS.DHRS cleared by writing one");

    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_port_write(p, PX_IE, PXIS_DHRS);
    rc = flush(p);
    check(rc == AHCI_OK, "FLUSH CACHE with PxIE.DHRE", "%s", ahci_strerror(rc));
    check_eq(ahci_read(AHCI_IS) & bit, bit, "IS.IPS set for the port (PxIS & PxIE)");
    ahci_write(AHCI_IS, 0);
    check_eq(ahci_read(AHCI_IS) & bit, bit, "IS unchanged by writing zeros");
    ahci_port_write(p, PX_IS, 0xFFFFFFFF);
    ahci_write(AHCI_IS, bit);
    check_eq(ahci_read(AHCI_IS), 0, "IS.IPS cleared by writing one");
}

static void check_hr_resets_ports(struct ahci_port *p)
{
    /* Port running, interrupts enabled, SCTL.IPM set: then GHC.HR. */
    uint32_t clb = preg(p, PX_CLB), fb = preg(p, PX_FB);
    ahci_port_write(p, PX_IE, PXIS_DHRS | PXIS_TFES);
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
    int rc = flush(p);
    check(rc == AHCI_OK, "FLUSH CACHE before HR", "%s", ahci_strerror(rc));
    ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_HR);
    unsigned long n = ahci_hba.loops;
    while ((ahci_read(AHCI_GHC) & AHCI_GHC_HR) && n--)
        cpu_relax();
    check_eq(ahci_read(AHCI_GHC), AHCI_GHC_AE, "GHC after HR: IE cleared, HR self-cleared");
    check_eq(ahci_read(AHCI_IS), 0, "IS cleared by HR");
    check_eq(preg(p, PX_CMD) & (PXCMD_ST | PXCMD_FRE | PXCMD_CR | PXCMD_FR), 0,
             "PxCMD.ST/FRE/CR/FR cleared by HR");
    check_eq(preg(p, PX_IE), 0, "PxIE cleared by HR");
    check_eq(preg(p, PX_IS) & ~(PXIS_PCS | PXIS_PRCS), 0, "PxIS cleared by HR");
    check_eq(preg(p, PX_CI), 0, "PxCI cleared by HR");
    check_eq(preg(p, PX_CLB), clb, "PxCLB kept across HR (AHCI 10.4.3)");
    check_eq(preg(p, PX_FB), fb, "PxFB kept across HR (AHCI 10.4.3)");
}

static void check_bar_relocation(void)
{
    pci_bdf_t bdf = ahci_hba.bdf;
    uint32_t old = (uint32_t)ahci_hba.abar;
    uint32_t cap = ahci_read(AHCI_CAP);
    uint32_t p0cmd = ahci_read(AHCI_PORT_REGS(0) + PX_CMD);
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    check_ok(!pci_bar_is_io(bdf, 5) && !pci_bar_is_64(bdf, 5), "BAR5 is a 32-bit memory BAR");
    uint64_t size = pci_bar_size(bdf, 5);
    check(size >= 0x400 && size <= 0x1000, "BAR5 size covers the 6 ports' registers",
          "size 0x%x", (unsigned)size);

    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd & ~PCI_COMMAND_MEMORY));
    pci_write32(bdf, PCI_BAR0 + 4 * 5, NEW_ABAR);
    pci_write16(bdf, PCI_COMMAND, cmd);
    check_eq(pci_bar_addr(bdf, 5), NEW_ABAR, "BAR5 moved to FEB00000h");
    check_eq(mmio_read32(NEW_ABAR + AHCI_CAP), cap, "CAP at the new address");
    check_eq(mmio_read32(NEW_ABAR + AHCI_VS), 0x00010000, "VS at the new address");
    check_eq(mmio_read32(NEW_ABAR + AHCI_PORT_REGS(0) + PX_CMD), p0cmd,
             "port 0 PxCMD at the new address");
    mmio_write32(NEW_ABAR + AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
    check_eq(mmio_read32(NEW_ABAR + AHCI_GHC), AHCI_GHC_AE | AHCI_GHC_IE,
             "GHC written at the new address");
    mmio_write32(NEW_ABAR + AHCI_GHC, AHCI_GHC_AE);
    check_ok(mmio_read32(old + AHCI_CAP) != cap, "old address no longer decodes (read)");
    mmio_write32(old + AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
    check_eq(mmio_read32(NEW_ABAR + AHCI_GHC), AHCI_GHC_AE,
             "old address no longer decodes (write)");

    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd & ~PCI_COMMAND_MEMORY));
    check_ok(mmio_read32(NEW_ABAR + AHCI_CAP) != cap, "memory decode off: ABAR not decoded");
    pci_write32(bdf, PCI_BAR0 + 4 * 5, old);
    pci_write16(bdf, PCI_COMMAND, cmd);
    check_eq(pci_bar_addr(bdf, 5), old, "BAR5 moved back");
    check_eq(ahci_read(AHCI_CAP), cap, "CAP at the original address again");
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    unsigned disk = (unsigned)arg_int("disk", 0);
    unsigned empty = (unsigned)arg_int("empty", 1);

    int rc = ahci_find();
    if (!check(rc == AHCI_OK, "AHCI HBA found (class 01/06/01, BAR5)", "%s", ahci_strerror(rc)))
        test_done();
    pd = ahci_port(disk);
    pe = ahci_port(empty);
    if (!check(pd && pe && disk != empty, "ports implemented", "disk=%u empty=%u", disk, empty))
        test_done();
    check_ok(pci_read16(ahci_hba.bdf, PCI_COMMAND) & PCI_COMMAND_MEMORY, "memory decode on");
    rc = ahci_hba_reset();
    check(rc == AHCI_OK, "GHC.HR completes", "%s", ahci_strerror(rc));

    check_globals_after_reset();
    check_empty_port(pe);
    check_disk_port(pd);
    check_read_only(pd);
    check_cmd_bits(pd);
    check_rw_regs(pd);
    check_rw1c(pd);
    check_hr_resets_ports(pd);
    check_bar_relocation();
    test_done();
}
