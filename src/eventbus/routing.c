/* Type -> topic routing: explicit overrides, else the type in UPPER_SNAKE_CASE
 * (UserRegistered -> USER_REGISTERED, com.acme.OrderPlaced -> COM_ACME_ORDER_PLACED). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"

#define MAX_ROUTES 256

struct eb_routes {
    size_t n;
    char *type[MAX_ROUTES];
    char *topic[MAX_ROUTES];
};

int eb_topic_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= EB_MAX_TOPIC || !(isalnum(c) || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

eb_routes_t *eb_routes_new(const char *spec, char *err, size_t errlen)
{
    eb_routes_t *r = calloc(1, sizeof *r);
    char *copy = strdup(spec ? spec : "");
    if (!r || !copy) {
        free(r);
        free(copy);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        if (!*tok)
            continue;
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eb_topic_valid(eq + 1) || r->n == MAX_ROUTES) {
            snprintf(err, errlen, "bad route '%s': expected Type=TOPIC with a valid topic", tok);
            goto bad;
        }
        *eq = '\0';
        r->type[r->n] = strdup(tok);
        r->topic[r->n] = strdup(eq + 1);
        r->n++;
        if (!r->type[r->n - 1] || !r->topic[r->n - 1])
            goto bad;
    }
    free(copy);
    return r;
bad:
    free(copy);
    eb_routes_free(r);
    return NULL;
}

void eb_routes_free(eb_routes_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->type[i]);
        free(r->topic[i]);
    }
    free(r);
}

int eb_route(const eb_routes_t *r, const char *type, char *out, size_t len)
{
    for (size_t i = 0; r && i < r->n; i++)
        if (strcmp(r->type[i], type) == 0)
            return snprintf(out, len, "%s", r->topic[i]) < (int)len ? 0 : -1;
    size_t o = 0;
    for (size_t i = 0; type[i]; i++) {
        unsigned char c = (unsigned char)type[i];
        int boundary =
            i > 0 && isupper(c) &&
            (islower((unsigned char)type[i - 1]) || isdigit((unsigned char)type[i - 1]) ||
             (isupper((unsigned char)type[i - 1]) && islower((unsigned char)type[i + 1])));
        if (boundary && o && out[o - 1] != '_') {
            if (o + 1 >= len)
                return -1;
            out[o++] = '_';
        }
        if (o + 1 >= len)
            return -1;
        if (isalnum(c))
            out[o++] = (char)toupper(c);
        else if (c == '.' || c == '-' || c == '_' || c == ' ' || c == '/' || c == ':') {
            if (o && out[o - 1] != '_')
                out[o++] = '_';
        } else
            return -1;
    }
    while (o && out[o - 1] == '_')
        o--;
    out[o] = '\0';
    return eb_topic_valid(out) ? 0 : -1;
}

int eb_type_wanted(json_t *types, const char *type)
{
    if (!types)
        return 1;
    size_t i;
    json_t *t;
    json_array_foreach (types, i, t) {
        if (strcmp(json_string_value(t), type) == 0)
            return 1;
    }
    return 0;
}
