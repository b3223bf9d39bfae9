"""The board: guest RAM, port and MMIO buses, PCI, UART, debug exit, interrupts."""
