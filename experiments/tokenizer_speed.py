"""Encode speed of PostShare's byte-level BPE against HF tokenizers, same machine.

usage: RAYON_NUM_THREADS=1 PY tokenizer_speed.py POSTSHARE LABEL=SPEC=HF_JSON... -- TEXT...
(PY: a Python with `tokenizers`, e.g. build/pyvenv-tokenizers/bin/python, made by
test_bpe_hf.sh; HF_JSON may be gguf:FILE as in tests/bpe_hf_check.py.)
For each tokenizer and text: tokens per CPU-second of one thread (the best of 3)
for the whole text and for its lines (HF: encode_batch with RAYON_NUM_THREADS=1;
ours: `postshare tokenize --lines`, one thread). Prints a Markdown table.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from bpe_hf_check import hf_json_from_gguf  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def ours(ps, spec, path, lines):
    best = 0
    for _ in range(3):
        p = subprocess.run([ps, "tokenize", "--tokenizer", spec, "--quiet"] + (["--lines"] if lines else []) + [path],
                           capture_output=True, text=True, check=True)
        best = max(best, float(re.search(r"([0-9]+) tokens/CPU-s", p.stderr).group(1)))
    return best


def hf(tok, text, lines):
    best = 0
    for _ in range(3):
        t0 = time.process_time()
        if lines:
            n = sum(len(e.ids) for e in tok.encode_batch(text.split("\n"), add_special_tokens=False))
        else:
            n = len(tok.encode(text, add_special_tokens=False).ids)
        best = max(best, n / (time.process_time() - t0))
    return best


def main():
    args = sys.argv[1:]
    k = args.index("--")
    ps, cases, texts = args[0], args[1:k], args[k + 1:]
    print("| tokenizer | text | mode | HF tokenizers (tokens/CPU-s) | PostShare (tokens/CPU-s) | ratio |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        label, spec, ref = case.split("=", 2)
        if ref.startswith("gguf:"):
            ref = hf_json_from_gguf(ref[5:], f"/tmp/{label}.speed.tokenizer.json")
        tok = Tokenizer.from_file(ref)
        for path in texts:
            text = open(path, "rb").read().decode("utf-8", "replace")
            for lines in (False, True):
                a, b = hf(tok, text, lines), ours(ps, spec, path, lines)
                print(f"| {label} | {os.path.basename(os.path.dirname(path))}/{os.path.basename(path)} | "
                      f"{'lines' if lines else 'whole'} | {a:,.0f} | {b:,.0f} | {b / a:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
