/*
 * A small guest-side AHCI driver (Serial ATA AHCI 1.3.1) for test guests.
 *
 * One HBA (the first PCI function with class 01/06/01), found through PCI
 * and BAR5. The library owns its command lists and received-FIS areas
 * (static, in .bss) and its command tables and a large data area (at fixed
 * addresses from 64 MiB, see AHCI_HIGH_BASE); guests build commands through
 * it and may then poke at the structures directly
 * (`ahci_port(n)->tables[slot]` etc.) before issuing them, to test odd
 * cases.
 *
 * Every wait is bounded by a loop count; functions return AHCI_OK (0) or a
 * negative AHCI_E* code, never hang. Nothing here prints, except
 * ahci_strerror's string that a guest may print.
 *
 * Typical use:
 *     if (ahci_init() != AHCI_OK) ...            find, enable, GHC.HR, GHC.AE
 *     uint32_t ports = ahci_start_ports();       bitmask of ports ready to use
 *     struct ahci_port *p = ahci_port(0);
 *     rc = ahci_rw(p, ATA_CMD_READ_DMA_EXT, lba, nsect, buf);
 */
#ifndef LIB_AHCI_H
#define LIB_AHCI_H

#include <stddef.h>
#include <stdint.h>

#include "pci.h"

/* ---- Generic host control registers (AHCI 3.1) ---- */
#define AHCI_CAP 0x00
#define AHCI_GHC 0x04
#define AHCI_IS 0x08
#define AHCI_PI 0x0C
#define AHCI_VS 0x10
#define AHCI_CCC_CTL 0x14
#define AHCI_CCC_PORTS 0x18
#define AHCI_EM_LOC 0x1C
#define AHCI_EM_CTL 0x20
#define AHCI_CAP2 0x24
#define AHCI_BOHC 0x28

#define AHCI_CAP_S64A (1u << 31)
#define AHCI_CAP_SNCQ (1u << 30)
#define AHCI_CAP_SSNTF (1u << 29)
#define AHCI_CAP_SMPS (1u << 28)
#define AHCI_CAP_SSS (1u << 27)
#define AHCI_CAP_SALP (1u << 26)
#define AHCI_CAP_SAL (1u << 25)
#define AHCI_CAP_SCLO (1u << 24)
#define AHCI_CAP_ISS(cap) (((cap) >> 20) & 0xF)
#define AHCI_CAP_SAM (1u << 18)
#define AHCI_CAP_SPM (1u << 17)
#define AHCI_CAP_FBSS (1u << 16)
#define AHCI_CAP_PMD (1u << 15)
#define AHCI_CAP_SSC (1u << 14)
#define AHCI_CAP_PSC (1u << 13)
#define AHCI_CAP_NCS(cap) ((((cap) >> 8) & 0x1F) + 1) /* number of command slots */
#define AHCI_CAP_CCCS (1u << 7)
#define AHCI_CAP_EMS (1u << 6)
#define AHCI_CAP_SXS (1u << 5)
#define AHCI_CAP_NP(cap) (((cap) & 0x1F) + 1) /* number of ports */

#define AHCI_GHC_HR (1u << 0)
#define AHCI_GHC_IE (1u << 1)
#define AHCI_GHC_MRSM (1u << 2)
#define AHCI_GHC_AE (1u << 31)

/* ---- Port registers (AHCI 3.3), at 0x100 + 0x80 * port ---- */
#define AHCI_PORT_REGS(n) (0x100u + 0x80u * (n))
#define PX_CLB 0x00
#define PX_CLBU 0x04
#define PX_FB 0x08
#define PX_FBU 0x0C
#define PX_IS 0x10
#define PX_IE 0x14
#define PX_CMD 0x18
#define PX_TFD 0x20
#define PX_SIG 0x24
#define PX_SSTS 0x28
#define PX_SCTL 0x2C
#define PX_SERR 0x30
#define PX_SACT 0x34
#define PX_CI 0x38
#define PX_SNTF 0x3C
#define PX_FBS 0x40

