"""The sanitizer's rules: what a driver must not do to an AHCI port, with the spec section."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    section: str  # "AHCI 1.3.1 §3.3.1", ...
    summary: str  # one line for README and --help


_AHCI = "AHCI 1.3.1 §"

RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("clb-while-running", _AHCI + "3.3.1",
             "PxCLB/PxCLBU written while PxCMD.CR is set"),
        Rule("fb-while-receiving", _AHCI + "3.3.3",
             "PxFB/PxFBU written while PxCMD.FR is set"),
        Rule("start-without-fre", _AHCI + "10.3.1",
             "PxCMD.ST set while PxCMD.FRE is clear"),
        Rule("start-while-running", _AHCI + "10.3.1",
             "PxCMD.ST set while PxCMD.CR is still set from a stop"),
        Rule("start-without-device", _AHCI + "10.3.1",
             "PxCMD.ST set while the attached device is not ready (PxTFD BSY or DRQ, or "
             "PxSSTS.DET 1 or 4); a port with nothing attached (DET 0) is left alone"),
        Rule("bad-cfl", _AHCI + "4.2.2",
             "a command issued whose header's CFL is below 5 or above 16 dwords (§4.2.2 makes 0, 1 "
             "and over 16 illegal; a Register H2D FIS is 5 dwords long)"),
        Rule("odd-prd-byte-count", _AHCI + "4.2.3.3",
             "a PRD entry's byte count is odd (DBC bit 0 must be 1)"),
        Rule("misaligned-command-table", _AHCI + "4.2.2",
             "a command table (CTBA) not 128-byte aligned"),
        Rule("misaligned-command-list", _AHCI + "3.3.1",
             "a command list (PxCLB) not 1 KiB aligned"),
        Rule("misaligned-fis-area", _AHCI + "3.3.3",
             "a received-FIS area (PxFB) not 256-byte aligned"),
        Rule("reissued-slot", _AHCI + "3.3.14",
             "a slot issued again while its PxCI bit is still set"),
        Rule("mixed-queueing", "ATA8-ACS NCQ feature set, " + _AHCI + "3.3.13",
             "queued and non-queued commands outstanding together"),
        Rule("sact-without-ci", _AHCI + "3.3.13",
             "PxSACT bits written without the matching PxCI bits (or a queued command "
             "issued without its PxSACT bit)"),
        Rule("ncq-tag-mismatch", _AHCI + "3.3.13",
             "an NCQ command whose tag differs from its slot"),
        Rule("issue-while-halted", _AHCI + "6.2.2",
             "a command issued while the port is halted on an error that software has seen "
             "(read PxIS or PxTFD) and not cleared (PxCMD.ST not cycled)"),
        Rule("prdtl-zero", _AHCI + "4.2.2",
             "a data-transfer command with PRDTL 0"),
        Rule("bad-command-fis", _AHCI + "4.2.3.1",
             "a command FIS that is not a Register H2D FIS with the C bit set (outside the "
             "software reset of §10.4.1)"),
    )
}  # fmt: skip
