"""The fault and sanitizer options of `run` and `vm run` as a user meets them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def ahci_emu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("command", [["run"], ["vm", "run", "no-such-machine"]])
def test_a_bad_spec_is_one_line_and_exit_2_before_anything_opens(command):
    proc = ahci_emu(*command, "--fault", "media-error:lba=7-3")
    assert proc.returncode == 2
    assert proc.stderr == (
        "ahci-emu: error: fault 'media-error:lba=7-3': lba range '7-3' ends before it starts\n"
    )
    assert proc.stdout == ""


def test_a_bad_fault_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "faults.toml"
    path.write_text("faults = [\n")
    proc = ahci_emu("run", "--faults", str(path))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"ahci-emu: error: {path}: not valid TOML")


def test_verbose_names_each_fault_that_fires(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    faults = tmp_path / "f.json"
    faults.write_text('["abrt:opcode=flush,nth=1"]')
    proc = ahci_emu(
        "run", "gen", "--disk", str(disk), "--append", "ops=write:0:8:1",
        "--faults", str(faults), "--verbose",
    )  # fmt: skip
    assert proc.returncode == 1  # the guest's one failed check
    assert "not ok 2 - port 0 write lba 0..7 generation 1" in proc.stdout
    assert proc.stderr == (
        "ahci-emu: fault: abrt:opcode=flush,nth=1: port 0, opcode 0xea, lba 0, count 0\n"
    )


def test_sanitize_reports_and_strict_stops_with_125(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(8 << 20))
    line = "ahci-emu: violation: issue-while-halted (AHCI 1.3.1 §6.2.2): PxCI written while"
    report = ahci_emu("run", "ahci_errors", "--disk", str(disk), "--sanitize")
    assert "\n1.." in report.stdout  # the guest ran to its end (its checks want a pattern)
    assert report.stderr.startswith(line) and len(report.stderr.splitlines()) == 1
    assert ", port 0 slot 1, EIP=0x" in report.stderr
    strict = ahci_emu("run", "ahci_errors", "--disk", str(disk), "--sanitize=strict")
    assert strict.returncode == 125
    assert strict.stderr.splitlines()[0].startswith(line)
    assert strict.stderr.splitlines()[1:] == [
        "ahci-emu: error: stopped at the first violation (issue-while-halted, --sanitize=strict)"
    ]
    assert "halted port does not process" not in strict.stdout  # stopped at the write
    assert "\n1.." not in strict.stdout
