"""AHCI 1.3.1 register offsets and bits (section 3), named as in the spec."""

# Generic host control (3.1), offsets in ABAR.
CAP = 0x00
GHC = 0x04
IS = 0x08
PI = 0x0C
VS = 0x10
CCC_CTL = 0x14
CCC_PORTS = 0x18
EM_LOC = 0x1C
EM_CTL = 0x20
CAP2 = 0x24
BOHC = 0x28

PORT_BASE = 0x100
PORT_STRIDE = 0x80
ABAR_SIZE = 0x1000

# Port registers (3.3), offsets within a port's 0x80 bytes.
PxCLB = 0x00
PxCLBU = 0x04
PxFB = 0x08
PxFBU = 0x0C
PxIS = 0x10
PxIE = 0x14
PxCMD = 0x18
PxTFD = 0x20
PxSIG = 0x24
PxSSTS = 0x28
PxSCTL = 0x2C
PxSERR = 0x30
PxSACT = 0x34
PxCI = 0x38
PxSNTF = 0x3C
PxFBS = 0x40

# CAP bits.
CAP_S64A = 1 << 31
CAP_SNCQ = 1 << 30
CAP_ISS_GEN1 = 1 << 20
CAP_SAM = 1 << 18  # AHCI mode only: GHC.AE is read-only one

# GHC bits.
GHC_HR = 1 << 0
GHC_IE = 1 << 1
GHC_AE = 1 << 31

VS_AHCI_1_0 = 0x00010000  # what q35's ICH9 reports

# PxIS / PxIE bits.
IS_DHRS = 1 << 0
IS_PSS = 1 << 1
IS_DSS = 1 << 2
IS_SDBS = 1 << 3
IS_UFS = 1 << 4
IS_DPS = 1 << 5
IS_PCS = 1 << 6
IS_DMPS = 1 << 7
IS_PRCS = 1 << 22
IS_IPMS = 1 << 23
IS_OFS = 1 << 24
IS_INFS = 1 << 26
IS_IFS = 1 << 27
IS_HBDS = 1 << 28
IS_HBFS = 1 << 29
IS_TFES = 1 << 30
IS_CPDS = 1 << 31
# Write-one-to-clear bits of PxIS; UFS, PCS and PRCS mirror SERR/PHY state (read-only).
IS_RW1C = 0xFDC000FF & ~(IS_UFS | IS_PCS | IS_PRCS)
# PxIE: DMPE needs CAP.SMPS and CPDE needs CAP.SCPD, neither of which we report.
IE_WRITABLE = 0xFDC000FF & ~(IS_DMPS | IS_CPDS)
IS_FATAL = IS_HBFS | IS_HBDS | IS_IFS | IS_TFES | IS_OFS

# PxCMD bits.
CMD_ST = 1 << 0
CMD_SUD = 1 << 1
CMD_POD = 1 << 2
CMD_CLO = 1 << 3
CMD_FRE = 1 << 4
CMD_CCS_SHIFT = 8
CMD_CCS_MASK = 0x1F << 8
CMD_FR = 1 << 14
CMD_CR = 1 << 15
CMD_ATAPI = 1 << 24
CMD_DLAE = 1 << 25
CMD_ICC_SHIFT = 28
# Bits software may write and read back: ST, FRE, ATAPI, DLAE (CLO and ICC act and clear).
CMD_WRITABLE = CMD_ST | CMD_FRE | CMD_ATAPI | CMD_DLAE

# PxTFD.
TFD_STS_ERR = 0x01
TFD_STS_DRQ = 0x08
TFD_STS_BSY = 0x80

# PxSSTS / PxSCTL.
SSTS_DET_PRESENT = 0x3  # device present, PHY communication established
SSTS_SPD_GEN1 = 0x1 << 4
SSTS_IPM_ACTIVE = 0x1 << 8
SCTL_DET_MASK = 0xF
SCTL_DET_COMRESET = 0x1
SCTL_WRITABLE = 0x000FFFFF  # DET, SPD, IPM, SPM, PMP; 31:20 reserved

# PxSERR: DIAG.X (exchanged) is set when a COMRESET finds a device.
SERR_DIAG_X = 1 << 26
SERR_DIAG_N = 1 << 16
SERR_RW1C = 0x07FF0F03  # ERR I, M, T, C, P, E and DIAG N..X

SIG_ATA = 0x00000101
SIG_NONE = 0xFFFFFFFF
