"""Build disks and machines in a folder, boot guests on them, get back what they did.

A :class:`Rig` owns one folder (a test's ``tmp_path``): it makes images, chains
and machine folders there, and boots guests on them under ahci-emu or QEMU.
Everything it creates lives in that folder and in the objects it returns, so
rigs in parallel test processes never meet.

Runs under ahci-emu go through the ``ahci-emu`` command line (``run --disk``,
``vm run``): either in this process (``emu.cli.main``, the default: a boot
costs milliseconds, as Unicorn is imported once) or as a child process
(``python -m emu.cli``: full isolation, about 0.1 s more per boot). The same
arguments go to both, so the two cannot drift apart.

Under QEMU (the oracle), each disk is a raw file: a raw base image is used in
place, anything else (a VDI, a chain, a machine's attachment after its medium
types were applied) is flattened into a raw copy first, and what the guest
writes there is thrown away with the copy.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from uuid import UUID

from emu.testing.gen import GenRange, read_generations, write_generation
from emu.testing.results import GuestRun, parse_trace

RUNNERS = ("inprocess", "subprocess")
BACKENDS = ("emu", "qemu")
QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 30.0
_EMU_PARENT = str(Path(__file__).resolve().parents[2])  # the folder that holds emu/

PathLike = str | os.PathLike


def qemu_path() -> str | None:
    """QEMU's path, or None when it is not installed."""
    return shutil.which(QEMU)


