"""Medium types seen from the guest: immutable disks reset at start, multi-attach bases
shared by machines that never see each other's writes."""

from __future__ import annotations

import hashlib
import signal

from emu.testing import GenRange, gen_lines, lost_generations

SIZE = "4M"
SYSTEM = "0:64"  # the "system area": LBA 0..63


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepared_base(ahci, name="system.vdi"):
    """A base image with generation 1 on the system area and 2048..2111."""
    base = ahci.image(name, SIZE)
    ahci.fill(base, 0, 64, 1)
    ahci.fill(base, 2048, 64, 1)
    return base


def test_immutable_disk_is_clean_again_at_every_start(ahci):
    base = prepared_base(ahci)
    digest = sha256(base)
    vm = ahci.machine()
    vm.attach(0, base, "immutable")

    run = vm.run(ops=f"check:{SYSTEM}:1,write:{SYSTEM}:9,check:{SYSTEM}:9,write:4096:8:9")
    run.assert_ok()
    scribbled = vm.leaf(0)
    assert vm.generations(0, 0, 64) == [GenRange(0, 0, 63, 9)]  # in the diff, after the run

    run = vm.run(ops=f"check:{SYSTEM}:1,check:2048:64:1,check:4096:8:0")
    run.assert_ok()
    assert not scribbled.exists(), "the old diff is deleted at the start"
    assert vm.chain(0)[1:] == [base]
    assert sha256(base) == digest, "an immutable base is never written"


def test_immutable_disk_without_autoreset_keeps_changes_until_reset(ahci):
    base = prepared_base(ahci)
    digest = sha256(base)
    vm = ahci.machine()
    vm.attach(0, base, "immutable", autoreset=False)

    vm.run(ops=f"write:{SYSTEM}:9").assert_ok()
    leaf = vm.leaf(0)
    vm.run(ops=f"check:{SYSTEM}:9,write:64:8:10").assert_ok()  # survived a start
    assert vm.leaf(0) == leaf
    vm.run(ops=f"check:{SYSTEM}:9,check:64:8:10").assert_ok()

    # Reset by hand: detaching drops the attachment's diff; attaching makes a clean one.
    vm.detach(0)
    assert not leaf.exists()
    vm.attach(0, base, "immutable", autoreset=False)
    vm.run(ops=f"check:{SYSTEM}:1,check:64:8:0").assert_ok()
    assert sha256(base) == digest


def test_immutable_disk_in_a_snapshot(ahci):
    """Taking a snapshot freezes the immutable attachment's diff; with autoreset the
    next start still goes back to the base (VirtualBox: the diff is reset to its
    parent, which is now the snapshot's frozen diff)."""
    base = prepared_base(ahci)
    vm = ahci.machine()
    vm.attach(0, base, "immutable")
    vm.run(ops="write:100:4:5").assert_ok()
    vm.take("s1")
    run = vm.run(ops="read:100:4")
    run.assert_ok()
    frozen = vm.chain(0)[1]
    assert run.generations == [GenRange(0, 100, 103, 5)]
    assert vm.generations(frozen, 100, 4) == [GenRange(0, 100, 103, 5)]


