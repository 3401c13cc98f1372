/* The passwords people pick first, which every guessing attack tries first. Only
 * entries of 8 to 128 characters matter (anything shorter is refused by length). The
 * list is short on purpose: it refuses the obvious without composition rules. */
#include <ctype.h>
#include <string.h>

#include "auth.h"

static const char *const common[] = {
    "password",   "password1",  "password12",    "password123", "password1234", "passw0rd",
    "p@ssw0rd",   "p@ssword",   "12345678",      "123456789",   "1234567890",   "0123456789",
    "87654321",   "11111111",   "00000000",      "12341234",    "11223344",     "12121212",
    "123123123",  "1q2w3e4r",   "1q2w3e4r5t",    "1qaz2wsx",    "qwertyui",     "qwertyuiop",
    "qwerty123",  "qwerty12",   "asdfghjk",      "asdfghjkl",   "zxcvbnm1",     "zaq12wsx",
    "iloveyou",   "iloveyou1",  "sunshine",      "princess",    "football",     "baseball",
    "basketball", "superman",   "batman123",     "starwars",    "trustno1",     "whatever",
    "welcome1",   "welcome123", "letmein1",      "letmein123",  "abc12345",     "abcd1234",
    "abcdefgh",   "admin123",   "administrator", "changeme",    "changeme123",  "computer",
    "internet",   "master123",  "michael1",      "jennifer",    "jordan23",     "liverpool",
    "chelsea1",   "arsenal1",   "dragon123",     "monkey123",   "shadow123",    "secret123",
    "mustang1",   "corvette",   "mercedes",      "ferrari1",    "hello123",     "helloworld",
    "login123",   "default1",   "guest123",      "test1234",    "testtest",     "qazwsxedc",
    "987654321",  "999999999",  "55555555",      "66666666",    "88888888",     "1234qwer",
    "q1w2e3r4",   "a1b2c3d4",   "aa123456",      "loveyou1",    "blink182",     "pokemon1",
    "minecraft",  "nintendo",   "playstation",   "pass1234",    "correcthorse", "passpass",
};

int auth_password_common(const char *pw)
{
    char lower[129];
    size_t n = strlen(pw);
    if (n > 128)
        return 0;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)pw[i]);
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        if (strcmp(lower, common[i]) == 0)
            return 1;
    return 0;
}