def cli_env() -> dict[str, str]:
    """The environment for ``python -m emu.cli`` to import this very ``emu``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_EMU_PARENT, env.get("PYTHONPATH")) if p)
    return env


def cli_command(*args: PathLike) -> list[str]:
    """``ahci-emu ARGS`` as an argument list for :mod:`subprocess` (with :func:`cli_env`)."""
    return [sys.executable, "-m", "emu.cli", *map(os.fspath, args)]


class Rig:
    """Disks, machines and guest runs in ``root`` (created if needed).

    ``backend`` is where :meth:`run` and :meth:`Vm.run` boot guests ("emu" or
    "qemu"); ``runner`` how ahci-emu runs ("inprocess" or "subprocess");
    ``timeout`` each boot's budget in seconds. ``on_run`` is called with every
    :class:`GuestRun` (the pytest plugin reports its checks from there).
    ``sanitize`` (False, True or ``"strict"``) is every run's ``--sanitize``
    unless a run says otherwise.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        backend: str = "emu",
        runner: str = "inprocess",
        timeout: float = DEFAULT_TIMEOUT,
        on_run: Callable[[GuestRun], None] | None = None,
        sanitize: bool | str = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, not {runner!r}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.runner = runner
        self.timeout = timeout
        self.on_run = on_run
        self.sanitize = sanitize
        self.runs: list[GuestRun] = []

    # ---- disks ------------------------------------------------------------------

    def path(self, name: PathLike) -> Path:
        """``name`` inside the rig's folder (absolute paths are kept)."""
        return self.root / name

    def image(
        self,
        name: PathLike,
        size: int | str = "4M",
        *,
        fmt: str | None = None,
        variant: str = "dynamic",
    ) -> Path:
        """A new base image: VDI if the name ends in ``.vdi`` (or ``fmt="vdi"``), else raw."""
        from emu.commands.image import parse_size
        from emu.storage import ops

        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = fmt or ("vdi" if path.suffix.lower() == ".vdi" else "raw")
        nbytes = parse_size(size) if isinstance(size, str) else size
        return Path(ops.create_image(str(path), nbytes, fmt=fmt, variant=variant))

    def diff(self, parent: PathLike, name: PathLike | None = None) -> Path:
        """A new empty differencing image of ``parent`` (by default beside it, where
        ``run --disk`` finds the parent)."""
        from emu.storage import ops

        parent = self.path(parent)
        if name is None:
            n = 1
            while (parent.parent / f"{parent.stem}.{n}.vdi").exists():
                n += 1
            child = parent.parent / f"{parent.stem}.{n}.vdi"
        else:
            child = self.path(name)
        child.parent.mkdir(parents=True, exist_ok=True)
        return Path(ops.create_diff(str(parent), str(child)))

    def chain(self, length: int, size: int | str = "4M", *, stem: str = "layer") -> list[Path]:
        """``length`` images, base first (``stem00.vdi``), each a diff of the one before."""
        if length < 1:
            raise ValueError("a chain has at least one image")
        images = [self.image(f"{stem}00.vdi", size)]
        for k in range(1, length):
            images.append(self.diff(images[-1], f"{stem}{k:02d}.vdi"))
        return images

    def fill(self, image: PathLike, lba: int, count: int, generation: int) -> None:
        """Write generation markers (0: zeros) into an image from the host, no guest."""
        write_generation(self.path(image), lba, count, generation)

    def generations(self, image: PathLike, lba: int, count: int) -> list[GenRange]:
        """What an image (through its chain) holds on ``lba..lba+count-1``, as runs."""
        return read_generations(self.path(image), lba, count)

    def machine(self, name: str = "vm") -> Vm:
        """A new machine folder ``name`` in the rig's folder."""
        from emu.storage.vm import Machine

        folder = self.path(name)
        Machine.create(str(folder)).close()
        return Vm(self, folder)

    # ---- booting ------------------------------------------------------------------

    def run(
        self,
        guest: PathLike,
        *disks: PathLike,
        ops: Sequence[str] | str | None = None,
        append: str = "",
        timeout: float | None = None,
        trace: bool = False,
        memory: int | None = None,
        backend: str | None = None,
        report_checks: bool = True,
        faults: Sequence[str] = (),
        fault_seed: int | None = None,
        write_cache: bool | None = None,
        sanitize: bool | str | None = None,
    ) -> GuestRun:
        """Boot ``guest`` (a built-in name like ``"gen"``, or an ELF path) with ``disks``
        on ports 0, 1, ... as ``ahci-emu run GUEST --disk ...`` does.

        ``ops`` is the gen guest's op list (``["write:0:64:1", "check:0:64:1"]``),
        joined into ``ops=...`` before ``append``. ``trace`` records ``--trace``.
        ``backend`` overrides the rig's for this run (e.g. ``"emu"`` to prepare
        disks in a test that also runs under the oracle). ``report_checks=False``
        keeps the run's checks out of the test's report (``on_run`` is not called),
        for runs meant to fail checks.

        ``faults`` are fault specs (``["media-error:lba=100-107"]``, as ``--fault``),
        ``fault_seed`` their ``--fault-seed``, ``write_cache`` the disks' write cache
        at power-on (``--write-cache``); the faults that fired are
        :attr:`GuestRun.faults_fired`. ``sanitize`` (True or ``"strict"``; default:
        the rig's :attr:`sanitize`) checks the guest's driver (``--sanitize``); what it
        broke is :attr:`GuestRun.violations`."""
        options = _Options.of(self, locals())
        paths = [self.path(d) for d in disks]
        return self._boot(["run"], guest, ["--disk=" + str(p) for p in paths], paths, None, options)

    def cli(
        self, *args: PathLike, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess:
        """Run ``ahci-emu ARGS`` as a child process, in the rig's folder; text output."""
        return subprocess.run(
            cli_command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=self.root,
            env=cli_env(),
        )

    def spawn(self, *args: PathLike, **popen: Any) -> subprocess.Popen:
        """Start ``ahci-emu ARGS`` (unbuffered, so its output arrives as the guest prints)
        and return the Popen; stdout and stderr are pipes unless given."""
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        popen.setdefault("cwd", self.root)
        popen.setdefault("env", cli_env())
        command = cli_command(*args)
        return subprocess.Popen([command[0], "-u", *command[1:]], **popen)

    def _boot(
        self,
        command: list[str],
        guest: PathLike,
        options: list[str],
        disks: list[Path],
        vm: Vm | None,
        opt: _Options,
    ) -> GuestRun:
        from emu.guests import resolve_guest

        backend = opt.backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        timeout = opt.timeout or self.timeout
        trace, memory, append = opt.traced, opt.memory, opt.append
        if opt.ops is not None:
            ops = opt.ops if isinstance(opt.ops, str) else ",".join(opt.ops)
            append = f"ops={ops} {append}".strip()
        guest_file = resolve_guest(os.fspath(guest))
        name = Path(guest_file).stem
        rundir = self._rundir(name)
        if backend == "qemu":
            if opt.faults or opt.write_cache is not None:
                raise ValueError("faults and the write cache setting are ahci-emu's only")
            run = _run_qemu(guest_file, append, disks, vm, rundir, timeout)
        else:
            serial, trace_file = rundir / "serial.txt", rundir / "trace.jsonl"
            argv = [
                *command,
                os.fspath(guest),
                *options,
                f"--timeout={timeout:g}",
                f"--serial={serial}",
            ]
            if append:
                argv.append(f"--append={append}")
            if memory is not None:
                argv.append(f"--memory={memory}")
            if trace:
                argv.append(f"--trace={trace_file}")
            argv += opt.emu_arguments()
            started = time.perf_counter()
            if self.runner == "inprocess":
                code, stderr = _run_inprocess(argv)
                shown = ["ahci-emu", *argv]
            else:
                code, stderr = _run_subprocess(argv, timeout, self.root)
                shown = cli_command(*argv)
            run = GuestRun(
                guest=name,
                backend="emu",
                command=shown,
                exit_code=code,
                transcript=_read_text(serial),
                stderr=stderr,
                trace=parse_trace(_read_text(trace_file)) if trace else [],
                duration=time.perf_counter() - started,
                disks=disks,
            )
        run.label = f"{name}#{len(self.runs) + 1}"
        self.runs.append(run)
        if self.on_run is not None and opt.report_checks:
            self.on_run(run)
        return run

    def _rundir(self, name: str) -> Path:
        path = self.root / "runs" / f"{len(self.runs) + 1:03d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path


class Vm:
    """A machine folder made by :meth:`Rig.machine`; each method opens the machine,
    does one thing through ``emu.storage.vm.Machine`` and closes it again."""

    def __init__(self, rig: Rig, folder: Path) -> None:
        self.rig = rig
        self.folder = folder

    def open(self, *, read_only: bool = False):
        """The :class:`emu.storage.vm.Machine`, to use as a context manager."""
        from emu.storage.vm import Machine

        return Machine.open(str(self.folder), read_only=read_only)

    def attach(
        self, port: int, medium: PathLike, type: str = "normal", *, autoreset: bool = True
    ) -> None:
        """Attach ``medium`` to ``port`` as medium ``type`` (normal, immutable, ...)."""
        with self.open() as m:
            m.attach(port, str(self.rig.path(medium)), type, autoreset=autoreset)

    def detach(self, port: int) -> None:
        with self.open() as m:
            m.detach(port)

    def take(self, name: str, description: str = "") -> UUID:
        """Take a snapshot; returns its UUID."""
        with self.open() as m:
            return m.snapshot_take(name, description)

    def restore(self, name: str) -> None:
        with self.open() as m:
            m.snapshot_restore(name)

    def delete(self, name: str) -> None:
        with self.open() as m:
            m.snapshot_delete(name)

    def info(self) -> dict[str, Any]:
        with self.open(read_only=True) as m:
            return m.info()

    def chain(self, port: int) -> list[Path]:
        """The images port ``port`` reads through, leaf first."""
        for att in self.info()["attachments"]:
            if att["port"] == port:
                return [Path(p) for p in att["chain"]]
        raise KeyError(f"port {port} has no disk")

    def leaf(self, port: int) -> Path:
        """The image port ``port`` writes to."""
        return self.chain(port)[0]

    def registry(self) -> dict[UUID, str]:
        """The machine's media registry: UUID -> path of every image it knows."""
        info = self.info()
        return {
            UUID(m["uuid"]): os.path.normpath(os.path.join(self.folder, m["path"]))
            for m in info["media"]
        }

    def generations(self, disk: int | PathLike, lba: int, count: int) -> list[GenRange]:
        """What a port's disk (``disk`` an int), or one image of the machine (a path),
        holds on ``lba..lba+count-1``, read on the host through the machine's registry."""
        port = disk if isinstance(disk, int) else 0
        image = self.leaf(disk) if isinstance(disk, int) else self.rig.path(disk)
        return read_generations(image, lba, count, port, self.registry())

    def files(self) -> set[Path]:
        """Every file in the machine folder (machine.json, Snapshots/*.vdi)."""
        return {p for p in self.folder.rglob("*") if p.is_file()}

    def run(
        self,
        guest: PathLike = "gen",
        *,
        ops: Sequence[str] | str | None = None,
        append: str = "",
        timeout: float | None = None,
        trace: bool = False,
        memory: int | None = None,
        backend: str | None = None,
        report_checks: bool = True,
        faults: Sequence[str] = (),
        fault_seed: int | None = None,
        write_cache: bool | None = None,
        sanitize: bool | str | None = None,
    ) -> GuestRun:
        """Start the machine and boot ``guest`` on its disks (``ahci-emu vm run DIR``);
        the options are :meth:`Rig.run`'s."""
        options = _Options.of(self.rig, locals())
        command = ["vm", "run", str(self.folder)]
        return self.rig._boot(command, guest, [], [self.folder], self, options)


@dataclass(frozen=True)
class _Options:
    """The options of one boot, as :meth:`Rig.run` and :meth:`Vm.run` take them (their
    keyword parameters, by the same names)."""

    ops: Sequence[str] | str | None
    append: str
    timeout: float | None
    trace: bool
    memory: int | None
    backend: str | None
    report_checks: bool
    faults: tuple[str, ...] = ()
    fault_seed: int | None = None
    write_cache: bool | None = None
    sanitize: bool | str = False

    @classmethod
    def of(cls, rig: Rig, arguments: dict[str, Any]) -> _Options:
        """The options among a run method's arguments (its ``locals()``), with the
        rig's defaults where the caller left them unset."""
        values = {f.name: arguments[f.name] for f in fields(cls)}
        values["faults"] = tuple(values["faults"])
        if values["sanitize"] is None:
            values["sanitize"] = rig.sanitize
        return cls(**values)

    def emu_arguments(self) -> list[str]:
        return fault_arguments(self.faults, self.fault_seed, self.write_cache, self.sanitize)

    @property
    def traced(self) -> bool:
        """Faults and violations are reported through the trace: such runs are traced."""
        return self.trace or bool(self.faults) or bool(self.sanitize)


def fault_arguments(
    faults: Sequence[str] = (),
    fault_seed: int | None = None,
    write_cache: bool | None = None,
    sanitize: bool | str = False,
) -> list[str]:
    """The ``ahci-emu`` options for faults, the write cache and the sanitizer (faults
    are also said on stderr, ``--verbose``)."""
    args = [f"--fault={spec}" for spec in faults]
    if sanitize:
        if sanitize not in (True, "strict"):
            raise ValueError(f"sanitize is True or 'strict', not {sanitize!r}")
        args.append("--sanitize=strict" if sanitize == "strict" else "--sanitize")
    if faults:
        args.append("--verbose")
    if fault_seed is not None:
        args.append(f"--fault-seed={fault_seed}")
    if write_cache is not None:
        args.append(f"--write-cache={'on' if write_cache else 'off'}")
    return args


# ---- running ahci-emu -----------------------------------------------------------------


def _run_inprocess(argv: list[str]) -> tuple[int, str]:
    """``ahci-emu ARGV`` in this process: (exit status, what it printed on stderr)."""
    from emu import cli

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as exc:  # argparse refused the arguments
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception:  # an emulator bug: what the command would print, and exit 1
        err.write(traceback.format_exc())
        code = 1
    if code == 130 and "interrupted" in err.getvalue():
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) during the run: stop the tests too
    return code, err.getvalue()


