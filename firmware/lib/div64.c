#include "div64.h"

/* 64-by-32 division step: (hi:lo) / d where hi < d, so the quotient fits. */
static inline uint32_t divl(uint32_t hi, uint32_t lo, uint32_t d, uint32_t *rem)
{
    uint32_t q, r;
    __asm__("divl %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
    *rem = r;
    return q;
}

uint32_t div64_32(uint64_t *n, uint32_t d)
{
    uint32_t hi = (uint32_t)(*n >> 32), lo = (uint32_t)*n;
    uint32_t q_hi = hi / d;
    uint32_t r;
    uint32_t q_lo = divl(hi % d, lo, d, &r);
    *n = ((uint64_t)q_hi << 32) | q_lo;
    return r;
}

uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t q;
    uint64_t r;

    if ((d >> 32) == 0) {
        q = n;
        r = div64_32(&q, (uint32_t)d);
    } else {
        /* d >= 2^32, so the quotient fits in 32 bits: restoring division. */
        q = 0;
        r = n;
        int shift = 0;
        while (!(d >> 63) && (d << 1) <= r) {
            d <<= 1;
            shift++;
        }
        for (; shift >= 0; shift--) {
            q <<= 1;
            if (r >= d) {
                r -= d;
                q |= 1;
            }
            d >>= 1;
        }
    }
    if (rem)
        *rem = r;
    return q;
}

/* The libgcc entry points GCC emits for 64-bit division on i386. */
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem);
uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
int64_t __divdi3(int64_t n, int64_t d);
int64_t __moddi3(int64_t n, int64_t d);

uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem)
{
    return udivmod64(n, d, rem);
}

uint64_t __udivdi3(uint64_t n, uint64_t d)
{
    return udivmod64(n, d, 0);
}

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}

static inline uint64_t uabs64(int64_t v)
{
    return v < 0 ? -(uint64_t)v : (uint64_t)v;
}

int64_t __divdi3(int64_t n, int64_t d)
{
    uint64_t q = udivmod64(uabs64(n), uabs64(d), 0);
    return (int64_t)(((n < 0) != (d < 0)) ? -q : q);
}

int64_t __moddi3(int64_t n, int64_t d)
{
    uint64_t r;
    udivmod64(uabs64(n), uabs64(d), &r);
    return (int64_t)(n < 0 ? -r : r);
}
