"""README.md and docs/ as a newcomer meets them: the worked examples run as written,
in a folder that holds decoys named like the built-in guests, and nothing points
outside the repository."""

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, start: str, end: str = "\n## ") -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


@pytest.fixture
def decoys(tmp_path: Path) -> Path:
    """A working folder holding files and folders named like built-in guests."""
    (tmp_path / "demo").write_text("not a guest\n")
    (tmp_path / "hello").write_text("not a guest either\n")
    (tmp_path / "pci").mkdir()
    (tmp_path / "gen").mkdir()
    return tmp_path


@pytest.fixture
def shell_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH with `ahci-emu` on it: the installed console script when there is one,
    else a wrapper that runs this checkout's `python -m emu.cli`."""
    script = Path(sys.executable).parent / "ahci-emu"
    if script.exists():
        bindir = script.parent
    else:
        bindir = tmp_path_factory.mktemp("bin")
        wrapper = bindir / "ahci-emu"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m emu.cli "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    path = os.pathsep.join([str(bindir), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath}


def run_lines(lines: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """Run each shell line in ``cwd``; every one must exit 0 and report no error."""
    outputs = []
    for line in lines:
        proc = subprocess.run(
            line, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        assert "error" not in proc.stderr, f"{line}\n{proc.stderr}"
        outputs.append(proc.stdout)
    return outputs


def test_the_vm_worked_example_runs_as_written_beside_decoys(decoys, shell_env):
    example = section(README, "Worked example (base → snapshot → write → restore)")
    (block,) = code_blocks(example, "sh")
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(lines) == 8 and all(line.startswith("ahci-emu ") for line in lines)
    out = run_lines(lines, decoys, shell_env)
    assert "ok 3 - read it back: same bytes" in out[4]  # vm run: the guest wrote a sector
    assert "diff(s) deep" in out[5]  # vm info: port 0 is a diff on disk.vdi
    assert (decoys / "demo").read_text() == "not a guest\n"  # the decoys are untouched


def test_the_image_worked_example_runs_as_written_beside_decoys(decoys, shell_env):
    example = section(README, "## Disk images")
    (block,) = code_blocks(example, "console")
    prompts = [line for line in block.splitlines() if line.startswith("$ ")]
    commands = [line[2:].split("  #")[0].strip() for line in prompts]
    assert len(commands) == 6
    run_lines(commands, decoys, shell_env)
    assert (decoys / "flat.img").stat().st_size == 64 << 20


def test_the_fill_example_holds(tmp_path):
    from emu.testing import Rig

    example = section(README, "**A host `fill` on a diff copies a whole block.**", "\n\n**")
    (code,) = code_blocks(example, "python")
    exec(compile(code, "README.md", "exec"), {"ahci": Rig(tmp_path / "rig")})


def test_set_up_is_two_commands():
    set_up = section(README, "## Set up")
    blocks = code_blocks(set_up, "sh")
    assert len(blocks) == 2 and all(block.count("\n") == 1 for block in blocks)
    install, test = (block.strip() for block in blocks)
    assert install.endswith("&& .venv/bin/ahci-emu run")
    assert "'.[test]'" in test and test.endswith(".venv/bin/python -m pytest -n 2")


def test_the_exit_status_table_names_every_status():
    table = section(README, "### Exit status", "\n## ")
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)}
    sources = "\n".join(p.read_text() for p in (ROOT / "emu").rglob("*.py"))
    raised = {int(n) for n in re.findall(r"exit_status = (\d+)", sources)}
    from emu import cli
    from emu.commands import dispatch, parser

    used = {cli.INTERRUPTED, dispatch.CLOSED_PIPE, dispatch.INTERNAL_ERROR, parser.USAGE_ERROR}
    assert raised | used | {0, 1, 2, 3} <= documented


# ---- nothing outside the repository ------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./|/work/shared|\bshared/|DESIGN\.md|STYLE\.md|prototypes/")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_point_at_nothing_outside_the_repository(doc):
    text = doc.read_text()
    assert not OUTSIDE.findall(text)
    for target in LINK.findall(text):
        if re.match(r"https?://", target):
            continue
        resolved = (doc.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT) and resolved.exists(), target


def test_docs_exist_and_readme_points_at_them():
    for name in ("machine.md", "architecture.md"):
        assert (ROOT / "docs" / name).is_file()
        assert f"docs/{name}" in README


# In code, "../" is an ordinary relative path (tests build hostile ones on purpose).
OUTSIDE_IN_CODE = re.compile(r"/work/shared|\bshared/|DESIGN\.md|STYLE\.md|prototypes/")


def test_no_source_file_points_outside_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files", "emu", "bench", "firmware", "tests", ".ci", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    here = Path(__file__).relative_to(ROOT).as_posix()
    offenders = [
        name
        for name in tracked
        if name != here
        and not name.endswith(".elf")
        and (ROOT / name).is_file()
        and OUTSIDE_IN_CODE.search((ROOT / name).read_text(errors="replace"))
    ]
    assert offenders == []
