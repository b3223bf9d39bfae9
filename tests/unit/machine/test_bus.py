"""The port bus, open-bus answers and the once-only stray-access reports."""

import io

from emu.machine.bus import PortBus, StrayReporter


def make_bus(strict=False):
    stops = []
    stream = io.StringIO()
    reporter = StrayReporter(strict, lambda: stops.append(1), lambda: 0x100123, stream)
    return PortBus(reporter), reporter, stops, stream


def test_claimed_ports_dispatch_with_offset_in_range():
    bus, *_ = make_bus()
    seen = []
    bus.register(
        0x3F8, 8, lambda off, size: off * 16 + size, lambda o, s, v: seen.append((o, s, v))
    )
    assert bus.read(0x3FD, 1) == 0x51
    bus.write(0x3F9, 2, 0xAB)
    assert seen == [(1, 2, 0xAB)]


def test_unclaimed_port_reads_all_ones_and_is_reported_once():
    bus, _, stops, stream = make_bus()
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0x80, 2) == 0xFFFF
    assert bus.read(0x80, 4) == 0xFFFFFFFF
    bus.write(0x80, 1, 0)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "ahci-emu: warning: I/O port read of 0x0080 decoded by nothing (EIP=0x00100123); open bus",
        "ahci-emu: warning: I/O port write of 0x0080 decoded by nothing (EIP=0x00100123); open bus",
    ]
    assert stops == []


def test_strict_records_the_first_stray_access_and_stops():
    bus, reporter, stops, stream = make_bus(strict=True)
    assert bus.read(0x1234, 4) == 0xFFFFFFFF
    bus.write(0x99, 1, 1)
    assert stops == [1]
    assert "0x1234" in str(reporter.error)
    assert reporter.error.exit_status == 125
    assert stream.getvalue() == ""


def test_unregister_releases_the_range():
    bus, *_ = make_bus()
    bus.register(0xC040, 32, lambda o, s: 0, lambda o, s, v: None)
    bus.unregister(0xC040, 32)
    assert bus.read(0xC040, 4) == 0xFFFFFFFF
