/*
 * 64-bit division without libgcc. The library also defines the helpers GCC
 * calls for 64-bit `/` and `%` on i386 (__udivdi3, __umoddi3, __divdi3,
 * __moddi3, __udivmoddi4), so guests may divide uint64_t values directly.
 */
#ifndef LIB_DIV64_H
#define LIB_DIV64_H

#include <stdint.h>

/* Divide *n by d (d != 0) in place; return the remainder. */
uint32_t div64_32(uint64_t *n, uint32_t d);

/* Quotient of n / d; the remainder goes to *rem if rem is not NULL. */
uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem);

#endif
