"""A write the host fails (disk full, I/O error) is ABRT to the guest and one line on stderr."""

import errno
import os

import pytest

from emu.ata import AtaDisk
from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT
from emu.storage import ops
from emu.storage.chain import open_chain

from .helpers import issue, pattern, taskfile

MiB = 1 << 20


def write_dma(lba: int) -> object:
    return taskfile(Command.WRITE_DMA_EXT, lba=lba, count=1)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_a_host_write_failure_aborts_and_names_the_file_once(tmp_path, monkeypatch, capsys, code):
    path = ops.create_image(str(tmp_path / "d.vdi"), 4 * MiB)
    real = os.pwritev

    def full(fd, buffers, offset):
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            raise OSError(code, os.strerror(code))
        return real(fd, buffers, offset)

    with open_chain(path) as chain:
        disk = AtaDisk(chain)
        monkeypatch.setattr(os, "pwritev", full)
        outcomes = [issue(disk, write_dma(lba), pattern(1)) for lba in (0, 2048, 4096)]
        monkeypatch.setattr(os, "pwritev", real)
        assert [o.completion.error for o in outcomes] == [ERROR_ABRT] * 3
        assert issue(disk, write_dma(8), pattern(1)).ok  # the host has room again
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # once per disk and kind of failure, not per command
    assert err.startswith("ahci-emu: warning: a guest write failed: ")
    assert path in err and os.strerror(code) in err


def test_a_read_only_medium_aborts_writes_silently(tmp_path, capsys):
    path = ops.create_image(str(tmp_path / "d.vdi"), 4 * MiB)
    with open_chain(path, read_only=True) as chain:
        out = issue(AtaDisk(chain), write_dma(0), pattern(1))
    assert out.completion.error == ERROR_ABRT
    assert capsys.readouterr().err == ""
