/* Exponential backoff with full jitter and a cap. */
#ifndef EVBUS_BACKOFF_H
#define EVBUS_BACKOFF_H

#include <stdint.h>

typedef struct {
    int64_t initial_ms; /* ceiling of the first delay */
    double multiplier;  /* growth per attempt, >= 1 */
    int64_t cap_ms;     /* ceiling of any delay */
} evbus_backoff_t;

/* Upper bound of the delay before retry number attempt (0-based):
 * min(cap, initial * multiplier^attempt). */
int64_t evbus_backoff_ceiling(const evbus_backoff_t *b, unsigned attempt);
/* A delay drawn uniformly from [0, ceiling(attempt)] ("full jitter"). Any thread. */
int64_t evbus_backoff_delay(const evbus_backoff_t *b, unsigned attempt);

#endif
