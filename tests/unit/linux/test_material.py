"""Fetching the kernel and busybox with apt, against stand-in apt/dpkg/depmod tools."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import emu
from emu.linuxkit.material import ENV, MaterialError, cache_dir, fetch, load

# Stand-ins, each logging its arguments to $TOOL_LOG: apt as a Debian 12 host
# answers, a .deb that dpkg-deb "unpacks" into a kernel or busybox tree.
TOOLS = {
    "apt-cache": """\
echo "apt-cache $*" >> "$TOOL_LOG"
case "$1 $2" in
  "depends linux-image-amd64") printf 'linux-image-amd64\\n  Depends: linux-image-%s\\n' "$REL";;
  "policy linux-image-"*) printf '%s:\\n  Installed: (none)\\n  Candidate: 6.1.99-1\\n' "$2";;
  "policy busybox-static") printf 'busybox-static:\\n  Candidate: 1:1.35.0-4\\n';;
  *) echo "E: No packages found" >&2; exit 100;;
esac""",
    "apt-get": """\
echo "apt-get $*" >> "$TOOL_LOG"
[ -n "$APT_FAIL" ] && { echo "W: a warning" >&2; echo "E: $APT_FAIL" >&2; exit 100; }
name=${3%%=*}; echo "$name" > "${name}_x_amd64.deb\"""",
    "dpkg-deb": """\
echo "dpkg-deb $*" >> "$TOOL_LOG"
name=$(cat "$2")
case "$name" in
  linux-image-*) mkdir -p "$3/boot" "$3/lib/modules/$REL/kernel"
                 echo bzImage > "$3/boot/vmlinuz-$REL";;
  busybox-static) mkdir -p "$3/bin"; echo busybox > "$3/bin/busybox";;
esac""",
    "depmod": """\
echo "depmod $*" >> "$TOOL_LOG"
echo "kernel/x.ko:" > "$2/lib/modules/$3/modules.dep\"""",
}
RELEASE = "6.1.0-99-amd64"


@pytest.fixture
def tools(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in TOOLS.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "tools.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TOOL_LOG", str(log))
    monkeypatch.setenv("REL", RELEASE)
    return log


def test_fetch_resolves_the_current_kernel_unpacks_and_indexes_it(tmp_path, tools):
    material = fetch(tmp_path / "cache", log=lambda _: None)
    assert material.release == RELEASE
    assert material.kernel.read_text() == "bzImage\n"
    assert material.busybox.read_text() == "busybox\n"
    assert (material.modules / "modules.dep").read_text() == "kernel/x.ko:\n"
    calls = tools.read_text().splitlines()
    assert f"apt-get download -q linux-image-{RELEASE}=6.1.99-1" in calls
    assert "apt-get download -q busybox-static=1:1.35.0-4" in calls
    assert any(c.startswith("depmod -b ") and c.endswith(f" {RELEASE}") for c in calls)
    assert load(tmp_path / "cache") == material
    # Nothing is left behind but the two packages and the manifest.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "busybox-static_1%3a1.35.0-4",
        f"linux-image-{RELEASE}_6.1.99-1",
        "material.json",
    ]


def test_a_second_fetch_downloads_nothing(tmp_path, tools):
    first = fetch(tmp_path / "cache", log=lambda _: None)
    tools.write_text("")
    assert fetch(tmp_path / "cache", log=lambda _: None) == first
    assert not [c for c in tools.read_text().splitlines() if not c.startswith("apt-cache")]


def test_a_new_kernel_replaces_the_old_one(tmp_path, tools, monkeypatch):
    old = fetch(tmp_path / "cache", log=lambda _: None)
    monkeypatch.setenv("REL", "6.1.0-100-amd64")
    (tmp_path / "cache" / "notes.txt").write_text("not ours to delete")
    new = fetch(tmp_path / "cache", log=lambda _: None)
    assert new.release == "6.1.0-100-amd64" and new.kernel.exists()
    assert not old.kernel.exists() and new.busybox == old.busybox
    assert (tmp_path / "cache" / "notes.txt").exists()


def test_a_failed_download_is_one_line_and_leaves_no_package(tmp_path, tools, monkeypatch):
    monkeypatch.setenv("APT_FAIL", "Unable to fetch some archives")
    with pytest.raises(MaterialError) as caught:
        fetch(tmp_path / "cache", log=lambda _: None)
    assert str(caught.value) == "apt-get download: Unable to fetch some archives"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_load_without_fetch_says_what_to_run(tmp_path):
    with pytest.raises(MaterialError, match="ahci-emu linux fetch"):
        load(tmp_path)


def test_load_notices_a_file_gone_missing(tmp_path, tools):
    material = fetch(tmp_path / "cache", log=lambda _: None)
    material.busybox.unlink()
    with pytest.raises(MaterialError, match=r"busybox.* is missing"):
        load(tmp_path / "cache")
    (tmp_path / "cache" / "material.json").write_text("{")
    with pytest.raises(MaterialError, match="unreadable"):
        load(tmp_path / "cache")


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ahci-emu" / "linux"


def test_the_command_runs_without_the_package_installed(tmp_path, tools):
    """CI fetches with the system's python3 before any venv: only the stdlib is used."""
    checkout = str(Path(emu.__file__).resolve().parents[1])
    env = {**os.environ, ENV: str(tmp_path / "cache"), "PYTHONPATH": checkout}
    code = (
        "import sys, emu.cli; rc = emu.cli.main(['linux', 'fetch']); "
        "bad = [m for m in sys.modules "
        "if m.split('.')[0] in ('unicorn', 'construct', 'elftools')]; "
        "print('third-party:', bad); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "third-party: []" in proc.stdout
    manifest = json.loads((tmp_path / "cache" / "material.json").read_text())
    assert manifest["release"] == RELEASE
