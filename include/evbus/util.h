/* Small helpers: clocks, bounded strings, checked number parsing. */
#ifndef EVBUS_UTIL_H
#define EVBUS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock milliseconds since the Unix epoch. */
int64_t evbus_now_ms(void);
/* Monotonic clock in microseconds, for deadlines and durations. */
int64_t evbus_mono_us(void);
/* Formats ms (epoch) as RFC 3339 UTC with milliseconds into buf (>= 32 bytes). */
void evbus_fmt_rfc3339(int64_t ms, char *buf, size_t len);
/* Returns 1 if s is a valid RFC 3339 date-time. */
int evbus_is_rfc3339(const char *s);
/* Parses an RFC 3339 time into ms since the epoch (UTC). 0, or -1 when malformed. */
int evbus_parse_rfc3339(const char *s, int64_t *ms);

/* Parses a whole decimal integer in [min, max]; returns 0 on success, -1 otherwise. */
int evbus_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Copies src into dst (size len), always NUL-terminated; returns 1 if truncated. */
int evbus_strlcpy(char *dst, const char *src, size_t len);

/* Returns the number of UTF-8 code points in s, or -1 if s is not valid UTF-8. */
long evbus_utf8_len(const char *s);

/* Returns 1 if s has 1..max characters from [A-Za-z0-9._:-]. */
int evbus_is_token(const char *s, size_t max);

#endif
