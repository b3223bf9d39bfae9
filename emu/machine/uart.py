"""COM1: a 16550 UART as far as a polled writer needs.

THR writes go to the transcript; LSR always reports the transmitter empty
(THRE|TEMT), so a polled writer never waits. The divisor latch, IER, LCR, MCR
and scratch registers hold what is written; IIR reports no interrupt pending.
Nothing is ever received.
"""

from typing import BinaryIO

BASE = 0x3F8
LENGTH = 8

RBR_THR = 0
IER = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

LCR_DLAB = 0x80
LSR_THRE = 0x20
LSR_TEMT = 0x40
IIR_NO_INTERRUPT = 0x01
MSR_IDLE = 0xB0  # DCD, DSR, CTS asserted: a terminal is attached


class Uart16550:
    """Transmit-only 16550; ``output`` receives every byte the guest sends."""

    def __init__(self, output: BinaryIO) -> None:
        self.output = output
        self.divisor = 12  # 9600 baud, as firmware leaves it
        self.ier = 0
        self.lcr = 0x03  # 8N1
        self.mcr = 0
        self.scr = 0
        self.fifo_enabled = False

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):  # a wide access reads consecutive registers; past COM1: open bus
            byte = self._read_byte(offset + i) if offset + i < LENGTH else 0xFF
            value |= byte << (8 * i)
        return value

    def _read_byte(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR:
            return self.divisor & 0xFF if dlab else 0
        if offset == IER:
            return self.divisor >> 8 if dlab else self.ier
        if offset == IIR_FCR:
            return IIR_NO_INTERRUPT | (0xC0 if self.fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            return LSR_THRE | LSR_TEMT
        if offset == MSR:
            return MSR_IDLE
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self.output.write(bytes((value,)))
        elif offset == IER:
            if dlab:
                self.divisor = (self.divisor & 0xFF) | value << 8
            else:
                self.ier = value & 0x0F
        elif offset == IIR_FCR:
            self.fifo_enabled = bool(value & 0x01)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
