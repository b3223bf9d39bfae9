"""Where our time goes: a QD1 read command, and a guest run from process start to exit.

    python -m bench.profiling            the qd1, ncq and boot reports
    python -m bench.profiling qd1        per-command costs of 4 KiB QD1 reads
    python -m bench.profiling boot       start-up: interpreter, imports, board, loader, run
    python -m bench.profiling perf       `perf record` of the per-command path of every
                                         bench guest (QD1, NCQ, 128 KiB): where the CPU
                                         goes, Python, Unicorn, the kernel (needs perf)
    python -m bench.profiling perf --guest bench_osdev --workload qd1 --top 40
    python -m bench.profiling floor      what Unicorn and a Python device must pay per
                                         command, per bench guest (bench/floor.py)

Everything runs in-process on emu.machine.board.Board (as `ahci-emu run` does),
except the start-up report's whole-process timings and perf mode, which records
`ahci-emu run` processes. Per-command figures are the guest's own timing of its
command loop (tsc=, as in the benchmarks), so boot and set-up are not in them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.clock import tsc_hz  # noqa: E402
from bench.machines import guest  # noqa: E402
from bench.workloads import BENCH_GUESTS, SUMMARY  # noqa: E402

PORT_REGS = {
    0x00: "PxCLB",
    0x04: "PxCLBU",
    0x08: "PxFB",
    0x0C: "PxFBU",
    0x10: "PxIS",
    0x14: "PxIE",
    0x18: "PxCMD",
    0x20: "PxTFD",
    0x24: "PxSIG",
    0x28: "PxSSTS",
    0x2C: "PxSCTL",
    0x30: "PxSERR",
    0x34: "PxSACT",
    0x38: "PxCI",
    0x3C: "PxSNTF",
    0x40: "PxFBS",
}
APPEND = "op=read bs=4096 pattern=rand"


def reg_name(offset: int) -> str:
    if offset >= 0x100:
        return PORT_REGS.get((offset - 0x100) % 0x80, f"port+0x{(offset - 0x100) % 0x80:x}")
    return f"ghc+0x{offset:x}"


@contextlib.contextmanager
def data_disk(size: int = 64 << 20):
    with tempfile.TemporaryDirectory(prefix="ahci-prof-") as tmp:
        path = Path(tmp) / "data.img"
        with open(path, "wb") as f:
            for i in range(size >> 20):
                f.write(os.urandom(1 << 20) if i < 4 else bytes([i & 0xFF]) * (1 << 20))
        yield path


def run_board(disk: Path, append: str, *, guest_name: str = "bench", hooks=None) -> float:
    """Boot ``guest_name`` with ``append`` on ``disk`` in this process; seconds from
    Board() to exit (the guest's own timing of its commands is in :func:`per_command_us`)."""
    from emu.machine.board import Board, BoardConfig
    from emu.storage.chain import open_chain

    with open_chain(str(disk)) as chain:
        serial = io.BytesIO()
        start = time.perf_counter()
        board = Board(BoardConfig(disks=[chain], serial=serial))
        if hooks:
            hooks(board)
        board.load(str(guest(guest_name)), append)
        code = board.run(300)
        seconds = time.perf_counter() - start
    if code != 0 or b"errors=0" not in serial.getvalue():
        raise RuntimeError(f"bench failed ({code}): {serial.getvalue().decode()}")
    run_board.last_output = serial.getvalue().decode()
    return seconds


def per_command_us(disk: Path, append: str, count: int, reps: int = 5) -> float:
    """Microseconds per command, in-process: the median of the guest's own timings."""
    samples = []
    for _ in range(reps):
        run_board(disk, f"{append} count={count}")
        match = SUMMARY.search(run_board.last_output)
        samples.append(int(match.group(5)) / tsc_hz() / count * 1e6)
    return statistics.median(samples)


class MmioCounter:
    """Counts ABAR accesses by register and times the device's Python work for them."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seconds = 0.0

    def install(self, board) -> None:
        hba = board.hba
        read, write = hba.read, hba.write
        clock = time.perf_counter

        def counted_read(offset, size):
            t = clock()
            value = read(offset, size)
            self.seconds += clock() - t
            self.counts["read", reg_name(offset)] += 1
            return value

        def counted_write(offset, size, value):
            t = clock()
            write(offset, size, value)
            self.seconds += clock() - t
            self.counts["write", reg_name(offset)] += 1

        # The MMIO closures hold the region's read/write; swap them on the region.
        for region in board.mmio._regions:
            if region.name == "AHCI ABAR":
                base = region.base
                board.mmio.move(region, None)
                region.read, region.write = counted_read, counted_write
                board.mmio.move(region, base)


def mmio_round_trip() -> None:
    """Cost of one guest MMIO read, from the library's link wait on empty ports: bench
    count=0 with one disk (5 empty ports, 10,000 PxSSTS polls each) against six disks."""
    from emu.machine.board import Board, BoardConfig
    from emu.storage.chain import open_chain

    with tempfile.TemporaryDirectory(prefix="ahci-prof-") as tmp, contextlib.ExitStack() as st:
        chains = []
        for i in range(6):
            path = Path(tmp) / f"d{i}.img"
            with open(path, "wb") as f:
                f.truncate(64 << 20)
            chains.append(st.enter_context(open_chain(str(path))))

        def boot(disks) -> float:
            best = float("inf")
            for _ in range(7):
                start = time.perf_counter()
                board = Board(BoardConfig(disks=disks, serial=io.BytesIO()))
                board.load(str(guest("bench")), "count=0")
                board.run(60)
                best = min(best, time.perf_counter() - start)
            return best

        one, six = boot(chains[:1]), boot(chains)
    print(
        f"bench count=0 in-process: {one * 1e3:.1f} ms with 1 disk + 5 empty ports, "
        f"{six * 1e3:.1f} ms with 6 disks: {(one - six) / 50000 * 1e6:.2f} us per PxSSTS "
        "poll (one MMIO read round trip, guest loop included)"
    )


def count_instructions(disk: Path, append: str) -> int:
    from unicorn import UC_HOOK_CODE

    total = [0]

    def hook(board):
        def on_code(_uc, _address, _size, _ud):
            total[0] += 1

        board.uc.hook_add(UC_HOOK_CODE, on_code)

    run_board(disk, append, hooks=hook)
    return total[0]


def profile_functions(disk: Path, append: str, count: int, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_board(disk, f"{append} count={count}")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def qd1_report(append: str = APPEND, label: str = "4 KiB random read, QD1") -> None:
    n1, n2 = 1000, 21000
    with data_disk() as disk:
        print(f"== {label}: per command (in-process, {n1} vs {n2} commands) ==")
        for _ in range(2):  # warm the page cache and the imports
            run_board(disk, f"{append} count=10")
        per_op = per_command_us(disk, append, n2 - n1)
        print(f"per command, the guest's own timing (no instrumentation): {per_op:.2f} us")

        counters, walls = {}, {}
        for n in (n1, n2):
            counter = MmioCounter()
            walls[n] = run_board(disk, f"{append} count={n}", hooks=counter.install)
            counters[n] = counter
        delta = counters[n2].counts - counters[n1].counts
        per_cmd = {key: value / (n2 - n1) for key, value in delta.items()}
        total = sum(per_cmd.values())
        print(
            f"ABAR accesses per command: {total:.2f}: "
            + ", ".join(f"{k[0]} {k[1]} {v:.2f}" for k, v in sorted(per_cmd.items()))
        )
        device = (counters[n2].seconds - counters[n1].seconds) / (n2 - n1) * 1e6
        wall = (walls[n2] - walls[n1]) / (n2 - n1) * 1e6
        print(
            f"instrumented run: {wall:.2f} us per command, of which {device:.2f} us inside "
            "AhciHba.read/write (the command runs inside the PxCI write); the rest is the "
            "guest, Unicorn's MMIO exits and the ctypes callbacks (and the counting itself)"
        )

        i1 = count_instructions(disk, f"{append} count=100")
        i2 = count_instructions(disk, f"{append} count=1100")
        print(
            f"guest instructions per command: {(i2 - i1) / 1000:.0f} "
            f"(boot and set-up: {i1 - (i2 - i1) // 10:,})"
        )

        counter = MmioCounter()
        run_board(disk, f"{append} count=0", hooks=counter.install)
        t = min(run_board(disk, f"{append} count=0") for _ in range(5))
        polls = counter.counts["read", "PxSSTS"]
        mmio_round_trip()
        print(
            f"boot with count=0: {t * 1e3:.1f} ms in-process, {sum(counter.counts.values()):,} "
            f"ABAR accesses ({polls:,} PxSSTS reads: the library's link wait on empty ports)"
        )
        print()
        print(f"cProfile of {n2} commands (sorted by own time; divide by {n2} per command):")
        print(profile_functions(disk, append, n2))


def importtime(cmd: list[str]) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) from -X importtime."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    return rows


def best_process(cmd: list[str], reps: int = 7, env=None) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=REPO, env=env, check=False)
        best = min(best, time.perf_counter() - t)
    return best


def boot_report() -> None:
    print("== start-up: `ahci-emu run hello`, process start to exit ==")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    whole = best_process([sys.executable, "-m", "emu.cli", "run", "hello"], env=env)
    bare = best_process([sys.executable, "-c", "pass"])
    bare_s = best_process([sys.executable, "-S", "-c", "pass"])
    bare_i = best_process([sys.executable, "-I", "-S", "-c", "pass"])
    imports = best_process(
        [sys.executable, "-c", "import emu.commands.run, emu.machine.board, emu.storage.chain"],
        env=env,
    )
    qemu = shutil.which("qemu-system-x86_64")
    print(f"whole run (best of 7): {whole * 1e3:.1f} ms")
    print(
        f"python -c pass: {bare * 1e3:.1f} ms; with -S (no site): {bare_s * 1e3:.1f} ms; "
        f"-I -S: {bare_i * 1e3:.1f} ms"
    )
    print(
        f"python + imports of run/board/chain: {imports * 1e3:.1f} ms "
        f"(imports alone ~{(imports - bare) * 1e3:.1f} ms)"
    )
    if qemu:
        from emu.testing.rig import qemu_command

        q = best_process(qemu_command(guest("hello"), "", [], qemu))
        print(f"QEMU hello (best of 7): {q * 1e3:.1f} ms; target 0.6x = {q * 0.6e3:.1f} ms")

    rows = importtime(["-m", "emu.cli", "run", "hello"])
    groups: Counter[str] = Counter()
    for self_us, _cum, _indent, mod in rows:
        top = mod.split(".")[0]
        key = ".".join(mod.split(".")[:2]) if top == "emu" else top
        groups[key] += self_us
    total = sum(groups.values())
    print(
        f"\nimports (-X importtime, self time summed by package; total {total / 1e3:.1f} ms, "
        "inflated by the instrumentation):"
    )
    for key, us in groups.most_common(18):
        print(f"  {key:28s} {us / 1e3:7.2f} ms")
    print("largest cumulative imports:")
    top_level = [r for r in rows if len(r[2]) <= 1]
    for self_us, cum, _indent, mod in sorted(top_level, key=lambda r: -r[1])[:12]:
        print(f"  {mod:40s} {cum / 1e3:7.2f} ms (self {self_us / 1e3:.2f})")

    # In-process phases (imports already done).
    from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc

    from emu.machine.board import Board, BoardConfig
    from emu.machine.loader import load_multiboot
    from emu.machine.memory import GuestMemory

    def best(fn, reps=20):
        b = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            b = min(b, time.perf_counter() - t)
        return b * 1e3

    def uc_only():
        Uc(UC_ARCH_X86, UC_MODE_32)

    def uc_map():
        mem = GuestMemory(128 << 20)
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map_ptr(0, mem.size, UC_PROT_ALL, mem.host_address)

    def board_only():
        Board(BoardConfig(serial=io.BytesIO()))

    def loader():
        load_multiboot(GuestMemory(128 << 20), str(guest("hello")), "")

    def whole_hello():
        b = Board(BoardConfig(serial=io.BytesIO()))
        b.load(str(guest("hello")), "")
        b.run(60)

    print("\nin-process phases (best of 20, after imports):")
    print(f"  Uc(UC_ARCH_X86, UC_MODE_32)                 {best(uc_only):6.2f} ms")
    print(f"  GuestMemory(128 MiB) + Uc + mem_map_ptr    {best(uc_map):6.2f} ms")
    print(f"  Board(BoardConfig())                        {best(board_only):6.2f} ms")
    print(f"  load_multiboot(hello) incl. GuestMemory     {best(loader):6.2f} ms")
    print(f"  Board + load + run(hello)                   {best(whole_hello):6.2f} ms")

    profiler = cProfile.Profile()
    profiler.enable()
    whole_hello()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
    print("\ncProfile of one in-process hello run (cumulative):")
    print(out.getvalue())


PERF_WORKLOADS = {
    "qd1": ("op=read bs=4096 pattern=rand", 40000),
    "ncq": ("op=ncq bs=4096 qd=32 pattern=rand", 65536),
    "seq": ("op=read bs=131072 pattern=seq", 10000),
}


def perf_summary(data: Path, top: int) -> str:
    """`perf report`'s share of samples by library, then its top symbols."""

    def report(sort: str, lines: int) -> list[str]:
        out = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--sort", sort],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        rows = [line.rstrip() for line in out.splitlines() if line.strip() and line[0] != "#"]
        return rows[:lines]

    return "\n".join(["by library:", *report("dso", 8), "top symbols:", *report("dso,sym", top)])


def perf_report(guests: list[str], workloads: list[str], top: int) -> int:
    """Record `ahci-emu run` of each bench guest on each workload with perf."""
    from bench.machines import ours_command

    base, env = ours_command()
    with data_disk() as disk, tempfile.TemporaryDirectory(prefix="ahci-perf-") as tmp:
        for name in guests:
            for workload in workloads:
                append, count = PERF_WORKLOADS[workload]
                data = Path(tmp) / f"{name}-{workload}.data"
                cmd = [*base, "run", str(guest(name)), "--append", f"{append} count={count}"]
                proc = subprocess.run(
                    [
                        "perf",
                        "record",
                        "-q",
                        "-F",
                        "2000",
                        "-o",
                        str(data),
                        "--",
                        *cmd,
                        "--disk",
                        str(disk),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                match = SUMMARY.search(proc.stdout)
                if proc.returncode != 0 or match is None:
                    print(f"bench.profiling: {name} {workload} failed: {proc.stdout}{proc.stderr}")
                    return 1
                per_op = int(match.group(5)) / tsc_hz() / count * 1e6
                print(
                    f"== perf: {name}, {workload} ({append}), {count} commands, "
                    f"{per_op:.2f} us per command by the guest's clock =="
                )
                print(perf_summary(data, top))
                print()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", choices=("qd1", "ncq", "boot", "perf", "floor", "all"), default="all"
    )
    parser.add_argument(
        "--guest", action="append", choices=BENCH_GUESTS, help="perf: this bench guest only"
    )
    parser.add_argument(
        "--workload", action="append", choices=sorted(PERF_WORKLOADS), help="perf: this only"
    )
    parser.add_argument("--top", type=int, default=25, help="perf: symbols to show")
    args = parser.parse_args(argv)
    if args.what == "perf":
        if shutil.which("perf") is None:
            print("bench.profiling: perf not found (install linux-perf)", file=sys.stderr)
            return 2
        return perf_report(
            args.guest or list(BENCH_GUESTS), args.workload or ["qd1", "ncq"], args.top
        )
    if args.what == "floor":
        from bench.floor import report

        report()
        return 0
    if args.what in ("qd1", "all"):
        qd1_report()
    if args.what in ("ncq", "all"):
        qd1_report("op=ncq bs=4096 qd=32 pattern=rand", "4 KiB random read, NCQ QD32")
    if args.what in ("boot", "all"):
        boot_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
