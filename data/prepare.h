// prepare.h: the `postshare prepare` subcommand: text files -> token shards.
//
//   postshare prepare --tokenizer SPEC --out DIR [--val-fraction F] [--shard-tokens N]
//                     [--prefix NAME] FILE...
//
// Each FILE is one document ('-' reads stdin). A tokenizer with a BOS (spm)
// starts every document with it; the byte tokenizer just concatenates them.
// The last F (default 0.05) of the token stream becomes the validation split,
// moved forward to the next line start (the token after a '\n') or document
// start, so no line is cut between train and val; if there is no such boundary
// after the cut, the nearest one before it is used, else the cut stays exact.
// The splits are written as llm.c shards DIR/NAME_train_000000.bin, 000001, ...
// and DIR/NAME_val_000000.bin, ... of at most N tokens each (default 10M);
// NAME defaults to "data". Shards with the same names left over from an
// earlier, larger run are deleted so a glob never mixes two runs.
// The whole token stream is held in memory (4 bytes per token).
#pragma once

// argv[0] is the subcommand name ("prepare"). Returns the process exit status:
// 0 on success (and for --help), 2 for usage errors, 1 for other errors.
int prepare_main(int argc, char **argv);
