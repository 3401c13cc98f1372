/* UUIDv7 identifiers (RFC 9562), monotonic within a process. */
#ifndef EVBUS_ID_H
#define EVBUS_ID_H

#include <stdint.h>

#define EVBUS_UUID_STRLEN 37 /* 36 characters + NUL */

/* Writes a new UUIDv7 in canonical lowercase form into out. Ids from one process
 * sort strictly increasing as strings, even within one millisecond. Any thread. */
void evbus_uuid7(char out[EVBUS_UUID_STRLEN]);
/* Same, at a given millisecond timestamp (for tests); still monotonic. */
void evbus_uuid7_at(int64_t ms, char out[EVBUS_UUID_STRLEN]);
/* Returns 1 if s is a canonical UUID string (any version). */
int evbus_uuid_valid(const char *s);
/* Writes a W3C traceparent header value with fresh random trace and span ids. */
void evbus_traceparent_new(char out[56]);
/* Returns 1 if s is a well-formed W3C traceparent (version 00). */
int evbus_traceparent_valid(const char *s);

#endif
