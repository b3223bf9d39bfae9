"""The newc writer, read back by a parser written from the format's description."""

import stat

import pytest
from support.newc import parse_newc

from emu.linuxkit.cpio import NewcArchive


def test_entries_read_back_with_their_modes_data_and_devices():
    archive = NewcArchive()
    archive.directory("bin")
    archive.file("bin/tool", b"\x7fELF" + bytes(range(7)), 0o755)  # odd length: padded
    archive.symlink("bin/sh", "tool")
    archive.char_device("dev/console", 5, 1)
    blob = archive.to_bytes()
    assert len(blob) % 512 == 0
    entries = parse_newc(blob)
    assert [e["name"] for e in entries] == ["bin", "bin/tool", "bin/sh", "dev/console"]
    assert stat.S_ISDIR(entries[0]["mode"]) and entries[0]["nlink"] == 2
    assert entries[1]["mode"] == stat.S_IFREG | 0o755 and entries[1]["data"] == b"\x7fELF" + bytes(
        range(7)
    )
    assert stat.S_ISLNK(entries[2]["mode"]) and entries[2]["data"] == b"tool"
    assert stat.S_ISCHR(entries[3]["mode"]) and entries[3]["rdev"] == (5, 1)
    assert len({e["ino"] for e in entries}) == 4  # distinct inodes: no accidental hard links


def test_same_input_same_bytes():
    def build():
        a = NewcArchive()
        a.file("init", b"#!/bin/sh\n", 0o755)
        return a.to_bytes()

    assert build() == build()


@pytest.mark.parametrize("name", ["", "/", "TRAILER!!!", "x"])
def test_bad_or_repeated_names_are_refused(name):
    archive = NewcArchive()
    archive.file("x", b"")
    with pytest.raises(ValueError):
        archive.file(name, b"")