/* PxIS / PxIE bits */
#define PXIS_DHRS (1u << 0)  /* D2H Register FIS */
#define PXIS_PSS (1u << 1)   /* PIO Setup FIS */
#define PXIS_DSS (1u << 2)   /* DMA Setup FIS */
#define PXIS_SDBS (1u << 3)  /* Set Device Bits FIS */
#define PXIS_UFS (1u << 4)   /* unknown FIS */
#define PXIS_DPS (1u << 5)   /* descriptor processed (PRD with I) */
#define PXIS_PCS (1u << 6)   /* port connect change */
#define PXIS_DMPS (1u << 7)  /* device mechanical presence */
#define PXIS_PRCS (1u << 22) /* PhyRdy change */
#define PXIS_IPMS (1u << 23) /* incorrect port multiplier */
#define PXIS_OFS (1u << 24)  /* overflow */
#define PXIS_INFS (1u << 26) /* interface non-fatal error */
#define PXIS_IFS (1u << 27)  /* interface fatal error */
#define PXIS_HBDS (1u << 28) /* host bus data error */
#define PXIS_HBFS (1u << 29) /* host bus fatal error */
#define PXIS_TFES (1u << 30) /* task file error */
#define PXIS_CPDS (1u << 31) /* cold port detect */
/* The bits that stop the port's command engine (AHCI 6.1.2, 6.1.3). */
#define PXIS_FATAL (PXIS_TFES | PXIS_HBFS | PXIS_HBDS | PXIS_IFS)
#define PXIS_ERRORS (PXIS_FATAL | PXIS_OFS | PXIS_INFS | PXIS_IPMS | PXIS_UFS)

/* PxCMD bits */
#define PXCMD_ST (1u << 0)
#define PXCMD_SUD (1u << 1)
#define PXCMD_POD (1u << 2)
#define PXCMD_CLO (1u << 3)
#define PXCMD_FRE (1u << 4)
#define PXCMD_CCS(cmd) (((cmd) >> 8) & 0x1F)
#define PXCMD_MPSS (1u << 13)
#define PXCMD_FR (1u << 14)
#define PXCMD_CR (1u << 15)
#define PXCMD_CPS (1u << 16)
#define PXCMD_PMA (1u << 17)
#define PXCMD_HPCP (1u << 18)
#define PXCMD_MPSP (1u << 19)
#define PXCMD_CPD (1u << 20)
#define PXCMD_ESP (1u << 21)
#define PXCMD_FBSCP (1u << 22)
#define PXCMD_APSTE (1u << 23)
#define PXCMD_ATAPI (1u << 24)
#define PXCMD_DLAE (1u << 25)
#define PXCMD_ALPE (1u << 26)
#define PXCMD_ASP (1u << 27)
#define PXCMD_ICC_MASK (0xFu << 28)

/* PxTFD: STS in bits 7:0, ERR in bits 15:8 */
#define PXTFD_STS(tfd) ((tfd) & 0xFF)
#define PXTFD_ERR(tfd) (((tfd) >> 8) & 0xFF)

/* PxSSTS / PxSCTL */
#define SSTS_DET(s) ((s) & 0xF)
#define SSTS_SPD(s) (((s) >> 4) & 0xF)
#define SSTS_IPM(s) (((s) >> 8) & 0xF)
#define SSTS_DET_PRESENT 3 /* device present, Phy communication established */
#define SCTL_DET_MASK 0xFu
#define SCTL_DET_COMRESET 1u
#define SCTL_IPM_NONE (3u << 8) /* no transitions to Partial or Slumber */

/* PxSERR.DIAG bits */
#define SERR_DIAG_N (1u << 16) /* PhyRdy change */
#define SERR_DIAG_X (1u << 26) /* exchanged */

/* Device signatures (PxSIG) */
#define SATA_SIG_ATA 0x00000101u
#define SATA_SIG_ATAPI 0xEB140101u

/* ---- ATA ---- */
#define ATA_SR_ERR 0x01
#define ATA_SR_DRQ 0x08
#define ATA_SR_DF 0x20
#define ATA_SR_DRDY 0x40
#define ATA_SR_BSY 0x80

#define ATA_ER_AMNF 0x01
#define ATA_ER_ABRT 0x04
#define ATA_ER_IDNF 0x10
#define ATA_ER_UNC 0x40
#define ATA_ER_ICRC 0x80

