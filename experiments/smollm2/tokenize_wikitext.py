#!/usr/bin/env python3
"""Tokenize WikiText-2 raw validation with SmolLM2's tokenizer into llm.c shards.

usage: tokenize_wikitext.py TOKENIZER_DIR VALID_TXT OUT_DIR EVAL_TOKENS CALIB_TOKENS

Writes OUT_DIR/wt2_eval_000.bin (the first EVAL_TOKENS tokens of the text) and
OUT_DIR/wt2_calib_000.bin (the last CALIB_TOKENS tokens: disjoint from the
evaluation tokens, so the calibration never sees them). The fallback of
run.sh while `postshare prepare` has no SmolLM2 tokenizer (needs `tokenizers`).
"""
import struct, sys
from tokenizers import Tokenizer

tok_dir, txt, out, n_eval, n_cal = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tk = Tokenizer.from_file(tok_dir + "/tokenizer.json")
ids = tk.encode(open(txt, encoding="utf-8").read(), add_special_tokens=False).ids
assert len(ids) >= n_eval + n_cal, f"{txt}: only {len(ids)} tokens"


def shard(path, toks):
    hdr = [20240520, 1, len(toks)] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(struct.pack(f"<{len(toks)}H", *toks))


shard(out + "/wt2_eval_000.bin", ids[:n_eval])
shard(out + "/wt2_calib_000.bin", ids[-n_cal:])
print(f"{txt}: {len(ids)} tokens; eval {n_eval}, calibration {n_cal} (the last ones)")
