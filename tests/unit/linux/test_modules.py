"""Module stacks resolved from a kernel tree's modules.dep, softdep and alias files."""

import lzma

import pytest

from emu.linuxkit.material import MaterialError
from emu.linuxkit.modules import ModuleTree, module_name


def make_tree(root, dep: str, softdep: str = "", alias: str = "", builtin: str = ""):
    root.mkdir(parents=True, exist_ok=True)
    (root / "modules.dep").write_text(dep)
    (root / "modules.softdep").write_text(softdep)
    (root / "modules.alias").write_text(alias)
    (root / "modules.builtin").write_text(builtin)
    for line in dep.splitlines():
        path = root / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"ELF of {path.name}".encode()
        path.write_bytes(lzma.compress(data) if path.name.endswith(".xz") else data)
    return ModuleTree(root)


# The shape of Debian 12's: full transitive lists, as depmod writes them.
DEP = """\
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko \
kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko \
kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/other/unrelated.ko: kernel/lib/crc16.ko
"""
SOFTDEP = "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"
ALIAS = (
    "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n"
    "alias pci:v00008086d*sv*sd*bc01sc06i01* ahci\n"
)


def test_every_module_comes_after_what_it_needs(tmp_path):
    tree = make_tree(tmp_path / "6.1.0-test", DEP, SOFTDEP, ALIAS)
    names = [m.name for m in tree.resolve(["ahci"])]
    assert names == ["scsi_common", "scsi_mod", "libata", "libahci", "ahci"]


def test_soft_dependencies_through_aliases_are_optional(tmp_path):
    tree = make_tree(tmp_path / "k", DEP, SOFTDEP, ALIAS)
    stack = tree.resolve(["ext4"])
    assert [(m.name, m.optional) for m in stack] == [
        ("crc32c_intel", True),
        ("crc32c_generic", True),
        ("crc16", False),
        ("jbd2", False),
        ("ext4", False),
    ]
    assert "unrelated" not in [m.name for m in stack]


def test_a_module_wanted_for_real_is_no_longer_optional(tmp_path):
    tree = make_tree(tmp_path / "k", DEP, SOFTDEP, ALIAS)
    stack = tree.resolve(["ext4", "crc32c_generic"])
    assert {m.name: m.optional for m in stack}["crc32c_generic"] is False
    assert len(stack) == len({m.name for m in stack})


def test_compressed_modules_are_unpacked_on_the_host(tmp_path):
    tree = make_tree(tmp_path / "k", DEP, SOFTDEP, ALIAS)
    ext4 = next(m for m in tree.resolve(["ext4"]) if m.name == "ext4")
    assert ext4.path.name == "ext4.ko.xz"
    assert ext4.image() == b"ELF of ext4.ko.xz"


def test_dashes_and_underscores_name_the_same_module(tmp_path):
    tree = make_tree(tmp_path / "k", DEP, SOFTDEP, ALIAS)
    assert [m.name for m in tree.resolve(["crc32c-intel"])] == ["crc32c_intel"]
    assert module_name("kernel/lib/crc-t10dif.ko.xz") == "crc_t10dif"


def test_builtin_modules_need_nothing_and_unknown_ones_are_refused(tmp_path):
    tree = make_tree(tmp_path / "k", DEP, builtin="kernel/drivers/ata/ata_piix.ko\n")
    assert tree.resolve(["ata_piix"]) == []
    with pytest.raises(MaterialError, match="no module nosuch"):
        tree.resolve(["nosuch"])


def test_a_tree_without_modules_dep_says_to_run_depmod(tmp_path):
    with pytest.raises(MaterialError, match="depmod"):
        ModuleTree(tmp_path)