#define ATA_CMD_DSM 0x06
#define ATA_CMD_READ_SECTORS 0x20
#define ATA_CMD_READ_SECTORS_EXT 0x24
#define ATA_CMD_READ_DMA_EXT 0x25
#define ATA_CMD_READ_NATIVE_MAX_EXT 0x27
#define ATA_CMD_READ_MULTIPLE_EXT 0x29
#define ATA_CMD_READ_LOG_EXT 0x2F
#define ATA_CMD_WRITE_SECTORS 0x30
#define ATA_CMD_WRITE_SECTORS_EXT 0x34
#define ATA_CMD_WRITE_DMA_EXT 0x35
#define ATA_CMD_WRITE_MULTIPLE_EXT 0x39
#define ATA_CMD_READ_VERIFY 0x40
#define ATA_CMD_READ_VERIFY_EXT 0x42
#define ATA_CMD_READ_LOG_DMA_EXT 0x47
#define ATA_CMD_READ_FPDMA 0x60
#define ATA_CMD_WRITE_FPDMA 0x61
#define ATA_CMD_EXEC_DIAG 0x90
#define ATA_CMD_READ_MULTIPLE 0xC4
#define ATA_CMD_WRITE_MULTIPLE 0xC5
#define ATA_CMD_SET_MULTIPLE 0xC6
#define ATA_CMD_READ_DMA 0xC8
#define ATA_CMD_WRITE_DMA 0xCA
#define ATA_CMD_FLUSH_CACHE 0xE7
#define ATA_CMD_FLUSH_CACHE_EXT 0xEA
#define ATA_CMD_IDENTIFY 0xEC
#define ATA_CMD_SET_FEATURES 0xEF
#define ATA_CMD_READ_NATIVE_MAX 0xF8

#define ATA_DEV_LBA 0x40 /* Device register: LBA addressing (bit 6) */
#define ATA_LOG_NCQ_ERROR 0x10

/* Transfer protocol of an ATA command, for the command header's W bit and
 * for the checks a guest makes. */
enum ata_proto {
    ATA_PROTO_UNKNOWN,
    ATA_PROTO_NONDATA,
    ATA_PROTO_PIO_IN,
    ATA_PROTO_PIO_OUT,
    ATA_PROTO_DMA_IN,
    ATA_PROTO_DMA_OUT,
    ATA_PROTO_NCQ,
};
enum ata_proto ata_cmd_proto(uint8_t command);
int ata_cmd_is_lba48(uint8_t command); /* the EXT commands (and NCQ) */
int ata_cmd_is_write(uint8_t command); /* data from host to device */

/* ---- FIS types and in-memory structures (AHCI 4.2) ---- */
#define FIS_TYPE_REG_H2D 0x27
#define FIS_TYPE_REG_D2H 0x34
#define FIS_TYPE_DMA_ACT 0x39
#define FIS_TYPE_DMA_SETUP 0x41
#define FIS_TYPE_DATA 0x46
#define FIS_TYPE_BIST 0x58
#define FIS_TYPE_PIO_SETUP 0x5F
#define FIS_TYPE_SDB 0xA1

#define FIS_H2D_C 0x80 /* byte 1: this FIS updates the Command register */

/* Command header flags (DW0 bits 15:0) */
#define AHCI_CMDH_CFL(dwords) ((dwords) & 0x1F)
#define AHCI_CMDH_A (1u << 5)  /* ATAPI */
#define AHCI_CMDH_W (1u << 6)  /* write: host to device */
#define AHCI_CMDH_P (1u << 7)  /* prefetchable */
#define AHCI_CMDH_R (1u << 8)  /* reset */
#define AHCI_CMDH_B (1u << 9)  /* BIST */
#define AHCI_CMDH_C (1u << 10) /* clear busy upon R_OK */

struct ahci_cmd_header {
    uint16_t flags;
    uint16_t prdtl;          /* PRDT length in entries */
    volatile uint32_t prdbc; /* PRD byte count, written by the HBA */
    uint32_t ctba;           /* command table base, 128-byte aligned */
    uint32_t ctbau;
    uint32_t reserved[4];
};

