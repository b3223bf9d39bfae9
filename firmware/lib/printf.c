#include "printf.h"

#include <stdint.h>

#include "div64.h"
#include "serial.h"

struct sink {
    void (*put)(struct sink *s, char c);
    char *buf;
    size_t size;
    size_t pos;
};

static void put_serial(struct sink *s, char c)
{
    (void)s;
    serial_putc(c);
}

static void put_buffer(struct sink *s, char c)
{
    if (s->pos + 1 < s->size)
        s->buf[s->pos] = c;
    s->pos++;
}

struct spec {
    int left;
    int zero;
    int plus;
    int space;
    int alt;
    int width;
    int prec; /* -1: none */
};

static int emit_repeat(struct sink *s, char c, int n)
{
    for (int i = 0; i < n; i++)
        s->put(s, c);
    return n > 0 ? n : 0;
}

static int emit_string(struct sink *s, const struct spec *sp, const char *str)
{
    if (!str)
        str = "(null)";
    int len = 0;
    while (str[len] && (sp->prec < 0 || len < sp->prec))
        len++;
    int count = 0;
    if (!sp->left)
        count += emit_repeat(s, ' ', sp->width - len);
    for (int i = 0; i < len; i++)
        s->put(s, str[i]);
    count += len;
    if (sp->left)
        count += emit_repeat(s, ' ', sp->width - len);
    return count;
}

static int emit_number(struct sink *s, const struct spec *sp, uint64_t value, int negative,
                       unsigned base, int upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int ndig = 0;

    if (value == 0 && sp->prec == 0) {
        /* "%.0d" of zero prints no digits. */
    } else if (base == 16) {
        do {
            tmp[ndig++] = digits[value & 0xF];
            value >>= 4;
        } while (value);
    } else {
        do {
            tmp[ndig++] = digits[div64_32(&value, base)];
        } while (value);
    }

    char prefix[2];
    int nprefix = 0;
    if (negative)
        prefix[nprefix++] = '-';
    else if (sp->plus)
        prefix[nprefix++] = '+';
    else if (sp->space)
        prefix[nprefix++] = ' ';
    if (sp->alt && base == 16) {
        prefix[0] = '0';
        prefix[1] = upper ? 'X' : 'x';
        nprefix = 2;
    }

    int zeros = sp->prec > ndig ? sp->prec - ndig : 0;
    int body = nprefix + zeros + ndig;
    int pad = sp->width > body ? sp->width - body : 0;
    int count = 0;

    if (sp->zero && !sp->left && sp->prec < 0) {
        zeros += pad;
        pad = 0;
    }
    if (!sp->left)
        count += emit_repeat(s, ' ', pad);
    for (int i = 0; i < nprefix; i++)
        s->put(s, prefix[i]);
    count += nprefix;
    count += emit_repeat(s, '0', zeros);
    for (int i = ndig - 1; i >= 0; i--)
        s->put(s, tmp[i]);
    count += ndig;
    if (sp->left)
        count += emit_repeat(s, ' ', pad);
    return count;
}

static int format(struct sink *s, const char *fmt, va_list ap)
{
    int count = 0;

    while (*fmt) {
        if (*fmt != '%') {
            s->put(s, *fmt++);
            count++;
            continue;
        }
        fmt++;

        struct spec sp = {0, 0, 0, 0, 0, 0, -1};
        for (;; fmt++) {
            if (*fmt == '-')
                sp.left = 1;
            else if (*fmt == '0')
                sp.zero = 1;
            else if (*fmt == '+')
                sp.plus = 1;
            else if (*fmt == ' ')
                sp.space = 1;
            else if (*fmt == '#')
                sp.alt = 1;
            else
                break;
        }
        if (*fmt == '*') {
            sp.width = va_arg(ap, int);
            if (sp.width < 0) {
                sp.left = 1;
                sp.width = -sp.width;
            }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                sp.width = sp.width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            fmt++;
            sp.prec = 0;
            if (*fmt == '*') {
                sp.prec = va_arg(ap, int);
                if (sp.prec < 0)
                    sp.prec = -1;
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9')
                    sp.prec = sp.prec * 10 + (*fmt++ - '0');
            }
        }

        int longs = 0; /* 0: int, 1: long, 2: long long */
        for (;; fmt++) {
            if (*fmt == 'l')
                longs++;
            else if (*fmt == 'h' || *fmt == 'z')
                ; /* int and size_t are 32-bit here: nothing to do */
            else
                break;
        }

        char conv = *fmt;
        if (!conv)
            break;
        fmt++;

        switch (conv) {
        case 'd':
        case 'i': {
            int64_t v = longs >= 2 ? va_arg(ap, long long)
                        : longs == 1 ? va_arg(ap, long)
                                     : va_arg(ap, int);
            uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
            count += emit_number(s, &sp, mag, v < 0, 10, 0);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs == 1 ? va_arg(ap, unsigned long)
                                      : va_arg(ap, unsigned int);
            count += emit_number(s, &sp, v, 0, conv == 'u' ? 10 : 16, conv == 'X');
            break;
        }
        case 'p': {
            struct spec pp = {sp.left, 0, 0, 0, 1, sp.width, 8};
            count += emit_number(s, &pp, (uintptr_t)va_arg(ap, void *), 0, 16, 0);
            break;
        }
        case 's':
            count += emit_string(s, &sp, va_arg(ap, const char *));
            break;
        case 'c': {
            char c[2] = {(char)va_arg(ap, int), 0};
            sp.prec = 1;
            count += emit_string(s, &sp, c);
            break;
        }
        case '%':
            s->put(s, '%');
            count++;
            break;
        default:
            /* Unknown conversion: print it as written. */
            s->put(s, '%');
            s->put(s, conv);
            count += 2;
            break;
        }
    }
    return count;
}

int vprintf(const char *fmt, va_list ap)
{
    struct sink s = {put_serial, 0, 0, 0};
    return format(&s, fmt, ap);
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct sink s = {put_buffer, buf, size, 0};
    int n = format(&s, fmt, ap);
    if (size)
        buf[s.pos < size ? s.pos : size - 1] = 0;
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int puts(const char *s)
{
    int n = 0;
    while (s[n])
        serial_putc(s[n++]);
    serial_putc('\n');
    return n + 1;
}

void hexdump(const void *addr, size_t len)
{
    const unsigned char *p = addr;
    for (size_t off = 0; off < len; off += 16) {
        printf("%04x:", (unsigned)off);
        for (size_t i = 0; i < 16; i++) {
            if (off + i < len)
                printf(" %02x", p[off + i]);
            else
                printf("   ");
        }
        printf("  |");
        for (size_t i = 0; i < 16 && off + i < len; i++) {
            unsigned char c = p[off + i];
            serial_putc(c >= 0x20 && c < 0x7f ? (char)c : '.');
        }
        printf("|\n");
    }
}
