"""LinuxRig without a boot: QEMU's raw copy written back into the leaf, LinuxRun's parts."""

import pytest
from support.linux_disks import MIB, block_states, chain_bytes, sha256

from emu.linuxkit.initramfs import DMESG_BEGIN, DMESG_END, SCRIPT_BEGIN, SCRIPT_END
from emu.storage import ops
from emu.storage.image import BlockState
from emu.testing import Rig
from emu.testing.linux import LinuxRig, LinuxRun, write_back


def test_write_back_changes_only_the_leaf_and_only_what_differs(tmp_path):
    rig = Rig(tmp_path)
    base = rig.image("base.vdi", "8M")
    rig.fill(base, 0, 8 * MIB // 512, 1)
    leaf = rig.diff(base, "leaf.vdi")
    base_file = sha256(base.read_bytes())
    raw = tmp_path / "copy.img"
    ops.convert(str(leaf), str(raw), fmt="raw")
    with open(raw, "r+b") as f:  # what a guest under QEMU did to its copy
        f.seek(3 * MIB + 512)
        f.write(b"x" * 512)
        f.seek(6 * MIB)
        f.write(bytes(MIB))  # a discarded block: zeros over the base's data
    assert write_back(raw, leaf) == 4096 + MIB
    assert chain_bytes(leaf, 0, 8 * MIB) == raw.read_bytes()
    assert sha256(base.read_bytes()) == base_file
    states = block_states(leaf)
    assert [n for n, s in enumerate(states) if s != BlockState.ABSENT] == [3, 6]
    assert write_back(raw, leaf) == 0  # nothing differs any more


def test_a_run_is_taken_apart_by_init_s_lines():
    transcript = (
        f"[    1.0] early\n{SCRIPT_BEGIN}\nsize=128\n[    2.0] interleaved\nmodel=X Y\n"
        f"{SCRIPT_END}0\n{DMESG_BEGIN}\n[    0.5] ata1: SATA link up 1.5 Gbps\n{DMESG_END}\n"
    )
    run = LinuxRun("linux", "emu", ["ahci-emu"], 0, transcript)
    assert run.passed and run.problems == []
    assert run.values() == {"size": "128", "model": "X Y"}
    assert run.messages("ata1", "link up") == ["[    0.5] ata1: SATA link up 1.5 Gbps"]
    failed = LinuxRun("linux", "qemu", ["qemu"], 3, transcript.replace(f"{SCRIPT_END}0", ""))
    assert not failed.passed and failed.status is None
    with pytest.raises(AssertionError, match="Linux guest run failed"):
        failed.assert_ok()


def test_disks_and_a_machine_folder_do_not_go_together(tmp_path):
    rig = Rig(tmp_path)
    linux = LinuxRig(rig, material=None)  # refused before the material is needed
    with pytest.raises(ValueError, match="not both"):
        linux.boot("true", rig.image("d.img", "1M"), vm=rig.machine("vm"))
    with pytest.raises(ValueError, match="backend"):
        linux.boot("true", backend="bochs")
