// convertcmd.h: the `convert` subcommand: any MODEL spec to an HF directory.
#pragma once

int convertcmd_main(int argc, char **argv);
