"""`ahci-emu linux`: one-line errors, and an initrd built from the fetched material."""

import pytest
from support.newc import parse_newc

from emu.cli import main
from emu.linuxkit.material import ENV
from emu.testing.linux_plugin import require_material


def test_without_material_every_action_says_how_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, str(tmp_path / "empty"))
    for argv in (["linux", "info"], ["linux", "initrd", str(tmp_path / "i.cpio")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run `ahci-emu linux fetch`" in err
    assert not (tmp_path / "i.cpio").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--script", "/nonexistent/test.sh"], "cannot read the script"),
        (["--module", "nosuch"], "has no module nosuch"),
        (["--disks", "-1"], "--disks must be 0 or more"),
    ],
)
def test_bad_initrd_arguments_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    require_material()
    out = tmp_path / "i.cpio"
    assert main(["linux", "initrd", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_initrd_with_a_script_and_info(tmp_path, capsys):
    material = require_material()
    script = tmp_path / "t.sh"
    script.write_text("echo from-the-script\n")
    out = tmp_path / "i.cpio"
    assert main(["linux", "initrd", str(out), "--script", str(script), "--module", "ahci"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{out}: busybox, 5 modules (scsi_common scsi_mod libata libahci ahci)")
    entries = {e["name"]: e["data"] for e in parse_newc(out.read_bytes())}
    assert entries["script"] == b"echo from-the-script\n"
    assert main(["linux", "info", "--kernel"]) == 0
    assert capsys.readouterr().out == f"{material.kernel}\n"
