// tokcmd.h: `postshare tokenize`: print the token ids of text files.
#pragma once

int tokenize_main(int argc, char **argv);
