"""Boot a guest on a two-image chain and check what it read (and what the files hold).

With ahci-emu installed (`pip install .` in its checkout), pytest loads its plugin,
which provides the `ahci` fixture and the `ahci_oracle` marker.
"""

import pytest


@pytest.mark.ahci_oracle  # run it on ahci-emu and on QEMU q35 (skipped without QEMU)
def test_guest_reads_through_a_two_image_chain(ahci):
    base = ahci.image("base.vdi", "4M")  # a dynamic VDI in this test's own folder
    ahci.fill(base, 0, 128, 1)  # generation 1 on LBA 0..127, written from the host
    top = ahci.diff(base, "top.vdi")  # a differencing image on top of it
    ahci.fill(top, 64, 32, 2)  # generation 2 on LBA 64..95, in the diff only

    run = ahci.run("gen", top, ops=["check:0:64:1", "check:64:32:2", "read:0:256"])

    assert run.exit_code == 0, run  # a failing assert shows the whole transcript
    assert not run.failed  # each guest check is also reported as its own subtest
    assert [str(r) for r in run.generations[-4:]] == [
        "port 0 lba 0..63 generation 1",
        "port 0 lba 64..95 generation 2",
        "port 0 lba 96..127 generation 1",
        "port 0 lba 128..255 generation 0",
    ]


def test_guest_writes_land_in_the_diff_only(ahci):
    base = ahci.image("base.vdi", "4M")
    ahci.fill(base, 0, 128, 1)
    top = ahci.diff(base, "top.vdi")

    run = ahci.run("gen", top, ops=["write:100:8:3", "read:96:16"], trace=True)

    assert run.passed, run
    assert [r.generation for r in run.generations] == [1, 3, 1]  # what the guest read
    assert [r.generation for r in ahci.generations(top, 96, 16)] == [1, 3, 1]  # the chain
    assert [r.generation for r in ahci.generations(base, 96, 16)] == [1]  # base untouched
    last_read = run.commands(0x25)[-1]  # READ DMA EXT, from --trace
    assert last_read["sources"] == [[96 * 512, 16 * 512, str(top)]]  # served by the diff
