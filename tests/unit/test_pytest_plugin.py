"""The test kit (emu.testing) and its pytest plugin.

Parsing and the host side of the generation markers are tested directly; the
plugin's behaviour as pytest shows it (subtests per guest check, transcripts in
failure reports and JUnit XML, the oracle marker, pytest-xdist, the runner
option) by running pytest on small sample suites in a child process.
"""

from __future__ import annotations

import importlib.metadata
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from emu.testing import (
    GenRange,
    GuestRun,
    Rig,
    cli_env,
    expected,
    lost_generations,
    marker,
    parse_checks,
    qemu_command,
    read_generations,
    runs,
    write_generation,
)

# ---- parsing ---------------------------------------------------------------------------


def test_parse_checks_splits_name_and_detail_at_the_last_colon():
    checks, plan, problems = parse_checks(
        "hello\nok 1 - a: b\nnot ok 2 - port 0 lba 1..2 generation 3: lba 1 holds x: y\n1..2\n"
    )
    assert [(c.number, c.ok, c.name, c.detail) for c in checks] == [
        (1, True, "a: b", ""),
        (2, False, "port 0 lba 1..2 generation 3: lba 1 holds x", "y"),
    ]
    assert plan == 2 and problems == []


@pytest.mark.parametrize(
    ("transcript", "problem"),
    [
        ("ok 1 - a\n", "no plan line (1..N): the guest did not finish"),
        ("ok 1 - a\n1..2\n", "plan 1..2 but 1 checks"),
        ("ok 1 - a\nok 3 - b\n1..2\n", "check 3 where 2 was expected"),
    ],
)
def test_parse_checks_reports_inconsistencies(transcript, problem):
    assert problem in parse_checks(transcript)[2]


def test_guest_run_parses_gen_lines_and_trace():
    run = GuestRun(
        guest="gen",
        backend="emu",
        command=[],
        exit_code=0,
        transcript="gen: port 0 lba 0..9 generation 2\ngen: port 1 lba 5..5 unrecognised\n"
        "gen: flushed port 0 lba 0..3 generation 7\nok 1 - x\n1..1\n",
        trace=[
            {"event": "command", "port": 0, "opcode": 0x25, "sources": [[0, 512, "/a"]]},
            {"event": "command", "port": 0, "opcode": 0x35},
            {"event": "failure", "port": 0},
        ],
    )
    assert run.passed
    assert run.generations == [GenRange(0, 0, 9, 2), GenRange(1, 5, 5, None)]
    assert run.flushed == [GenRange(0, 0, 3, 7)]
    assert run.generation_at(9) == 2 and run.generation_at(5, port=1) is None
    with pytest.raises(KeyError):
        run.generation_at(10)
    assert len(run.commands()) == 2 and len(run.commands(0x35)) == 1
    assert run.sources() == [(0, 512, "/a")]


def test_describe_shortens_long_transcripts():
    text = "".join(f"line {n}\n" for n in range(1000))
    shown = GuestRun("g", "emu", ["x"], 3, text, "ahci-emu: error: boom\n").describe(100)
    assert "[... 900 lines not shown ...]" in shown
    assert "line 0" in shown and "line 999" in shown and "line 500" not in shown
    assert "exit code 3" in shown and "boom" in shown


# ---- generation markers on the host --------------------------------------------------


def test_runs_and_expected():
    assert runs([0, 0, 3, 3, -1, 3], 10, port=2) == [
        GenRange(2, 10, 11, 0),
        GenRange(2, 12, 13, 3),
        GenRange(2, 14, 14, None),
        GenRange(2, 15, 15, 3),
    ]
    assert runs([], 0) == []
    assert expected((0, 10, 1), (5, 2, 2), (20, 1, 3)) == [
        GenRange(0, 0, 4, 1),
        GenRange(0, 5, 6, 2),
        GenRange(0, 7, 9, 1),
        GenRange(0, 20, 20, 3),
    ]


def test_lost_generations():
    flushed = [GenRange(0, 0, 3, 1), GenRange(0, 4, 7, 2), GenRange(0, 0, 3, 3)]
    assert lost_generations(flushed, [GenRange(0, 0, 3, 3), GenRange(0, 4, 7, 9)]) == []
    lost = lost_generations(flushed, [GenRange(0, 0, 3, 1), GenRange(0, 4, 7, 2)])
    assert len(lost) == 4 and lost[0].startswith("port 0 lba 0..0 generation 3")
    assert lost_generations(flushed, [GenRange(0, 0, 7, None)]) != []


