"""Output files never clobber an image or a machine's file (issue 10, item 3).

`--serial FILE`, `--trace FILE` and the new files of `image create`, `diff` and `convert`
refuse, in one line with exit status 1 and no byte changed, a FILE that is an
image in use (locked by this or another run), a VDI, a machine's machine.json,
anything in a machine's Snapshots/, or a medium a machine beside it registers.
"""

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.vm import Machine

MiB = 1 << 20


@pytest.fixture
def world(tmp_path):
    """The machine vm on base.vdi and disk.img (raw); disk.vdi and loose.vdi, no machine's."""
    for name in ("base.vdi", "disk.vdi", "loose.vdi", "disk.img", "held.img"):
        fmt = "raw" if name.endswith(".img") else "vdi"
        ops.create_image(str(tmp_path / name), 4 * MiB, fmt=fmt, variant="dynamic")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, str(tmp_path / "disk.img"), "writethrough")
        vm.attach(1, str(tmp_path / "base.vdi"), "immutable")
    (tmp_path / "notes.txt").write_text("old notes")
    return tmp_path


def refused(ahci_emu, tree_state, root, argv, match):
    before = tree_state(root)
    status, out, err = ahci_emu(*argv)
    assert (status, out) == (1, ""), err
    assert err.count("\n") == 1 and err.startswith("ahci-emu: error: "), err
    assert match in err, err
    assert tree_state(root) == before


def diff_of(world):
    return next((world / "vm" / "Snapshots").iterdir())


@pytest.mark.parametrize("option", ["--serial", "--trace"])
@pytest.mark.parametrize(
    "disk, target, match",
    [
        ("disk.vdi", "disk.vdi", "an image in use"),  # the run's own disk
        ("disk.img", "disk.img", "a medium of machine"),  # raw: known by its machine
        ("loose.vdi", "disk.vdi", "a VDI image"),
        ("loose.vdi", "base.vdi", "a medium of machine"),
        ("loose.vdi", "vm/machine.json", "the machine file of"),
        ("loose.vdi", "vm/Snapshots/new.txt", "a file in the Snapshots folder of machine"),
    ],
)
def test_run_outputs_never_overwrite_an_image_or_machine_file(
    world, ahci_emu, tree_state, option, disk, target, match
):
    argv = ["run", "hello", "--disk", world / disk, option, world / target]
    refused(ahci_emu, tree_state, world, argv, f"{option} {world / target}: refusing to overwrite")
    refused(ahci_emu, tree_state, world, argv, match)


def test_an_image_another_run_holds_is_not_overwritten(world, ahci_emu, tree_state):
    with open_chain(str(world / "held.img")):  # a raw disk of another run, locked
        argv = ["run", "hello", "--serial", world / "held.img"]
        refused(ahci_emu, tree_state, world, argv, "an image in use (locked")


def test_a_machines_diff_is_not_overwritten(world, ahci_emu, tree_state):
    argv = ["run", "hello", "--trace", diff_of(world)]
    refused(ahci_emu, tree_state, world, argv, "a file in the Snapshots folder")


def test_a_plain_file_is_still_an_output(world, ahci_emu):
    status, out, err = ahci_emu("run", "hello", "--serial", world / "notes.txt")
    assert (status, out, err) == (0, "", "")
    assert "hello" in (world / "notes.txt").read_text().lower()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["image", "create", "{w}/vm/Snapshots/new.vdi", "--size", "1M"], "in the Snapshots"),
        (["image", "create", "{w}/vm/machine.json", "--size", "1M"], "the machine file of"),
        (["image", "diff", "{w}/loose.vdi", "{w}/vm/Snapshots/{{x}}.vdi"], "in the Snapshots"),
        (["image", "convert", "{w}/loose.vdi", "{w}/vm/Snapshots/x.raw", "-O", "raw"], "Snapshots"),
        (["image", "convert", "{w}/loose.vdi", "{w}/disk.img", "-O", "raw"], "a medium of machine"),
        (["image", "convert", "{w}/loose.vdi", "{w}/disk.vdi", "-O", "vdi"], "a VDI image"),
    ],
)
def test_image_destinations_never_overwrite_an_image_or_machine_file(
    world, ahci_emu, tree_state, argv, match
):
    refused(ahci_emu, tree_state, world, [a.format(w=world) for a in argv], match)
