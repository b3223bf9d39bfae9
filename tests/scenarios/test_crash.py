"""A crash between the guest's write and its FLUSH: every flushed generation survives.

The gen guest loops: write a range with a new generation, FLUSH CACHE EXT, print
``gen: flushed ... generation G``, next. ``ahci-emu vm run`` is killed with
SIGKILL after some of those lines (so mostly while a write is in flight or
between a write and its flush); then the machine is opened again. Everything the
guest printed as flushed must be on the disk, a later write may or may not be,
and ``ahci-emu image check`` must find no corruption (leaks are allowed: a block
written but never flushed into the map).
"""

from __future__ import annotations

import signal

import pytest

from emu.testing import gen_lines, lost_generations

SECTORS = 8192  # 4 MiB: four VDI blocks
COUNT = 24  # sectors per generation: some writes straddle a block boundary


def kill_after(proc, flushed_lines: int) -> str:
    """Read the guest's output until ``flushed_lines`` flushed generations; SIGKILL;
    everything the guest printed (the output is unbuffered)."""
    lines = []
    flushed = 0
    while flushed < flushed_lines:
        line = proc.stdout.readline().decode()
        assert line, f"ahci-emu ended early: {proc.stderr.read().decode()}\n{''.join(lines)}"
        lines.append(line)
        flushed += line.startswith("gen: flushed")
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return "".join(lines) + out.decode()


@pytest.mark.parametrize("kill_at", [1, 37, 420])  # 420 > 341 ranges: the loop has wrapped
def test_sigkill_in_a_write_flush_loop_keeps_every_flushed_generation(ahci, kill_at):
    vm = ahci.machine("vm")
    base = ahci.image("vm/disk.vdi", "4M")  # in the machine folder: image check finds it
    vm.attach(0, base)
    vm.run(ops="write:0:2048:1").assert_ok()  # one block in the base ...
    vm.take("s1")  # ... and the rest lands in a diff: new blocks, map updates
    leaf = vm.leaf(0)

    proc = ahci.spawn("vm", "run", vm.folder, "gen", f"--append=ops=loop:0:{COUNT}:2*60000")
    transcript = kill_after(proc, kill_at)
    assert proc.returncode == -signal.SIGKILL
    flushed = [r for is_flushed, r in gen_lines(transcript) if is_flushed]
    assert len(flushed) >= kill_at
    assert [r.generation for r in flushed] == list(range(2, 2 + len(flushed)))

    check = ahci.cli("image", "check", leaf)
    assert check.returncode in (0, 3), check.stdout + check.stderr  # 3: leaks only

    run = vm.run(ops=f"read:0:{SECTORS}")  # the machine opened again, the guest reads it all
    run.assert_ok()
    assert lost_generations(flushed, run.generations) == []
    assert vm.generations(0, 0, SECTORS) == run.generations  # the host reads the same
    # Nothing but generation markers: no torn sector, no garbage from a leaked block.
    assert all(r.generation is not None for r in run.generations), run.generations
    # Beyond the reach of every write that landed: the snapshot's data (generation 1 in
    # block 0, zeros after it), unless the loop wrapped around.
    top = max(r.generation for r in run.generations)
    reach = (top - 1) * COUNT
    if top - 2 < SECTORS // COUNT:
        for lba in (reach, 2047, 2048, SECTORS - 1):
            if lba >= reach:
                assert run.generation_at(lba) == (1 if lba < 2048 else 0), lba

    again = ahci.cli("image", "check", leaf)
    assert again.returncode in (0, 3), again.stdout + again.stderr