def test_write_and_read_generations_through_a_chain(tmp_path):
    rig = Rig(tmp_path)
    base = rig.image("base.vdi", "2M")
    write_generation(base, 0, 3000, 4)
    top = rig.diff(base)
    assert top.name == "base.1.vdi" and rig.diff(base).name == "base.2.vdi"
    write_generation(top, 10, 5, 5)
    write_generation(top, 2040, 10, 0)  # zeros across the block boundary
    assert read_generations(top, 0, 4096) == expected(
        (0, 3000, 4), (10, 5, 5), (2040, 10, 0), (3000, 1096, 0)
    )
    assert read_generations(base, 2040, 10) == [GenRange(0, 2040, 2049, 4)]
    data = (tmp_path / "raw.img").open("wb")
    data.truncate(1 << 20)
    data.close()
    write_generation(tmp_path / "raw.img", 7, 1, 9)
    assert (tmp_path / "raw.img").read_bytes()[7 * 512 : 8 * 512] == marker(7, 9)


def test_rig_images_chains_and_machines(tmp_path):
    rig = Rig(tmp_path / "rig")
    assert rig.image("a.img", "1M").stat().st_size == 1 << 20
    assert rig.image("sub/b.vdi", 4 << 20).read_bytes()[64:68] == bytes.fromhex("7f10dabe")
    chain = rig.chain(3, "1M")
    assert [p.name for p in chain] == ["layer00.vdi", "layer01.vdi", "layer02.vdi"]
    vm = rig.machine("m")
    vm.attach(0, chain[0])
    assert vm.chain(0) == [chain[0]] and vm.leaf(0) == chain[0]
    vm.take("s")
    assert vm.chain(0)[1:] == [chain[0]] and vm.leaf(0) in vm.files()
    with pytest.raises(KeyError):
        vm.chain(1)
    with pytest.raises(ValueError):
        Rig(tmp_path, backend="bochs")


def test_qemu_command_follows_the_machine_contract():
    cmd = qemu_command("/g.elf", "ops=read:0:1", [(0, "/d0.img"), (2, "/d2.img")])
    joined = " ".join(cmd)
    assert "-machine q35,accel=tcg -m 128" in joined
    assert "-device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel /g.elf" in joined
    assert cmd[cmd.index("-append") + 1] == "ops=read:0:1"
    assert "id=d2,file=/d2.img,format=raw,if=none,discard=unmap" in joined
    assert "ide-hd,drive=d2,bus=ide.2" in joined


# ---- in-process and child-process runs give the same -----------------------------------


@pytest.mark.parametrize("runner", ["inprocess", "subprocess"])
def test_runners_agree(tmp_path, runner):
    rig = Rig(tmp_path, runner=runner)
    disk = rig.image("d.vdi", "1M")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run = rig.run("gen", disk, ops="write:0:4:1,read:0:8", trace=True)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert run.passed, run
    assert run.generations == [GenRange(0, 0, 3, 1), GenRange(0, 4, 7, 0)]
    assert [e["opcode"] for e in run.commands()] == [0xEC, 0x35, 0xEA, 0x25]
    if runner == "subprocess":
        assert run.command[:3] == [sys.executable, "-m", "emu.cli"]
    else:
        assert run.command[0] == "ahci-emu"


def test_rig_and_machine_runs_pass_their_options_alike(tmp_path):
    """`Rig.run` and `Vm.run` take the same keywords and turn them into the same command
    line options, the rig's `sanitize` default included."""
    import inspect

    from emu.testing.rig import Vm

    def keywords(method):
        params = inspect.signature(method).parameters.values()
        return [(p.name, p.default) for p in params if p.kind is p.KEYWORD_ONLY]

    assert keywords(Rig.run) == keywords(Vm.run)
    rig = Rig(tmp_path, sanitize=True)
    vm = rig.machine("vm")
    vm.attach(0, rig.image("d.vdi", "1M"))
    options = dict(fault_seed=7, write_cache=True, memory=256, faults=["media-error:lba=900"])
    direct = rig.run("gen", rig.image("e.vdi", "1M"), ops="write:0:4:1,read:0:4", **options)
    machine = vm.run("gen", ops="write:0:4:1,read:0:4", **options)
    assert direct.passed and machine.passed, (direct, machine)

    def tail(run):  # the options, but for the disks and the run's own files
        own = ("--disk", "--serial", "--trace")
        return [a for a in run.command if a.startswith("--") and not a.startswith(own)]

    assert tail(direct) == tail(machine)
    assert {"--sanitize", "--fault-seed=7", "--write-cache=on", "--memory=256"} <= set(
        tail(machine)
    )
    assert "--fault=media-error:lba=900" in tail(machine)
    assert "--append=ops=write:0:4:1,read:0:4" in tail(machine)


@pytest.mark.parametrize("runner", ["inprocess", "subprocess"])
def test_refusals_and_timeouts_come_back_as_exit_codes(tmp_path, runner):
    rig = Rig(tmp_path, runner=runner)
    missing = rig.run("gen", tmp_path / "nope.vdi", ops="read:0:1")
    assert missing.exit_code == 1 and "nope.vdi" in missing.error and missing.transcript == ""
    disk = rig.image("d.img", "1M")
    slow = rig.run("gen", disk, ops="loop:0:1:1*60000", timeout=0.5)
    assert slow.exit_code == 124, slow
    assert "budget" in slow.error and slow.flushed


