/*
 * A tiny TAP-like test framework. Each check prints one line:
 *   ok N - name
 *   not ok N - name: detail
 * test_done() prints the plan "1..N" and exits: 0 if every check passed,
 * else the number of failures (at most 100).
 */
#ifndef LIB_TEST_H
#define LIB_TEST_H

#include <stdint.h>

#include "printf.h"

/* Returns cond (normalised to 0/1). On failure, the detail is
 * printf-formatted from fmt. */
int check(int cond, const char *name, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Same, without a detail. */
int check_ok(int cond, const char *name);

/* Compare two values; on failure print both in hex. Values wider than 32
 * bits are compared and printed as 64-bit, others as 32-bit. */
#define check_eq(actual, expected, name)                                   \
    check_eq64((uint64_t)(actual), (uint64_t)(expected), (name),          \
               sizeof(actual) > 4 || sizeof(expected) > 4)
int check_eq64(uint64_t actual, uint64_t expected, const char *name, int wide);

/* A TAP comment line: "# " + formatted text + "\n". */
void test_diag(const char *fmt, ...) PRINTF_LIKE(1, 2);

unsigned test_count(void);
unsigned test_failures(void);

/* Print the plan line and exit (see above). */
void test_done(void) __attribute__((noreturn));

#endif
