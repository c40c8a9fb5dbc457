// evalcmd.h: the `eval` subcommand: loss and perplexity of a model on shards.
#pragma once

int evalcmd_main(int argc, char **argv);