def _run_subprocess(argv: list[str], timeout: float, cwd: Path) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            cli_command(*argv),
            capture_output=True,
            timeout=timeout + 30,
            cwd=cwd,
            env=cli_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = (exc.stderr or b"").decode(errors="replace")
        return 124, err + f"ahci-emu: error: killed after {timeout + 30:g} s\n"
    return proc.returncode, proc.stderr.decode(errors="replace")


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


# ---- running QEMU ---------------------------------------------------------------------


def qemu_command(
    guest: PathLike,
    append: str,
    disks: Sequence[tuple[int, PathLike]],
    binary: str | None = None,
) -> list[str]:
    """QEMU q35 with the machine contract of docs/machine.md; ``disks`` as (port, raw file).
    TRIM reaches the files (``discard=unmap``) as it reaches our images. The one place
    that spells the reference machine out (the oracle and the benchmarks use it too)."""
    cmd = [
        binary or qemu_path() or QEMU,
        "-nodefaults",
        "-machine", "q35,accel=tcg",
        "-m", "128",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel", os.fspath(guest),
    ]  # fmt: skip
    if append:
        cmd += ["-append", append]
    for port, disk in disks:
        cmd += [
            "-drive", f"id=d{port},file={os.fspath(disk)},format=raw,if=none,discard=unmap",
            "-device", f"ide-hd,drive=d{port},bus=ide.{port}",
        ]  # fmt: skip
    return cmd


