"""The one module that reaches into libunicorn: its self-check and its refusals."""

import dataclasses
import subprocess
import sys

import pytest
from bzimages import make_bzimage, make_vmlinux

from emu.machine import unicorn_internals
from emu.machine.unicorn_internals import LAYOUTS, UnicornInternalsError, library_version


def test_the_installed_libunicorn_passes_its_self_check():
    layout = unicorn_internals.self_check()
    assert layout == LAYOUTS[library_version()]


def test_the_probe_sees_a_page_fault_delivered_with_error_code_and_cr2():
    assert unicorn_internals._run_probe(LAYOUTS[library_version()]) is None


@pytest.mark.parametrize("field", ["cpu_halted", "env_error_code", "env_tsc_offset"])
def test_a_wrong_offset_is_caught_by_the_probe(field):
    layout = LAYOUTS[library_version()]
    wrong = dataclasses.replace(layout, **{field: getattr(layout, field) + 8})
    assert unicorn_internals._run_probe(wrong) is not None


def test_a_wrong_cpu_pointer_is_refused_before_anything_runs():
    layout = LAYOUTS[library_version()]
    wrong = dataclasses.replace(layout, cpu_env=layout.cpu_env + 0x40)
    with pytest.raises(UnicornInternalsError, match="Linux guests are refused"):
        unicorn_internals._run_probe(wrong)


def test_an_unknown_libunicorn_version_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(unicorn_internals, "library_version", lambda: (2, 9, 9))
    with pytest.raises(UnicornInternalsError) as info:
        unicorn_internals._layout()
    assert "2.9.9" in str(info.value) and "\n" not in str(info.value)


def test_the_cli_refuses_a_linux_guest_on_an_unknown_libunicorn(tmp_path):
    """The refusal path end to end: one line, status 1, while multiboot guests still run."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(make_bzimage(make_vmlinux(b"\xf4" * 64)))
    script = (
        "import sys; import emu.machine.unicorn_internals as u;"
        "u.library_version = lambda: (2, 0, 0);"
        "from emu.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    linux = subprocess.run(
        [sys.executable, "-c", script, "run", str(kernel), "--timeout", "20"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linux.returncode == 1
    assert linux.stderr.splitlines() == [
        "ahci-emu: error: Linux guests need libunicorn 2.1.4 (its internal layout is known); "
        "this is 2.0.0"
    ]
    multiboot = subprocess.run(
        [sys.executable, "-c", script, "run", "hello", "--timeout", "20"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert multiboot.returncode == 0, multiboot.stderr


def test_exact_stops_never_replay_a_guest_store():
    """Stopped from another thread thousands of times, ``inc rax; inc qword [m]`` keeps
    [m] equal to RAX: no stop lands after the store with RIP still on it."""
    import struct
    import threading

    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RIP

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, b"\x48\xff\xc0\x48\xff\x04\x25\x00\x80\x00\x00\xeb\xf3")
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
    unicorn_internals.CpuInternals(uc, unicorn_internals.self_check()).exact_stops()
    done = threading.Event()

    def stopper():
        while not done.wait(0.0002):
            uc.emu_stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    rip = 0x1000
    try:
        for _ in range(2000):
            uc.emu_start(rip, 0)
            rip = uc.reg_read(UC_X86_REG_RIP)
            assert rip == 0x1000  # the loop is one translated block: stops land at its start
    finally:
        done.set()
        thread.join()
    assert struct.unpack("<Q", uc.mem_read(0x8000, 8))[0] == uc.reg_read(UC_X86_REG_RAX)
