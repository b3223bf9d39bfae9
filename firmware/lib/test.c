#include "test.h"

#include <stdarg.h>

#include "exit.h"

static unsigned n_checks;
static unsigned n_failed;

static int report(int cond, const char *name, const char *fmt, va_list ap)
{
    n_checks++;
    if (cond) {
        printf("ok %u - %s\n", n_checks, name);
        return 1;
    }
    n_failed++;
    printf("not ok %u - %s", n_checks, name);
    if (fmt) {
        printf(": ");
        vprintf(fmt, ap);
    }
    printf("\n");
    return 0;
}

int check(int cond, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = report(cond != 0, name, fmt, ap);
    va_end(ap);
    return r;
}

static int report_plain(int cond, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = report(cond, name, fmt, ap);
    va_end(ap);
    return r;
}

int check_ok(int cond, const char *name)
{
    return report_plain(cond != 0, name, 0);
}

int check_eq64(uint64_t actual, uint64_t expected, const char *name, int wide)
{
    if (wide)
        return check(actual == expected, name, "got 0x%016llx, expected 0x%016llx",
                     (unsigned long long)actual, (unsigned long long)expected);
    return check((uint32_t)actual == (uint32_t)expected, name, "got 0x%08x, expected 0x%08x",
                 (uint32_t)actual, (uint32_t)expected);
}

void test_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

unsigned test_count(void)
{
    return n_checks;
}

unsigned test_failures(void)
{
    return n_failed;
}

void test_done(void)
{
    printf("1..%u\n", n_checks);
    guest_exit(n_failed > 100 ? 100 : n_failed);
}
