/*
 * Formatted output to COM1.
 *
 * Conversions: %d %i %u %x %X %s %c %p %%.
 * Flags: '-' (left-justify), '0' (zero-pad), '+', ' ', '#' (0x prefix).
 * Width and precision: digits or '*'. Length: hh h l ll z.
 * %p prints 0x and 8 hex digits. A NULL %s prints "(null)".
 */
#ifndef LIB_PRINTF_H
#define LIB_PRINTF_H

#include <stdarg.h>
#include <stddef.h>

#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

int printf(const char *fmt, ...) PRINTF_LIKE(1, 2);
int vprintf(const char *fmt, va_list ap) PRINTF_LIKE(1, 0);
int snprintf(char *buf, size_t size, const char *fmt, ...) PRINTF_LIKE(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) PRINTF_LIKE(3, 0);

/* Write s and a newline, like C's puts. */
int puts(const char *s);

/* 16 bytes per line: "OFFSET: xx xx ... |ascii|", offsets relative to addr. */
void hexdump(const void *addr, size_t len);

#endif
