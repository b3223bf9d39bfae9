"""The PC devices the Linux board adds or wires: UART interrupts, CMOS RTC, the 8259 pair."""

import calendar
import io

from emu.machine import uart
from emu.machine.pic8259 import Pic8259
from emu.machine.rtc import CmosRtc


def make_uart():
    levels = []
    return uart.Uart16550(io.BytesIO(), irq=levels.append), levels


def test_thre_interrupt_is_raised_by_enabling_it_and_cleared_by_reading_iir():
    com, levels = make_uart()
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_NO_INTERRUPT
    com.write(uart.IER, 1, uart.IER_ETBEI)
    assert levels == [True]
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_THRE
    assert levels == [True, False]
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_NO_INTERRUPT


def test_each_transmitted_byte_raises_thre_again():
    com, levels = make_uart()
    com.write(uart.IER, 1, uart.IER_ETBEI)
    com.read(uart.IIR_FCR, 1)
    com.write(uart.RBR_THR, 1, ord("x"))
    assert com.output.getvalue() == b"x"
    assert levels == [True, False, True]  # a new edge for the I/O APIC


def test_disabling_thre_drops_the_line_and_reenabling_raises_it():
    com, levels = make_uart()
    com.write(uart.IER, 1, uart.IER_ETBEI)
    com.write(uart.IER, 1, 0)
    com.write(uart.IER, 1, uart.IER_ETBEI)
    assert levels == [True, False, True]


def test_received_bytes_raise_rx_interrupt_before_thre():
    com, _ = make_uart()
    com.write(uart.IER, 1, uart.IER_ERBFI | uart.IER_ETBEI)
    com.receive(b"ab")
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_RX_DATA
    assert com.read(uart.LSR, 1) & uart.LSR_DR
    assert bytes([com.read(uart.RBR_THR, 1), com.read(uart.RBR_THR, 1)]) == b"ab"
    assert not com.read(uart.LSR, 1) & uart.LSR_DR
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_THRE


def test_a_uart_without_a_wired_line_still_reports_iir():
    com = uart.Uart16550(io.BytesIO())
    com.write(uart.IER, 1, uart.IER_ETBEI)
    assert com.read(uart.IIR_FCR, 1) == uart.IIR_THRE


def rtc_read(rtc: CmosRtc, register: int) -> int:
    rtc.write(0, 1, register | 0x80)  # bit 7 (NMI mask) is not part of the index
    return rtc.read(1, 1)


def bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0xF)


def test_rtc_shows_the_wall_clock_plus_guest_time_in_bcd():
    now = [10.0]
    start = calendar.timegm((2026, 12, 3, 9, 59, 58, 0, 0, 0))
    rtc = CmosRtc(lambda: now[0], wall_clock=start)
    assert rtc_read(rtc, 0x0B) == 0x02  # 24-hour, BCD
    assert not rtc_read(rtc, 0x0A) & 0x80  # never mid-update
    assert rtc_read(rtc, 0x0D) == 0x80  # valid
    now[0] += 3600 * 24 + 5  # a day and 5 s of guest time (skipped idle time included)
    fields = [bcd(rtc_read(rtc, r)) for r in (0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00)]
    assert fields == [20, 26, 12, 4, 10, 0, 3]


def test_rtc_ram_keeps_what_is_written_and_time_writes_are_dropped():
    rtc = CmosRtc(lambda: 0.0, wall_clock=0)
    rtc.write(0, 1, 0x40)
    rtc.write(1, 1, 0x5A)
    assert rtc_read(rtc, 0x40) == 0x5A
    rtc.write(0, 1, 0x00)
    rtc.write(1, 1, 0x59)
    assert rtc_read(rtc, 0x00) == 0


def test_8259_holds_its_mask_after_initialization_and_reports_nothing_pending():
    pic = Pic8259()
    pic.write(1, 1, 0xFB)
    assert pic.read(1, 1) == 0xFB  # how Linux tells an 8259 is there
    for value, port in ((0x11, 0), (0x30, 1), (0x04, 1), (0x01, 1)):  # ICW1-ICW4
        pic.write(port, 1, value)
    assert pic.read(1, 1) == 0x00
    pic.write(1, 1, 0xFF)
    assert pic.read(1, 1) == 0xFF
    pic.write(0, 1, 0x0B)  # OCW3: read ISR
    assert pic.read(0, 1) == 0
