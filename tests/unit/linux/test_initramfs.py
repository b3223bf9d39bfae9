"""The test initramfs built from the fetched material, and transcripts split by /init."""

import pytest
from support.newc import parse_newc

from emu.linuxkit.initramfs import (
    DMESG_BEGIN,
    DMESG_END,
    MISSING_DISKS,
    MISSING_DISKS_STATUS,
    SCRIPT_BEGIN,
    SCRIPT_END,
    build_initramfs,
    init_script,
)
from emu.linuxkit.transcript import split
from emu.testing.linux_plugin import require_material


def test_transcript_parts():
    transcript = "\n".join(
        [
            "[    0.000000] Linux version 6.1",
            "ahci-emu-init: 1 of 1 disks after 3 waits",
            SCRIPT_BEGIN,
            "size=131072",
            "[    4.100000] sd 0:0:0:0: [sda] Synchronizing SCSI cache",
            "done",
            f"{SCRIPT_END}3",
            DMESG_BEGIN,
            "[    0.000000] Linux version 6.1",
            "[    4.000000] ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)",
            DMESG_END,
            "",
        ]
    )
    parts = split(transcript.replace("\n", "\r\n"))
    assert parts.output == ["size=131072", "done"]
    assert parts.status == 3
    assert parts.dmesg[1].endswith("SATA link up 1.5 Gbps (SStatus 113 SControl 300)")
    assert parts.notes == ["ahci-emu-init: 1 of 1 disks after 3 waits"]


def test_a_script_that_never_ended_has_no_status():
    parts = split(f"{SCRIPT_BEGIN}\nstarted\n")
    assert parts.output == ["started"] and parts.status is None and parts.dmesg == []


def test_init_waits_for_the_disks_and_exits_through_port_0xf4():
    text = init_script(3)
    assert text.startswith("#!/bin/busybox sh\n")
    assert "-lt 3 ]" in text
    assert "of=/dev/port bs=1 seek=244 count=1" in text  # 244 = 0xF4
    assert text.index("sh /script") < text.index("dmesg") < text.index("of=/dev/port")


def test_init_does_not_run_the_script_without_its_disks():
    text = init_script(2)
    missing = text.index(MISSING_DISKS)
    assert f"status={MISSING_DISKS_STATUS}" in text[missing:]
    assert missing < text.index("sh /script")  # the script runs on the other branch only
    assert MISSING_DISKS_STATUS < 123  # below ahci-emu's own exit statuses


def test_a_transcript_with_missing_disks_says_so():
    parts = split(f"{MISSING_DISKS} 0 of 1 after 30 s; the script did not run\n{DMESG_BEGIN}\n")
    assert parts.disks_missing and parts.status is None and parts.output == []
    assert not split(f"{SCRIPT_BEGIN}\n{SCRIPT_END}0\n").disks_missing


def test_the_archive_holds_busybox_the_stack_in_order_and_the_script(tmp_path):
    material = require_material()
    out = tmp_path / "initrd.cpio"
    stack = build_initramfs(material, "echo hi\n", out, disks=2, files={"data/x.bin": b"\1\2"})
    entries = {e["name"]: e for e in parse_newc(out.read_bytes())}
    names = [m.name for m in stack]
    assert {"ahci", "libahci", "libata", "sd_mod", "ext4", "jbd2"} <= set(names)
    assert names.index("libata") < names.index("libahci") < names.index("ahci")
    order = entries["lib/modules/load.order"]["data"].decode().splitlines()
    assert [line.split()[0] for line in order] == names
    for module in stack:
        assert entries[f"lib/modules/{module.name}.ko"]["data"][:4] == b"\x7fELF"
    assert entries["bin/busybox"]["data"] == material.busybox.read_bytes()
    assert entries["script"]["data"] == b"echo hi\n"
    assert entries["init"]["data"].decode() == init_script(2)
    assert entries["data/x.bin"]["data"] == b"\1\2" and "data" in entries
    assert entries["dev/console"]["rdev"] == (5, 1)


@pytest.mark.parametrize("bad", [["nosuch"]])
def test_an_unknown_module_is_refused_before_anything_is_written(tmp_path, bad):
    from emu.linuxkit.material import MaterialError

    material = require_material()
    with pytest.raises(MaterialError):
        build_initramfs(material, "true\n", tmp_path / "x.cpio", modules=bad)
    assert not (tmp_path / "x.cpio").exists()
