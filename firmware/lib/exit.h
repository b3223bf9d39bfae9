/* Ending the run through the debug-exit port (QEMU isa-debug-exit). */
#ifndef LIB_EXIT_H
#define LIB_EXIT_H

#include <stdint.h>

#define DEBUG_EXIT_PORT 0xF4

/* Write `code` to port 0xF4 (32-bit), then halt forever. ahci-emu exits with
 * `code`, QEMU with (code << 1) | 1: keep code below 128. */
void guest_exit(uint32_t code) __attribute__((noreturn));

#endif
