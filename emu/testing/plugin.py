"""The pytest plugin of ahci-emu (entry point ``pytest11``: ``ahci_emu``).

Fixtures (each test gets its own, in its own ``tmp_path``):

``ahci``
    A :class:`~emu.testing.Rig`: make images (``ahci.image``), diffs and chains
    (``ahci.diff``, ``ahci.chain``), machine folders (``ahci.machine``), write and
    read generation markers from the host (``ahci.fill``, ``ahci.generations``),
    boot guests (``ahci.run``, ``Vm.run``) and get back a
    :class:`~emu.testing.GuestRun`: transcript, exit code, checks, trace.
    Every check of every run is also reported as its own subtest result.
``ahci_backend``
    ``"emu"``; ``"qemu"`` and ``"emu"`` for tests marked ``ahci_oracle``.
``ahci_machine``
    A new machine folder (``ahci.machine("vm")``).
``ahci_image``, ``ahci_chain``, ``ahci_boot``
    ``ahci.image``, ``ahci.chain`` and ``ahci.run``, for tests that want only those.

``linux``, ``linux_material``
    Linux guests: see :mod:`emu.testing.linux_plugin`.

Marker ``@pytest.mark.ahci_oracle``: run the test twice, on ahci-emu and on QEMU
q35 (``ahci_backend``); QEMU boots raw copies of the disks. Without QEMU the
QEMU half is skipped, or fails when ``CI=true``.

Marker ``@pytest.mark.ahci_sanitize`` (or ``ahci_sanitize("strict")``), on a test
or a whole module (``pytestmark = pytest.mark.ahci_sanitize``): every ahci-emu
run of the test checks the guest's driver (``--sanitize``); ``run.violations``
lists what it broke, and under ``"strict"`` the first violation ends the run
with exit code 125. QEMU runs are not sanitized.

Options: ``--ahci-runner=inprocess|subprocess`` (ini ``ahci_runner``; default
inprocess: the board runs in the test process, a boot costs milliseconds; a
subprocess costs ~0.1 s more per boot but survives anything) and
``--ahci-timeout=SECONDS`` (ini ``ahci_timeout``, default 30) per boot; the
environment variables ``AHCI_EMU_RUNNER`` and ``AHCI_EMU_TIMEOUT`` come last.

When a test fails, the transcripts of its guest runs are added to the failure
report (terminal and ``--junitxml``): of the failing check's run for a failed
check, else of the runs that did not pass and the last one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from emu.testing.results import GuestRun
from emu.testing.rig import DEFAULT_TIMEOUT, QEMU, RUNNERS, Rig, qemu_path

MARKER = "ahci_oracle"
SANITIZE_MARKER = "ahci_sanitize"
_RUNS = pytest.StashKey[list[GuestRun]]()
_CURRENT = pytest.StashKey[GuestRun]()
_MAX_SHOWN = 4  # transcripts attached to one failure report

pytest_plugins = ["emu.testing.linux_plugin"]  # the Linux guests' fixtures


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ahci-emu", "ahci-emu guests")
    group.addoption(
        "--ahci-runner",
        choices=RUNNERS,
        default=None,
        help="run ahci-emu boots in the test process (inprocess, default) or in a child "
        "process each (subprocess)",
    )
    group.addoption(
        "--ahci-timeout",
        type=float,
        default=None,
        help=f"time budget of one guest boot in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.addini("ahci_runner", "inprocess or subprocess (see --ahci-runner)", default="")
    parser.addini("ahci_timeout", "time budget of one guest boot in seconds", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run the test on ahci-emu and on the QEMU q35 oracle (the ahci_backend "
        "fixture is parametrized; QEMU boots raw copies of the disks)",
    )
    config.addinivalue_line(
        "markers",
        f"{SANITIZE_MARKER}(mode=True): run every ahci-emu boot of the test under --sanitize "
        '(mode "strict": --sanitize=strict)',
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker(MARKER) and "ahci_backend" in metafunc.fixturenames:
        metafunc.parametrize("ahci_backend", ["emu", "qemu"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        current = item.stash.get(_CURRENT, None)
        if current is not None:
            shown = [current]
        else:
            runs = item.stash.get(_RUNS, [])
            shown = [r for r in runs if not r.passed or r is runs[-1]][-_MAX_SHOWN:]
        for run in shown:
            _add_section(report, f"guest transcript: {run.label}", run.describe())
    return report


def _add_section(report: pytest.TestReport, title: str, text: str) -> None:
    longrepr = report.longrepr
    if hasattr(longrepr, "addsection"):
        longrepr.addsection(title, text)  # shown after the traceback, kept in JUnit XML
    elif isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n\n{'-' * 10} {title} {'-' * 10}\n{text}"
    else:
        report.sections.append((title, text))


# ---- fixtures -----------------------------------------------------------------------


@pytest.fixture
def ahci_backend() -> str:
    """Where guests boot: "emu" (ahci-emu), or "qemu" in an ``ahci_oracle`` test's QEMU half."""
    return "emu"


