"""Boot Linux test guests on given disks, under ahci-emu or QEMU, from Python or pytest.

A :class:`LinuxRig` builds a test initramfs (:mod:`emu.linuxkit.initramfs`) around a
shell script and boots the cached Debian kernel (:mod:`emu.linuxkit.material`) with
it: under ahci-emu as a user would (``ahci-emu run KERNEL --initrd FILE --append STR
--disk D ...``, or ``ahci-emu vm run DIR KERNEL ...``, in a child process: a Linux
boot is long and worth isolating), or under QEMU q35 (``qemu_command`` plus
``-initrd``). It gives back a :class:`LinuxRun`: the transcript, the exit code, what
the script printed, its status and the dmesg lines.

Under QEMU each VDI disk is flattened into a raw copy, as the oracle does; after the
run, the sectors QEMU's guest changed are written back into the disk's leaf image
through ahci-emu's storage stack, so a scenario of several boots (and snapshots
between them) goes on from what the guest left, as it does under ahci-emu.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from emu.linuxkit.initramfs import DEFAULT_MODULES, build_initramfs
from emu.linuxkit.material import Material
from emu.linuxkit.transcript import split
from emu.testing.results import GuestRun, parse_trace
from emu.testing.rig import (
    BACKENDS,
    PathLike,
    Rig,
    Vm,
    _machine_for_qemu,
    _raw_for_qemu,
    cli_command,
    cli_env,
    fault_arguments,
    qemu_command,
    qemu_path,
)

DEFAULT_APPEND = "console=ttyS0 quiet"  # quiet: only warnings and worse reach the console
DEFAULT_LINUX_TIMEOUT = 300.0
_COMPARE = 4096  # granularity of the write-back after a QEMU run


@dataclass
class LinuxRun(GuestRun):
    """One boot of a Linux test guest: a :class:`GuestRun` (transcript, exit code,
    stderr, trace, ...) with the parts /init marks out.

    ``exit_code`` is the status the run ended with (the script's, as /init wrote
    it to port 0xF4; 124 timeout; QEMU's already decoded). ``output`` is what the
    script printed (kernel console lines left out), ``status`` its exit status as
    /init saw it (None if it never ended), ``dmesg`` the kernel log lines /init
    printed after it, ``notes`` /init's own lines. ``disks_missing``: /init
    gave up waiting for the disks, did not run the script and ended the run
    with ``MISSING_DISKS_STATUS`` (122)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.problems = []  # a Linux guest prints no TAP plan
        parts = split(self.transcript)
        self.output, self.status = parts.output, parts.status
        self.dmesg, self.notes = parts.dmesg, parts.notes
        self.disks_missing = parts.disks_missing

    @property
    def passed(self) -> bool:
        """The script ran to its end with status 0 and the run ended with it."""
        return self.status == 0 and self.exit_code == 0

    def values(self) -> dict[str, str]:
        """The script's ``key=value`` lines as a dict (the last one of a key wins)."""
        pairs = (line.split("=", 1) for line in self.output if "=" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def messages(self, *words: str) -> list[str]:
        """The dmesg lines that contain every one of ``words``."""
        return [line for line in self.dmesg if all(w in line for w in words)]

    def assert_ok(self) -> LinuxRun:
        if not self.passed:
            raise AssertionError(f"Linux guest run failed\n{self.describe()}")
        return self


class LinuxRig:
    """Linux guests on the disks of a :class:`Rig` (images in its folder).

    ``backend``: "emu" or "qemu", the default of :meth:`boot`; ``append``: the
    kernel command line (more can be added per boot); ``timeout``: per boot."""

    def __init__(
        self,
        rig: Rig,
        material: Material,
        *,
        backend: str = "emu",
        append: str = DEFAULT_APPEND,
        timeout: float = DEFAULT_LINUX_TIMEOUT,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.rig = rig
        self.material = material
        self.backend = backend
        self.append = append
        self.timeout = timeout

    def initramfs(
        self,
        script: str,
        *,
        disks: int = 1,
        modules: Iterable[str] = DEFAULT_MODULES,
        files: Mapping[str, bytes] | None = None,
    ) -> Path:
        """The initramfs for ``script`` (built once per distinct input, in the rig)."""
        modules = tuple(modules)
        key = hashlib.sha256(repr((script, disks, modules, sorted((files or {}).items()))).encode())
        path = self.rig.path(f"initramfs/{key.hexdigest()[:16]}.cpio")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            build_initramfs(self.material, script, tmp, disks=disks, modules=modules, files=files)
            tmp.replace(path)
        return path

    def boot(
        self,
        script: str,
        *disks: PathLike,
        vm: Vm | None = None,
        backend: str | None = None,
        append: str = "",
        trace: bool = False,
        timeout: float | None = None,
        modules: Iterable[str] = DEFAULT_MODULES,
        files: Mapping[str, bytes] | None = None,
        faults: Iterable[str] = (),
        sanitize: bool | str = False,
        wait_disks: int | None = None,
    ) -> LinuxRun:
        """Boot Linux with ``script`` as its test, ``disks`` on ports 0, 1, ...
        (``ahci-emu run KERNEL ... --disk ...``), or start machine folder ``vm``
        instead (``ahci-emu vm run DIR KERNEL ...``).

        ``append`` goes after the rig's command line; ``trace`` records ahci-emu's
        ``--trace`` (never under QEMU); ``modules``/``files`` as
        :func:`~emu.linuxkit.initramfs.build_initramfs` takes them. ``faults`` and
        ``sanitize`` are :meth:`Rig.run`'s (ahci-emu only; such runs are traced, for
        ``run.faults_fired`` and ``run.violations``). ``wait_disks``: how many disks
        /init waits for before it runs the script (default: as many as the boot has)."""
        backend = backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        faults = tuple(faults)
        if backend == "qemu" and (faults or sanitize):
            raise ValueError("faults and the sanitizer are ahci-emu's only")
        trace = trace or bool(faults) or bool(sanitize)
        if vm is not None and disks:
            raise ValueError("give disks or a machine folder, not both")
        paths = [self.rig.path(d) for d in disks]
        if wait_disks is None:
            wait_disks = len(vm.info()["attachments"]) if vm is not None else len(paths)
        initrd = self.initramfs(script, disks=wait_disks, modules=modules, files=files)
        timeout = timeout or self.timeout
        cmdline = f"{self.append} {append}".strip()
        rundir = self.rig.path(f"runs/{len(self.rig.runs) + 1:03d}-linux-{backend}")
        rundir.mkdir(parents=True, exist_ok=True)
        if backend == "qemu":
            run = _run_qemu(self.material.kernel, initrd, cmdline, paths, vm, rundir, timeout)
        else:
            trace_file = rundir / "trace.jsonl"
            command = ["run"] if vm is None else ["vm", "run", vm.folder]
            argv = [*command, self.material.kernel, "--initrd", initrd, "--append", cmdline]
            for disk in paths:
                argv += ["--disk", disk]
            argv += ["--timeout", f"{timeout:g}", *fault_arguments(faults, sanitize=sanitize)]
            if trace:
                argv += ["--trace", trace_file]
            run = _run_emu(cli_command(*argv), timeout, rundir, [vm.folder] if vm else paths)
            if trace:
                run.trace = parse_trace(_text(trace_file))
        run.label = f"linux-{backend}#{len(self.rig.runs) + 1}"
        self.rig.runs.append(run)  # the plugin attaches failed runs' transcripts
        return run


def _run_emu(cmd: list[str], timeout: float, cwd: Path, disks: list[Path]) -> LinuxRun:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=timeout + 60, cwd=cwd, env=cli_env(), check=False
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        code, out = 124, exc.stdout or b""
        err = (exc.stderr or b"").decode(errors="replace") + f"killed after {timeout + 60:g} s\n"
    return LinuxRun(
        "linux", "emu", list(map(str, cmd)), code, out.decode(errors="replace"), err,
        duration=time.perf_counter() - started, disks=disks,
    )  # fmt: skip


def _run_qemu(
    kernel: Path,
    initrd: Path,
    append: str,
    disks: list[Path],
    vm: Vm | None,
    rundir: Path,
    timeout: float,
) -> LinuxRun:
    if qemu_path() is None:
        raise RuntimeError("qemu-system-x86_64 is not installed: cannot boot under QEMU")
    if vm is None:
        leaves = list(enumerate(disks))
        registry = None
        ports = [(n, _raw_for_qemu(d, None, rundir / f"disk{n}.img")) for n, d in leaves]
    else:
        ports = _machine_for_qemu(vm, rundir)
        leaves = [(port, vm.leaf(port)) for port, _ in ports]
        registry = vm.registry()
    cmd = [*qemu_command(kernel, append, ports), "-initrd", os.fspath(initrd)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        status, out, err = proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")
        code = status >> 1 if status & 1 else 1  # isa-debug-exit: (N << 1) | 1
        if not status & 1:
            err += f"QEMU ended without the guest's debug exit (status {status})\n"
    except subprocess.TimeoutExpired as exc:
        out, code = exc.stdout or b"", 124
        err = f"QEMU: guest still running after its {timeout:g} s budget\n"
    duration = time.perf_counter() - started
    for (_, raw), (_, leaf) in zip(ports, leaves, strict=True):
        if raw != leaf:
            write_back(raw, leaf, registry)
    return LinuxRun(
        "linux", "qemu", cmd, code, out.decode(errors="replace"), err,
        duration=duration, disks=[p for _, p in ports],
    )  # fmt: skip


def write_back(raw: Path, leaf: Path, registry: Mapping[UUID, str] | None = None) -> int:
    """Write what differs between ``raw`` and the chain ending at ``leaf`` into
    ``leaf``, in 4 KiB pieces; returns the number of bytes written."""
    from emu.storage.chain import open_chain

    written = 0
    with open_chain(str(leaf), registry=registry) as chain, open(raw, "rb") as source:
        mine = memoryview(bytearray(_COMPARE))
        for offset in range(0, chain.size, _COMPARE):
            theirs = source.read(_COMPARE)
            piece = mine[: len(theirs)]
            chain.readv(offset, [piece])
            if piece != theirs:
                chain.writev(offset, [memoryview(theirs)])
                written += len(theirs)
        chain.flush()
    return written


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