def test_an_emulator_exception_in_process_is_a_failed_run(tmp_path, monkeypatch):
    """As the command would: exit 70 (internal error) and one line naming the exception and
    where it was raised, not an escaped exception."""
    import emu.commands.run

    def broken(args):
        raise ValueError("emulator bug")

    monkeypatch.setattr(emu.commands.run, "run", broken)
    run = Rig(tmp_path).run("gen", report_checks=False)
    assert run.exit_code == 70
    assert run.stderr.startswith("ahci-emu: error: internal error: ValueError: emulator bug (at ")
    assert run.stderr.count("\n") == 1


# ---- the plugin, as pytest runs it ----------------------------------------------------

SAMPLE = """
import pytest

def test_passes(ahci):
    disk = ahci.image("d.vdi", "1M")
    run = ahci.run("gen", disk, ops="write:0:8:1,check:0:8:1")
    assert run.passed

def test_guest_check_fails(ahci):
    disk = ahci.image("d.vdi", "1M")
    ahci.run("gen", disk, ops="check:0:8:1")   # the disk holds zeros: a guest check fails

def test_host_assert_fails(ahci):
    disk = ahci.image("d.vdi", "1M")
    run = ahci.run("gen", disk, ops="read:0:4")
    assert run.generation_at(0) == 5, "host side disagrees"

@pytest.mark.ahci_oracle
def test_oracle(ahci, ahci_backend):
    disk = ahci.image("d.img", "1M")
    run = ahci.run("gen", disk, ops="write:0:2:1,check:0:2:1")
    assert run.passed and run.backend == ahci_backend

def test_fixtures(ahci_machine, ahci_image, ahci_chain, ahci_boot):
    chain = ahci_chain(2, "1M")
    ahci_machine.attach(0, ahci_image("m.vdi", "1M"))
    assert ahci_machine.run(ops="read:0:1").passed
    assert ahci_boot("gen", chain[-1], ops="read:0:1").passed
"""


def plugin_args() -> list[str]:
    """Load the plugin: by its entry point when installed, else by module name."""
    installed = any(
        ep.name == "ahci_emu" for ep in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", "emu.testing.plugin"]


def pytest_in(folder: Path, *args: str, env: dict[str, str] | None = None):
    (folder / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin_args(), "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=300,
    )


@pytest.fixture
def sample(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SAMPLE))
    return tmp_path


