/* evbus_strerror and retriability from the one error list in err.h. */
#include "evbus/err.h"

static const struct {
    const char *text;
    int retriable;
} errs[] = {
#define EVBUS__ERR_ROW(name, r, t) {t, r},
    EVBUS_ERR_LIST(EVBUS__ERR_ROW)
#undef EVBUS__ERR_ROW
};

const char *evbus_strerror(evbus_err_t err)
{
    if ((unsigned)err >= EVBUS_ERR__COUNT)
        return "unknown error";
    return errs[err].text;
}

int evbus_err_retriable(evbus_err_t err)
{
    return (unsigned)err < EVBUS_ERR__COUNT && errs[err].retriable;
}
