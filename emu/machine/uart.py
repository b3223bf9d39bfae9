"""COM1: a 16550 UART with its transmit and receive interrupts.

THR writes go to the transcript at once; LSR always reports the transmitter
empty (THRE|TEMT), so a polled writer never waits. The divisor latch, IER,
LCR, MCR and scratch registers hold what is written. Bytes handed to
:meth:`Uart16550.receive` wait in the receive FIFO (LSR.DR, RBR).

Interrupts (IIR, and the ``irq`` line given, IRQ 4 on a PC): received data
available while IER.ERBFI is set; transmitter holding register empty while
IER.ETBEI is set, raised again by each THR write (the byte leaves at once) and
by setting ETBEI, and cleared by the IIR read that reports it or a THR write.
A board without a wired line (``irq=None``) is the polled UART it always was.
"""

from collections import deque
from collections.abc import Callable
from typing import BinaryIO

BASE = 0x3F8
LENGTH = 8
ISA_IRQ = 4  # COM1's interrupt: I/O APIC input 4

RBR_THR = 0
IER = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

LCR_DLAB = 0x80
LSR_DR = 0x01
LSR_THRE = 0x20
LSR_TEMT = 0x40
IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IIR_NO_INTERRUPT = 0x01
IIR_THRE = 0x02
IIR_RX_DATA = 0x04
MSR_IDLE = 0xB0  # DCD, DSR, CTS asserted: a terminal is attached


class Uart16550:
    """A 16550; ``output`` receives every byte the guest sends, ``irq(level)`` is told
    when the interrupt output changes."""

    def __init__(self, output: BinaryIO, irq: Callable[[bool], None] | None = None) -> None:
        self.output = output
        self._irq = irq
        self._level = False
        self._thre_pending = False
        self._rx: deque[int] = deque()
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
            if dlab:
                return self.divisor & 0xFF
            value = self._rx.popleft() if self._rx else 0
            self._update()
            return value
        if offset == IER:
            return self.divisor >> 8 if dlab else self.ier
        if offset == IIR_FCR:
            return self._read_iir() | (0xC0 if self.fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
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
                self._thre_pending = True  # sent at once: the register is empty again
                self._update()
        elif offset == IER:
            if dlab:
                self.divisor = (self.divisor & 0xFF) | value << 8
            else:
                if value & IER_ETBEI and not self.ier & IER_ETBEI:
                    self._thre_pending = True
                self.ier = value & 0x0F
                self._update()
        elif offset == IIR_FCR:
            self.fifo_enabled = bool(value & 0x01)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value

    def receive(self, data: bytes) -> None:
        """Bytes arriving on the serial line (what a terminal would type)."""
        self._rx.extend(data)
        self._update()

    def _pending(self) -> int:
        if self.ier & IER_ERBFI and self._rx:
            return IIR_RX_DATA
        if self.ier & IER_ETBEI and self._thre_pending:
            return IIR_THRE
        return IIR_NO_INTERRUPT

    def _read_iir(self) -> int:
        value = self._pending()
        if value == IIR_THRE:
            self._thre_pending = False  # reading IIR acknowledges a THRE interrupt
            self._update()
        return value

    def _update(self) -> None:
        level = self._pending() != IIR_NO_INTERRUPT
        if level != self._level:
            self._level = level
            if self._irq is not None:
                self._irq(level)
