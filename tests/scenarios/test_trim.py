"""TRIM in a differencing image hides the parent's data, during the run and after reopen.

The guest sends DATA SET MANAGEMENT (TRIM); the stack discards: a whole block the
diff lacks becomes a ZERO entry in the diff's map, one it has is dropped in place,
a partial range is written as zeros. The parent is never touched.
"""

from __future__ import annotations

import hashlib
import json

from emu.testing import GenRange, expected

DSM = 0x06
CHECKS = [
    "check:0:100:1",
    "check:100:28:0",  # partial: zeros written into block 0 (copied up)
    "check:128:1920:1",
    "check:2048:2048:0",  # block 1, absent from the diff: a ZERO entry
    "check:4096:2048:1",
    "check:6144:2048:0",  # block 3, written in the diff first, then trimmed
]


def test_trim_in_a_diff_hides_the_parent_also_after_reopen(ahci):
    base = ahci.image("disk/base.vdi", "4M")
    ahci.fill(base, 0, 8192, 1)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    top = ahci.diff(base, "disk/top.vdi")
    ahci.run("gen", top, ops="write:6144:2048:2").assert_ok()

    run = ahci.run("gen", top, ops=["trim:2048:2048", "trim:100:28", "trim:6144:2048", *CHECKS],
                   trace=True)  # fmt: skip
    run.assert_ok()
    trims = run.commands(DSM)
    assert [(t["features"], t["status"], t["error"]) for t in trims] == [(1, 0x50, 0)] * 3

    again = ahci.run("gen", top, ops=CHECKS)  # a new process would see the same: reopened
    again.assert_ok()
    want = expected((0, 8192, 1), (100, 28, 0), (2048, 2048, 0), (6144, 2048, 0))
    assert ahci.generations(top, 0, 8192) == want
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    assert ahci.generations(base, 0, 8192) == [GenRange(0, 0, 8191, 1)]

    info = ahci.cli("image", "info", top, "--output", "json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["allocated"] == 2 << 20  # blocks 0 and 3 are mapped in the diff (1 is ZERO)
    assert facts["disk_size"] < 2 << 20  # but block 3's data was punched out of the file
    check = ahci.cli("image", "check", top)
    assert check.returncode == 0, check.stdout + check.stderr


def test_trim_in_a_machine_snapshot_is_undone_by_restore(ahci):
    vm = ahci.machine("vm")
    base = ahci.image("vm/disk.vdi", "4M")
    ahci.fill(base, 0, 4096, 1)
    vm.attach(0, base)
    vm.take("before")
    vm.run(ops="trim:0:4096,check:0:4096:0").assert_ok()
    vm.run(ops="check:0:4096:0").assert_ok()  # the machine started again: still zeros
    vm.restore("before")
    vm.run(ops="check:0:4096:1").assert_ok()
