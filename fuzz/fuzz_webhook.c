/* libFuzzer: webhook verification of untrusted headers and bodies. The input is split
 * at the first two newlines into webhook-timestamp, webhook-signature and the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *ts = buf, *sig = strchr(ts, '\n'), *body = NULL;
    if (sig) {
        *sig++ = '\0';
        if ((body = strchr(sig, '\n')))
            *body++ = '\0';
    }
    const char *secrets[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", sig};
    evbus_webhook_verify(secrets, 2, "msg_1", ts, sig, body ? body : "", body ? strlen(body) : 0,
                         1614265330);
    evbus_webhook_secret_valid(ts);
    free(buf);
    return 0;
}