#define AHCI_PRD_MAX_BYTES (4u << 20) /* 22-bit DBC: 4 MiB per entry */
#define AHCI_PRD_I (1u << 31)         /* interrupt on completion */

struct ahci_prd {
    uint32_t dba; /* word aligned */
    uint32_t dbau;
    uint32_t reserved;
    uint32_t dbc; /* bits 21:0 byte count - 1 (odd: even count), bit 31 I */
};

/* PRDT entries per command table: the table is 128 + 248 * 16 = 4 KiB. */
#define AHCI_MAX_PRDS 248

struct ahci_cmd_table {
    uint8_t cfis[64];
    uint8_t acmd[16];
    uint8_t reserved[48];
    struct ahci_prd prdt[AHCI_MAX_PRDS];
};

/* Received FIS area (AHCI 4.2.1), 256 bytes. */
struct ahci_rx_fis {
    volatile uint8_t dsfis[28]; /* 0x00 DMA Setup FIS */
    volatile uint8_t pad0[4];
    volatile uint8_t psfis[20]; /* 0x20 PIO Setup FIS */
    volatile uint8_t pad1[12];
    volatile uint8_t rfis[20]; /* 0x40 D2H Register FIS */
    volatile uint8_t pad2[4];
    volatile uint8_t sdbfis[8]; /* 0x58 Set Device Bits FIS */
    volatile uint8_t ufis[64];  /* 0x60 unknown FIS */
    volatile uint8_t reserved[96];
};

/* ---- The driver ---- */
#define AHCI_MAX_PORTS 32
#define AHCI_MAX_SLOTS 32

#define AHCI_OK 0
#define AHCI_ENODEV (-1)    /* no HBA, port not implemented or no device */
#define AHCI_ETIMEOUT (-2)  /* a bounded wait ran out */
#define AHCI_ETASKFILE (-3) /* PxIS.TFES: the device reported an error */
#define AHCI_EHOSTBUS (-4)  /* PxIS.HBFS/HBDS: host bus error */
#define AHCI_EIFACE (-5)    /* PxIS.IFS/INFS/OFS/UFS/IPMS: interface error */
#define AHCI_EINVAL (-6)    /* bad argument (too many PRDs, odd length, ...) */
#define AHCI_EERR (-7)      /* completed, but PxTFD.STS.ERR is set */
#define AHCI_ENOMEM (-8)    /* RAM does not cover the library's DMA area */

/* Loop counts for bounded waits (each iteration reads one register). */
#define AHCI_LOOPS_DEFAULT 2000000ul
#define AHCI_LOOPS_NOLINK 1000ul /* PxSSTS.DET 0 this long: no device (links come up at once on q35 and here; 10000 polls cost 10 ms per empty port) */

struct ahci_port {
    unsigned num;
    uintptr_t regs; /* abar + 0x100 + 0x80 * num */
    struct ahci_cmd_header *clb;
    struct ahci_rx_fis *fis;
    struct ahci_cmd_table *tables; /* AHCI_MAX_SLOTS of them */
    /* Set by ahci_cmd_run / ahci_wait for the last command. */
    uint32_t last_is;
    uint32_t last_tfd;
};

struct ahci_hba {
    pci_bdf_t bdf;
    uintptr_t abar;
    uint32_t cap;
    uint32_t pi;
    unsigned nslots;
    unsigned long loops; /* default bound for waits */
};

extern struct ahci_hba ahci_hba;

/*
 * Command tables and the data area live at fixed physical addresses above
 * the image (not in .bss: every guest links the whole library, and a 37 MiB
 * .bss would have to be zeroed at every load): 4 MiB of command tables
 * (32 ports x 32 slots x 4 KiB) from 64 MiB, then a 33 MiB data area for
 * guests (65536-sector transfers at unaligned offsets), ending at 101 MiB.
 * ahci_find() checks that RAM covers them and that the image and the
 * multiboot data lie below.
 */
