#include "serial.h"

#include "io.h"

#define UART_THR 0
#define UART_LSR 5
#define UART_LSR_THRE 0x20

void serial_putc(char c)
{
    while (!(inb(COM1_BASE + UART_LSR) & UART_LSR_THRE))
        cpu_relax();
    outb(COM1_BASE + UART_THR, (uint8_t)c);
}

void serial_write(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        serial_putc(buf[i]);
}
