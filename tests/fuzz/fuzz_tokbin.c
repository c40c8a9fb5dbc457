// fuzz_tokbin: a llama2.c tokenizer.bin (the harness is fuzz_tok.h).
#define FUZZ_TOK_FILE "tokenizer.bin"
#include "fuzz_tok.h"
