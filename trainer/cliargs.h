// cliargs.h: strict parsing of numeric command-line option values. A value
// that is not entirely a number in range is a clear error naming the command
// and the option (never silently 0, as atoi would make it).
#pragma once

#include <stdint.h>

long cli_int(const char *cmd, const char *opt, const char *value, long lo, long hi);
// An argument that is not a known option: a leftover "-x" is an error
// (unknown option or missing value); otherwise it is the command's one
// positional argument, stored in *slot (a second one is an error).
void cli_positional(const char *cmd, const char *arg, const char **slot, const char *what);

double cli_float(const char *cmd, const char *opt, const char *value, double lo, double hi);