#define AHCI_HIGH_BASE (64u << 20)
#define AHCI_TABLES_BASE AHCI_HIGH_BASE
#define AHCI_TABLES_SIZE (AHCI_MAX_PORTS * AHCI_MAX_SLOTS * 4096u)
#define AHCI_DATA_AREA_BASE (AHCI_TABLES_BASE + AHCI_TABLES_SIZE)
#define AHCI_DATA_AREA_SIZE ((32u << 20) + (1u << 20))
#define AHCI_HIGH_END (AHCI_DATA_AREA_BASE + AHCI_DATA_AREA_SIZE)
#define ahci_data_area ((uint8_t *)AHCI_DATA_AREA_BASE)

/* A scatter-gather piece: physical address (word aligned) and byte count
 * (even, 2 .. 4 MiB). */
struct ahci_sg {
    uint64_t addr;
    uint32_t len;
};

/* An ATA command as the taskfile sees it. ahci_tf() fills the common case. */
struct ata_tf {
    uint8_t command;
    uint16_t features;
    uint64_t lba;
    uint16_t count; /* 0 means 256 (28-bit) or 65536 (48-bit) */
    uint8_t device;
    uint8_t control;
    uint8_t icc;
    uint16_t aux;
};

const char *ahci_strerror(int rc);

/* Register access */
uint32_t ahci_read(uint32_t off);
void ahci_write(uint32_t off, uint32_t value);
uint32_t ahci_port_read(const struct ahci_port *p, uint32_t off);
void ahci_port_write(const struct ahci_port *p, uint32_t off, uint32_t value);

/* Check the DMA area (AHCI_ENOMEM), find the HBA by PCI class 01/06/01,
 * enable memory decode and bus mastering, record BAR5 and CAP/PI, set up
 * the port structures. Does not reset. */
int ahci_find(void);
/* GHC.AE, then GHC.HR; wait for HR to clear; set GHC.AE again. */
int ahci_hba_reset(void);
/* ahci_find() + ahci_hba_reset(). */
int ahci_init(void);
/* Port n's structure (NULL if n is not implemented per PI). */
struct ahci_port *ahci_port(unsigned n);
/* ahci_port_setup() on every implemented port; bitmask of those ready. */
uint32_t ahci_start_ports(void);

/* Stop the port: clear ST and wait for CR to clear, then clear FRE and wait
 * for FR to clear. */
int ahci_port_stop(struct ahci_port *p);
/* Stop, point CLB/FB at the library's (zeroed) buffers and each slot's
 * CTBA at its table, clear SERR; if no link comes up (PxSSTS.DET != 3)
 * return AHCI_ENODEV with the port stopped; else set FRE, wait for the
 * device (ahci_port_wait_ready), clear SERR and IS, set ST. */
int ahci_port_setup(struct ahci_port *p);
/* SSTS.DET == 3 and TFD.STS BSY/DRQ clear, within `loops` polls;
 * AHCI_ENODEV if no device appears (DET still 0 after AHCI_LOOPS_NOLINK
 * polls, or not 3 after `loops`). */
int ahci_port_wait_ready(struct ahci_port *p, unsigned long loops);
/* Set ST (after checking FRE and the device being ready). */
int ahci_port_start(struct ahci_port *p);
/* 1 if PxSSTS.DET says a device is present with the Phy up. */
int ahci_port_has_device(const struct ahci_port *p);
/* COMRESET through PxSCTL.DET (port must be stopped: ST clear), then wait
 * for the device and clear PxSERR. FRE is left as it was. */
int ahci_port_comreset(struct ahci_port *p);
/* Error recovery (AHCI 6.2.2): clear ST and wait CR; clear SERR and IS;
 * if BSY or DRQ is still set, CLO (CAP.SCLO) or else COMRESET; set ST. */
int ahci_port_recover(struct ahci_port *p);
/* Spin for about `n` register reads (a delay with no timer). */
void ahci_delay(unsigned long n);

/* Build and issue commands */
/* A taskfile for `command` with the LBA placed as the command wants. */
struct ata_tf ahci_tf(uint8_t command, uint64_t lba, uint32_t count);
/* Fill a 20-byte Register H2D FIS (C bit set) from a taskfile; 28-bit
 * commands put LBA 27:24 in the device register and leave the expanded
 * fields zero. */
