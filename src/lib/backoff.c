/* Exponential backoff with full jitter: delay ~ U[0, min(cap, initial * mult^n)]. */
#include "evbus/backoff.h"

#include <sodium.h>

int64_t evbus_backoff_ceiling(const evbus_backoff_t *b, unsigned attempt)
{
    double c = (double)b->initial_ms;
    double mult = b->multiplier < 1.0 ? 1.0 : b->multiplier;
    for (unsigned i = 0; i < attempt && c < (double)b->cap_ms; i++)
        c *= mult;
    if (c > (double)b->cap_ms)
        c = (double)b->cap_ms;
    return c < 0 ? 0 : (int64_t)c;
}

int64_t evbus_backoff_delay(const evbus_backoff_t *b, unsigned attempt)
{
    int64_t ceil = evbus_backoff_ceiling(b, attempt);
    if (ceil <= 0)
        return 0;
    uint64_t r;
    randombytes_buf(&r, sizeof r);
    return (int64_t)(r % ((uint64_t)ceil + 1));
}
