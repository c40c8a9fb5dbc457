"""Small fuzz seeds (a few KiB each) cut from the real tokenizers in ../shared/data:
the first tokens of a vocabulary, the merges among them, the added tokens and the
real pre-tokenizer, then a NUL and a line of text. Written to the fuzz work
directory only (never committed). usage: make_tokjson_seeds.py DATA_DIR OUT_DIR (see README.md)"""
import json
import os
import sys

data, out = sys.argv[1], sys.argv[2]
src = os.path.join(data, "tokenizers/llama3/tokenizer.json")
if not os.path.exists(src):
    sys.exit(0)
j = json.load(open(src, encoding="utf-8"))
m = j["model"]
for n, keep_merges in ((60, 40), (300, 120)):
    vocab = {t: i for t, i in m["vocab"].items() if i < n}
    merges = []
    for x in m["merges"]:
        a, b = x.split(" ") if isinstance(x, str) else x
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(x)
        if len(merges) >= keep_merges:
            break
    seed = dict(j, added_tokens=j["added_tokens"][:4], model=dict(m, vocab=vocab, merges=merges))
    seed["added_tokens"] = [dict(a, id=n + k) for k, a in enumerate(seed["added_tokens"])]
    text = "Hello <|begin_of_text|>world, it's 2024!\n  \t x"
    with open(os.path.join(out, f"llama3_excerpt_{n}"), "wb") as f:
        f.write(json.dumps(seed, ensure_ascii=False).encode() + b"\0" + text.encode())
