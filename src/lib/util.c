/* Clocks, RFC 3339 times, checked integer parsing and bounded string helpers. */
#include "evbus/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t evbus_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t evbus_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void evbus_fmt_rfc3339(int64_t ms, char *buf, size_t len)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

int evbus_is_rfc3339(const char *s)
{
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
    if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' ||
        !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
        return 0;
    int mon = num(s + 5, 2), day = num(s + 8, 2), h = num(s + 11, 2), mi = num(s + 14, 2),
        sec = num(s + 17, 2);
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || h > 23 || mi > 59 || sec > 60)
        return 0;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return 1;
    if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) &&
        p[6] == '\0')
        return num(p + 1, 2) <= 23 && num(p + 4, 2) <= 59;
    return 0;
}

int evbus_parse_rfc3339(const char *s, int64_t *ms)
{
    if (!s || !evbus_is_rfc3339(s))
        return -1;
    /* days since the epoch by the civil-from-days inverse (proleptic Gregorian) */
    int64_t y = num(s, 4), m = num(s + 5, 2), d = num(s + 8, 2);
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    int64_t t = ((days * 24 + num(s + 11, 2)) * 60 + num(s + 14, 2)) * 60 + num(s + 17, 2);
    t *= 1000;
    const char *p = s + 19;
    if (*p == '.') {
        int64_t scale = 100;
        for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
            t += (*p - '0') * scale;
    }
    if (*p == '+' || *p == '-')
        t -= (*p == '+' ? 1 : -1) * (int64_t)(num(p + 1, 2) * 60 + num(p + 4, 2)) * 60000;
    *ms = t;
    return 0;
}

int evbus_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int evbus_strlcpy(char *dst, const char *src, size_t len)
{
    size_t n = strlen(src);
    if (len == 0)
        return 1;
    if (n >= len) {
        memcpy(dst, src, len - 1);
        dst[len - 1] = '\0';
        return 1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

long evbus_utf8_len(const char *s)
{
    long n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra;
        if (*p < 0x80)
            extra = 0;
        else if ((*p & 0xE0) == 0xC0 && *p >= 0xC2)
            extra = 1;
        else if ((*p & 0xF0) == 0xE0)
            extra = 2;
        else if ((*p & 0xF8) == 0xF0 && *p <= 0xF4)
            extra = 3;
        else
            return -1;
        p++;
        for (int i = 0; i < extra; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return -1;
        n++;
    }
    return n;
}

int evbus_is_token(const char *s, size_t max)
{
    size_t n = 0;
    if (!s || !*s)
        return 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || !(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}
