/* COM1 (0x3F8), polled output. Bytes are sent exactly as given: no CR is
 * added before LF. */
#ifndef LIB_SERIAL_H
#define LIB_SERIAL_H

#include <stddef.h>

#define COM1_BASE 0x3F8

void serial_putc(char c);
void serial_write(const char *buf, size_t len);

#endif
