// fuzz_spm: a sentencepiece .model (the harness is fuzz_tok.h).
#define FUZZ_TOK_FILE "tokenizer.model"
#include "fuzz_tok.h"
