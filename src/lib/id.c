/* UUIDv7 (RFC 9562 §5.7) with a 12-bit counter in rand_a (method 1 of §6.2): ids made
 * in the same millisecond still increase; on counter overflow or a clock step back the
 * timestamp is advanced past the last one used. */
#include "evbus/id.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "evbus/util.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_last_ms = -1;
static unsigned g_counter;

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
}

void evbus_uuid7_at(int64_t ms, char out[EVBUS_UUID_STRLEN])
{
    uint8_t b[16];
    randombytes_buf(b, sizeof b);
    pthread_mutex_lock(&g_lock);
    if (ms > g_last_ms) {
        g_last_ms = ms;
        g_counter = (b[6] & 0x03) << 8 | b[7]; /* random start, leaves room to count */
    } else if (++g_counter > 0xFFF) {
        g_last_ms++;
        g_counter = 0;
    }
    ms = g_last_ms;
    unsigned ctr = g_counter;
    pthread_mutex_unlock(&g_lock);

    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (ctr >> 8));
    b[7] = (uint8_t)(ctr & 0xFF);
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);

    char h[32];
    hex(b, 16, h);
    snprintf(out, EVBUS_UUID_STRLEN, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

void evbus_uuid7(char out[EVBUS_UUID_STRLEN])
{
    evbus_uuid7_at(evbus_now_ms(), out);
}

static int is_lhex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int evbus_uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

void evbus_traceparent_new(char out[56])
{
    uint8_t b[24];
    char h[48];
    randombytes_buf(b, sizeof b);
    hex(b, 24, h);
    snprintf(out, 56, "00-%.32s-%.16s-01", h, h + 32);
}

static int all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

int evbus_traceparent_valid(const char *s)
{
    /* 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, ids not all zero */
    return s && strlen(s) == 55 && s[0] == '0' && s[1] == '0' && s[2] == '-' &&
           is_lhex(s + 3, 32) && s[35] == '-' && is_lhex(s + 36, 16) && s[52] == '-' &&
           is_lhex(s + 53, 2) && !all_zero(s + 3, 32) && !all_zero(s + 36, 16);
}