def _raw_for_qemu(path: Path, registry: dict[UUID, str] | None, copy: Path) -> Path:
    """``path`` itself if it is a raw base image, else its chain flattened into ``copy``."""
    from emu.storage import ops
    from emu.storage.detect import is_vdi

    if not is_vdi(str(path)):
        return path
    ops.convert(str(path), str(copy), fmt="raw", registry=registry)
    return copy


def _run_qemu(
    guest: str, append: str, disks: list[Path], vm: Vm | None, rundir: Path, timeout: float
) -> GuestRun:
    from emu.errors import EmuError

    if qemu_path() is None:
        raise RuntimeError(f"{QEMU} is not installed: cannot boot on the QEMU backend")
    started = time.perf_counter()
    try:
        if vm is None:
            ports = [
                (n, _raw_for_qemu(d, None, rundir / f"disk{n}.img")) for n, d in enumerate(disks)
            ]
        else:
            ports = _machine_for_qemu(vm, rundir)
    except EmuError as exc:  # refused before the start, as ahci-emu refuses it
        return GuestRun(Path(guest).stem, "qemu", [], 1, "", f"ahci-emu: error: {exc}\n")
    cmd = qemu_command(guest, append, ports)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        status, out, err = proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")
        if status & 1:
            code = status >> 1  # isa-debug-exit: (N << 1) | 1
        else:
            code = 1
            err += f"QEMU ended without the guest's debug exit (status {status})\n"
    except subprocess.TimeoutExpired as exc:
        out, code = exc.stdout or b"", 124
        err = f"QEMU: guest still running after its {timeout:g} s budget\n"
    return GuestRun(
        guest=Path(guest).stem,
        backend="qemu",
        command=cmd,
        exit_code=code,
        transcript=out.decode(errors="replace"),
        stderr=err,
        duration=time.perf_counter() - started,
        disks=[p for _, p in ports],
    )


def _machine_for_qemu(vm: Vm, rundir: Path) -> list[tuple[int, Path]]:
    """Start and stop the machine (its medium types applied, as ``vm run`` would), then
    one raw file per attachment: the base itself if raw, else a flattened copy."""
    with vm.open() as machine:
        machine.start()
        machine.stop()
        info = machine.info()
    registry = vm.registry()
    ports = []
    for att in info["attachments"]:
        leaf = Path(att["chain"][0])
        copy = rundir / f"port{att['port']}.img"
        ports.append((att["port"], _raw_for_qemu(leaf, registry, copy)))
    return ports
