#include "multiboot.h"

#include <stddef.h>

#include "string.h"

#define ARG_BUF_SIZE 1024
#define ARG_MAX 64

static char arg_buf[ARG_BUF_SIZE];
static const char *arg_tokens[ARG_MAX];
static int arg_count = -1; /* -1: not parsed yet */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

const char *mb_cmdline(void)
{
    if (mb_magic != MB_BOOTLOADER_MAGIC || !mb_info || !(mb_info->flags & MB_INFO_CMDLINE) ||
        !mb_info->cmdline)
        return "";
    return (const char *)(uintptr_t)mb_info->cmdline;
}

const char *mb_cmdline_args(void)
{
    const char *p = mb_cmdline();
    while (is_space(*p))
        p++;
    while (*p && !is_space(*p))
        p++;
    while (is_space(*p))
        p++;
    return p;
}

static void parse_args(void)
{
    const char *src = mb_cmdline_args();
    size_t len = strlen(src);
    if (len >= ARG_BUF_SIZE)
        len = ARG_BUF_SIZE - 1;
    memcpy(arg_buf, src, len);
    arg_buf[len] = 0;

    arg_count = 0;
    char *p = arg_buf;
    while (*p && arg_count < ARG_MAX) {
        while (is_space(*p))
            *p++ = 0;
        if (!*p)
            break;
        arg_tokens[arg_count++] = p;
        while (*p && !is_space(*p))
            p++;
    }
    while (*p) {
        if (is_space(*p))
            *p = 0;
        p++;
    }
}

/* Value of the last token "name=value" or "name"; NULL if absent. */
static const char *arg_find(const char *name)
{
    if (arg_count < 0)
        parse_args();
    size_t n = strlen(name);
    for (int i = arg_count - 1; i >= 0; i--) {
        const char *t = arg_tokens[i];
        if (strncmp(t, name, n) != 0)
            continue;
        if (t[n] == '=')
            return t + n + 1;
        if (t[n] == 0)
            return t + n;
    }
    return NULL;
}

int arg_has(const char *name)
{
    return arg_find(name) != NULL;
}

const char *arg_get(const char *name, const char *def)
{
    const char *v = arg_find(name);
    return v ? v : def;
}

/* Parse an unsigned number; 0 on success. */
static int parse_u64(const char *s, uint64_t *out)
{
    unsigned base = 10;
    uint64_t v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return -1;
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            return -1;
        v = (base == 16 ? v << 4 : v * 10) + d;
    }
    *out = v;
    return 0;
}

uint64_t arg_u64(const char *name, uint64_t def)
{
    const char *v = arg_find(name);
    uint64_t out;
    if (!v || parse_u64(v, &out) != 0)
        return def;
    return out;
}

long arg_int(const char *name, long def)
{
    const char *v = arg_find(name);
    int negative = 0;
    uint64_t out;
    if (!v)
        return def;
    if (*v == '-') {
        negative = 1;
        v++;
    }
    if (parse_u64(v, &out) != 0)
        return def;
    return negative ? -(long)out : (long)out;
}
