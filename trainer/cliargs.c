// cliargs.c: strict numeric option parsing (see cliargs.h).
#include "cliargs.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "common.h"

long cli_int(const char *cmd, const char *opt, const char *value, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(value, &end, 10);
    if (!*value || *end || errno || x < lo || x > hi)
        ps_die("%s: %s expects an integer in [%ld, %ld], got '%s'", cmd, opt, lo, hi, value);
    return x;
}

double cli_float(const char *cmd, const char *opt, const char *value, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(value, &end);
    if (!*value || *end || errno || !isfinite(x) || x < lo || x > hi)
        ps_die("%s: %s expects a number in [%g, %g], got '%s'", cmd, opt, lo, hi, value);
    return x;
}

void cli_positional(const char *cmd, const char *arg, const char **slot, const char *what) {
    if (arg[0] == '-' && arg[1])
        ps_die("%s: unknown option or missing value: '%s' (see postshare %s --help)", cmd, arg,
               cmd);
    if (*slot) ps_die("%s: more than one %s given ('%s' and '%s')", cmd, what, *slot, arg);
    *slot = arg;
}
