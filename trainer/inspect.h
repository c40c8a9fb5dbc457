// inspect.h: the `inspect` subcommand: a checkpoint's summary and checksum check.
#pragma once

// CLI entry: argv holds the arguments after "inspect". Returns the exit status.
int inspect_main(int argc, char **argv);