@pytest.fixture
def ahci(request: pytest.FixtureRequest, tmp_path, ahci_backend: str) -> Rig:
    """A :class:`Rig` in this test's ``tmp_path``; see the module doc."""
    if ahci_backend == "qemu" and qemu_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{QEMU} is not installed, and CI must run the oracle")
        pytest.skip(f"{QEMU} is not installed")
    config = request.config
    rig = Rig(
        tmp_path / "ahci",
        backend=ahci_backend,
        runner=_option(config, "ahci_runner", str, "inprocess"),
        timeout=_option(config, "ahci_timeout", float, DEFAULT_TIMEOUT),
        on_run=_reporter(request),
        sanitize=_sanitize_mode(request.node) if ahci_backend == "emu" else False,
    )
    request.node.stash[_RUNS] = rig.runs
    return rig


@pytest.fixture
def ahci_machine(ahci: Rig):
    """A new, empty machine folder ``vm`` (a :class:`emu.testing.Vm`)."""
    return ahci.machine("vm")


@pytest.fixture
def ahci_image(ahci: Rig):
    """``ahci.image``: ``ahci_image("disk.vdi", "4M")`` makes a base image."""
    return ahci.image


@pytest.fixture
def ahci_chain(ahci: Rig):
    """``ahci.chain``: ``ahci_chain(3)`` makes a base and two diffs, base first."""
    return ahci.chain


@pytest.fixture
def ahci_boot(ahci: Rig):
    """``ahci.run``: ``ahci_boot("gen", disk, ops=[...])`` boots a guest."""
    return ahci.run


def _sanitize_mode(node: pytest.Item) -> bool | str:
    marker = node.get_closest_marker(SANITIZE_MARKER)
    if marker is None:
        return False
    mode = marker.args[0] if marker.args else marker.kwargs.get("mode", True)
    if mode not in (True, "strict"):
        raise pytest.UsageError(f"{SANITIZE_MARKER} takes True or 'strict', not {mode!r}")
    return mode


def _option(config: pytest.Config, name: str, kind: type, default):
    value = config.getoption(name, default=None)  # None also when registered late
    if value is None:
        try:
            value = config.getini(name) or None
        except ValueError:
            value = None
    if value is None:
        value = os.environ.get(name.upper().replace("AHCI_", "AHCI_EMU_")) or default
    value = kind(value)
    if name == "ahci_runner" and value not in RUNNERS:
        raise pytest.UsageError(f"{name} must be one of {', '.join(RUNNERS)}, not {value!r}")
    return value


def _reporter(request: pytest.FixtureRequest) -> Callable[[GuestRun], None]:
    """Report each check of a run as a subtest (with the run's transcript if it failed)."""
    try:
        subtests = request.getfixturevalue("subtests")  # built into pytest 9
    except pytest.FixtureLookupError:
        subtests = None

    def report(run: GuestRun) -> None:
        if subtests is None:
            return
        node = request.node
        node.stash[_CURRENT] = run
        try:
            for check in run.checks:
                with subtests.test(msg=f"{run.label} {check.number} - {check.name}"):
                    if not check.ok:
                        pytest.fail(check.line, pytrace=False)
        finally:
            del node.stash[_CURRENT]

    return report