def test_junit_xml_carries_each_failing_runs_transcript(sample):
    result = pytest_in(
        sample, "--junitxml=out.xml", "test_sample.py::test_guest_check_fails",
        "test_sample.py::test_host_assert_fails",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    cases = {c.get("name"): c for c in ET.parse(sample / "out.xml").getroot().iter("testcase")}
    host = cases["test_host_assert_fails"]
    failures = host.findall("failure")
    assert len(failures) == 1
    text = failures[0].text
    assert "host side disagrees" in text
    assert "guest transcript: gen#1" in text
    assert "gen: port 0 lba 0..3 generation 0" in text and "ok 2 - port 0 read lba 0..3" in text
    assert "command: ahci-emu run gen --disk=" in text

    guest = cases["test_guest_check_fails"]
    messages = [f.get("message") + "\n" + (f.text or "") for f in guest.findall("failure")]
    subtest = [m for m in messages if "not ok 2 - port 0 lba 0..7 generation 1" in m]
    assert subtest, messages  # the failed guest check, reported on its own
    assert "guest transcript: gen#1" in subtest[0]
    assert "gen: port 0 lba 0..7 generation 0" in subtest[0]


def test_each_guest_check_is_its_own_subtest(sample):
    result = pytest_in(
        sample, "-v", "-o", "verbosity_subtests=1", "test_sample.py::test_passes",
        "test_sample.py::test_guest_check_fails",
    )  # fmt: skip
    out = result.stdout
    assert "SUBPASSED[gen#1 1 - AHCI HBA found and reset]" in out, out
    assert "SUBPASSED[gen#1 2 - port 0 write lba 0..7 generation 1]" in out
    assert "SUBPASSED[gen#1 3 - port 0 lba 0..7 generation 1]" in out
    assert "SUBFAILED[gen#1 2 - port 0 lba 0..7 generation 1]" in out
    assert "test_sample.py::test_passes PASSED" in out
    assert "2 failed, 1 passed, 4 subtests passed" in out.splitlines()[-1], (
        out
    )  # the check + the test


def test_oracle_marker_runs_on_both_backends_and_skips_without_qemu(sample):
    result = pytest_in(sample, "-v", "-rs", "test_sample.py::test_oracle")
    if result.stdout.count("PASSED") == 2:
        assert "test_oracle[emu] PASSED" in result.stdout
        assert "test_oracle[qemu] PASSED" in result.stdout
    # Without QEMU on the PATH: skipped locally, a failure under CI.
    env = cli_env()
    env["PATH"] = str(Path(sys.executable).parent)
    env.pop("CI", None)
    local = pytest_in(sample, "-v", "-rs", "test_sample.py::test_oracle", env=env)
    assert "test_oracle[emu] PASSED" in local.stdout, local.stdout + local.stderr
    assert "test_oracle[qemu] SKIPPED" in local.stdout
    assert "qemu-system-x86_64 is not installed" in local.stdout
    env["CI"] = "true"
    ci = pytest_in(sample, "-v", "test_sample.py::test_oracle", env=env)
    assert ci.returncode == 1
    assert "CI must run the oracle" in ci.stdout


def test_runs_under_xdist_with_the_subprocess_runner(sample):
    result = pytest_in(
        sample, "-n", "2", "--ahci-runner=subprocess", "test_sample.py::test_passes",
        "test_sample.py::test_fixtures",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout.splitlines()[-1]


def test_xdist_reports_failed_checks_and_transcripts(sample):
    result = pytest_in(sample, "-n", "2", "--junitxml=out.xml")
    assert result.returncode == 1
    assert "SUBFAILED[gen#1 2 - port 0 lba 0..7 generation 1]" in result.stdout
    xml = (sample / "out.xml").read_text()
    assert xml.count("guest transcript: gen#1") >= 2


def test_bad_runner_option_is_refused(sample):
    env = cli_env()
    env["AHCI_EMU_RUNNER"] = "threads"
    result = pytest_in(sample, "test_sample.py::test_passes", env=env)
    assert result.returncode != 0
    assert "ahci_runner must be one of inprocess, subprocess" in result.stdout + result.stderr


def test_the_plugin_module_imports_no_emulator(tmp_path):
    """Loading the plugin (in every pytest run once installed) must stay cheap."""
    code = "import sys, emu.testing.plugin; print('unicorn' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert out.stdout.strip() == "False"


def test_readme_quotes_the_example_file_verbatim():
    """README.md's "Use it in your own suite" shows tests/scenarios/test_readme_example.py,
    which runs with the scenarios: the example in the README is a test that passes."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    example = (root / "tests" / "scenarios" / "test_readme_example.py").read_text()
    assert "## Use it in your own suite" in readme, "README.md lacks the section"
    section = readme.split("## Use it in your own suite", 1)[1].split("\n## ", 1)[0]
    assert f"```python\n{example}```\n" in section, (
        "README.md must quote tests/scenarios/test_readme_example.py verbatim in a "
        '```python block of its "Use it in your own suite" section'
    )


SANITIZED_MODULE = """
import pytest

pytestmark = pytest.mark.ahci_sanitize

def test_every_run_is_sanitized(ahci):
    disk = ahci.image("d.img", "8M")
    run = ahci.run("ahci_errors", disk, report_checks=False)
    assert [v["rule"] for v in run.violations] == ["issue-while-halted"]
    assert run.violations[0]["section"] == "AHCI 1.3.1 §6.2.2"
    assert "ahci-emu: violation: issue-while-halted (AHCI 1.3.1 §6.2.2)" in run.stderr
    assert ahci.run("gen", disk, ops="read:0:1").violations == []

@pytest.mark.ahci_sanitize("strict")
def test_strict_ends_the_run(ahci):
    run = ahci.run("ahci_errors", ahci.image("d.img", "8M"), report_checks=False)
    assert run.exit_code == 125
    assert run.error == "stopped at the first violation (issue-while-halted, --sanitize=strict)"

def test_faults_fired(ahci):
    run = ahci.run("gen", ahci.image("d.img", "1M"), ops="read:0:8",
                   faults=["abrt:opcode=read"], report_checks=False)
    assert [f["kind"] for f in run.faults_fired] == ["abrt"]
    assert run.failed
"""


def test_sanitize_marker_and_faults(tmp_path):
    (tmp_path / "test_sanitized.py").write_text(textwrap.dedent(SANITIZED_MODULE))
    result = pytest_in(tmp_path, "-q", "test_sanitized.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_readme_quotes_the_faults_example_and_lists_every_sanitizer_rule():
    from emu.sanitizer.rules import RULES

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    example = (root / "tests" / "scenarios" / "test_readme_faults_example.py").read_text()
    section = readme.split("## Faults and the driver sanitizer", 1)[1].split("\n## ", 1)[0]
    assert f"```python\n{example}```\n" in section
    for rule in RULES.values():
        assert f"| `{rule.name}` | {rule.section} | {rule.summary} |" in section, rule.name
