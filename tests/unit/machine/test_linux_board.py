"""The 64-bit board from the command line, with tiny synthetic kernels (no Linux needed):
what the guest sees of the timer, halt and interrupts, and how a run ends."""

import struct
import subprocess
import sys

from bzimages import ENTRY_OFFSET, KERNEL_ADDRESS, make_bzimage, make_vmlinux

from emu.machine.linux_board import CRYSTAL_HZ, STOP_STORM_ENV, stop_storm_seconds, tsc_leaf

IDT_OFFSET = 0x1000
TIMER_VECTOR = 0x40


def run(tmp_path, text: bytes, *args: str) -> subprocess.CompletedProcess:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(make_bzimage(make_vmlinux(text)))
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", "run", str(kernel), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )


def kernel_text(code: bytes, extra: dict[int, bytes] | None = None) -> bytes:
    """``code`` at the ELF entry; ``extra`` places more bytes at given offsets."""
    text = bytearray(0x2000)
    text[ENTRY_OFFSET : ENTRY_OFFSET + len(code)] = code
    for offset, data in (extra or {}).items():
        text[offset : offset + len(data)] = data
    return bytes(text)


def timer_then_halt(seconds: int) -> bytes:
    """Arm the local-APIC timer (one-shot, divide 1) ``seconds`` ahead, sti; hlt; the
    vector's handler writes 7 to the debug-exit port."""
    count = seconds * CRYSTAL_HZ
    code = (
        b"\x48\x8d\x05\x49\x00\x00\x00"  # 0x40 lea rax, [rip+0x49] -> IDTR at 0x90
        b"\x0f\x01\x18"  # 0x47 lidt [rax]
        b"\xbb\x00\x00\xe0\xfe"  # 0x4a mov ebx, 0xFEE00000
        b"\xc7\x83\xf0\x00\x00\x00\xff\x01\x00\x00"  # 0x4f SVR = 0x1FF: APIC on
        b"\xc7\x83\xe0\x03\x00\x00\x0b\x00\x00\x00"  # 0x59 TDCR: divide by 1
        b"\xc7\x83\x20\x03\x00\x00" + struct.pack("<I", TIMER_VECTOR)  # 0x63 LVT timer
        + b"\xc7\x83\x80\x03\x00\x00" + struct.pack("<I", count)  # 0x6d TMICT
        + b"\xfb\xf4\xeb\xfd"  # 0x77 sti; 0x78 hlt; jmp 0x78
        b"\xb0\x07\xe6\xf4\xeb\xfe"  # 0x7b handler: mov al, 7; out 0xf4, al; jmp $
    )  # fmt: skip
    handler = KERNEL_ADDRESS + 0x7B
    gate = struct.pack("<HHBBHII", handler & 0xFFFF, 0x10, 0, 0x8E, handler >> 16, 0, 0)
    idtr = struct.pack("<HQ", TIMER_VECTOR * 16 + 15, KERNEL_ADDRESS + IDT_OFFSET)
    return kernel_text(code, {0x90: idtr, IDT_OFFSET + TIMER_VECTOR * 16: gate})


def test_a_halted_guest_wakes_on_its_timer_and_idle_time_costs_nothing(tmp_path):
    """The timer is 100 s out, the budget 60 s: only a skipped idle period gets there."""
    proc = run(tmp_path, timer_then_halt(100), "--timeout", "60")
    assert proc.returncode == 7, proc.stderr


def test_an_exception_without_a_gate_is_a_triple_fault_with_one_line(tmp_path):
    proc = run(tmp_path, kernel_text(b"\x0f\x0b"), "--timeout", "30")  # ud2, no IDT
    assert proc.returncode == 126
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ahci-emu: error: triple fault: CPU exception 6")


def test_a_kernel_panic_ends_the_run_with_its_message_and_status_123(tmp_path):
    message = b"---[ end Kernel panic - not syncing: VFS: Unable to mount root ]---\r\n"
    code = (
        (
            b"\x48\x8d\x35\x0e\x00\x00\x00"  # lea rsi, [rip+14] -> message
            b"\x66\xba\xf8\x03"  # mov dx, 0x3f8
            b"\xac\x84\xc0\x74\x03\xee\xeb\xf8"  # lodsb; test al, al; jz +3; out dx, al; jmp
            b"\xeb\xfe"  # jmp $ (a panicked kernel spins)
        )
        + message
        + b"\0"
    )
    proc = run(tmp_path, kernel_text(code), "--timeout", "30")
    assert proc.returncode == 123
    assert message in proc.stdout
    assert proc.stderr.decode().splitlines() == [
        "ahci-emu: error: kernel panic: VFS: Unable to mount root"
    ]


