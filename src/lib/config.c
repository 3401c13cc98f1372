/* Table-driven configuration: defaults < environment < command-line flags, each value
 * checked against its entry's type and range before the service starts. */
#include "evbus/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/util.h"

static int is_choice(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        p += len + (p[len] == '|');
    }
    return 0;
}

static int secret_from_file(const evbus_cfg_t *e);

static int set_value(const evbus_cfg_t *e, const char *v, const char *origin)
{
    int64_t n;
    switch (e->type) {
    case EVBUS_CFG_INT:
        if (evbus_parse_i64(v, e->min, e->max, &n) != 0) {
            fprintf(stderr, "config: %s (%s) must be an integer in [%lld, %lld], got '%s'\n",
                    e->env, origin, (long long)e->min, (long long)e->max, v);
            return -1;
        }
        *(int64_t *)e->target = n;
        return 0;
    case EVBUS_CFG_BOOL:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
            n = 1;
        else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
            n = 0;
        else {
            fprintf(stderr, "config: %s (%s) must be true or false, got '%s'\n", e->env, origin, v);
            return -1;
        }
        *(int64_t *)e->target = n;
        return 0;
    case EVBUS_CFG_STR: {
        size_t len = strlen(v);
        if ((int64_t)len < e->min || (int64_t)len > e->max) {
            fprintf(stderr, "config: %s (%s) must have %lld..%lld characters\n", e->env, origin,
                    (long long)e->min, (long long)e->max);
            return -1;
        }
        if (e->choices && !is_choice(e->choices, v)) {
            fprintf(stderr, "config: %s (%s) must be one of %s, got '%s'\n", e->env, origin,
                    e->choices, v);
            return -1;
        }
        char **dst = e->target;
        free(*dst);
        *dst = strdup(v);
        return *dst ? 0 : -1;
    }
    }
    return -1;
}

void evbus_config_help(const evbus_cfg_t *tab, size_t n, const char *prog, const char *about)
{
    printf("%s - %s\n\nUsage: %s [--flag=value ...]\n\nEach setting is a flag or an environment "
           "variable (flags win).\n\n",
           prog, about, prog);
    for (size_t i = 0; i < n; i++) {
        const evbus_cfg_t *e = &tab[i];
        const char *type = e->type == EVBUS_CFG_INT    ? "int"
                           : e->type == EVBUS_CFG_BOOL ? "bool"
                                                       : "string";
        printf("  --%-22s %-28s %s\n", e->flag, e->env, e->help);
        if (e->type == EVBUS_CFG_INT)
            printf("  %-53s %s in [%lld, %lld], default %s\n", "", type, (long long)e->min,
                   (long long)e->max, e->def);
        else
            printf("  %-53s %s, default %s\n", "", type,
                   e->secret ? "(secret)"
                   : e->def  ? (*e->def ? e->def : "(empty)")
                             : "(required)");
    }
    printf("  --%-22s print this text\n", "help");
}

int evbus_config_load(const evbus_cfg_t *tab, size_t n, const char *prog, const char *about,
                      int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            evbus_config_help(tab, n, prog, about);
            return 1;
        }
    for (size_t i = 0; i < n; i++) {
        const evbus_cfg_t *e = &tab[i];
        if (e->def && set_value(e, e->def, "default") != 0)
            return -1;
        const char *v = getenv(e->env);
        if (v && set_value(e, v, "environment") != 0)
            return -1;
        if (!v && e->secret && secret_from_file(e) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "config: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        const evbus_cfg_t *e = NULL;
        for (size_t j = 0; j < n; j++)
            if (strlen(tab[j].flag) == klen && strncmp(tab[j].flag, a, klen) == 0)
                e = &tab[j];
        if (!e) {
            fprintf(stderr, "config: unknown flag '--%.*s' (see --help)\n", (int)klen, a);
            return -1;
        }
        if (e->secret) {
            fprintf(stderr, "config: %s is a secret: set it in the environment, not a flag\n",
                    e->env);
            return -1;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            fprintf(stderr, "config: flag '--%s' needs a value\n", e->flag);
            return -1;
        }
        if (set_value(e, v, "flag") != 0)
            return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (tab[i].type == EVBUS_CFG_STR && !*(char **)tab[i].target) {
            fprintf(stderr, "config: %s is required\n", tab[i].env);
            return -1;
        }
    return 0;
}

/* A secret may also come from a file named by NAME_FILE (mounted secrets): the first
 * line, without its newline. */
static int secret_from_file(const evbus_cfg_t *e)
{
    char name[128];
    snprintf(name, sizeof name, "%s_FILE", e->env);
    const char *path = getenv(name);
    if (!path)
        return 0;
    FILE *f = fopen(path, "r");
    char buf[4096];
    if (!f || !fgets(buf, sizeof buf, f)) {
        fprintf(stderr, "config: %s: cannot read %s\n", name, path);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    int rc = set_value(e, buf, "file");
    memset(buf, 0, sizeof buf);
    return rc;
}

void evbus_config_free(const evbus_cfg_t *tab, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].type == EVBUS_CFG_STR) {
            char **p = tab[i].target;
            free(*p);
            *p = NULL;
        }
}
