/* Declarative configuration: one table per service, read from flags and environment. */
#ifndef EVBUS_CONFIG_H
#define EVBUS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { EVBUS_CFG_INT, EVBUS_CFG_STR, EVBUS_CFG_BOOL } evbus_cfg_type_t;

typedef struct {
    const char *flag; /* command-line name without dashes, e.g. "port" */
    const char *env;  /* environment variable, e.g. "EVENTBUS_PORT" */
    evbus_cfg_type_t type;
    int64_t min, max; /* inclusive range (INT), length range (STR) */
    const char *def;  /* default as text; NULL means required for STR */
    const char *help;
    void *target;        /* int64_t* for INT and BOOL, char** (malloc'd) for STR */
    int secret;          /* never printed, never taken from a flag */
    const char *choices; /* STR only: allowed values separated by '|', or NULL */
} evbus_cfg_t;

/* Loads every entry: default, then the environment, then --flag=value or --flag value.
 * Returns 0 on success, 1 if --help was given (help already printed to stdout),
 * -1 on an invalid value (message printed to stderr naming the entry). */
int evbus_config_load(const evbus_cfg_t *tab, size_t n, const char *prog, const char *about,
                      int argc, char **argv);
/* Frees the strings evbus_config_load allocated. */
void evbus_config_free(const evbus_cfg_t *tab, size_t n);
/* Prints the table as help text to stdout. */
void evbus_config_help(const evbus_cfg_t *tab, size_t n, const char *prog, const char *about);

#endif