def test_initrd_for_a_multiboot_guest_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "emu.cli", "run", "hello", "--initrd", "README.md"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "ahci-emu: error: --initrd is for Linux guests; GUEST is a multiboot ELF"
    ]


def test_cpuid_15h_never_overflows_linux_32_bit_product():
    for tsc_hz in (1_000_000_000, 2_245_748_115, 3_900_000_000, 5_800_000_000):
        denominator, numerator, crystal, _ = tsc_leaf(tsc_hz)
        crystal_khz = crystal // 1000
        assert crystal_khz * numerator < 1 << 32
        tsc_khz = crystal_khz * numerator // denominator
        assert abs(tsc_khz * 1000 - tsc_hz) / tsc_hz < 1e-4


def test_syscall_and_kernel_cpuid_take_effect_while_a_stop_is_pending(tmp_path):
    """A self-IPI the guest cannot take yet (IF=0) makes the board ask Unicorn for a
    stop, and the rest of the block still runs: Unicorn then skips every instruction
    hook after the first one in its list that the instruction's address is inside.
    SYSCALL (from a lower-half address, as user code) must still enter LSTAR, and
    CPUID from the upper half (as kernel code) must still give the board's leaf 15h;
    a skipped SYSCALL falls through (status 3), a native CPUID fails (status 5)."""
    code = bytes.fromhex(
        "488b042500000100"  # 0x00 mov rax, [PML4]
        "48890425f80f0100"  # 0x08 mov [PML4 + 511 * 8], rax: an upper-half alias
        "0f20d80f22d8"  # 0x10 mov rax, cr3; mov cr3, rax
        "bb0000e0fe"  # 0x16 mov ebx, 0xFEE00000
        "c783f0000000ff010000"  # 0x1b SVR = 0x1FF: APIC on
        "b9820000c0b8d600000131d20f30"  # 0x25 LSTAR = handler (0x96)
        "b9810000c031c0ba100000000f30"  # 0x33 STAR: SYSCALL CS = 0x10
        "b9840000c0b80002000031d20f30"  # 0x41 FMASK = IF
        "48b89b00000180ffffff"  # 0x4f mov rax, upper-half alias of 0x5b
        "ffe0"  # 0x59 jmp rax
        "c7830003000040000400"  # 0x5b ICR: self-IPI, vector 0x40 (IF=0: a stop)
        "b81500000031c90fa2"  # 0x65 cpuid(15h, 0)
        "81f940787d01751c"  # 0x6e cmp ecx, 25000000 (the board's crystal); jne 0x92
        "b8bd000001ffe0"  # 0x76 mov eax, 0x7d; jmp rax (back to the lower half)
        "c7830003000040000400"  # 0x7d ICR: the same self-IPI (a stop again)
        "b83c0000000f05"  # 0x87 mov eax, 60; syscall
        "b003e6f4"  # 0x8e fell through: exit 3
        "b005e6f4"  # 0x92 CPUID was not the board's: exit 5
        "b007e6f4"  # 0x96 LSTAR: exit 7
    )
    assert CRYSTAL_HZ == 25_000_000
    proc = run(tmp_path, kernel_text(code), "--timeout", "30")
    assert proc.returncode == 7, proc.stderr


def test_the_stop_storm_knob_takes_only_a_sane_number_of_microseconds(monkeypatch):
    for text, seconds in (("50", 50e-6), ("0.5", 0.5e-6), ("0", None), ("-3", None),
                          ("nan", None), ("inf", None), ("fast", None), ("", None)):  # fmt: skip
        monkeypatch.setenv(STOP_STORM_ENV, text)
        assert stop_storm_seconds() == seconds, text
    monkeypatch.delenv(STOP_STORM_ENV)
    assert stop_storm_seconds() is None