def test_multiattach_machines_see_their_own_writes_only(ahci):
    base = prepared_base(ahci, "shared.vdi")
    digest = sha256(base)
    mtime = base.stat().st_mtime_ns
    a, b = ahci.machine("a"), ahci.machine("b")
    a.attach(0, base, "multiattach")
    b.attach(0, base, "multiattach")
    assert a.leaf(0) != b.leaf(0)

    a.run(ops="write:0:32:2,write:3000:8:2").assert_ok()
    b.run(ops="write:16:32:3,write:6000:8:3").assert_ok()
    run_a = a.run(ops="read:0:64,check:3000:8:2,check:6000:8:0,check:2048:64:1")
    run_b = b.run(ops="read:0:64,check:3000:8:0,check:6000:8:3,check:2048:64:1")
    run_a.assert_ok()
    run_b.assert_ok()
    assert run_a.generations[0:2] == [GenRange(0, 0, 31, 2), GenRange(0, 32, 63, 1)]
    assert run_b.generations[0:3] == [
        GenRange(0, 0, 15, 1),
        GenRange(0, 16, 47, 3),
        GenRange(0, 48, 63, 1),
    ]
    # A's writes are in A's diff only, B's in B's; the base is byte for byte as it was.
    assert a.generations(0, 3000, 8) == [GenRange(0, 3000, 3007, 2)]
    assert b.generations(0, 3000, 8) == [GenRange(0, 3000, 3007, 0)]
    assert sha256(base) == digest and base.stat().st_mtime_ns == mtime
    assert ahci.generations(base, 0, 64) == [GenRange(0, 0, 63, 1)]


def test_multiattach_machines_run_at_the_same_time(ahci):
    """Two machines on one multi-attach base at once (each holds a shared lock on the
    base): A loops writing until stopped; B runs to its end meanwhile. Each keeps
    exactly its own flushed generations."""
    base = prepared_base(ahci, "shared.vdi")
    digest = sha256(base)
    a, b = ahci.machine("a"), ahci.machine("b")
    a.attach(0, base, "multiattach")
    b.attach(0, base, "multiattach")
    slow = ahci.spawn("vm", "run", a.folder, "gen", "--append=ops=loop:0:16:1*60000")
    try:
        seen = [slow.stdout.readline().decode() for _ in range(3)]
        assert seen[-1].startswith("gen: flushed"), seen  # A is running
        fast = ahci.cli("vm", "run", b.folder, "gen", "--append=ops=loop:0:16:61000*100")
        assert fast.returncode == 0, fast.stderr
        assert slow.poll() is None, "A ran all the while B did"
    finally:
        slow.send_signal(signal.SIGTERM)
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 130, err  # interrupted, its disks flushed and closed
    flushed_a = [r for flushed, r in gen_lines("".join(seen) + out.decode()) if flushed]
    flushed_b = [r for flushed, r in gen_lines(fast.stdout) if flushed]
    assert len(flushed_b) == 100 and len(flushed_a) > 3

    b.run(ops="check:0:16:61000*100").assert_ok()
    held_by_a = a.generations(0, 0, 8192)
    assert lost_generations(flushed_a, held_by_a) == []
    assert all(r.generation is not None and r.generation < 61000 for r in held_by_a), held_by_a
    assert sha256(base) == digest


def test_readonly_disk_refuses_guest_writes_and_keeps_its_data(ahci):
    base = prepared_base(ahci)
    digest = sha256(base)
    vm = ahci.machine()
    vm.attach(0, base, "readonly")
    run = vm.run(ops=f"write:{SYSTEM}:9,check:{SYSTEM}:1", report_checks=False)
    assert run.exit_code == 1, run
    assert [c.name for c in run.failed] == ["port 0 write lba 0..63 generation 9"]
    assert run.failed[0].detail.startswith("task file error")  # ABRT
    assert run.generations == [GenRange(0, 0, 63, 1)]  # the port recovered; nothing written
    assert sha256(base) == digest


def test_shareable_disk_is_written_directly_and_seen_by_both_machines(ahci):
    shared = ahci.image("shared.vdi", SIZE, variant="fixed")
    a, b = ahci.machine("a"), ahci.machine("b")
    a.attach(0, shared, "shareable")
    b.attach(0, shared, "shareable")
    a.run(ops="write:0:16:4").assert_ok()
    b.run(ops="check:0:16:4,write:16:16:5").assert_ok()
    a.run(ops="check:0:16:4,check:16:16:5").assert_ok()
    assert a.chain(0) == b.chain(0) == [shared]
    assert ahci.generations(shared, 0, 32) == [GenRange(0, 0, 15, 4), GenRange(0, 16, 31, 5)]