void ahci_fis_h2d(uint8_t *cfis, const struct ata_tf *tf);
/* Split [buf, buf+len) into PRD pieces of at most 4 MiB; returns the number
 * of pieces, or AHCI_EINVAL if more than `max` are needed. */
int ahci_sg_from_buf(void *buf, uint32_t len, struct ahci_sg *sg, unsigned max);
/* Command header + table for `slot`: the FIS from tf, CFL 5, W from the
 * command (or AHCI_CMDH_W in hdr_flags), extra header flags (P, C, ...),
 * PRDT from sg (prd_flags ORed into each DBC, e.g. AHCI_PRD_I); PRDBC = 0. */
int ahci_cmd_build(struct ahci_port *p, unsigned slot, const struct ata_tf *tf,
                   uint16_t hdr_flags, const struct ahci_sg *sg, unsigned nsg, uint32_t prd_flags);
/* Write PxCI with `mask` (the slots must be built). */
void ahci_issue(struct ahci_port *p, uint32_t mask);
/* Poll until the slots in ci_mask are clear in PxCI and those in sact_mask
 * clear in PxSACT, or an error bit (PXIS_ERRORS) is set, or `loops` polls
 * have passed. Records last_is / last_tfd. Returns AHCI_OK, AHCI_ETIMEOUT,
 * AHCI_ETASKFILE, AHCI_EHOSTBUS or AHCI_EIFACE; AHCI_EERR if the wait
 * succeeded but PxTFD.STS.ERR is set. */
int ahci_wait(struct ahci_port *p, uint32_t ci_mask, uint32_t sact_mask, unsigned long loops);
/* Clear PxIS, issue `slot`, wait with the default bound. */
int ahci_cmd_run(struct ahci_port *p, unsigned slot);
/* Build on slot 0 and run. */
int ahci_exec(struct ahci_port *p, const struct ata_tf *tf, const struct ahci_sg *sg,
              unsigned nsg);
/* Read or write `nsect` sectors (1 .. 65536) at `lba` with `command`
 * (any of the DMA, PIO, MULTIPLE or READ VERIFY commands) into/from buf. */
int ahci_rw(struct ahci_port *p, uint8_t command, uint64_t lba, uint32_t nsect, void *buf);
/* Bytes the HBA reports transferred for slot (PRDBC). */
uint32_t ahci_prdbc(const struct ahci_port *p, unsigned slot);

/* IDENTIFY DEVICE into a 512-byte buffer. */
int ahci_identify(struct ahci_port *p, uint16_t *id);
/* Capacity from IDENTIFY data: words 100-103 if 48-bit is supported, else
 * words 60-61. */
uint64_t ata_id_sectors(const uint16_t *id);
/* Copy an IDENTIFY string (byte-swapped words) to out (2 * nwords + 1
 * bytes), trimming trailing spaces. */
void ata_id_string(const uint16_t *id, unsigned word, unsigned nwords, char *out);

/* NCQ (First-party DMA queued) */
/* READ/WRITE FPDMA QUEUED for `tag` on slot `tag`. */
int ahci_ncq_build(struct ahci_port *p, unsigned tag, uint8_t command, uint64_t lba, uint32_t nsect,
                   const struct ahci_sg *sg, unsigned nsg);
/* PxSACT = mask, then PxCI = mask. */
void ahci_ncq_issue(struct ahci_port *p, uint32_t mask);
/* READ LOG EXT of log page 10h (NCQ Command Error) into 512 bytes. */
int ahci_read_ncq_error_log(struct ahci_port *p, uint8_t *buf);

/* Test data: qword i of sector L holds (tag << 56) | (L << 8) | i. The same
 * pattern is produced by tests/support/disks.py. */
uint64_t ahci_pattern_qword(uint8_t tag, uint64_t lba, unsigned i);
void ahci_pattern_fill(void *buf, uint64_t lba, uint32_t nsect, uint8_t tag);
/* -1 if buf holds the pattern; else the index of the first bad qword. */
long ahci_pattern_check(const void *buf, uint64_t lba, uint32_t nsect, uint8_t tag);
/* -1 if all zero, else the index of the first non-zero byte. */
long ahci_zero_check(const void *buf, uint32_t len);

#endif
