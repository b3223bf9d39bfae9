"""The Linux workload: Debian's stock kernel booted to the end of a disk script.

Both machines boot the same kernel (``ahci-emu linux fetch``), the same test
initramfs and each its own copy of the same 64 MiB raw disk, started as a user
starts them (``ahci-emu run KERNEL --initrd ... --append console=ttyS0 --disk``;
``qemu-system-x86_64 -machine q35 -kernel ... -initrd ...``). A run is timed
from process start to exit: the kernel's boot, libata's probe, the script
(checksum of the whole disk, 8 MiB written and synced) and the exit through
port 0xF4. The figure is the median of the repetitions (interleaved, ours
first then QEMU), as for the other boot workloads; the best is kept too.

Not part of ``--quick`` (one boot takes tens of seconds); ``--only linux_boot``
or a full run measures it.
"""

from __future__ import annotations

from pathlib import Path

from bench.machines import Machine, Ours, Qemu, Run, RunFailed
from bench.workloads import Context, Group, Result, Target, _ratio, wall_times
from emu.linuxkit.initramfs import build_initramfs
from emu.linuxkit.material import MaterialError, load
from emu.linuxkit.transcript import split

APPEND = "console=ttyS0"
SCRIPT = """\
set -e
echo "disk=$(dd if=/dev/sda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=/dev/zero of=/dev/sda bs=1M seek=32 count=8 conv=notrunc 2>/dev/null
sync
echo written=8M
"""
REPS = 3  # most boots per machine (fewer with --reps); one is long and varies little


class _LinuxOurs(Ours):
    def __init__(self, initrd: Path) -> None:
        super().__init__()
        self.initrd = initrd

    def command(self, guest: Path, append: str, disk: Path | None) -> list[str]:
        return [*super().command(guest, append, disk), "--initrd", str(self.initrd)]


class _LinuxQemu(Qemu):
    def __init__(self, binary: str, initrd: Path) -> None:
        super().__init__(binary)
        self.initrd = initrd

    def command(self, guest: Path, append: str, disk: Path | None) -> list[str]:
        return [*super().command(guest, append, disk), "-initrd", str(self.initrd)]


def _check(run: Run, machine: Machine) -> None:
    parts = split(run.output)
    if run.exit_code != 0 or parts.status != 0 or "written=8M" not in parts.output:
        raise RunFailed(
            f"{machine.name}: Linux boot failed (exit {run.exit_code}, script status "
            f"{parts.status}):\n{run.output.strip()[-3000:]}\n{run.errors.strip()}".rstrip()
        )


def linux_boot(ctx: Context) -> list[Result]:
    try:
        material = load()
    except MaterialError as exc:
        raise RunFailed(str(exc)) from None
    initrd = ctx.workdir / "linux-initrd.cpio"
    build_initramfs(material, SCRIPT, initrd)
    machines: list[Machine] = [_LinuxOurs(initrd)]
    if ctx.qemu is not None:
        machines.append(_LinuxQemu(ctx.qemu.binary, initrd))

    def run_checked(machine: Machine) -> Run:
        run = machine.run(material.kernel, APPEND, ctx.data_disk(machine))
        _check(run, machine)
        return run

    figures = wall_times(machines, min(ctx.plan.boot_reps, REPS), run_checked, "s")
    ours, qemu = figures["ours"], figures.get("qemu")
    ratio = _ratio(ours["value"], qemu["value"] if qemu else None)
    target = None
    if ratio is not None:
        target = Target("ours <= QEMU's wall time", ratio <= 1.0)
    return [
        Result(
            "linux_boot",
            f"Linux {material.release}: process start to the end of a disk script, 64 MiB raw disk",
            "s",
            ours,
            qemu,
            ratio,
            "time: ours / QEMU (lower is better)",
            target,
            None if ctx.qemu else "QEMU not installed",
        )
    ]


LINUX_GROUP = Group("linux_boot", ("linux_boot",), linux_boot, True)
