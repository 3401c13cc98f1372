/* libFuzzer harness: CloudEvent parsing and validation on arbitrary bytes. A valid
 * event must serialize and parse back to an equal event. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/cloudevent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    evbus_event_t *ev = NULL;
    evbus_ce_error_t err;
    if (evbus_event_parse((const char *)data, size, &ev, &err) != EVBUS_ERR_OK)
        return 0;
    char *text = evbus_event_serialize(ev);
    if (text) {
        evbus_event_t *again = NULL;
        if (evbus_event_parse(text, strlen(text), &again, &err) != EVBUS_ERR_OK ||
            !json_equal(evbus_event_json(ev), evbus_event_json(again)))
            abort();
        evbus_event_free(again);
        free(text);
    }
    evbus_event_free(ev);
    return 0;
}
