"""The local-APIC timer (one-shot, periodic, divide, current count) and self-IPIs."""

import pytest

from emu.machine.apic import EOI, LVT_TIMER, SVR
from emu.machine.apic_timer import (
    ICR_HIGH,
    ICR_LOW,
    TIMER_CURRENT,
    TIMER_DIVIDE,
    TIMER_INITIAL,
    TimerApic,
    divide_by,
)

BUS_HZ = 1_000_000
VECTOR = 0xEC
PERIODIC = 1 << 17
MASKED = 1 << 16


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def apic(clock):
    a = TimerApic(clock, BUS_HZ)
    a.write(SVR, 4, 0x1FF)
    a.write(TIMER_DIVIDE, 4, 0xB)  # divide by 1
    return a


def test_one_shot_fires_once_at_its_deadline(apic, clock):
    apic.write(LVT_TIMER, 4, VECTOR)
    apic.write(TIMER_INITIAL, 4, 1000)  # 1 ms
    assert apic.deadline() == pytest.approx(100.001)
    clock.t = 100.0005
    apic.expire(clock.t)
    assert apic.deliverable() is None
    assert apic.read(TIMER_CURRENT, 4) == pytest.approx(500, abs=1)
    clock.t = 100.0011
    apic.expire(clock.t)
    assert apic.deliverable() == VECTOR
    assert apic.deadline() is None and apic.read(TIMER_CURRENT, 4) == 0


def test_periodic_reloads_and_keeps_its_phase(apic, clock):
    apic.write(LVT_TIMER, 4, VECTOR | PERIODIC)
    apic.write(TIMER_INITIAL, 4, 1000)
    assert apic.read(LVT_TIMER, 4) == VECTOR | PERIODIC
    clock.t = 100.00105
    apic.expire(clock.t)
    assert apic.deliverable() == VECTOR
    assert apic.deadline() == pytest.approx(100.002)
    apic.acknowledge(VECTOR)
    apic.write(EOI, 4, 0)
    clock.t = 100.0035  # one period missed: the ticks merge into one interrupt
    apic.expire(clock.t)
    assert apic.fired == 2
    assert apic.deadline() == pytest.approx(100.004)


def test_masked_timer_counts_but_raises_nothing(apic, clock):
    apic.write(LVT_TIMER, 4, VECTOR | MASKED)
    apic.write(TIMER_INITIAL, 4, 10)
    clock.t = 101
    apic.expire(clock.t)
    assert apic.irr == 0 and apic.fired == 0


def test_divide_configuration(apic, clock):
    assert [divide_by(v) for v in (0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB)] == [
        2, 4, 8, 16, 32, 64, 128, 1,
    ]  # fmt: skip
    apic.write(TIMER_DIVIDE, 4, 0x3)
    apic.write(LVT_TIMER, 4, VECTOR)
    apic.write(TIMER_INITIAL, 4, 1000)
    assert apic.deadline() == pytest.approx(100.016)
    assert apic.read(TIMER_DIVIDE, 4) == 0x3


def test_writing_zero_initial_count_stops_the_timer(apic):
    apic.write(LVT_TIMER, 4, VECTOR)
    apic.write(TIMER_INITIAL, 4, 1000)
    apic.write(TIMER_INITIAL, 4, 0)
    assert apic.deadline() is None


@pytest.mark.parametrize(
    ("icr_high", "icr_low", "delivered"),
    [
        (0, 0x40000 | 0xF3, True),  # shorthand self
        (0, 0x80000 | 0xF3, True),  # all including self
        (0, 0xF3, True),  # destination 0: this CPU
        (0x01000000, 0xF3, False),  # another APIC id
        (0, 0xC0000 | 0xF3, False),  # all excluding self
        (0, 0x500 | 0xF3, False),  # INIT
    ],
)
def test_self_ipis_raise_their_vector(apic, icr_high, icr_low, delivered):
    changes = []
    apic._on_change = lambda: changes.append(apic.deliverable())
    apic.write(ICR_HIGH, 4, icr_high)
    apic.write(ICR_LOW, 4, icr_low)
    assert (apic.deliverable() == 0xF3) is delivered
    assert apic.read(ICR_LOW, 4) & 0x1000 == 0  # delivery status idle
    assert changes[-1] == apic.deliverable()  # the board hears of it at once


def test_an_eoi_tells_the_board_a_lower_vector_may_now_go(apic):
    heard = []
    apic._on_change = lambda: heard.append(apic.deliverable())
    apic.accept(0xEC)
    apic.acknowledge(0xEC)
    apic.accept(0x22)
    assert apic.deliverable() is None  # 0xEC in service blocks 0x22
    apic.write(EOI, 4, 0)
    assert heard[-1] == 0x22
